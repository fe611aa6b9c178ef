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

Several classes (N > 1 label maps; ISIC itself has one). The truth is an index mask (0
background, 1..N) and class c's truth is `mask == c`. The prediction is an index mask too: each
probability map is resized to the truth's size, then every pixel takes the class of its most
probable map if that probability exceeds the threshold, else background (label_prediction; ties go
to the lower class), which is what `segan_jax.predict` writes. Each class c is scored as a binary
mask (`labels == c` against `truth == c`) with the rules above, so a class absent from both
prediction and truth scores 1 on that image (ISIC's freebie); each metric is then averaged over
images per class (`jaccard_class1`, ...), and the plain metric names (`jaccard`, ...) hold the mean
over classes. Because the freebie flatters rare classes, summaries also give, per class, the pooled
Jaccard sum TP / sum (TP + FP + FN) over all images (`pooled_jaccard_class1`, mean
`pooled_jaccard`) and the number of images whose truth holds the class (`images_with_class1`).

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


def class_truth(mask: np.ndarray, label: int) -> np.ndarray:
  """The HxW bool truth of class `label` (1..N) in an index mask (HxW or HxWx1)."""
  return _as_2d(mask, "ground-truth index mask") == label


def resize_probabilities(probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """(h, w, N) probability maps resized bilinearly to size=(height, width): (H, W, N) float32."""
  probs = np.asarray(probs)
  if probs.ndim != 3:
    raise ValueError(f"probability maps must have shape HxWxN, got shape {probs.shape}")
  return np.stack([resize_probability(probs[..., c], size) for c in range(probs.shape[-1])], -1)


def label_prediction(probs: np.ndarray, threshold: float) -> np.ndarray:
  """The HxW uint8 index mask of (H, W, N) probability maps: 1 + the most probable map where its
  probability exceeds `threshold`, else 0 (ties go to the lower class). For N = 1 this is
  `prob > threshold`."""
  probs = np.asarray(probs)
  best = np.argmax(probs, axis=-1)
  top = np.take_along_axis(probs, best[..., None], axis=-1)[..., 0]
  return np.where(top > threshold, best + 1, 0).astype(np.uint8)


def score_classes(probs: np.ndarray, truth_mask: np.ndarray, threshold: float,
                  postprocess: PostProcess | None = None
                  ) -> tuple[list[dict[str, float]], list[tuple[int, int, int, int]]]:
  """Scores (h, w, N) probability maps against an index mask at the mask's resolution.

  The maps are resized to the mask's size and turned into an index mask (label_prediction); each
  class is scored as a binary mask (`postprocess` applied to it first, where given). Returns one
  score dict (METRIC_NAMES) and one (tp, fp, fn, tn) per class, class 1 first.
  """
  truth = _as_2d(truth_mask, "ground-truth index mask")
  labels = label_prediction(resize_probabilities(probs, truth.shape), threshold)
  scores, counts = [], []
  for c in range(1, np.asarray(probs).shape[-1] + 1):
    pred = labels == c
    if postprocess is not None:
      pred = postprocess(pred)
    scores.append(image_scores(pred, truth == c))
    counts.append(confusion_counts(pred, truth == c))
  return scores, counts


def mean_class_jaccard_by_threshold(probs: np.ndarray, truth_mask: np.ndarray,
                                    thresholds) -> np.ndarray:
  """For each threshold, the mean over classes of one image's Jaccard (as score_classes scores
  it), resizing the maps once."""
  truth = _as_2d(truth_mask, "ground-truth index mask")
  full = resize_probabilities(probs, truth.shape)
  n = full.shape[-1]
  best = np.argmax(full, axis=-1)
  top = np.take_along_axis(full, best[..., None], axis=-1)[..., 0]
  out = np.zeros(len(thresholds), np.float64)
  for j, t in enumerate(thresholds):
    labels = np.where(top > float(t), best + 1, 0)
    out[j] = np.mean([image_scores(labels == c, truth == c)["jaccard"] for c in range(1, n + 1)])
  return out


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


def class_key(name: str, label: int) -> str:
  """The key of a metric of class `label` (1..N) in multi-class rows and summaries."""
  return f"{name}_class{label}"


class ScoreAccumulator:
  """Streams images through `score_prediction` (num_classes > 1: `score_classes`), keeping
  per-image rows for `summary`/`rows`."""

  def __init__(self, num_classes: int = 1) -> None:
    self.num_classes = int(num_classes)
    self._rows: list[dict] = []
    self._counts = np.zeros((self.num_classes, 3), np.int64)  # pooled tp, fp, fn per class
    self._present = np.zeros(self.num_classes, np.int64)

  def __len__(self) -> int:
    return len(self._rows)

  def add(self, prob: np.ndarray, truth_mask: np.ndarray, threshold: float,
          image_id: str | None = None,
          postprocess: PostProcess | None = None) -> dict[str, float]:
    """Scores and records one image (image_id defaults to its running index); returns its scores.

    One class: prob is HxW (or HxWx1) and the truth a 0/255 mask. N classes: prob is HxWxN and
    the truth an index mask; the scores are the means over classes, then each class's.
    """
    if self.num_classes == 1:
      scores = score_prediction(prob, truth_mask, threshold, postprocess)
    else:
      if np.ndim(prob) != 3 or np.shape(prob)[-1] != self.num_classes:
        raise ValueError(f"expected {self.num_classes} probability maps (HxWx{self.num_classes}), "
                         f"got shape {np.shape(prob)}")
      per_class, counts = score_classes(prob, truth_mask, threshold, postprocess)
      scores = {name: math.fsum(s[name] for s in per_class) / self.num_classes
                for name in METRIC_NAMES}
      for c, (class_scores, (tp, fp, fn, _)) in enumerate(zip(per_class, counts)):
        scores.update({class_key(name, c + 1): class_scores[name] for name in METRIC_NAMES})
        self._counts[c] += (tp, fp, fn)
        self._present[c] += tp + fn > 0
    row_id = str(len(self._rows)) if image_id is None else image_id
    self._rows.append({"id": row_id, **scores})
    return scores

  def rows(self) -> list[dict]:
    """Returns one dict per image added, in order: `id` then the metrics in METRIC_NAMES (the means
    over classes), then for N classes each class's metrics (`jaccard_class1`, ...)."""
    return [dict(row) for row in self._rows]

  def summary(self) -> dict[str, float]:
    """Returns `summarize` over the images added so far (ValueError if none were added); for N
    classes also each class's means, pooled Jaccard and images holding it (module docstring)."""
    summary = summarize([{name: row[name] for name in METRIC_NAMES} for row in self._rows])
    if self.num_classes == 1:
      return summary
    pooled = []
    for c in range(self.num_classes):
      label = c + 1
      for name in METRIC_NAMES:
        key = class_key(name, label)
        summary[key] = math.fsum(row[key] for row in self._rows) / len(self._rows)
      tp, fp, fn = (int(v) for v in self._counts[c])
      pooled.append(tp / (tp + fp + fn) if tp + fp + fn else 1.0)
      summary[class_key("pooled_jaccard", label)] = pooled[-1]
      summary[class_key("images_with", label)] = int(self._present[c])
    summary["pooled_jaccard"] = math.fsum(pooled) / len(pooled)
    summary["num_classes"] = self.num_classes
    return summary
