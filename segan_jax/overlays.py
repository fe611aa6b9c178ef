"""Lesion contours drawn on photos, class colours for index masks, and panels of the worst-scored
images (numpy + PIL only)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

TRUTH_COLOR = (0, 255, 0)  # green: ground truth
PREDICTION_COLOR = (255, 0, 255)  # magenta: prediction
# Colours of classes 1, 2, ... in index-mask overlays (repeated beyond the tenth class).
CLASS_COLORS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180),
                (70, 240, 240), (245, 130, 48), (240, 50, 230), (210, 245, 60), (128, 128, 128))


def class_color(label: int) -> tuple[int, int, int]:
  """The overlay colour of class `label` (1..N)."""
  return CLASS_COLORS[(int(label) - 1) % len(CLASS_COLORS)]


def _shift_and(mask: np.ndarray) -> np.ndarray:
  """Erosion by the 3x3 cross (pixels outside the image count as background)."""
  padded = np.pad(mask, 1, constant_values=False)
  return (padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1]
          & padded[1:-1, :-2] & padded[1:-1, 2:])


def _dilate(mask: np.ndarray) -> np.ndarray:
  padded = np.pad(mask, 1, constant_values=False)
  return (padded[1:-1, 1:-1] | padded[:-2, 1:-1] | padded[2:, 1:-1]
          | padded[1:-1, :-2] | padded[1:-1, 2:])


def contour(mask: np.ndarray, thickness: int = 1) -> np.ndarray:
  """The boolean inner boundary of a binary HxW mask, `thickness` pixels wide."""
  mask = np.asarray(mask).astype(bool)
  if mask.ndim != 2:
    raise ValueError(f"contour expects an HxW mask, got shape {mask.shape}")
  edge = mask & ~_shift_and(mask)
  for _ in range(max(int(thickness), 1) - 1):
    edge = _dilate(edge) & mask
  return edge


def default_thickness(height: int, width: int) -> int:
  """About 1 pixel per 256 pixels of the shorter side, at least 1."""
  return max(1, int(round(min(height, width) / 256)))


def draw_contours(image: np.ndarray, masks: Sequence[np.ndarray],
                  colors: Sequence[tuple[int, int, int]],
                  thickness: int | None = None) -> np.ndarray:
  """A copy of the HxWx3 uint8 image with each binary HxW mask's contour drawn in its colour."""
  out = np.array(image, dtype=np.uint8, copy=True)
  if out.ndim != 3 or out.shape[-1] != 3:
    raise ValueError(f"draw_contours expects an HxWx3 image, got shape {out.shape}")
  h, w = out.shape[:2]
  thickness = default_thickness(h, w) if thickness is None else thickness
  for mask, color in zip(masks, colors):
    mask = np.asarray(mask).astype(bool)
    if mask.shape != (h, w):
      raise ValueError(f"mask shape {mask.shape} differs from the image's {(h, w)}")
    out[contour(mask, thickness)] = np.asarray(color, np.uint8)
  return out


def prediction_overlay(image: np.ndarray, prediction: np.ndarray,
                       thickness: int | None = None) -> np.ndarray:
  """The photo with the predicted lesion's contour (magenta)."""
  return draw_contours(image, [prediction], [PREDICTION_COLOR], thickness)


def class_overlay(image: np.ndarray, labels: np.ndarray, num_classes: int, alpha: float = 0.45,
                  thickness: int | None = None) -> np.ndarray:
  """The HxWx3 uint8 photo with each class of an HxW index mask (0 background, 1..num_classes)
  tinted in its colour (weight alpha) and outlined in it."""
  out = np.array(image, dtype=np.uint8, copy=True)
  labels = np.asarray(labels)
  if out.ndim != 3 or out.shape[-1] != 3 or labels.shape != out.shape[:2]:
    raise ValueError(f"class_overlay expects an HxWx3 image and an HxW index mask, got shapes "
                     f"{out.shape} and {labels.shape}")
  thickness = default_thickness(*out.shape[:2]) if thickness is None else thickness
  tinted = out.astype(np.float32)
  for label in range(1, num_classes + 1):
    region = labels == label
    if region.any():
      colour = np.asarray(class_color(label), np.float32)
      tinted[region] = (1 - alpha) * tinted[region] + alpha * colour
  out = np.clip(np.round(tinted), 0, 255).astype(np.uint8)
  for label in range(1, num_classes + 1):
    out[contour(labels == label, thickness)] = np.asarray(class_color(label), np.uint8)
  return out


def _fit_height(array: np.ndarray, height: int, resample) -> np.ndarray:
  h, w = array.shape[:2]
  width = max(1, int(round(w * height / h)))
  return np.asarray(Image.fromarray(array).resize((width, height), resample))


def worst_case_panel(images: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                     probs: Sequence[np.ndarray], threshold: float,
                     captions: Sequence[str], height: int = 192,
                     columns: int = 1) -> np.ndarray:
  """Rows of [photo with truth (green) and prediction (magenta) contours | probability map].

  Every input is at the image's original size: images HxWx3 uint8, truths HxW bool, probs HxW
  float in [0, 1]. Each row is scaled to `height` pixels and captioned (e.g. id and Jaccard);
  the rows fill `columns` side-by-side columns, top to bottom then left to right.
  """
  if not images:
    raise ValueError("worst_case_panel needs at least one image")
  rows = []
  for image, truth, prob, caption in zip(images, truths, probs, captions):
    image_s = _fit_height(np.asarray(image, np.uint8), height, Image.BILINEAR)
    hs, ws = image_s.shape[:2]
    truth_s = np.asarray(Image.fromarray(np.asarray(truth, bool).astype(np.uint8) * 255)
                         .resize((ws, hs), Image.NEAREST)) > 127
    prob_s = np.asarray(Image.fromarray(np.asarray(prob, np.float32)).resize((ws, hs),
                                                                             Image.BILINEAR))
    overlay = draw_contours(image_s, [truth_s, prob_s > threshold],
                            [TRUTH_COLOR, PREDICTION_COLOR], thickness=2)
    heat = np.repeat((np.clip(prob_s, 0, 1) * 255).round().astype(np.uint8)[..., None], 3, -1)
    row = np.concatenate([overlay, np.full((hs, 4, 3), 255, np.uint8), heat], axis=1)
    rows.append(_captioned(row, caption))
  return _arrange(rows, columns)


def class_panel(images: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                labels: Sequence[np.ndarray], num_classes: int, captions: Sequence[str],
                height: int = 192, columns: int = 1) -> np.ndarray:
  """Rows of [photo with the true classes | photo with the predicted classes] (class_overlay).

  images HxWx3 uint8, truths and labels HxW index masks (0..num_classes), all at one size per
  row; each row is scaled to `height` pixels and captioned, in `columns` columns.
  """
  if not images:
    raise ValueError("class_panel needs at least one image")
  rows = []
  for image, truth, label, caption in zip(images, truths, labels, captions):
    image_s = _fit_height(np.asarray(image, np.uint8), height, Image.BILINEAR)
    hs, ws = image_s.shape[:2]
    small = lambda m: np.asarray(Image.fromarray(np.asarray(m, np.uint8)).resize((ws, hs),
                                                                               Image.NEAREST))
    cells = [class_overlay(image_s, small(truth), num_classes, thickness=1),
             class_overlay(image_s, small(label), num_classes, thickness=1)]
    rows.append(_captioned(np.concatenate([cells[0], np.full((hs, 4, 3), 255, np.uint8),
                                           cells[1]], axis=1), caption))
  return _arrange(rows, columns)


def _captioned(row: np.ndarray, caption: str) -> np.ndarray:
  canvas = Image.fromarray(np.concatenate([np.full((16, row.shape[1], 3), 255, np.uint8), row]))
  ImageDraw.Draw(canvas).text((2, 2), caption, fill=(0, 0, 0))
  return np.asarray(canvas)


def _arrange(rows: list[np.ndarray], columns: int) -> np.ndarray:
  """Captioned rows filling `columns` side-by-side columns, top to bottom then left to right."""
  width = max(r.shape[1] for r in rows)
  padded = [np.pad(r, ((0, 4), (0, width - r.shape[1] + 8), (0, 0)), constant_values=255)
            for r in rows]
  per_column = -(-len(padded) // max(int(columns), 1))
  stacks = [np.concatenate(padded[i:i + per_column], axis=0)
            for i in range(0, len(padded), per_column)]
  tallest = max(s.shape[0] for s in stacks)
  stacks = [np.pad(s, ((0, tallest - s.shape[0]), (0, 0), (0, 0)), constant_values=255)
            for s in stacks]
  return np.concatenate(stacks, axis=1)[:, :-8]


def save_png(path: str, array: np.ndarray) -> None:
  """Writes an array as PNG atomically (via a temporary file in the same folder)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp.png"
  Image.fromarray(array).save(tmp)
  os.replace(tmp, path)
