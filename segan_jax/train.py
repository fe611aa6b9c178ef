"""SegAN training: alternate a critic step and a segmentor step, validate, log and checkpoint."""

import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from segan_jax import checkpoints, panels, schedules, sharding, steps, summaries, validation
from segan_jax.config_validation import validate_config
from segan_jax.data import arrays as data_arrays
from segan_jax.data import sources
from segan_jax.models import Critic, Segmentor
from segan_jax.optional import tensorflow_available
from segan_jax.train_state import TrainState, create_train_state


def build_models(config: ml_collections.ConfigDict) -> tuple[Segmentor, Critic]:
  """The two networks as config.model describes them."""
  dtype = jnp.dtype(config.dtype)
  m = config.model
  return (Segmentor(width=m.width, num_classes=m.num_classes, dtype=dtype, conv_impl=m.conv_impl),
          Critic(width=m.width, global_conv=m.critic_global_conv, dtype=dtype,
                 conv_impl=m.conv_impl))


def build_step_config(config: ml_collections.ConfigDict, steps_per_epoch: int) -> steps.StepConfig:
  """Models, schedules and loss settings for the jitted steps."""
  segmentor, critic = build_models(config)
  o, s = config.optim, config.schedule
  lr = schedules.learning_rate_schedule(o.schedule, o.learning_rate, config.train.num_steps,
                                        steps_per_epoch, o.end_learning_rate, o.decay_epochs,
                                        o.decay_factor)
  k = schedules.k_schedule(steps_per_epoch, s.k_init, s.k_decay, s.k_decay_epochs, s.k_floor)
  weights = tuple(float(w) for w in config.loss.layer_weights) or None
  return steps.StepConfig(
      segmentor=segmentor, critic=critic, k_schedule=k, segmentor_lr=lr, critic_lr=lr,
      critic_clip=float(config.train.critic_clip),
      adversarial_weight=float(config.loss.adversarial_weight),
      dice_weight=float(config.loss.dice_weight), bce_weight=float(config.loss.bce_weight),
      layer_weights=weights, feature_reduction=config.loss.feature_reduction)


def create_states(config: ml_collections.ConfigDict,
                  cfg: steps.StepConfig) -> tuple[TrainState, TrainState]:
  """Freshly initialised (segmentor, critic) states from config.train.seed."""
  rng_s, rng_c = jax.random.split(jax.random.key(config.train.seed))
  side = config.data.image_size
  shape = (1, side, side, 3)
  tx = lambda: steps.make_optimizer(cfg.segmentor_lr, config.optim.b1, config.optim.b2)
  return (create_train_state(cfg.segmentor, rng_s, shape, tx()),
          create_train_state(cfg.critic, rng_c, shape, tx()))


def load_data(config: ml_collections.ConfigDict
              ) -> tuple[data_arrays.TrainArrays, data_arrays.EvalSet]:
  """Training arrays resized for cropping, and the validation set at the network's input size."""
  train_examples, val_examples = sources.load_splits(config)
  train = data_arrays.prepare_train(train_examples, config.data.resize_height,
                                    config.data.resize_width)
  val = data_arrays.prepare_eval(val_examples, config.data.image_size)
  return train, val


def train_iterator(config: ml_collections.ConfigDict, arrays: data_arrays.TrainArrays,
                   start_step: int):
  """This process's slices of the global batches from the configured loader, from start_step."""
  args = (arrays, config, start_step, jax.process_index(), jax.process_count())
  if config.data.loader == "tfdata":
    if tensorflow_available():
      from segan_jax.data import tf_pipeline
      return tf_pipeline.train_iterator(*args)
    logging.warning("TensorFlow is not installed: using the numpy input pipeline "
                    "(config.data.loader='numpy') instead of tf.data.")
  from segan_jax.data import numpy_pipeline
  return numpy_pipeline.train_iterator(*args)


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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains SegAN in workdir (resuming from its latest checkpoint) and returns final metrics."""
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    _write_text(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2))

  t0 = time.time()
  train_arrays, val = load_data(config)
  steps_per_epoch = len(train_arrays) // config.train.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"The training split has {len(train_arrays)} examples, fewer than "
                     f"config.train.batch_size={config.train.batch_size}.")
  logging.info("Devices: %d (%d processes), %s.", jax.device_count(), jax.process_count(),
               jax.devices()[0].platform)
  logging.info("Data: %d training pairs (%d steps per epoch), %d validation images, in %.1fs.",
               len(train_arrays), steps_per_epoch, len(val), time.time() - t0)

  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.train.batch_size, mesh)
  cfg = build_step_config(config, steps_per_epoch)
  seg_state, critic_state = sharding.replicate(create_states(config, cfg), mesh)
  manager = checkpoints.make_manager(workdir, config.train.keep_checkpoints)
  restored = checkpoints.restore(manager, seg_state, critic_state)
  start_step = 0
  if restored is not None:
    seg_state, critic_state, _, start_step = restored
    logging.info("Resumed from %s at step %d.", manager.directory, start_step)

  jitted = steps.make_jitted_steps(cfg, mesh)
  lead = jax.process_index() == 0
  writer = summaries.create_writer(workdir, just_logging=not lead)
  if start_step == 0:
    writer.write_hparams({k: v for k, v in _flatten(config.to_dict()).items()})

  num_steps = config.train.num_steps
  batches = train_iterator(config, train_arrays, start_step)
  pending: list[dict[str, jax.Array]] = []
  last_time, last_step = time.time(), start_step
  summary: dict[str, float] = {}
  for step in range(start_step, num_steps):
    batch = sharding.global_batch(next(batches), mesh)
    seg_state, critic_state, step_metrics = jitted.train_step(seg_state, critic_state, batch)
    pending.append(step_metrics)
    done = step + 1
    if done % config.train.log_every == 0 or done == num_steps:
      host = jax.device_get(pending)
      # Losses are averaged over the interval; schedules (k, learning rates) are reported as now.
      means = {k: float(host[-1][k] if k == "k" or k.endswith("_lr") else
                        np.mean([m[k] for m in host])) for k in host[0]}
      pending = []
      now = time.time()
      rate = (done - last_step) / max(now - last_time, 1e-9)
      last_time, last_step = now, done
      means["steps_per_sec"] = rate
      means["epoch"] = done / steps_per_epoch
      writer.write_scalars(done, means)
      losses = " ".join(f"{k}={v:.4f}" for k, v in means.items() if k.endswith("loss"))
      logging.info("step %d/%d | %.2f steps/s | ETA %s | k=%.3f | %s", done, num_steps, rate,
                   _format_eta((num_steps - done) / rate), means["k"], losses)
    if done % config.train.eval_every == 0 or done == num_steps:
      summary, probs = validate(jitted, seg_state, val, config, mesh)
      writer.write_scalars(done, {f"val_{k}": v for k, v in summary.items()})
      logging.info("validation at step %d: jaccard=%.4f dice=%.4f accuracy=%.4f", done,
                   summary["jaccard"], summary["dice"], summary["accuracy"])
      if lead:
        _write_panels(workdir, writer, done, val, probs, config)
    if done % config.train.checkpoint_every == 0 or done == num_steps:
      checkpoints.save(manager, done, seg_state, critic_state,
                       {"val": summary, "steps_per_epoch": steps_per_epoch,
                        "k": float(cfg.k_schedule(done)), "threshold": config.eval.threshold})
      last_time = time.time()  # checkpointing and validation do not count towards steps/s.
  writer.flush()

  if not summary:  # Nothing left to train: score the restored model.
    summary, probs = validate(jitted, seg_state, val, config, mesh)
    if lead:
      _write_panels(workdir, writer, num_steps, val, probs, config)
  result = {"step": int(seg_state.step), "val": summary,
            "k": float(cfg.k_schedule(seg_state.step)), "threshold": config.eval.threshold,
            "wall_time_s": time.time() - t0}
  if lead:
    _write_json(os.path.join(workdir, "metrics.json"), result)
  with checkpoints.quiet_orbax():
    manager.close()
  writer.close()
  return result


def _write_panels(workdir: str, writer, step: int, val: data_arrays.EvalSet, probs: np.ndarray,
                  config: ml_collections.ConfigDict) -> None:
  n = min(config.eval.num_panels, len(val))
  if n == 0:
    return
  grid = panels.save_panels(os.path.join(workdir, "panels", f"step_{step:07d}.png"),
                            val.images[:n], val.masks[:n], probs[:n, ..., 0],
                            config.eval.threshold)
  writer.write_images(step, {"val_panels": grid[None]})


def _write_text(path: str, text: str) -> None:
  """Writes atomically: a reader sees the old file or the new one, never half of one."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def _write_json(path: str, payload: dict[str, Any]) -> None:
  _write_text(path, json.dumps(payload, indent=2, sort_keys=True))


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
  return out
