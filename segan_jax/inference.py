"""Inference from trained runs: load a workdir, predict probability maps in batches, ensembles, TTA.

A run (a training workdir) is loaded from its `config.json` and one orbax checkpoint (the latest, a
chosen step, or the step that `--search` stored in `selection.json`). Its k and threshold resolve in
this order: explicit arguments, then `selection.json` (written by `segan_jax.evaluate --search`,
chosen on validation data), then the checkpoint's stored facts (the k of the schedule at that step
and config.eval.threshold).

`Predictor` runs one or several loaded models (an ensemble) on uint8 images at the network size:
every call is padded to one batch shape, so each architecture compiles once. It returns the
segmentor's logits per model and per test-time view (`logit_views`); `combine` turns them into
probability maps, sigmoid(z / k) averaged over views and models. Keeping logits rather than
probabilities lets the k search reuse one forward pass for every k.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from segan_jax import checkpoints, schedules
from segan_jax.errors import UserError
from segan_jax.data.arrays import normalize
from segan_jax.models import segment_inference

SELECTION_FILE = "selection.json"
TTA_MODES = ("none", "flips")
# Test-time views as (flip rows, flip columns); each is its own inverse.
_VIEWS = {"none": ((False, False),),
          "flips": ((False, False), (False, True), (True, False), (True, True))}


class RunError(UserError, ValueError):
  """A workdir is not a usable trained run (missing files, unknown step, incompatible runs)."""


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  """One trained segmentor ready for inference, with the k and threshold it will be used with."""
  workdir: str
  config: ml_collections.ConfigDict
  segmentor: Any  # flax.linen Module (segan_jax.models.Segmentor)
  variables: dict[str, Any]  # {"params", "batch_stats"}
  step: int
  k: float
  threshold: float
  sources: dict[str, str]  # where step, k and threshold came from
  checkpoint_extras: dict[str, Any]
  weights: str = "raw"  # "ema": the moving average of the weights (train.ema_decay); "raw"

  @property
  def image_size(self) -> int:
    return int(self.config.data.image_size)

  @property
  def num_classes(self) -> int:
    return int(self.config.model.num_classes)

  def describe(self) -> dict[str, Any]:
    """A JSON-friendly description of what was loaded."""
    return {"workdir": os.path.abspath(self.workdir), "step": self.step, "k": self.k,
            "threshold": self.threshold, "sources": dict(self.sources),
            "width": int(self.config.model.width), "image_size": self.image_size,
            "weights": self.weights}


def _fill_missing(target: dict, defaults: dict) -> dict:
  for key, value in defaults.items():
    if key not in target:
      target[key] = value
    elif isinstance(value, dict) and isinstance(target[key], dict):
      _fill_missing(target[key], value)
  return target


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's config.json as a ConfigDict; fields it lacks (older runs) take the default values."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise RunError(f"{workdir!r} is not a training run: {path} does not exist. Pass the --workdir "
                   "that `python -m segan_jax.main` trained into.")
  with open(path) as f:
    try:
      loaded = json.load(f)
    except json.JSONDecodeError as e:
      raise RunError(f"{path} is not valid JSON: {e}") from e
  return config_from_dict(loaded)


def config_from_dict(loaded: dict[str, Any]) -> ml_collections.ConfigDict:
  """A stored config (config.json, a pretrained model's card) as a ConfigDict; the fields it lacks
  take the default values."""
  from segan_jax.configs import default
  return ml_collections.ConfigDict(_fill_missing(dict(loaded), default.get_config().to_dict()))


def _manager(workdir: str):
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    raise RunError(f"{workdir!r} has no checkpoints ({ckpt_dir} does not exist).")
  return checkpoints.make_manager(workdir, None)


def available_steps(workdir: str) -> list[int]:
  """The checkpointed steps of a run whose folders are complete, ascending."""
  manager = _manager(workdir)
  try:
    return checkpoints.intact_steps(manager)
  finally:
    with checkpoints.quiet_orbax():
      manager.close()


def read_selection(workdir: str) -> dict[str, Any] | None:
  """The run's selection.json (chosen step, k, threshold), or None if `--search` never ran."""
  path = os.path.join(workdir, SELECTION_FILE)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      selection = json.load(f)
  except (OSError, ValueError) as e:
    raise RunError(f"{path} cannot be read ({e}); rerun `segan_jax.evaluate --search`, or pass "
                   "--nouse_selection.") from e
  if not isinstance(selection, dict):
    raise RunError(f"{path} is not a selection written by `segan_jax.evaluate --search`.")
  return selection


def write_selection(workdir: str, selection: dict[str, Any]) -> str:
  """Writes selection.json atomically; returns its path."""
  path = os.path.join(workdir, SELECTION_FILE)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(selection, f, indent=2, sort_keys=True)
  os.replace(tmp, path)
  return path


def load_model(workdir: str, step: int | None = None, k: float | None = None,
               threshold: float | None = None, use_selection: bool = True,
               conv_impl: str = "xla", use_ema: bool = True) -> LoadedModel:
  """Loads a run's segmentor at `step` (default: selection.json's step, else the latest).

  k and threshold default to selection.json's values, else to the checkpoint's stored ones.
  `conv_impl` replaces config.model.conv_impl (inference needs no custom gradient kernels; "xla"
  also keeps the function exportable); the parameters do not depend on it. A run trained with
  train.ema_decay > 0 is loaded with the moving average of its weights unless use_ema=False
  (LoadedModel.weights says which: "ema" or "raw").
  """
  from segan_jax import train  # deferred: train imports clu and TensorBoard writers

  config = load_config(workdir)
  config.model.conv_impl = conv_impl
  selection = read_selection(workdir) if use_selection else None
  sources = {}
  manager = _manager(workdir)
  try:
    steps = checkpoints.intact_steps(manager)
    if not steps:
      raise RunError(f"{workdir!r} has no complete checkpoint yet.")
    if step is not None:
      sources["step"] = "argument"
    elif selection is not None and selection.get("step") is not None:
      step, sources["step"] = selection["step"], "selection.json"
      if step not in steps:
        raise RunError(
            f"{os.path.join(workdir, SELECTION_FILE)} chose step {step}, which {workdir!r} no "
            f"longer holds (complete checkpoints: {steps}). Rerun `segan_jax.evaluate --search`, "
            "pass --step, or --nouse_selection for the latest checkpoint.")
    else:
      step, sources["step"] = steps[-1], "latest checkpoint"
    if step not in steps:
      raise RunError(f"{workdir!r} has no complete checkpoint at step {step}; available steps: "
                     f"{steps}.")

    cfg = train.build_step_config(config, steps_per_epoch=1)  # the schedule does not matter here
    abstract_seg, _ = train.abstract_states(config, cfg)
    try:
      with checkpoints.quiet_orbax():
        restored = manager.restore(step, args=ocp.args.Composite(
            segmentor=ocp.args.StandardRestore(abstract_seg), extra=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise many kinds
      raise RunError(f"Cannot restore {workdir}/checkpoints/{step} into the model of its "
                     f"config.json ({' '.join(str(e).split())[:300]}). If the checkpoint is "
                     "damaged, choose another with --step.") from e
  finally:
    with checkpoints.quiet_orbax():
      manager.close()
  bad = checkpoints.nonfinite_parts(segmentor=restored["segmentor"])
  bad = [b for b in bad if not b.endswith("opt_state")]  # inference needs params and statistics
  if bad:
    raise RunError(f"{workdir}/checkpoints/{step} holds NaN or infinity in {', '.join(bad)} (a "
                   "diverged or damaged checkpoint); choose another with --step.")

  extras = dict(restored["extra"] or {})
  state = restored["segmentor"]
  selection_applies = selection is not None and selection.get("step") == step

  def resolve(name: str, explicit, fallback):
    if explicit is not None:
      sources[name] = "argument"
      return float(explicit)
    if selection_applies and selection.get(name) is not None:
      sources[name] = "selection.json"
      return float(selection[name])
    if extras.get(name) is not None:
      sources[name] = "checkpoint"
      return float(extras[name])
    sources[name] = "config"
    return float(fallback)

  if k is None and extras.get("k") is None and not (selection_applies and selection.get("k")):
    # Older checkpoints without the fact: the schedule's k at this step.
    cfg = train.build_step_config(config, int(extras.get("steps_per_epoch") or 1))
  k_value = resolve("k", k, schedules.last_update_k(cfg.k_schedule, step))
  t_value = resolve("threshold", threshold, config.eval.threshold)
  check_k_threshold(k_value, t_value, sources)
  segmentor, _ = train.build_models(config)
  if use_ema and getattr(state, "ema", None) is not None:
    variables, weights = state.ema, "ema"
  else:
    variables, weights = {"params": state.params, "batch_stats": state.batch_stats}, "raw"
  if not all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(variables)):
    raise RunError(f"{workdir}/checkpoints/{step} holds NaN or infinity in its {weights} weights "
                   "(a diverged or damaged checkpoint); choose another with --step.")
  return LoadedModel(workdir=workdir, config=config, segmentor=segmentor, variables=variables,
                     step=int(step), k=k_value, threshold=t_value, sources=sources,
                     checkpoint_extras=extras, weights=weights)


def check_k_threshold(k: float, threshold: float, sources: dict[str, str] | None = None) -> None:
  """RunError unless 0 < k < inf and 0 < threshold < 1 (NaN fails both): a k or threshold outside
  them gives empty or full masks, never a result."""
  where = lambda name: f" (from {sources[name]})" if sources and name in sources else ""
  if not 0 < k < float("inf"):
    raise RunError(f"k={k} is not a usable k{where('k')}: it must be positive and finite (the "
                   "adaptive logistic is sigmoid(z / k)); give --k > 0, or leave it out.")
  if not 0 < threshold < 1:
    raise RunError(f"threshold={threshold} is not a usable threshold{where('threshold')}: "
                   "probabilities are compared with it, so it must lie strictly between 0 and 1; "
                   "give --threshold in (0, 1), or leave it out.")


def load_models(workdirs: Sequence[str], step: int | None = None, k: float | None = None,
                threshold: float | None = None, use_selection: bool = True,
                use_ema: bool = True) -> list[LoadedModel]:
  """Loads every run of an ensemble; they must share the network input size and label maps."""
  if not workdirs:
    raise RunError("No --workdir given.")
  if step is not None and len(workdirs) > 1:
    raise RunError("A checkpoint step can only be chosen for a single run, not an ensemble.")
  models = [load_model(w, step, k, threshold, use_selection, use_ema=use_ema) for w in workdirs]
  for m in models[1:]:
    if (m.image_size, m.num_classes) != (models[0].image_size, models[0].num_classes):
      raise RunError(
          f"Runs of an ensemble must share data.image_size and model.num_classes: {m.workdir} has "
          f"{m.image_size}/{m.num_classes}, {models[0].workdir} has "
          f"{models[0].image_size}/{models[0].num_classes}.")
  return models


def tta_mode(tta: str | None, config: ml_collections.ConfigDict) -> str:
  """`tta`, or where it is None the run's default: "flips" if config.eval.tta, else "none"."""
  if tta is None:
    return "flips" if config.eval.tta else "none"
  return tta


def tta_from_flag(flag: bool | None) -> str | None:
  """A command line's --tta/--notta as a TTA mode; None (neither given) leaves it to the run."""
  return None if flag is None else ("flips" if flag else "none")


def view_transforms(tta: str) -> tuple[tuple[bool, bool], ...]:
  """The (flip rows, flip columns) views of a TTA mode ("none" or "flips")."""
  if tta not in _VIEWS:
    raise ValueError(f"Unknown TTA mode {tta!r}; choose one of {TTA_MODES}.")
  return _VIEWS[tta]


def _flip(x: jax.Array, rows: bool, cols: bool) -> jax.Array:
  if rows:
    x = x[:, ::-1]
  if cols:
    x = x[:, :, ::-1]
  return x


def forward_views(segmentor, variables: dict[str, Any], images: jax.Array,
                  tta: str = "none", chunks: int | None = None) -> jax.Array:
  """Logits (V, B, S, S, N) of normalised images (B, S, S, 3) seen through each TTA view.

  All views go through the network as one batch (BatchNorm uses running statistics, so the batch
  composition does not matter), in `chunks` pieces (models.segment_inference), and each view's
  logits are flipped back to the input's frame.
  """
  views = view_transforms(tta)
  batch = jnp.concatenate([_flip(images, *v) for v in views], axis=0)
  logits = segment_inference(segmentor, variables, batch, chunks)
  logits = logits.reshape(len(views), images.shape[0], *logits.shape[1:])
  return jnp.stack([_flip(logits[i], *v) for i, v in enumerate(views)])


@functools.lru_cache(maxsize=None)
def _jitted_forward(segmentor, tta: str):
  return jax.jit(functools.partial(forward_views, segmentor, tta=tta))


def sigmoid(x: np.ndarray) -> np.ndarray:
  """Overflow-free logistic function in numpy (0.5 * (1 + tanh(x / 2)))."""
  return (0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, np.float32)))).astype(np.float32)


def combine(logit_views: Sequence[np.ndarray], ks: Sequence[float]) -> np.ndarray:
  """Probability maps averaged over views, then over models: sigmoid(z / k) per model and view.

  logit_views: one (V, M, S, S, N) array per model; ks: one k per model. Returns (M, S, S, N).
  Each model's maps are first averaged over its V views (TTA), then the models are averaged, so an
  ensemble of one run with itself gives exactly that run's maps.
  """
  if len(logit_views) != len(ks) or not logit_views:
    raise ValueError("combine needs one k per model and at least one model.")
  per_model = [np.mean(sigmoid(views / np.float32(k)), axis=0) for views, k in zip(logit_views, ks)]
  return per_model[0] if len(per_model) == 1 else np.mean(np.stack(per_model), axis=0)


class Predictor:
  """Batched probability maps from one model or an ensemble, with optional test-time flips."""

  def __init__(self, models: Sequence[LoadedModel], batch_size: int = 16,
               tta: str | None = None):
    """tta: "none", "flips", or None for the first run's config.eval.tta (as the tools)."""
    if not models:
      raise ValueError("Predictor needs at least one model.")
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    tta = tta_mode(tta, models[0].config)
    view_transforms(tta)
    self.models = list(models)
    self.batch_size = int(batch_size)
    self.tta = tta
    self.image_size = self.models[0].image_size
    self.num_classes = self.models[0].num_classes

  @property
  def ks(self) -> list[float]:
    return [m.k for m in self.models]

  @property
  def threshold(self) -> float:
    """The ensemble's threshold: the mean of its members' thresholds."""
    return float(np.mean([m.threshold for m in self.models]))

  def _check(self, images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    s = self.image_size
    if images.ndim != 4 or images.shape[1:] != (s, s, 3):
      raise ValueError(f"Expected images of shape (M, {s}, {s}, 3) at the network size, got "
                       f"{images.shape}.")
    return images

  def logit_views(self, images: np.ndarray) -> list[np.ndarray]:
    """Per model, the logits (V, M, S, S, N) of uint8 images (M, S, S, 3) under each TTA view."""
    images = self._check(images)
    outputs = []
    for model in self.models:
      fn = _jitted_forward(model.segmentor, self.tta)
      chunks = []
      for start in range(0, len(images), self.batch_size):
        batch = normalize(images[start:start + self.batch_size])
        n = len(batch)
        if n < self.batch_size:  # pad, so one shape compiles once
          batch = np.concatenate([batch, np.zeros((self.batch_size - n, *batch.shape[1:]),
                                                  np.float32)])
        chunks.append(np.asarray(jax.device_get(fn(model.variables, batch)))[:, :n])
      if chunks:
        outputs.append(np.concatenate(chunks, axis=1))
      else:
        v = len(view_transforms(self.tta))
        outputs.append(np.zeros((v, 0, self.image_size, self.image_size, self.num_classes),
                                np.float32))
    return outputs

  def probabilities(self, images: np.ndarray, ks: Sequence[float] | None = None) -> np.ndarray:
    """(M, S, S, N) probability maps of uint8 images (M, S, S, 3), averaged over views, models."""
    return combine(self.logit_views(images), self.ks if ks is None else ks)
