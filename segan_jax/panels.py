"""PNG panels of input / ground truth / probability / thresholded prediction."""

import os

import numpy as np
from PIL import Image

from segan_jax.data.arrays import resize_mask
from segan_jax.metrics import label_prediction
from segan_jax.overlays import class_overlay


def _gray_to_rgb(x: np.ndarray) -> np.ndarray:
  return np.repeat(x[..., None], 3, axis=-1)


def panel_grid(images: np.ndarray, masks: list[np.ndarray | None], probs: np.ndarray,
               threshold: float) -> np.ndarray:
  """Rows of [input, ground truth, probability, prediction > threshold] at the network's size.

  images: (M,S,S,3) uint8; masks: original-size 0/255 (or None); probs: (M,S,S) in [0,1].
  Several classes (probs (M,S,S,N), N > 1, masks index masks): [input, true classes on the input,
  the largest probability, predicted classes (metrics.label_prediction) on the input].
  """
  rows = []
  s = images.shape[1]
  num_classes = probs.shape[-1] if probs.ndim == 4 else 1
  if probs.ndim == 4 and num_classes == 1:
    probs = probs[..., 0]
  for image, mask, prob in zip(images, masks, probs):
    truth = np.zeros((s, s), np.uint8) if mask is None else resize_mask(mask, s, s)
    if num_classes > 1:
      prob8 = np.round(np.clip(prob.max(axis=-1), 0, 1) * 255).astype(np.uint8)
      cells = [image, class_overlay(image, truth, num_classes, thickness=1), _gray_to_rgb(prob8),
               class_overlay(image, label_prediction(prob, threshold), num_classes, thickness=1)]
    else:
      prob8 = np.round(np.clip(prob, 0, 1) * 255).astype(np.uint8)
      pred = np.where(prob > threshold, 255, 0).astype(np.uint8)
      cells = [image, _gray_to_rgb(truth), _gray_to_rgb(prob8), _gray_to_rgb(pred)]
    sep = np.full((s, 2, 3), 255, np.uint8)
    rows.append(np.concatenate([c for cell in cells for c in (cell, sep)][:-1], axis=1))
  gap = np.full((2, rows[0].shape[1], 3), 255, np.uint8)
  return np.concatenate([r for row in rows for r in (row, gap)][:-1], axis=0)


def save_panels(path: str, images: np.ndarray, masks: list[np.ndarray | None], probs: np.ndarray,
                threshold: float) -> np.ndarray:
  """Writes the panel grid to `path` (PNG) atomically and returns it."""
  grid = panel_grid(images, masks, probs, threshold)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = path + ".tmp.png"
  Image.fromarray(grid).save(tmp)
  os.replace(tmp, path)
  return grid
