"""Post-processing of lesion masks, and evaluate/predict --postprocess scoring what they write."""

import csv
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from eval_fixtures import BATCH, switch_on_eval_option
from PIL import Image

from segan_jax import evaluate, inference, metrics, predict
from segan_jax.postprocess import fill_holes, largest_component, postprocess_mask


def _two_blobs_with_a_hole():
  mask = np.zeros((40, 50), bool)
  mask[5:25, 5:30] = True  # the lesion, 20 x 25
  mask[12:16, 14:20] = False  # a hole in it
  mask[30:35, 38:46] = True  # a smaller island
  mask[2, 45] = True  # a speck
  return mask


def test_two_blobs_and_a_hole_become_one_filled_blob():
  mask = _two_blobs_with_a_hole()
  out = postprocess_mask(mask)
  expected = np.zeros_like(mask)
  expected[5:25, 5:30] = True
  np.testing.assert_array_equal(out, expected)
  assert out.dtype == bool and mask.sum() != out.sum()
  kept = largest_component(mask)
  assert kept[12:16, 14:20].sum() == 0 and kept[30:35, 38:46].sum() == 0  # the hole stays
  np.testing.assert_array_equal(fill_holes(kept), expected)


def test_diagonal_contact_is_one_region_and_empty_masks_stay_empty():
  diagonal = np.zeros((6, 6), bool)
  diagonal[1:3, 1:3] = diagonal[3:5, 3:5] = True  # two squares touching at a corner
  np.testing.assert_array_equal(largest_component(diagonal), diagonal)
  empty = np.zeros((7, 9), bool)
  np.testing.assert_array_equal(postprocess_mask(empty), empty)
  np.testing.assert_array_equal(postprocess_mask(_two_blobs_with_a_hole()[..., None]),
                                postprocess_mask(_two_blobs_with_a_hole()))
  with pytest.raises(ValueError, match="2-D mask"):
    postprocess_mask(np.zeros((2, 3, 4), bool))


def test_border_touching_background_is_not_a_hole():
  mask = np.zeros((10, 10), bool)
  mask[0:10, 2] = mask[0:10, 7] = True
  mask[0, 2:8] = True  # a U open at the bottom edge: its inside touches the border
  np.testing.assert_array_equal(postprocess_mask(mask), mask)


def _held_out_folder(root, rng):
  """Random image/mask pairs of non-network sizes in the folder layout that evaluate reads."""
  sizes = {"q1": (90, 120), "q2": (70, 64), "q3": (128, 100)}
  for name, (h, w) in sizes.items():
    for sub, array, suffix in (
        ("images", rng.integers(0, 256, (h, w, 3), dtype=np.uint8), ".png"),
        ("masks", np.where(rng.random((h, w)) > 0.5, 255, 0).astype(np.uint8),
         "_segmentation.png")):
      os.makedirs(os.path.join(root, sub), exist_ok=True)
      Image.fromarray(array).save(os.path.join(root, sub, f"{name}{suffix}"))
  return sizes


def _rows(path):
  with open(path) as f:
    return {r["id"]: r for r in csv.DictReader(f)}


def test_evaluate_postprocess_scores_what_predict_postprocess_writes(trained_run, tmp_path):
  """`predict --postprocess` writes each mask post-processed at the original size, and
  `evaluate --postprocess` scores exactly those masks; without post-processing the scores of
  these fragmented predictions differ."""
  data = str(tmp_path / "data")
  sizes = _held_out_folder(data, np.random.default_rng(11))
  threshold = "0.5"
  cache = f"--jax_cache_dir={jax.config.jax_compilation_cache_dir or ''}"
  common = [f"--workdir={trained_run}", f"--threshold={threshold}", f"--batch_size={BATCH}",
            "--postprocess", cache]
  predicted = tmp_path / "predicted"
  proc = subprocess.run([sys.executable, "-m", "segan_jax.predict", *common,
                         f"--input={os.path.join(data, 'images')}", f"--output={predicted}",
                         "--noprogress"], capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  scored = tmp_path / "scored"
  proc = subprocess.run([sys.executable, "-m", "segan_jax.evaluate", *common, "--split=all",
                         "--data_source=folder", f"--data_dir={data}", f"--output={scored}",
                         "--num_worst=1", "--num_examples=0"],
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = _rows(scored / "per_image.csv")
  assert sorted(rows) == sorted(sizes)
  with open(scored / "summary.json") as f:
    assert json.load(f)["postprocess"] is True
  with open(predicted / "predict_summary.json") as f:
    assert json.load(f)["postprocess"] is True
  for name in sizes:
    written = np.asarray(Image.open(predicted / f"{name}_segmentation.png")) > 127
    assert written.shape == sizes[name]
    assert np.array_equal(postprocess_mask(written), written)  # one region, no holes
    truth = np.asarray(Image.open(os.path.join(data, "masks", f"{name}_segmentation.png")))
    expected = metrics.image_scores(written, metrics.binarize_truth(truth))
    for metric, value in expected.items():
      assert float(rows[name][metric]) == pytest.approx(value, abs=1e-12), (name, metric)

  # The same run in-process without post-processing scores other masks: the test can fail.
  plain = evaluate.evaluate([trained_run], split="all", data_source="folder", data_dir=data,
                            threshold=float(threshold), output=str(tmp_path / "plain"),
                            batch_size=BATCH, num_worst=0, num_examples=0, log=lambda *_: None)
  assert not plain["postprocess"]
  plain_rows = _rows(tmp_path / "plain" / "per_image.csv")
  assert any(plain_rows[n]["jaccard"] != rows[n]["jaccard"] for n in sizes)


def test_config_eval_postprocess_is_the_default_of_evaluate_and_predict(run_copy, tmp_path):
  """A run whose config sets eval.postprocess is scored and predicted post-processed unless the
  caller says otherwise, from Python as from the command lines (the library's default is the
  run's config); the default config leaves masks as thresholded."""
  switch_on_eval_option(run_copy, "postprocess")
  data = str(tmp_path / "data")
  _held_out_folder(data, np.random.default_rng(12))
  kwargs = dict(split="all", data_source="folder", data_dir=data, threshold=0.5,
                batch_size=BATCH, num_worst=0, num_examples=0, log=lambda *_: None)
  by_config = evaluate.evaluate([run_copy], output=str(tmp_path / "a"), **kwargs)
  overridden = evaluate.evaluate([run_copy], output=str(tmp_path / "b"), postprocess=False,
                                 **kwargs)
  assert by_config["postprocess"] is True and overridden["postprocess"] is False
  a, b = _rows(tmp_path / "a" / "per_image.csv"), _rows(tmp_path / "b" / "per_image.csv")
  assert any(a[n]["jaccard"] != b[n]["jaccard"] for n in a)

  models = inference.load_models([run_copy], threshold=0.5)
  report = predict.predict_files(models, [os.path.join(data, "images")], str(tmp_path / "p"),
                                 batch_size=BATCH, progress=False, log=lambda *_: None)
  assert report["postprocess"] is True
  for name in a:
    written = np.asarray(Image.open(tmp_path / "p" / f"{name}_segmentation.png")) > 127
    assert np.array_equal(postprocess_mask(written), written)
