"""Exports a trained segmentor (or an ensemble) as a TensorFlow SavedModel for serving.

  python -m segan_jax.export --workdir=RUN [--workdir=RUN2 ...] --output=DIR [--tta]
      [--platforms=cpu,cuda]
  python -m segan_jax.export --model=NAME_OR_PATH --output=DIR   (a pretrained model)
  (or the console script `segan-export` with the same flags)

The SavedModel needs only TensorFlow (`tf.saved_model.load(DIR)`; TF Serving works too): the JAX
function is converted with `jax.experimental.jax2tf` (native serialization: the StableHLO of the
JAX computation runs inside TF through the XlaCallModule op, so it reproduces the JAX
probabilities up to float32 round-off; the parameters are TF variables). The batch size is
symbolic. Signatures, S being the network side (config.data.image_size):

  serving_default(images: uint8 [B, S, S, 3] RGB)
      -> probabilities float32 [B, S, S, N] (sigmoid(logits / k) at the run's final k, averaged
         over the flips with --tta and over the runs of an ensemble), masks uint8 [B, S, S, N]
         (255 where probabilities > threshold, else 0)
  predict_normalized(images: float32 [B, S, S, 3], ImageNet-normalised) -> the same outputs
  segment_image(image: uint8 [H, W, 3], any size)
      -> probabilities float32 [H, W, N] and masks uint8 [H, W, N] at the image's size (TF
         bilinear resizes both ways; close to, not bit-identical with, segan_jax.predict's PIL).

Several classes (model.num_classes N > 1): every signature also returns labels uint8 [B, S, S]
(segment_image: [H, W]), the index mask: 1 + the most probable map where its probability exceeds
the threshold, else 0 (ties to the lower class), as segan_jax.predict writes it.

k, threshold, image size and normalisation are stored as variables of the module (`k`,
`threshold`, `image_size`, `mean`, `std`) and in DIR/segan_export.json.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from segan_jax import checkpoints, inference
from segan_jax.activations import adaptive_logistic
from segan_jax.data.arrays import IMAGENET_MEAN, IMAGENET_STD
from segan_jax.errors import UserError

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def probabilities_fn(models: Sequence[inference.LoadedModel], tta: str = "none"):
  """A pure JAX function (variables_list, normalised images [B,S,S,3]) -> probabilities [B,S,S,N].

  The maps are averaged over TTA views, then over models, as inference.combine does.
  """
  segmentors = [m.segmentor for m in models]
  ks = [float(m.k) for m in models]

  def fn(variables_list, images):
    per_model = []
    for segmentor, variables, k in zip(segmentors, variables_list, ks):
      # One piece: the batch size is symbolic, and TensorFlow serving schedules its own threads.
      logits = inference.forward_views(segmentor, variables, images, tta, chunks=1)
      per_model.append(jnp.mean(adaptive_logistic(logits, k), axis=0))
    return per_model[0] if len(per_model) == 1 else jnp.mean(jnp.stack(per_model), axis=0)

  return fn


def normalize_uint8(images: jax.Array) -> jax.Array:
  """uint8 RGB -> ImageNet-normalised float32 (as segan_jax.data.arrays.normalize)."""
  scaled = images.astype(jnp.float32) / 255.0
  return (scaled - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


def build_module(models: Sequence[inference.LoadedModel], tta: str = "none",
                 platforms: Sequence[str] = ("cpu",)):
  """A tf.Module with the three serving functions (see the module docstring)."""
  import tensorflow as tf
  from jax.experimental import jax2tf

  inference.view_transforms(tta)
  side = models[0].image_size
  num_classes = models[0].num_classes
  threshold = float(np.mean([m.threshold for m in models]))
  fn = probabilities_fn(models, tta)
  poly = [None, f"(b, {side}, {side}, 3)"]
  convert = functools.partial(jax2tf.convert, polymorphic_shapes=poly, with_gradient=False,
                              native_serialization_platforms=tuple(platforms))
  tf_normalized = convert(fn)
  tf_uint8 = convert(lambda v, x: fn(v, normalize_uint8(x)))

  module = tf.Module()
  module.model_variables = tf.nest.map_structure(
      lambda a: tf.Variable(np.asarray(a), trainable=False),
      [jax.device_get(m.variables) for m in models])
  module.k = tf.Variable(np.asarray([m.k for m in models], np.float32), trainable=False)
  module.threshold = tf.Variable(np.float32(threshold), trainable=False)
  module.image_size = tf.Variable(np.int32(side), trainable=False)
  module.mean = tf.Variable(IMAGENET_MEAN, trainable=False)
  module.std = tf.Variable(IMAGENET_STD, trainable=False)

  def outputs(probs):
    masks = tf.cast(probs > module.threshold, tf.uint8) * tf.constant(255, tf.uint8)
    result = {"probabilities": probs, "masks": masks}
    if num_classes > 1:  # the index mask (metrics.label_prediction)
      best = tf.argmax(probs, axis=-1, output_type=tf.int32)
      above = tf.reduce_max(probs, axis=-1) > module.threshold
      result["labels"] = tf.cast(tf.where(above, best + 1, 0), tf.uint8)
    return result

  @tf.function(input_signature=[tf.TensorSpec([None, side, side, 3], tf.uint8, name="images")],
               autograph=False)
  def serve_uint8(images):
    return outputs(tf_uint8(module.model_variables, images))

  @tf.function(input_signature=[tf.TensorSpec([None, side, side, 3], tf.float32, name="images")],
               autograph=False)
  def serve_normalized(images):
    return outputs(tf_normalized(module.model_variables, images))

  @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name="image")],
               autograph=False)
  def segment_image(image):
    size = tf.shape(image)[:2]
    small = tf.image.resize(tf.cast(image, tf.float32)[None], [side, side], antialias=True)
    small = tf.cast(tf.clip_by_value(tf.round(small), 0, 255), tf.uint8)
    probs = tf_uint8(module.model_variables, small)
    full = tf.clip_by_value(tf.image.resize(probs, size, method="bilinear")[0], 0.0, 1.0)
    return outputs(full)

  module.serve_uint8 = serve_uint8
  module.serve_normalized = serve_normalized
  module.segment_image = segment_image
  module.signatures_ = {"serving_default": serve_uint8, "predict_normalized": serve_normalized,
                        "segment_image": segment_image}
  module.num_classes = num_classes
  return module


class ExportError(UserError):
  """The export cannot be written where asked (an existing folder, an unknown platform)."""


def check_output(output: str, overwrite: bool) -> None:
  """Refuses a non-empty `output` unless it is an earlier export and `overwrite` is set."""
  if os.path.exists(output) and not os.path.isdir(output):
    raise ExportError(f"--output={output} is a file, not a folder.")
  if not os.path.isdir(output) or not os.listdir(output):
    return
  if not os.path.isfile(os.path.join(output, "segan_export.json")):
    raise ExportError(f"--output={output} is a non-empty folder that is not an earlier export; "
                      "choose a new or empty folder (it is never overwritten).")
  if not overwrite:
    raise ExportError(f"--output={output} holds an earlier export; pass --overwrite to replace "
                      "it, or choose another folder.")


def export(models: Sequence[inference.LoadedModel], output: str, tta: str | None = None,
           platforms: Sequence[str] = ("cpu",), overwrite: bool = False) -> dict[str, Any]:
  """Writes the SavedModel (and segan_export.json) to `output`; returns the metadata.

  An existing non-empty `output` is replaced only when it is an earlier export and `overwrite`.
  `tta` None (the default, as `segan-export`) takes the first run's config.eval.tta.
  """
  bad = [p for p in platforms if p not in PLATFORMS]
  if bad or not platforms:
    raise ExportError(f"Unknown platforms {bad}; choose from {PLATFORMS}.")
  check_output(output, overwrite)
  try:
    import tensorflow as tf
  except ImportError as e:
    raise ExportError(f"The SavedModel export needs TensorFlow ({e}): pip install "
                      "'segan_jax[tfds]'.") from e

  tta = inference.tta_mode(tta, models[0].config)
  module = build_module(models, tta, platforms)
  signatures = {name: f.get_concrete_function() for name, f in module.signatures_.items()}
  os.makedirs(output, exist_ok=True)
  with checkpoints.quiet_orbax():  # TF logs every saved function at INFO through absl
    tf.saved_model.save(module, output, signatures=signatures)
  meta = {
      "format": "TensorFlow SavedModel (jax2tf, native serialization)",
      "platforms": list(platforms),
      "signatures": {
          "serving_default": "images uint8 [B,S,S,3] -> probabilities float32 [B,S,S,N], "
                             "masks uint8 [B,S,S,N] (0/255)",
          "predict_normalized": "images float32 [B,S,S,3] ImageNet-normalised -> same",
          "segment_image": "image uint8 [H,W,3] -> probabilities [H,W,N], masks [H,W,N]",
          **({"labels": "with N > 1 classes, also labels uint8 [B,S,S] ([H,W]): the index mask, "
                        "1 + the most probable class above the threshold, else 0"}
             if models[0].num_classes > 1 else {})},
      "image_size": models[0].image_size, "num_classes": models[0].num_classes,
      "k": [m.k for m in models], "threshold": float(np.mean([m.threshold for m in models])),
      "tta": tta, "normalization": {"mean": IMAGENET_MEAN.tolist(), "std": IMAGENET_STD.tolist()},
      "models": [m.describe() for m in models],
  }
  with open(os.path.join(output, "segan_export.json"), "w") as f:
    json.dump(meta, f, indent=2)
  return meta


def _define_flags():
  from absl import flags
  flags.DEFINE_multi_string("workdir", None,
                            "Training run(s); several are exported as an ensemble. Or "
                            "--model.")
  flags.DEFINE_string("output", None, "SavedModel folder (created).")
  flags.DEFINE_bool("tta", None, "Bake test-time flips into the exported function. Default: the "
                    "run's config.eval.tta.")
  flags.DEFINE_list("platforms", ["cpu"], f"Platforms the SavedModel runs on ({PLATFORMS}).")
  flags.DEFINE_integer("step", None, "Checkpoint step (single run; default: selection or latest).")
  flags.DEFINE_float("k", None, "Override k.")
  flags.DEFINE_float("threshold", None, "Override the threshold.")
  flags.DEFINE_bool("use_selection", True, "Use RUN/selection.json where present.")
  flags.DEFINE_bool("overwrite", False, "Replace an earlier export in --output.")
  from segan_jax.pretrained import tool_flags
  tool_flags.define_flags()


def main(argv):
  from absl import flags
  from segan_jax.pretrained import tool_flags
  FLAGS = flags.FLAGS
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])} (flags take the form "
                    "--name=value)")
  if tool_flags.list_models_if_asked():
    return
  tool_flags.require(["output"])
  tool_flags.pretrained_model_name()  # --workdir or --model, checked before any work
  check_output(FLAGS.output, FLAGS.overwrite)
  models = tool_flags.load_models(
      lambda: inference.load_models(FLAGS.workdir, FLAGS.step, FLAGS.k, FLAGS.threshold,
                                    FLAGS.use_selection),
      FLAGS.k, FLAGS.threshold)
  meta = export(models, FLAGS.output, inference.tta_from_flag(FLAGS.tta), FLAGS.platforms,
                FLAGS.overwrite)
  print(f"Exported {len(models)} model(s) (steps {[m['step'] for m in meta['models']]}, "
        f"k={meta['k']}, threshold={meta['threshold']:g}, tta={meta['tta']}) to {FLAGS.output}")
  print("Load it with: tf.saved_model.load(DIR).signatures['serving_default']"
        "(images=uint8 [B,S,S,3])")


def run():
  """The command line: `python -m segan_jax.export` and the `segan-export` console script."""
  from segan_jax import cli
  _define_flags()
  cli.run(main, __name__, __doc__)


if __name__ == "__main__":
  run()
