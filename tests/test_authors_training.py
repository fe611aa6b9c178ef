"""experiments/authors_training.py's data split, links and scoring (the parts that need neither
torch nor the authors' code), on a tiny folder in the official ISIC layout."""

import argparse
import os

import numpy as np
import pytest
from PIL import Image

import experiment_scripts


@pytest.fixture(scope="module")
def authors_training():
  return experiment_scripts.load("authors_training")


def _official_folder(root, ids, module):
  """ids' 32x24 images and masks in the official layout: the first mask all lesion, the rest a
  centre rectangle."""
  os.makedirs(root / module.IMAGES)
  os.makedirs(root / module.MASKS)
  for n, image_id in enumerate(ids):
    Image.fromarray(np.full((24, 32, 3), 40 * n, np.uint8)).save(root / module.IMAGES /
                                                                 f"{image_id}.jpg")
    mask = np.full((24, 32), 255, np.uint8) if n == 0 else np.zeros((24, 32), np.uint8)
    mask[8:16, 8:24] = 255
    Image.fromarray(mask).save(root / module.MASKS / f"{image_id}_segmentation.png")


def test_split_and_links(authors_training, tmp_path):
  ids = [f"ISIC_000000{i}" for i in range(5)]
  _official_folder(tmp_path / "data", ids, authors_training)
  held = tmp_path / "held.txt"
  held.write_text("# held-out ids\nISIC_0000003\nISIC_0000001\n")
  train, val = authors_training.split_ids(tmp_path / "data", held)
  assert train == ["ISIC_0000000", "ISIC_0000002", "ISIC_0000004"]
  assert val == ["ISIC_0000001", "ISIC_0000003"]
  root = tmp_path / "linked"
  authors_training.link_pairs(tmp_path / "data", train, root, authors_training.IMAGES,
                              authors_training.MASKS)
  authors_training.link_pairs(tmp_path / "data", train, root, authors_training.IMAGES,
                              authors_training.MASKS)  # again: links kept, no error
  assert sorted(os.listdir(root / authors_training.IMAGES)) == [f"{i}.jpg" for i in train]
  assert (root / authors_training.MASKS / "ISIC_0000002_segmentation.png").resolve() == (
      tmp_path / "data" / authors_training.MASKS / "ISIC_0000002_segmentation.png")


def test_split_rejects_unknown_heldout_ids(authors_training, tmp_path):
  _official_folder(tmp_path / "data", ["ISIC_0000000", "ISIC_0000001"], authors_training)
  held = tmp_path / "held.txt"
  held.write_text("ISIC_0000009\n")
  with pytest.raises(SystemExit, match="ISIC_0000009"):
    authors_training.split_ids(tmp_path / "data", held)
  with pytest.raises(SystemExit, match="official ISIC 2017 layout"):
    authors_training.split_ids(tmp_path / "missing", held)


def test_scores_are_what_ablation_compares(authors_training, tmp_path):
  """score() writes summary.json and per_image_all_variants.csv that experiments/ablation.py
  pairs with its own runs; the figures are the ISIC scores of the maps at original size."""
  ids = [f"ISIC_000000{i}" for i in range(4)]
  _official_folder(tmp_path / "data", ids, authors_training)
  held = tmp_path / "held.txt"
  held.write_text("ISIC_0000000\nISIC_0000002\n")
  args = argparse.Namespace(data_dir=tmp_path / "data", val_ids=held, threshold=0.4)
  # ISIC_0000000's mask is all lesion: all-ones scores 1; ISIC_0000002's all-zeros scores 0.
  probs = np.stack([np.ones((128, 128, 1)), np.zeros((128, 128, 1))]).astype(np.float32)
  summary = authors_training.score(args, {"model": probs, "model+tta": probs},
                                   ["ISIC_0000000", "ISIC_0000002"], tmp_path / "runs" /
                                   "authors_code_s0", log=lambda m: None)
  assert summary["variants"]["model"]["summary"]["jaccard"] == pytest.approx(0.5)
  ablation = experiment_scripts.load("ablation")
  per_image, seeds = ablation._per_image_jaccard(
      argparse.Namespace(out=str(tmp_path / "runs"), results=[]), "authors_code", "model")
  assert seeds == 1
  assert per_image == {"ISIC_0000000": pytest.approx(1.0), "ISIC_0000002": pytest.approx(0.0)}
