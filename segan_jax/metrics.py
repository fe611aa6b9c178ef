"""ISIC 2017 Part 1 (lesion segmentation) scoring: pure numpy + PIL, independent of training code.

Protocol. Every image is scored at its ORIGINAL resolution: the predicted probability map (any
HxW, e.g. the network's 256x256 output) is resized back to the ground-truth mask's size with
bilinear interpolation, then binarised with `prob > threshold`; the ground-truth mask (uint8,
0/255) is binarised with `mask > 127`. From the per-image confusion counts (TP, FP, FN, TN, in
pixels) we compute the metrics below, then average each one over images (a macro average, every
image weighted equally). Mean Jaccard is the ranking metric (ISIC 2017 Part 1).

Conventions. They follow ISIC's current scoring code, ImageMarkup/isic-challenge-scoring:
`isic_challenge_scoring/metrics.py` (`binary_accuracy`, `binary_sensitivity`,
`binary_specificity`, `binary_jaccard`, `binary_threshold_jaccard`, `binary_dice`),
`isic_challenge_scoring/confusion.py` (`create_binary_confusion_matrix`) and
`isic_challenge_scoring/segmentation.py` (`SegmentationScore`, which macro-averages the per-image
values with `DataFrame.mean`). Where a denominator is zero ISIC gives a "freebie" 1.0:

- accuracy    = (TP + TN) / (TP + FP + FN + TN). No guard in ISIC (the denominator is the pixel
                count); an image with no pixels raises ValueError here.
- sensitivity = TP / (TP + FN); 1.0 when TP + FN == 0 (the truth mask is empty).
- specificity = TN / (TN + FP); 1.0 when TN + FP == 0 (the truth mask covers the whole image).
- jaccard     = TP / (TP + FP + FN); 1.0 when TP + FP + FN == 0 (truth and prediction both empty).
- dice        = 2 TP / (2 TP + FP + FN); 1.0 when TP + FP + FN == 0 (both empty).
- thresholded_jaccard = jaccard if jaccard >= 0.65 else 0.0 (ISIC 2018; the comparison is
                inclusive, so exactly 0.65 keeps its value).

Consequences: an empty prediction on a non-empty truth scores jaccard = dice = sensitivity = 0
and specificity = 1; a non-empty prediction on an empty truth scores jaccard = dice = 0,
sensitivity = 1 (freebie) and specificity = TN / (TN + FP); both empty scores 1 on every metric.

Differences from ISIC's code, all deliberate:
- ISIC binarises both uint8 images with `> 128`; this project's design says `> 127`. The two
  agree on valid 0/255 masks (they differ only on a pixel of exactly 128).
- ISIC scores uint8 prediction PNGs already at the original size (it rejects any other size);
  here the float probability map is resized and thresholded at `threshold` instead.
- ISIC's current `SegmentationScore` reports the mean thresholded Jaccard as its `overall`
  score (the ISIC 2018 ranking); for ISIC 2017 the ranking metric is the mean Jaccard.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image

JACCARD_THRESHOLD = 0.65
TRUTH_THRESHOLD = 127

METRIC_NAMES: tuple[str, ...] = (
    "accuracy",
    "sensitivity",
    "specificity",
    "jaccard",
    "dice",
    "thresholded_jaccard",
)


def _as_2d(array: np.ndarray, what: str) -> np.ndarray:
  """Returns an HxW view of an HxW or HxWx1 array; raises ValueError for any other shape."""
  array = np.asarray(array)
  if array.ndim == 3 and array.shape[-1] == 1:
    array = array[..., 0]
  if array.ndim != 2:
    raise ValueError(f"{what} must have shape HxW or HxWx1, got shape {array.shape}")
  return array


def binarize_truth(mask: np.ndarray) -> np.ndarray:
  """Returns the HxW bool mask `mask > 127` of an HxW or HxWx1 uint8 (0/255) ground-truth mask.

  A mask that is already bool is returned as is (as a copy).
  """
  mask = _as_2d(mask, "ground-truth mask")
  if mask.dtype == np.bool_:
    return mask.copy()
  return mask > TRUTH_THRESHOLD


def binarize_prediction(prob: np.ndarray, threshold: float) -> np.ndarray:
  """Returns the bool mask `prob > threshold` (same shape as prob)."""
  return np.asarray(prob) > threshold


def resize_probability(prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Resizes a float HxW (or HxWx1) probability map to size=(height, width), bilinearly.

  Uses PIL's mode 'F' (float32) bilinear resampling; the result is float32 HxW clipped to [0, 1].
  """
  prob = _as_2d(prob, "probability map").astype(np.float32)
  height, width = (int(s) for s in size)
  if height <= 0 or width <= 0:
    raise ValueError(f"size must be a positive (height, width), got {size}")
  if prob.shape != (height, width):
    image = Image.fromarray(np.ascontiguousarray(prob))  # 2-D float32 -> mode 'F'
    prob = np.asarray(image.resize((width, height), resample=Image.Resampling.BILINEAR),
                      dtype=np.float32)
  return np.clip(prob, 0.0, 1.0)


def confusion_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int, int]:
  """Returns the pixel counts (tp, fp, fn, tn) of a binary prediction against a binary truth.

  Both arrays are read as bool and must have the same shape (ValueError otherwise).
  """
  pred = np.asarray(pred)
  truth = np.asarray(truth)
  if pred.shape != truth.shape:
    raise ValueError(
        f"prediction and ground truth must have the same shape, got prediction {pred.shape} "
        f"and ground truth {truth.shape}")
  pred = pred.astype(bool, copy=False)
  truth = truth.astype(bool, copy=False)
  tp = int(np.count_nonzero(pred & truth))
  fp = int(np.count_nonzero(pred & ~truth))
  fn = int(np.count_nonzero(~pred & truth))
  tn = int(truth.size) - tp - fp - fn
  return tp, fp, fn, tn


def image_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
  """Returns the ISIC metrics (METRIC_NAMES) of one binary prediction against its binary truth.

  Zero denominators follow ISIC's convention (see the module docstring).
  """
  tp, fp, fn, tn = confusion_counts(pred, truth)
  total = tp + fp + fn + tn
  if total == 0:
    raise ValueError("cannot score an image with no pixels")
  union = tp + fp + fn
  jaccard = tp / union if union else 1.0
  return {
      "accuracy": (tp + tn) / total,
      "sensitivity": tp / (tp + fn) if tp + fn else 1.0,
      "specificity": tn / (tn + fp) if tn + fp else 1.0,
      "jaccard": jaccard,
      "dice": 2 * tp / (2 * tp + fp + fn) if union else 1.0,
      "thresholded_jaccard": jaccard if jaccard >= JACCARD_THRESHOLD else 0.0,
  }


PostProcess = Callable[[np.ndarray], np.ndarray]


def score_prediction(prob: np.ndarray, truth_mask: np.ndarray, threshold: float,
                     postprocess: PostProcess | None = None) -> dict[str, float]:
  """Scores a probability map (any HxW) against a ground-truth mask at the mask's resolution.

  The map is resized bilinearly to the mask's size, then binarised with `prob > threshold`; a
  `postprocess` function (e.g. segan_jax.postprocess.postprocess_mask) then maps that binary
  mask to the one scored.
  """
  truth = binarize_truth(truth_mask)
  prob = resize_probability(prob, truth.shape)
  pred = binarize_prediction(prob, threshold)
  if postprocess is not None:
    pred = postprocess(pred)
  return image_scores(pred, truth)


def summarize(per_image: list[dict[str, float]]) -> dict[str, float]:
  """Returns the mean of each metric in METRIC_NAMES over images, plus `num_images`.

  Raises ValueError on an empty list or on a row that lacks a metric.
  """
  if not per_image:
    raise ValueError("cannot summarize an empty list of per-image scores")
  summary: dict[str, float] = {}
  for name in METRIC_NAMES:
    try:
      values = [float(row[name]) for row in per_image]
    except KeyError:
      raise ValueError(f"a per-image score lacks the metric {name!r}") from None
    summary[name] = math.fsum(values) / len(values)
  summary["num_images"] = len(per_image)
  return summary


class ScoreAccumulator:
  """Streams images through `score_prediction`, keeping per-image rows for `summary`/`rows`."""

  def __init__(self) -> None:
    self._rows: list[dict] = []

  def __len__(self) -> int:
    return len(self._rows)

  def add(self, prob: np.ndarray, truth_mask: np.ndarray, threshold: float,
          image_id: str | None = None,
          postprocess: PostProcess | None = None) -> dict[str, float]:
    """Scores and records one image (image_id defaults to its running index); returns its scores."""
    scores = score_prediction(prob, truth_mask, threshold, postprocess)
    row_id = str(len(self._rows)) if image_id is None else image_id
    self._rows.append({"id": row_id, **scores})
    return scores

  def rows(self) -> list[dict]:
    """Returns one dict per image added, in order: `id` then the metrics in METRIC_NAMES."""
    return [dict(row) for row in self._rows]

  def summary(self) -> dict[str, float]:
    """Returns `summarize` over the images added so far (ValueError if none were added)."""
    return summarize([{name: row[name] for name in METRIC_NAMES} for row in self._rows])
