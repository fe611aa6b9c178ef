"""Start-up checks of a config: every invalid value fails early with the field's name."""

import math
import os

import ml_collections

from segan_jax.data.folder import NONBINARY_MASKS, ON_BAD_PAIRS, SIZE_CHECKS
from segan_jax.data.synthetic import CLASS_NAMES
from segan_jax.errors import UserError
from segan_jax.initializers import INITS
from segan_jax.losses import DICE_FORMS, FEATURE_REDUCTIONS
from segan_jax.schedules import DECAYING_SCHEDULES, LR_SCHEDULES
from segan_jax.steps import CRITIC_CONSTRAINTS

NUM_CRITIC_FEATURES = 7  # masked input + c1..c6
DTYPES = ("float32", "bfloat16")
CONV_IMPLS = ("auto", "xla", "cpu")
SOURCES = ("synthetic", "folder", "tfds")
LOADERS = ("device", "host")
REMOVED_LOADERS = ("tfdata", "numpy")  # former loaders, refused with a pointer to LOADERS
MAX_CLASSES = 254  # index masks are uint8 (0 background), and 0/255 must stay recognisable


class ConfigError(UserError, ValueError):
  """A config field has an invalid value."""


def _require(ok: bool, field: str, message: str, value) -> None:
  if not ok:
    raise ConfigError(f"config.{field} {message} (got {value!r}).")


def _positive_int(config, field: str, minimum: int = 1) -> None:
  value = _get(config, field)
  _require(isinstance(value, int) and not isinstance(value, bool) and value >= minimum, field,
           f"must be an integer >= {minimum}", value)


def _number(config, field: str, lo: float, hi: float, lo_open=False, hi_open=False) -> None:
  value = _get(config, field)
  ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
  ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
  interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open or math.isinf(hi) else ']'}"
  _require(ok, field, f"must be a finite number in {interval}", value)


def _choice(config, field: str, choices) -> None:
  value = _get(config, field)
  _require(value in choices, field, f"must be one of {choices}", value)


def _get(config, field: str):
  node = config
  for part in field.split("."):
    if part not in node:
      raise ConfigError(f"config.{field} is missing; start from segan_jax/configs/default.py.")
    node = node[part]
  return node


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first invalid field of `config`."""
  inf = float("inf")
  _choice(config, "dtype", DTYPES)
  _positive_int(config, "model.width")
  _positive_int(config, "model.num_classes")
  _require(isinstance(_get(config, "model.critic_global_conv"), bool), "model.critic_global_conv",
           "must be True or False", config.model.critic_global_conv)
  _choice(config, "model.conv_impl", CONV_IMPLS)
  _require(isinstance(_get(config, "model.residual_batchnorm"), bool), "model.residual_batchnorm",
           "must be True or False", config.model.residual_batchnorm)
  _choice(config, "model.init", INITS)

  _choice(config, "data.source", SOURCES)
  _require(isinstance(_get(config, "eval.postprocess"), bool), "eval.postprocess",
           "must be True or False", config.eval.postprocess)
  _require(isinstance(_get(config, "eval.tta"), bool), "eval.tta", "must be True or False",
           config.eval.tta)
  _require(not (config.eval.postprocess and config.model.num_classes > 1), "eval.postprocess",
           "keeps one lesion's largest component, so it needs model.num_classes=1",
           config.eval.postprocess)
  _require(config.model.num_classes <= MAX_CLASSES, "model.num_classes",
           f"must be at most {MAX_CLASSES} (index masks are 8-bit)", config.model.num_classes)
  if config.data.source == "synthetic":
    _require(config.model.num_classes <= len(CLASS_NAMES), "model.num_classes",
             f"must be 1..{len(CLASS_NAMES)} with the synthetic data, whose classes are "
             f"{', '.join(CLASS_NAMES)}", config.model.num_classes)
  if config.data.source == "tfds":
    _require(config.model.num_classes == 1, "model.num_classes",
             "must be 1 with data.source='tfds' (ISIC 2017 lesion masks); several classes need "
             "index masks from data.source='folder'", config.model.num_classes)
  _require(_get(config, "data.loader") not in REMOVED_LOADERS, "data.loader",
           "names a removed loader: every input path now runs the same JAX augmentation; use "
           "'device' (default) or 'host'", config.data.loader)
  _choice(config, "data.loader", LOADERS)
  if config.data.source == "folder":
    _require(bool(config.data.dir), "data.dir", "must name the data folder when "
             "data.source='folder' (the official ISIC 2017 folders or zips, or any folder of "
             "image/mask pairs; e.g. --config.data.dir=/data/isic2017)", config.data.dir)
    _require(os.path.isdir(config.data.dir), "data.dir", "must be an existing folder of "
             "image/mask pairs", config.data.dir)
  for field in ("dir", "manual_dir", "val_ids_file", "mask_suffix"):
    _require(isinstance(_get(config, f"data.{field}"), str), f"data.{field}", "must be a string",
             config.data[field])
  if config.data.source == "tfds" and config.data.manual_dir:
    _require(os.path.isdir(config.data.manual_dir), "data.manual_dir",
             "must be an existing folder (the official zips, their folders, or image/mask pairs)",
             config.data.manual_dir)
  _require(isinstance(_get(config, "data.download"), bool), "data.download",
           "must be True or False", config.data.download)
  _choice(config, "data.on_bad_pairs", ON_BAD_PAIRS)
  _choice(config, "data.size_check", SIZE_CHECKS)
  _choice(config, "data.nonbinary_masks", NONBINARY_MASKS)
  _positive_int(config, "data.decode_workers", minimum=0)
  _positive_int(config, "data.train_size")
  _positive_int(config, "data.val_size")
  _positive_int(config, "data.train_limit", minimum=0)
  _number(config, "data.val_fraction", 0.0, 1.0, lo_open=True, hi_open=True)
  _positive_int(config, "data.image_size")
  _require(config.data.image_size % 128 == 0, "data.image_size",
           "must be a multiple of 128 (the segmentor's bottleneck is 1x1 at 128x128)",
           config.data.image_size)
  for side in ("resize_height", "resize_width"):
    _positive_int(config, f"data.{side}")
    _require(config.data[side] >= config.data.image_size, f"data.{side}",
             f"must be at least data.image_size={config.data.image_size} to crop from",
             config.data[side])
  for flag in ("hflip", "vflip", "rot90"):
    value = _get(config, f"data.{flag}")
    _require(isinstance(value, bool), f"data.{flag}", "must be True or False", value)
  for jitter in ("brightness", "contrast", "saturation"):
    _number(config, f"data.{jitter}", 0.0, 1.0)
  _number(config, "data.hue", 0.0, 0.5)
  _number(config, "data.whole_image_prob", 0.0, 1.0)

  _number(config, "loss.adversarial_weight", 0.0, inf)
  weights = tuple(_get(config, "loss.layer_weights") or ())
  _require(len(weights) in (0, NUM_CRITIC_FEATURES) and all(
      isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
      for w in weights), "loss.layer_weights",
           f"must be empty (all 1) or {NUM_CRITIC_FEATURES} finite non-negative numbers, one per critic "
           "feature map (masked input, c1..c6)", weights)
  _choice(config, "loss.feature_reduction", FEATURE_REDUCTIONS)
  _number(config, "loss.dice_weight", 0.0, inf)
  _choice(config, "loss.dice_form", DICE_FORMS)
  _require(not (config.loss.dice_form == "authors" and config.loss.dice_weight > 0 and
                int(config.model.num_classes) > 1), "loss.dice_form",
           "'authors' has no smoothing: a class absent from an image gives its map a constant term "
           "with no gradient, so false positives of absent classes go unpunished; with "
           "model.num_classes > 1 use 'soft'", config.loss.dice_form)
  _number(config, "loss.bce_weight", 0.0, inf)
  _require(config.loss.adversarial_weight + config.loss.dice_weight + config.loss.bce_weight > 0,
           "loss", "needs at least one of adversarial_weight, dice_weight, bce_weight > 0",
           dict(config.loss))

  _number(config, "optim.learning_rate", 0.0, inf, lo_open=True)
  _choice(config, "optim.schedule", LR_SCHEDULES)
  _number(config, "optim.end_learning_rate", 0.0, inf)
  _positive_int(config, "optim.decay_epochs")
  _number(config, "optim.decay_factor", 0.0, 1.0, lo_open=True)
  _number(config, "optim.b1", 0.0, 1.0, hi_open=True)
  _number(config, "optim.b2", 0.0, 1.0, hi_open=True)
  reset = _get(config, "optim.reset_at_decay")
  _require(isinstance(reset, bool), "optim.reset_at_decay", "must be True or False", reset)
  _require(not reset or config.optim.schedule in DECAYING_SCHEDULES, "optim.reset_at_decay",
           f"needs optim.schedule in {DECAYING_SCHEDULES}, which decay the rate at fixed steps; "
           f"optim.schedule is {config.optim.schedule!r}", reset)

  _number(config, "schedule.k_init", 0.0, inf, lo_open=True)
  _number(config, "schedule.k_decay", 0.0, 1.0, lo_open=True)
  _positive_int(config, "schedule.k_decay_epochs")
  _number(config, "schedule.k_floor", 0.0, inf, lo_open=True)

  _positive_int(config, "train.batch_size")
  _positive_int(config, "train.num_steps", minimum=0)
  _positive_int(config, "train.num_epochs", minimum=0)
  steps_, epochs_ = config.train.num_steps, config.train.num_epochs
  _require((steps_ > 0) != (epochs_ > 0), "train.num_steps",
           "and config.train.num_epochs give the training length: set exactly one of them > 0 "
           "and the other to 0 (e.g. --config.train.num_steps=1000 --config.train.num_epochs=0)",
           {"num_steps": steps_, "num_epochs": epochs_})
  _positive_int(config, "train.seed", minimum=0)
  _number(config, "train.critic_clip", 0.0, inf, lo_open=True)
  _choice(config, "train.critic_constraint", CRITIC_CONSTRAINTS)
  _positive_int(config, "train.critic_steps")
  _require(isinstance(config.train.get("init_from", ""), str), "train.init_from",
           "must be a pretrained model's name, a weights file or a run's workdir (a string)",
           config.train.get("init_from"))
  _number(config, "train.ema_decay", 0.0, 1.0, hi_open=True)
  for every in ("log_every", "eval_every", "checkpoint_every"):
    _positive_int(config, f"train.{every}")
  _positive_int(config, "train.keep_checkpoints")

  _number(config, "eval.threshold", 0.0, 1.0, lo_open=True, hi_open=True)
  _positive_int(config, "eval.batch_size")
  _positive_int(config, "eval.num_panels", minimum=0)
