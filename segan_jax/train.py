"""SegAN training: alternate a critic step and a segmentor step, validate, log and checkpoint."""

import contextlib
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from segan_jax import (checkpoints, graceful_stop, optimizers, panels, schedules, sharding, steps,
                       summaries, validation)
from segan_jax import workdir as run_dir
from segan_jax.config_validation import ConfigError, validate_config
from segan_jax.data import arrays as data_arrays
from segan_jax.data import sources
from segan_jax.errors import UserError
from segan_jax.models import Critic, Segmentor
from segan_jax.train_state import TrainState, create_train_state, with_ema


def build_models(config: ml_collections.ConfigDict) -> tuple[Segmentor, Critic]:
  """The two networks as config.model describes them."""
  dtype = jnp.dtype(config.dtype)
  m = config.model
  return (Segmentor(width=m.width, num_classes=m.num_classes, dtype=dtype, conv_impl=m.conv_impl,
                    residual_batchnorm=m.residual_batchnorm),
          Critic(width=m.width, global_conv=m.critic_global_conv, dtype=dtype,
                 conv_impl=m.conv_impl,
                 spectral_norm=config.train.critic_constraint == "spectral_norm"))


def total_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  """The run's length in steps: config.train.num_steps, or num_epochs whole epochs."""
  if config.train.get("num_epochs", 0):
    return int(config.train.num_epochs) * steps_per_epoch
  return int(config.train.num_steps)


def build_step_config(config: ml_collections.ConfigDict, steps_per_epoch: int) -> steps.StepConfig:
  """Models, schedules and loss settings for the jitted steps."""
  segmentor, critic = build_models(config)
  o, s = config.optim, config.schedule
  lr = schedules.learning_rate_schedule(o.schedule, o.learning_rate,
                                        total_steps(config, steps_per_epoch),
                                        steps_per_epoch, o.end_learning_rate, o.decay_epochs,
                                        o.decay_factor)
  k = schedules.k_schedule(steps_per_epoch, s.k_init, s.k_decay, s.k_decay_epochs, s.k_floor)
  weights = tuple(float(w) for w in config.loss.layer_weights) or None
  restart = (schedules.decay_steps(o.schedule, steps_per_epoch, o.decay_epochs)
             if o.reset_at_decay else None)
  n_critic = int(config.train.critic_steps)
  return steps.StepConfig(
      segmentor=segmentor, critic=critic, k_schedule=k, segmentor_lr=lr,
      critic_lr=schedules.per_update(lr, n_critic),
      critic_adam_restart=schedules.per_update_restart(restart, n_critic),
      critic_steps=n_critic,
      critic_clip=float(config.train.critic_clip),
      adversarial_weight=float(config.loss.adversarial_weight),
      dice_weight=float(config.loss.dice_weight), bce_weight=float(config.loss.bce_weight),
      layer_weights=weights, feature_reduction=config.loss.feature_reduction,
      dice_form=config.loss.dice_form, critic_constraint=config.train.critic_constraint,
      ema_decay=float(config.train.ema_decay), adam_restart=restart)


def create_states(config: ml_collections.ConfigDict,
                  cfg: steps.StepConfig) -> tuple[TrainState, TrainState]:
  """Freshly initialised (segmentor, critic) states from config.train.seed.

  One jitted computation: built leaf by leaf, the optimiser moments and the moving average took
  hundreds of small compilations (one per operation and parameter shape) before the first step.
  """
  side = config.data.image_size
  shape = (1, side, side, 3)
  tx = lambda lr, restart: optimizers.adam(lr, config.optim.b1, config.optim.b2, restart)
  init = config.model.init

  def create(rng: jax.Array) -> tuple[TrainState, TrainState]:
    rng_s, rng_c = jax.random.split(rng)
    segmentor = create_train_state(cfg.segmentor, rng_s, shape,
                                   tx(cfg.segmentor_lr, cfg.adam_restart), init)
    if cfg.ema_decay:  # the moving average starts at the initial weights (debiased: see update_ema)
      segmentor = with_ema(segmentor)
    return segmentor, create_train_state(cfg.critic, rng_c, shape,
                                         tx(cfg.critic_lr, cfg.critic_adam_restart), init)

  return jax.jit(create)(jax.random.key(config.train.seed))


def abstract_states(config: ml_collections.ConfigDict, cfg: steps.StepConfig,
                    mesh: jax.sharding.Mesh | None = None) -> tuple[TrainState, TrainState]:
  """create_states' shapes and dtypes (replicated over mesh where given) without computing
  them: the structure a checkpoint is restored into."""
  shapes = jax.eval_shape(lambda: create_states(config, cfg))
  if mesh is None:
    return shapes
  rep = sharding.replicated(mesh)
  return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=rep),
                      shapes)


def init_variables(source: str, config: ml_collections.ConfigDict) -> dict[str, Any]:
  """S's inference variables ({"params", "batch_stats"}) to start a run from (train.init_from):
  a shipped pretrained model's name, a packaged weights file, or a training run's workdir (its
  latest checkpoint, the moving average where it has one). Raises ConfigError where they cannot
  seed this config's segmentor."""
  from segan_jax import inference
  try:
    if os.path.isdir(source):
      model = inference.load_model(source)
    else:
      from segan_jax import pretrained
      model = pretrained.load_model(source)
  except UserError as e:
    raise ConfigError(f"config.train.init_from={source!r}: {e}") from e
  fields = ("width", "num_classes", "residual_batchnorm")
  theirs = {f: model.config.model.get(f) for f in fields}
  ours = {f: config.model.get(f) for f in fields}
  if theirs != ours:
    diff = ", ".join(f"model.{f} {theirs[f]!r} there, {ours[f]!r} here" for f in fields
                     if theirs[f] != ours[f])
    raise ConfigError(f"config.train.init_from={source!r} holds a segmentor of another shape "
                      f"({diff}); set those fields as it has them, or start from scratch.")
  logging.info("S starts from %s (step %d, %s weights); C starts fresh.", source, model.step,
               model.weights)
  return jax.tree.map(np.asarray, model.variables)


def start_from(seg_state: TrainState, variables: dict[str, Any]) -> TrainState:
  """seg_state with its parameters, BatchNorm statistics and moving average (where it keeps one)
  set to `variables`; its optimiser starts afresh."""
  expected = {"params": seg_state.params, "batch_stats": seg_state.batch_stats}
  shapes = lambda tree: jax.tree.map(np.shape, tree)
  if (jax.tree.structure(expected) != jax.tree.structure(variables) or
      shapes(expected) != shapes(variables)):
    raise ConfigError("config.train.init_from: its variables do not fit this run's segmentor "
                      "(other layers or shapes).")
  put = lambda new, old: jax.device_put(jnp.asarray(new, old.dtype), old.sharding)
  seg_state = seg_state.replace(params=jax.tree.map(put, variables["params"], seg_state.params),
                                batch_stats=jax.tree.map(put, variables["batch_stats"],
                                                         seg_state.batch_stats))
  if getattr(seg_state, "ema", None) is not None:
    seg_state = seg_state.replace(ema=jax.tree.map(put, variables, seg_state.ema))
  return seg_state


def load_data(config: ml_collections.ConfigDict
              ) -> tuple[data_arrays.TrainArrays, data_arrays.EvalSet]:
  """Training arrays resized for cropping, and the validation set at the network's input size."""
  train_examples, val_examples = sources.load_splits(config)
  train = data_arrays.prepare_train(train_examples, config.data.resize_height,
                                    config.data.resize_width, int(config.model.num_classes))
  val = data_arrays.prepare_eval(val_examples, config.data.image_size)
  return train, val


def train_iterator(config: ml_collections.ConfigDict, arrays: data_arrays.TrainArrays,
                   start_step: int, mesh: jax.sharding.Mesh | None = None):
  """The global batches from start_step (segan_jax/data/pipeline.py, config.data.loader):
  arrays sharded over mesh's data axis, or this process's slices for sharding.global_batch."""
  from segan_jax.data import pipeline
  return pipeline.train_batches(arrays, config, sharding.make_mesh() if mesh is None else mesh,
                                start_step)


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def validate(jitted: steps.JittedSteps, state: TrainState, val: data_arrays.EvalSet,
             config: ml_collections.ConfigDict,
             mesh: jax.sharding.Mesh) -> tuple[dict[str, float], np.ndarray]:
  """Validation summary (ISIC protocol) and the probability maps; every process holds all of val."""
  n = mesh.devices.size
  batch_size = -(-config.eval.batch_size // n) * n  # a multiple of the device count

  def predict(images: np.ndarray) -> np.ndarray:
    images = jax.make_array_from_process_local_data(sharding.batch_sharding(mesh), images,
                                                    images.shape)
    probs = jitted.predict_probs(state, images)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      return np.asarray(multihost_utils.process_allgather(probs, tiled=True))
    return np.asarray(probs)

  probs = validation.predict_eval_set(predict, val, batch_size)
  return validation.score_eval_set(probs, val, config.eval.threshold).summary(), probs


class TrainingDiverged(UserError):
  """A loss or a parameter became NaN or infinite; the checkpoints saved before are kept."""


def _first_nonfinite(host_metrics: list[dict[str, Any]], first_step: int) -> tuple[int, str] | None:
  """(step, 'name=value, ...') of the first step in host_metrics with a non-finite metric."""
  for offset, metrics_ in enumerate(host_metrics):
    bad = {k: float(v) for k, v in metrics_.items() if not np.all(np.isfinite(v))}
    if bad:
      return first_step + offset, ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
  return None


def _diverged(step: int, what: str, manager) -> TrainingDiverged:
  kept = checkpoints.all_steps(manager)
  last = f"step {kept[-1]}" if kept else "none (nothing was saved)"
  return TrainingDiverged(
      f"Training diverged at step {step}: {what}. Nothing was saved after it; the last good "
      f"checkpoint is {last}. Lower config.optim.learning_rate (or check the data) and rerun "
      "in this --workdir with --allow_config_change to continue from that checkpoint, or use a "
      "new --workdir.")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       allow_config_change: bool = False) -> dict[str, Any]:
  """Trains SegAN in workdir (resuming from its latest checkpoint) and returns final metrics.

  One run at a time holds workdir (workdir.WorkdirLock). A workdir whose checkpoints were trained
  with another config is refused unless allow_config_change. config.json is written only once
  every check has passed and the checkpoint (if any) is restored. A non-finite loss or state
  stops the run with TrainingDiverged before anything non-finite is saved. SIGTERM (single
  process) ends the run after the current step with its checkpoint saved; the result then names
  the signal under "stopped_by" and metrics.json is not written.
  """
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  lead = jax.process_index() == 0
  with contextlib.ExitStack() as stack:
    if lead:
      stack.enter_context(run_dir.WorkdirLock(workdir))
    return _train_locked(config, workdir, allow_config_change, lead, stack)


def _close_manager(manager) -> None:
  with checkpoints.quiet_orbax():
    manager.close()


def _train_locked(config: ml_collections.ConfigDict, workdir: str, allow_config_change: bool,
                  lead: bool, stack: contextlib.ExitStack) -> dict[str, Any]:
  t0 = time.time()
  manager = checkpoints.make_manager(workdir, config.train.keep_checkpoints)
  stack.callback(_close_manager, manager)
  has_checkpoints = bool(checkpoints.all_steps(manager))
  changes = run_dir.check_config(workdir, config, has_checkpoints, allow_config_change)

  train_arrays, val = load_data(config)
  steps_per_epoch = len(train_arrays) // config.train.batch_size
  if steps_per_epoch == 0:
    raise ConfigError(f"config.train.batch_size={config.train.batch_size} is larger than the "
                      f"training split ({len(train_arrays)} examples); lower it or add data.")
  logging.info("Devices: %d (%d processes), %s.", jax.device_count(), jax.process_count(),
               jax.devices()[0].platform)
  logging.info("Data: %d training pairs (%d steps per epoch), %d validation images, in %.1fs.",
               len(train_arrays), steps_per_epoch, len(val), time.time() - t0)

  mesh = sharding.make_mesh()
  try:
    sharding.check_batch_size(config.train.batch_size, mesh)
  except ValueError as e:
    raise ConfigError(str(e)) from e
  cfg = build_step_config(config, steps_per_epoch)
  # A resumed run restores into the states' shapes alone: initialising them would cost a
  # compilation of both networks' initialisers and the memory of a second copy.
  restored = (checkpoints.restore(manager, *abstract_states(config, cfg, mesh))
              if has_checkpoints else None)
  start_step = 0
  if restored is None:
    seg_state, critic_state = sharding.replicate(create_states(config, cfg), mesh)
    if config.train.get("init_from"):
      seg_state = start_from(seg_state, init_variables(config.train.init_from, config))
  else:
    seg_state, critic_state, _, start_step = restored
    logging.info("Resumed from %s at step %d.", manager.directory, start_step)
  if changes:
    logging.warning("Continuing step %d with a changed config (--allow_config_change): %s; the "
                    "previous config.json is kept in %s/.", start_step,
                    "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changes),
                    run_dir.HISTORY_DIR)
  if lead:
    run_dir.write_config(workdir, config, start_step, changes)

  jitted = steps.make_jitted_steps(cfg, mesh)
  writer = summaries.create_writer(workdir, just_logging=not lead, resume_step=start_step)
  stack.callback(writer.close)  # also when training stops with an error: its logs are kept
  if start_step == 0:
    writer.write_hparams({k: v if isinstance(v, (int, float, str, bool)) else str(v)
                         for k, v in run_dir.flatten_config(config.to_dict()).items()})

  num_steps = total_steps(config, steps_per_epoch)
  if config.train.get("num_epochs", 0):
    logging.info("Training for %d epochs = %d steps.", config.train.num_epochs, num_steps)
  if start_step >= num_steps:
    logging.info("The run is already at step %d, the run's length (%d steps): nothing to train; "
                 "scoring the restored model.", start_step, num_steps)
  batches = train_iterator(config, train_arrays, start_step)
  # Several processes would have to agree on the step to stop at; they keep SIGTERM's default.
  stop = stack.enter_context(graceful_stop.on_sigterm(enabled=jax.process_count() == 1))
  pending: list[dict[str, jax.Array]] = []
  pending_from = start_step + 1
  last_time, last_step = time.time(), start_step
  summary: dict[str, float] = {}

  def check_pending() -> list[dict[str, Any]]:
    nonlocal pending, pending_from
    host = jax.device_get(pending)
    bad = _first_nonfinite(host, pending_from)
    if bad is not None:
      raise _diverged(bad[0], f"non-finite losses ({bad[1]})", manager)
    pending, pending_from = [], pending_from + len(host)
    return host

  for step in range(start_step, num_steps):
    batch = sharding.global_batch(next(batches), mesh)
    if step == start_step:
      logging.info("Compiling the training step (the first step; minutes on a CPU)...")
    seg_state, critic_state, step_metrics = jitted.train_step(seg_state, critic_state, batch)
    pending.append(step_metrics)
    done = step + 1
    if step == start_step:  # steps/s and the ETA count from here, without compilation
      jax.block_until_ready(step_metrics)
      now = time.time()
      logging.info("Compiled and ran the first step in %.1fs.", now - last_time)
      last_time, last_step = now, done
    if done % config.train.log_every == 0 or done == num_steps:
      host = check_pending()
      # Losses are averaged over the interval; schedules (k, learning rates) are reported as now.
      means = {k: float(host[-1][k] if k == "k" or k.endswith("_lr") else
                        np.mean([m[k] for m in host])) for k in host[0]}
      now = time.time()
      timed = done - last_step
      rate = timed / max(now - last_time, 1e-9) if timed else None
      last_time, last_step = now, done
      means["epoch"] = done / steps_per_epoch
      if rate is not None:
        means["steps_per_sec"] = rate
      writer.write_scalars(done, means)
      losses = " ".join(f"{k}={v:.4f}" for k, v in means.items() if k.endswith("loss"))
      speed = (f"{rate:.2f} steps/s | ETA {_format_eta((num_steps - done) / rate)}"
               if rate is not None else "steps/s from the next line")
      logging.info("step %d/%d | %s | k=%.3f | %s", done, num_steps, speed, means["k"], losses)
    validate_now = done % config.train.eval_every == 0 or done == num_steps
    stopping = stop.requested and done < num_steps  # read once: SIGTERM may come mid-save
    save_now = done % config.train.checkpoint_every == 0 or done == num_steps or stopping
    if validate_now or save_now:
      check_pending()
      bad_parts = checkpoints.nonfinite_parts(segmentor=seg_state, critic=critic_state)
      if bad_parts:
        raise _diverged(done, f"{', '.join(bad_parts)} hold NaN or infinity", manager)
    if validate_now:
      summary, probs = validate(jitted, seg_state, val, config, mesh)
      writer.write_scalars(done, {f"val_{k}": v for k, v in summary.items()})
      logging.info("validation at step %d: jaccard=%.4f dice=%.4f accuracy=%.4f%s", done,
                   summary["jaccard"], summary["dice"], summary["accuracy"], _per_class(summary))
      if lead:
        _write_panels(workdir, writer, done, val, probs, config)
      last_time = time.time()  # validation does not count towards steps/s
    if save_now:
      checkpoints.save(manager, done, seg_state, critic_state,
                       {"val": summary, "steps_per_epoch": steps_per_epoch,
                        "k": float(schedules.last_update_k(cfg.k_schedule, done)),
                        "threshold": config.eval.threshold},
                       keep=config.train.keep_checkpoints)
      last_time = time.time()  # checkpointing and validation do not count towards steps/s.
    if stopping:
      logging.warning("%s received: stopped at step %d of %d with its checkpoint saved; rerun "
                      "the same command to resume.", stop.signal_name, done, num_steps)
      writer.flush()
      return {"step": done, "val": summary, "stopped_by": stop.signal_name,
              "wall_time_s": time.time() - t0}
  writer.flush()

  if not summary:  # Nothing left to train: score the restored model.
    summary, probs = validate(jitted, seg_state, val, config, mesh)
    if lead:
      _write_panels(workdir, writer, int(seg_state.step), val, probs, config)
  result = {"step": int(seg_state.step), "val": summary,
            "k": float(schedules.last_update_k(cfg.k_schedule, seg_state.step)),
            "threshold": config.eval.threshold,
            "wall_time_s": time.time() - t0}
  if lead:
    _write_json(os.path.join(workdir, "metrics.json"), result)
  return result


def _per_class(summary: dict[str, float]) -> str:
  """' | jaccard per class 0.81 0.42 ...' for several classes (the means are printed before)."""
  n = int(summary.get("num_classes", 1))
  if n == 1:
    return ""
  values = " ".join(f"{summary[f'jaccard_class{c}']:.4f}" for c in range(1, n + 1))
  return f" | jaccard per class {values}"


def _write_panels(workdir: str, writer, step: int, val: data_arrays.EvalSet, probs: np.ndarray,
                  config: ml_collections.ConfigDict) -> None:
  n = min(config.eval.num_panels, len(val))
  if n == 0:
    return
  grid = panels.save_panels(os.path.join(workdir, "panels", f"step_{step:07d}.png"),
                            val.images[:n], val.masks[:n],
                            probs[:n] if probs.shape[-1] > 1 else probs[:n, ..., 0],
                            config.eval.threshold)
  writer.write_images(step, {"val_panels": grid[None]})


def _write_json(path: str, payload: dict[str, Any]) -> None:
  run_dir.write_text(path, json.dumps(payload, indent=2, sort_keys=True))


