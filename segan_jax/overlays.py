"""Lesion contours drawn on photos, and panels of the worst-scored images (numpy + PIL only)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

TRUTH_COLOR = (0, 255, 0)  # green: ground truth
PREDICTION_COLOR = (255, 0, 255)  # magenta: prediction


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
    canvas = Image.fromarray(np.concatenate([np.full((16, row.shape[1], 3), 255, np.uint8), row]))
    ImageDraw.Draw(canvas).text((2, 2), caption, fill=(0, 0, 0))
    rows.append(np.asarray(canvas))
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
