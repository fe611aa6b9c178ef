"""Pretrained segmentors loaded by name, and the user's own runs through the same API.

  from segan_jax import pretrained
  pretrained.available()                      # the shipped models' names
  model = pretrained.load(NAME_OR_PATH)       # a name, a packaged .msgpack/.json, or a run folder
  masks = model.predict(["a.jpg", pil_image, rgb_array])   # uint8, each at its original size
  maps = model.probabilities(["a.jpg"])

A model is NAME.msgpack (S's inference variables, float32, flax msgpack) beside its card NAME.json
and model card NAME.md (segan_jax.pretrained.store); `python -m segan_jax.pretrained.package`
writes them from a trained run. `pretrained.load_model` gives the inference.LoadedModel that
segan-predict, segan-evaluate and segan-export use with --model.
"""

from segan_jax.pretrained.model import SegmentationModel, load
from segan_jax.pretrained.store import WEIGHTS_DIR, PretrainedError, available, load_model

__all__ = ["PretrainedError", "SegmentationModel", "WEIGHTS_DIR", "available", "load",
           "load_model"]
