"""Tests for segan_jax.metrics (ISIC 2017 Part 1 scoring); expected values are worked by hand."""

import numpy as np
import pytest

from segan_jax import metrics


def _scores(accuracy, sensitivity, specificity, jaccard, dice, thresholded_jaccard):
  return {
      "accuracy": accuracy,
      "sensitivity": sensitivity,
      "specificity": specificity,
      "jaccard": jaccard,
      "dice": dice,
      "thresholded_jaccard": thresholded_jaccard,
  }


def _assert_scores(actual, expected):
  assert set(actual) == set(metrics.METRIC_NAMES)
  for name, value in expected.items():
    assert actual[name] == pytest.approx(value, abs=1e-12), name


# truth:      pred:
#  1 1 0       1 0 1
#  1 0 0       1 0 0
# TP = (0,0),(1,0) = 2; FP = (0,2) = 1; FN = (0,1) = 1; TN = (1,1),(1,2) = 2.
SMALL_TRUTH = np.array([[1, 1, 0], [1, 0, 0]], dtype=bool)
SMALL_PRED = np.array([[1, 0, 1], [1, 0, 0]], dtype=bool)

# 4x4: truth is the top-left 2x2 block, the prediction adds one pixel at (2,2).
# TP = 4, FP = 1, FN = 0, TN = 11.
BLOCK_TRUTH = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=bool)
BLOCK_PRED = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]], dtype=bool)


def test_confusion_counts_small():
  assert metrics.confusion_counts(SMALL_PRED, SMALL_TRUTH) == (2, 1, 1, 2)


def test_confusion_counts_block():
  assert metrics.confusion_counts(BLOCK_PRED, BLOCK_TRUTH) == (4, 1, 0, 11)


def test_confusion_counts_are_python_ints_and_accept_0_1_arrays():
  counts = metrics.confusion_counts(SMALL_PRED.astype(np.uint8), SMALL_TRUTH.astype(np.uint8))
  assert counts == (2, 1, 1, 2)
  assert all(type(c) is int for c in counts)


def test_confusion_counts_shape_mismatch():
  with pytest.raises(ValueError, match="same shape"):
    metrics.confusion_counts(np.zeros((2, 3), bool), np.zeros((3, 2), bool))


def test_image_scores_small():
  _assert_scores(
      metrics.image_scores(SMALL_PRED, SMALL_TRUTH),
      _scores(accuracy=4 / 6, sensitivity=2 / 3, specificity=2 / 3, jaccard=2 / 4, dice=4 / 6,
              thresholded_jaccard=0.0))


def test_image_scores_block():
  _assert_scores(
      metrics.image_scores(BLOCK_PRED, BLOCK_TRUTH),
      _scores(accuracy=15 / 16, sensitivity=4 / 4, specificity=11 / 12, jaccard=4 / 5,
              dice=8 / 9, thresholded_jaccard=4 / 5))


def test_empty_prediction_non_empty_truth():
  # TP = 0, FP = 0, FN = 2, TN = 2.
  truth = np.array([[1, 1, 0, 0]], dtype=bool)
  pred = np.zeros((1, 4), dtype=bool)
  assert metrics.confusion_counts(pred, truth) == (0, 0, 2, 2)
  _assert_scores(
      metrics.image_scores(pred, truth),
      _scores(accuracy=0.5, sensitivity=0.0, specificity=1.0, jaccard=0.0, dice=0.0,
              thresholded_jaccard=0.0))


def test_empty_truth_non_empty_prediction():
  # TP = 0, FP = 1, FN = 0, TN = 3: sensitivity is ISIC's 1.0 freebie (TP + FN == 0).
  truth = np.zeros((1, 4), dtype=bool)
  pred = np.array([[1, 0, 0, 0]], dtype=bool)
  assert metrics.confusion_counts(pred, truth) == (0, 1, 0, 3)
  _assert_scores(
      metrics.image_scores(pred, truth),
      _scores(accuracy=0.75, sensitivity=1.0, specificity=0.75, jaccard=0.0, dice=0.0,
              thresholded_jaccard=0.0))


def test_both_empty_scores_one_everywhere():
  empty = np.zeros((2, 3), dtype=bool)
  assert metrics.confusion_counts(empty, empty) == (0, 0, 0, 6)
  _assert_scores(metrics.image_scores(empty, empty), _scores(1.0, 1.0, 1.0, 1.0, 1.0, 1.0))


def test_full_truth_specificity_freebie():
  # Truth covers the whole image: TP = 3, FP = 0, FN = 1, TN = 0, so TN + FP == 0.
  truth = np.ones((1, 4), dtype=bool)
  pred = np.array([[1, 1, 1, 0]], dtype=bool)
  assert metrics.confusion_counts(pred, truth) == (3, 0, 1, 0)
  _assert_scores(
      metrics.image_scores(pred, truth),
      _scores(accuracy=0.75, sensitivity=0.75, specificity=1.0, jaccard=0.75, dice=6 / 7,
              thresholded_jaccard=0.75))


def test_image_with_no_pixels_raises():
  with pytest.raises(ValueError):
    metrics.image_scores(np.zeros((0, 3), bool), np.zeros((0, 3), bool))


def _pair(tp, fn, tn):
  """A 1xN truth/prediction pair with the given counts and no false positives."""
  truth = np.array([[True] * (tp + fn) + [False] * tn])
  pred = np.array([[True] * tp + [False] * (fn + tn)])
  return pred, truth


@pytest.mark.parametrize(
    "tp, fn, jaccard, thresholded",
    [
        (16, 9, 0.64, 0.0),  # 16 / 25 = 0.64 < 0.65 -> 0
        (13, 7, 0.65, 0.65),  # 13 / 20 = 0.65, kept (ISIC compares with >=)
        (33, 17, 0.66, 0.66),  # 33 / 50 = 0.66
    ],
)
def test_thresholded_jaccard(tp, fn, jaccard, thresholded):
  pred, truth = _pair(tp=tp, fn=fn, tn=5)
  scores = metrics.image_scores(pred, truth)
  assert scores["jaccard"] == pytest.approx(jaccard, abs=1e-12)
  assert scores["thresholded_jaccard"] == pytest.approx(thresholded, abs=1e-12)


def test_binarize_truth_at_127_128():
  mask = np.array([[0, 1, 126, 127, 128, 254, 255]], dtype=np.uint8)
  expected = np.array([[False, False, False, False, True, True, True]])
  result = metrics.binarize_truth(mask)
  assert result.dtype == np.bool_
  np.testing.assert_array_equal(result, expected)


def test_binarize_truth_accepts_hxwx1():
  mask = np.array([[[127], [128]], [[255], [0]]], dtype=np.uint8)  # 2x2x1
  result = metrics.binarize_truth(mask)
  assert result.shape == (2, 2)
  np.testing.assert_array_equal(result, [[False, True], [True, False]])


def test_binarize_truth_rejects_other_shapes():
  with pytest.raises(ValueError):
    metrics.binarize_truth(np.zeros((2, 2, 3), np.uint8))


def test_binarize_prediction_is_strict():
  prob = np.array([[0.0, 0.49, 0.5, 0.51, 1.0]], dtype=np.float32)
  result = metrics.binarize_prediction(prob, 0.5)
  assert result.dtype == np.bool_
  np.testing.assert_array_equal(result, [[False, False, False, True, True]])


def test_resize_probability_columns():
  # 2 -> 6 columns: output centres sit at input x = -1/3, 0, 1/3, 2/3, 1, 4/3 (edges clamped),
  # so 0.9, 0.9, 0.9 - 0.8/3, 0.9 - 1.6/3, 0.1, 0.1.
  prob = np.array([[0.9, 0.1], [0.9, 0.1]], dtype=np.float32)
  result = metrics.resize_probability(prob, (4, 6))
  assert result.shape == (4, 6)
  row = [0.9, 0.9, 0.63333333, 0.36666667, 0.1, 0.1]
  np.testing.assert_allclose(result, np.array([row] * 4), atol=1e-6)


def test_resize_probability_rows_use_height_first():
  # 2 -> 4 rows: output centres at input y = -1/4, 1/4, 3/4, 5/4 -> 0.2, 0.35, 0.65, 0.8.
  prob = np.array([[0.2], [0.8]], dtype=np.float32)
  result = metrics.resize_probability(prob, (4, 1))
  assert result.shape == (4, 1)
  np.testing.assert_allclose(result[:, 0], [0.2, 0.35, 0.65, 0.8], atol=1e-6)


def test_resize_probability_clips_to_unit_interval():
  prob = np.array([[1.5, -0.5], [0.25, 0.75]], dtype=np.float32)
  np.testing.assert_allclose(metrics.resize_probability(prob, (2, 2)), [[1.0, 0.0], [0.25, 0.75]])


def test_score_prediction_resizes_back_to_truth_size():
  # The 2x2 map becomes the columns 0.9, 0.9, 0.633, 0.367, 0.1, 0.1 at 4x6; > 0.5 keeps the
  # three left columns. Truth is the two left columns (as 255, with 0 elsewhere):
  # TP = 4*2 = 8, FP = 4*1 = 4, FN = 0, TN = 4*3 = 12.
  prob = np.array([[0.9, 0.1], [0.9, 0.1]], dtype=np.float32)
  truth_mask = np.zeros((4, 6), dtype=np.uint8)
  truth_mask[:, :2] = 255
  _assert_scores(
      metrics.score_prediction(prob, truth_mask, 0.5),
      _scores(accuracy=20 / 24, sensitivity=1.0, specificity=12 / 16, jaccard=8 / 12,
              dice=16 / 20, thresholded_jaccard=8 / 12))


def test_score_prediction_same_size_and_hxwx1_truth():
  prob = np.array([[0.8, 0.2, 0.6], [0.9, 0.1, 0.3]], dtype=np.float32)  # > 0.5 is SMALL_PRED
  truth_mask = (SMALL_TRUTH * 255).astype(np.uint8)[..., None]
  _assert_scores(
      metrics.score_prediction(prob, truth_mask, 0.5),
      _scores(accuracy=4 / 6, sensitivity=2 / 3, specificity=2 / 3, jaccard=0.5, dice=4 / 6,
              thresholded_jaccard=0.0))


def test_summarize_means():
  rows = [
      _scores(accuracy=1.0, sensitivity=0.5, specificity=1.0, jaccard=0.5, dice=0.6,
              thresholded_jaccard=0.0),
      _scores(accuracy=0.5, sensitivity=1.0, specificity=0.0, jaccard=0.9, dice=0.8,
              thresholded_jaccard=0.9),
      _scores(accuracy=0.0, sensitivity=0.0, specificity=0.5, jaccard=0.7, dice=1.0,
              thresholded_jaccard=0.7),
  ]
  summary = metrics.summarize(rows)
  assert summary["num_images"] == 3
  _assert_scores({k: v for k, v in summary.items() if k != "num_images"},
                 _scores(accuracy=0.5, sensitivity=0.5, specificity=0.5, jaccard=0.7, dice=0.8,
                         thresholded_jaccard=0.5333333333333333))


def test_summarize_empty_raises():
  with pytest.raises(ValueError):
    metrics.summarize([])


def test_metric_names_are_what_every_image_is_scored_on():
  """METRIC_NAMES is exactly what image_scores computes, in its order, and what the summaries and
  per-image rows report (a metric computed but not listed would be silently dropped)."""
  scores = metrics.image_scores(BLOCK_PRED, BLOCK_TRUTH)
  assert tuple(scores) == metrics.METRIC_NAMES
  assert "jaccard" in metrics.METRIC_NAMES  # ISIC 2017's ranking metric
  assert list(metrics.summarize([scores])) == [*metrics.METRIC_NAMES, "num_images"]
  acc = metrics.ScoreAccumulator()
  acc.add(BLOCK_PRED.astype(np.float32), (BLOCK_TRUTH * 255).astype(np.uint8), 0.5)
  assert list(acc.rows()[0]) == ["id", *metrics.METRIC_NAMES]


def test_accumulator_equals_summarize():
  block_mask = (BLOCK_TRUTH * 255).astype(np.uint8)
  small_mask = (SMALL_TRUTH * 255).astype(np.uint8)
  images = [
      (np.array([[0.9, 0.1], [0.9, 0.1]], np.float32), np.tile([[255, 255, 0, 0, 0, 0]], (4, 1))),
      (BLOCK_PRED.astype(np.float32) * 0.7, block_mask),
      (np.array([[0.8, 0.2, 0.6], [0.9, 0.1, 0.3]], np.float32), small_mask),
      (np.zeros((3, 3), np.float32), np.zeros((5, 7), np.uint8)),  # both empty
  ]
  acc = metrics.ScoreAccumulator()
  for i, (prob, mask) in enumerate(images):
    acc.add(prob, mask.astype(np.uint8), 0.5, image_id=f"ISIC_{i:07d}" if i != 3 else None)
  expected = metrics.summarize([metrics.score_prediction(p, m, 0.5) for p, m in images])
  assert acc.summary() == expected
  # Hand-computed means of the four images' Jaccards 8/12, 4/5, 1/2, 1.
  assert acc.summary()["jaccard"] == pytest.approx((8 / 12 + 4 / 5 + 1 / 2 + 1) / 4)
  rows = acc.rows()
  assert [row["id"] for row in rows] == ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002", "3"]
  assert rows[1]["jaccard"] == pytest.approx(4 / 5)
  assert len(acc) == 4


def test_accumulator_empty_summary_raises():
  with pytest.raises(ValueError):
    metrics.ScoreAccumulator().summary()
