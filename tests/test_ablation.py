"""experiments/ablation.py's table and paired comparison, on hand-made per-image scores."""

import argparse
import csv
import json
import os

import pytest

import experiment_scripts


@pytest.fixture(scope="module")
def ablation():
  return experiment_scripts.load("ablation")


def _write_run(out, name, jaccards):
  """A scored run as evaluate writes it: per-image CSV (both variants) and summary.json."""
  folder = os.path.join(out, name, "eval", "validation")
  os.makedirs(folder)
  with open(os.path.join(folder, "per_image_all_variants.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["variant", "id", "jaccard"])
    for variant, shift in (("model", 0.0), ("model+tta", 0.01)):
      for i, j in enumerate(jaccards):
        writer.writerow([variant, f"img{i}", j + shift])
  summary = {name: {"jaccard": sum(jaccards) / len(jaccards) + shift, "dice": 0.5,
                    "accuracy": 0.9, "thresholded_jaccard": 0.4}
             for name, shift in (("model", 0.0), ("model+tta", 0.01))}
  with open(os.path.join(folder, "summary.json"), "w") as f:
    json.dump({"variants": {k: {"summary": v} for k, v in summary.items()}}, f)


def test_paired_difference_averages_seeds_per_image(ablation, tmp_path):
  out = str(tmp_path)
  _write_run(out, "segan_paper_s0", [0.5, 0.6, 0.7, 0.8])
  _write_run(out, "bce_only_s0", [0.6, 0.7, 0.8, 0.9])
  _write_run(out, "bce_only_s1", [0.6, 0.7, 0.8, 0.7])  # seed mean per image: .6 .7 .8 .8
  args = argparse.Namespace(out=out)
  line = ablation.compare(args, "segan_paper", "bce_only")
  # differences +.1 +.1 +.1 0: mean +7.5 points; every bootstrap mean lies in [0, 10]
  assert "bce_only (2 seeds) - segan_paper (1 seeds)" in line and "+7.50 points" in line
  assert "better on 3 images, worse on 0" in line
  lo, hi = [float(v) for v in line.split("interval [")[1].split("]")[0].split(",")]
  assert 0.0 <= lo <= 7.5 <= hi <= 10.0
  table = ablation.table(args)
  assert "| Segmentor alone, binary cross-entropy (no critic) | 2 | no | 72.5 (70.0-75.0) |" in table
  with pytest.raises(SystemExit, match="no scored runs of row 'dice_only'"):
    ablation.compare(args, "segan_paper", "dice_only")
