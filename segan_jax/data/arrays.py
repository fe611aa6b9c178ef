"""In-memory arrays that the input pipelines read: resized training pairs and evaluation sets."""

import concurrent.futures
import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclasses.dataclass(frozen=True)
class Example:
  """One image (HxWx3 uint8) with its mask (HxW uint8) at the original resolution: 0/255 for one
  class, an index mask (0 background, 1..N) for N classes."""
  id: str
  image: np.ndarray
  mask: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class TrainArrays:
  """Training pairs resized to a common size: images (M,h,w,3) uint8, masks (M,h,w,N) uint8 in
  {0,1}, one map per class (label_maps)."""
  images: np.ndarray
  masks: np.ndarray

  def __len__(self) -> int:
    return len(self.images)


@dataclasses.dataclass(frozen=True)
class EvalSet:
  """Evaluation images resized to the model's input side, with masks and sizes kept original."""
  ids: list[str]
  images: np.ndarray  # (M, S, S, 3) uint8
  masks: list[np.ndarray | None]  # original resolution, 0/255 (one class) or index masks
  original_sizes: list[tuple[int, int]]  # (height, width)

  def __len__(self) -> int:
    return len(self.ids)


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear (antialiased) resize of an HxWx3 uint8 image."""
  return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
  """Nearest-neighbour resize of a 0/255 or index mask, so it keeps its values."""
  return np.asarray(Image.fromarray(mask).resize((width, height), Image.NEAREST))


def label_maps(mask: np.ndarray, num_classes: int) -> np.ndarray:
  """The N {0,1} label maps (h, w, N) uint8 of a mask: one class, mask > 127 (a 0/255 mask);
  N > 1, map c = (mask == c + 1) of an index mask (0 background, 1..N)."""
  mask = np.asarray(mask)
  if num_classes == 1:
    return (mask > 127)[..., None].astype(np.uint8)
  if mask.size and int(mask.max()) > num_classes:
    raise ValueError(f"A mask holds the value {int(mask.max())}, above num_classes={num_classes}: "
                     "expected an index mask (0 background, 1..N).")
  return (mask[..., None] == np.arange(1, num_classes + 1, dtype=mask.dtype)).astype(np.uint8)


def _map(fn, items: Sequence, workers: int = 4) -> list:
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    return list(pool.map(fn, items))


def prepare_train(examples: Iterable[Example], height: int, width: int,
                  num_classes: int = 1) -> TrainArrays:
  """Resizes every training pair to height x width (masks by nearest neighbour), masks as
  num_classes {0,1} maps (label_maps)."""
  def one(ex: Example):
    mask = resize_mask(ex.mask, height, width)
    try:
      maps = label_maps(mask, num_classes)
    except ValueError as e:
      raise ValueError(f"{ex.id}: {e}") from e
    return resize_image(ex.image, height, width), maps

  pairs = _map(one, list(examples))
  if not pairs:
    raise ValueError("The training split is empty.")
  images = np.stack([p[0] for p in pairs])
  masks = np.stack([p[1] for p in pairs])
  return TrainArrays(images=images, masks=masks)


def prepare_eval(examples: Iterable[Example], side: int) -> EvalSet:
  """Resizes whole images to side x side for the network; keeps masks and sizes for scoring."""
  examples = list(examples)
  images = _map(lambda ex: resize_image(ex.image, side, side), examples)
  return EvalSet(ids=[ex.id for ex in examples],
                 images=np.stack(images) if images else np.zeros((0, side, side, 3), np.uint8),
                 masks=[ex.mask for ex in examples],
                 original_sizes=[tuple(ex.image.shape[:2]) if ex.mask is None
                                 else tuple(ex.mask.shape[:2]) for ex in examples])


def normalize(images: np.ndarray) -> np.ndarray:
  """uint8 RGB -> float32 normalised by the ImageNet mean and std."""
  return ((images.astype(np.float32) / 255.0) - IMAGENET_MEAN) / IMAGENET_STD


def denormalize(images: np.ndarray) -> np.ndarray:
  """Inverse of normalize, back to uint8 RGB for panels."""
  x = (np.asarray(images, np.float32) * IMAGENET_STD + IMAGENET_MEAN) * 255.0
  return np.clip(np.round(x), 0, 255).astype(np.uint8)
