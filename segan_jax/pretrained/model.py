"""`SegmentationModel`: masks of image files, PIL images or arrays, as segan-predict writes them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Union

import numpy as np
from PIL import Image

from segan_jax import inference, predict
from segan_jax.data import decode
from segan_jax.data.arrays import resize_image
from segan_jax.pretrained import store

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]


def _is_run(path: Any) -> bool:
  return (isinstance(path, (str, os.PathLike)) and os.path.isdir(path)
          and os.path.isfile(os.path.join(path, "config.json")))


def _tta_mode(tta: bool | str | None) -> str | None:
  if tta is None or isinstance(tta, str):
    return tta
  return "flips" if tta else "none"


class SegmentationModel:
  """One loaded segmentor with the defaults segan-predict applies (tta, postprocess, threshold).

  `predict` and `probabilities` take one image or a list of them: file paths (decoded exactly as
  segan-predict decodes them, so the masks are its masks bit for bit at the same batch size), PIL
  images, or HxWx3 uint8 RGB arrays; every result has the image's original size.
  """

  def __init__(self, model: inference.LoadedModel, tta: bool | str | None = None,
               postprocess: bool | None = None, batch_size: int = 16):
    self.model = model
    self.postprocess = (bool(model.config.eval.postprocess) if postprocess is None
                        else bool(postprocess))
    if self.postprocess and model.num_classes > 1:
      raise store.PretrainedError(
          "postprocess keeps one lesion's largest component; the model segments "
          f"{model.num_classes} classes. Pass postprocess=False.")
    self.predictor = inference.Predictor([model], batch_size, _tta_mode(tta))
    self.tta = self.predictor.tta

  @property
  def threshold(self) -> float:
    return self.model.threshold

  @property
  def image_size(self) -> int:
    return self.model.image_size

  @property
  def num_classes(self) -> int:
    return self.model.num_classes

  def describe(self) -> dict[str, Any]:
    """What was loaded (LoadedModel.describe) and the defaults in use."""
    return {**self.model.describe(), "tta": self.tta, "postprocess": self.postprocess}

  def _network_input(self, image: ImageInput) -> tuple[np.ndarray, tuple[int, int]]:
    side = self.image_size
    if isinstance(image, (str, os.PathLike)):
      return predict.read_network_input(os.fspath(image), side)
    if isinstance(image, Image.Image):
      try:
        image.load()
        array, _ = decode.rgb8(image)
      except (OSError, ValueError) as e:
        raise predict.ImageReadError(f"cannot read the PIL image ({e})") from e
      return resize_image(array, side, side), array.shape[:2]
    if isinstance(image, np.ndarray):
      if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got shape {image.shape} and dtype "
                         f"{image.dtype} (convert e.g. floats in [0, 1] with "
                         "(x * 255).round().astype(np.uint8), or pass a PIL image).")
      return resize_image(np.ascontiguousarray(image), side, side), image.shape[:2]
    raise TypeError(f"expected a file path, a PIL image or an HxWx3 uint8 array, got "
                    f"{type(image).__name__}.")

  def _outputs(self, images: ImageInput | Sequence[ImageInput]):
    single = not isinstance(images, (list, tuple))
    items = [images] if single else list(images)
    inputs = [self._network_input(image) for image in items]
    if inputs:
      probs = self.predictor.probabilities(np.stack([small for small, _ in inputs]))
    else:
      probs = []
    outputs = [predict.original_size_outputs(p, size, self.threshold, self.postprocess)
               for p, (_, size) in zip(probs, inputs)]
    return single, outputs

  def predict(self, images: ImageInput | Sequence[ImageInput]
              ) -> np.ndarray | list[np.ndarray]:
    """The uint8 mask of each image at its original size: 0/255 (one class) or the index mask
    0..N (N classes); one array for one image, a list for a list."""
    single, outputs = self._outputs(images)
    masks = [mask for _, mask in outputs]
    return masks[0] if single else masks

  def probabilities(self, images: ImageInput | Sequence[ImageInput]
                    ) -> np.ndarray | list[np.ndarray]:
    """The probability map of each image at its original size (HxW float32 for one class,
    HxWxN for N): the maps predict thresholds."""
    single, outputs = self._outputs(images)
    maps = [full for full, _ in outputs]
    return maps[0] if single else maps


def load(name_or_path: str | os.PathLike, tta: bool | str | None = None,
         postprocess: bool | None = None, batch_size: int = 16, k: float | None = None,
         threshold: float | None = None) -> SegmentationModel:
  """A SegmentationModel of a shipped model name, a packaged .msgpack/.json path, or a training
  run folder (loaded as segan-predict --workdir loads it).

  tta (True/False or "flips"/"none") and postprocess default to the model's eval.tta and
  eval.postprocess; k and threshold to the model's.
  """
  if _is_run(name_or_path):
    model = inference.load_model(os.fspath(name_or_path), k=k, threshold=threshold)
  else:
    model = store.load_model(os.fspath(name_or_path), k=k, threshold=threshold)
  return SegmentationModel(model, tta, postprocess, batch_size)
