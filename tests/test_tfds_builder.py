"""The `isic2017` TFDS builder on fixture zips and folders in the official layout."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

tfds = pytest.importorskip("tensorflow_datasets", reason="the TFDS builder needs the [tfds] extra")

import isic_fixtures as fx  # noqa: E402
from segan_jax.configs import default  # noqa: E402
from segan_jax.data import arrays, folder, isic2017_tfds, sources  # noqa: E402

COUNTS = {"Training": 6, "Validation": 2, "Test_v2": 3}


def _build(data_dir, manual_dir, **kwargs):
  b = isic2017_tfds.Isic2017(data_dir=str(data_dir), **kwargs)
  isic2017_tfds.prepare(b, str(manual_dir))
  return b


@pytest.fixture(scope="module")
def official(tmp_path_factory):
  """The dataset built from the six official zips (test ground truth included)."""
  root = tmp_path_factory.mktemp("official")
  files = fx.isic_files(COUNTS)
  fx.write_zips(root / "zips", files)
  return _build(root / "tfds", root / "zips"), files


def test_import_segan_jax_does_not_import_tensorflow():
  code = ("import sys, segan_jax, segan_jax.data.folder, segan_jax.data.sources, "
          "segan_jax.config_validation; assert 'tensorflow' not in sys.modules, 'tf imported'; "
          "assert 'tensorflow_datasets' not in sys.modules")
  subprocess.run([sys.executable, "-c", code], check=True)


def test_registered_and_loadable_with_tfds_load(official):
  b, _ = official
  assert "isic2017" in tfds.list_builders()
  ds = tfds.load("isic2017", split="validation", data_dir=b.data_dir_root)
  ex = next(iter(ds))
  assert ex["image"].shape[-1] == 3 and ex["mask"].shape[-1] == 1


def test_splits_and_features_from_official_zips(official):
  b, files = official
  ids = fx.isic_ids(COUNTS)
  assert {k: v.num_examples for k, v in b.info.splits.items()} == {
      "train": 6, "validation": 2, "test": 3}
  for split, name in (("train", "Training"), ("validation", "Validation"), ("test", "Test_v2")):
    recs = sorted(isic2017_tfds.records(b, split), key=lambda r: r["id"])
    assert [r["id"] for r in recs] == ids[name]
    for r in recs:
      # JPEG bytes stored as they were; masks 0/255 at the mask file's size.
      assert r["image"] == files[f"ISIC-2017_{name}_Data"][f"{r['id']}.jpg"]
      assert r["has_mask"] and tuple(r["original_size"]) == (24, 32)
  ex = next(iter(tfds.as_numpy(b.as_dataset(split="train"))))
  assert set(np.unique(ex["mask"])) <= {0, 255} and ex["mask"].shape == (24, 32, 1)


def test_test_split_without_ground_truth(tmp_path):
  files = fx.isic_files({"Training": 3, "Test_v2": 2}, test_masks=False)
  fx.write_folders(tmp_path / "extracted", files)  # extracted folders instead of zips
  b = _build(tmp_path / "tfds", tmp_path / "extracted")
  assert sorted(b.info.splits) == ["test", "train"]
  for r in isic2017_tfds.records(b, "test"):
    assert not r["has_mask"] and tuple(r["original_size"]) == (24, 32)
  ex = next(iter(tfds.as_numpy(b.as_dataset(split="test"))))
  assert ex["mask"].shape == (1, 1, 1) and not ex["has_mask"]


def test_evaluation_splits_of_the_tfds_source(tmp_path):
  from segan_jax import evaluate
  files = fx.isic_files({"Training": 3, "Validation": 1, "Test_v2": 2})
  fx.write_folders(tmp_path / "extracted", files)
  config = default.get_config()
  config.data.source, config.data.dir = "tfds", str(tmp_path / "tfds")
  config.data.manual_dir = str(tmp_path / "extracted")
  test = evaluate.load_eval_set(config, "test", 128)  # official Test_v2 with ground truth
  assert test.ids == sorted(n[:-4] for n in files["ISIC-2017_Test_v2_Data"] if n.endswith(".jpg"))
  assert test.original_sizes == [(24, 32), (24, 32)] and test.images.shape[1:3] == (128, 128)
  assert len(evaluate.load_examples(config, "train", 128)) == 3
  assert len(evaluate.load_examples(config, "all", 128)) == 6
  no_test = default.get_config()
  no_test.data.source, no_test.data.dir = "tfds", str(tmp_path / "tfds_no_test")
  no_test.data.manual_dir = str(tmp_path / "train_only")
  fx.write_folders(tmp_path / "train_only", fx.isic_files({"Training": 3}))
  with pytest.raises(folder.DataError, match="has no 'test' split"):
    evaluate.load_examples(no_test, "test", 128)


def test_tfds_source_matches_the_folder_source(tmp_path):
  # A folder of training pairs only, with squashed images (like the real-data copy of the tests):
  # both sources hold out the same ids and give the same arrays.
  fx.write_folders(tmp_path / "pairs", fx.isic_files({"Training": 10}, mask_scale=2,
                                                     image_size=(20, 20)))
  config = default.get_config()
  config.data.val_fraction = 0.2
  config.data.source, config.data.dir = "folder", str(tmp_path / "pairs")
  f_train, f_val = sources.load_splits(config)
  config.data.source, config.data.dir = "tfds", str(tmp_path / "tfds")
  config.data.manual_dir = str(tmp_path / "pairs")
  t_train, t_val = sources.load_splits(config)
  assert [e.id for e in t_train] == [e.id for e in f_train] and len(t_val) == 2
  assert [e.id for e in t_val] == [e.id for e in f_val]
  a, b = arrays.prepare_train(f_train, 135, 180), arrays.prepare_train(t_train, 135, 180)
  np.testing.assert_array_equal(a.images, b.images)
  np.testing.assert_array_equal(a.masks, b.masks)
  ea, eb = arrays.prepare_eval(f_val, 128), arrays.prepare_eval(t_val, 128)
  np.testing.assert_array_equal(ea.images, eb.images)
  assert ea.original_sizes == eb.original_sizes == [(48, 64), (48, 64)]
  # Built once: a second load reuses the prepared dataset (manual_dir no longer needed).
  config.data.manual_dir = ""
  assert [e.id for e in sources.load_splits(config)[1]] == [e.id for e in f_val]


def test_bad_input_fails_before_anything_is_written(tmp_path):
  files = fx.isic_files({"Training": 3})
  del files["ISIC-2017_Training_Part1_GroundTruth"]["ISIC_0000001_segmentation.png"]
  fx.write_zips(tmp_path / "zips", files)
  b = isic2017_tfds.Isic2017(data_dir=str(tmp_path / "tfds"))
  with pytest.raises(folder.DataError, match=r"ISIC_0000001\.jpg: no mask"):
    isic2017_tfds.prepare(b, str(tmp_path / "zips"))
  assert not b.is_prepared()
  b = _build(tmp_path / "tfds_skip", tmp_path / "zips", on_bad_pairs="skip")
  assert b.info.splits["train"].num_examples == 2


def test_normalised_images_and_masks_are_stored(tmp_path):
  root = tmp_path / "pairs"
  fx.write_generic(root, 3)
  image, mask = fx.lesion_pair(1)
  Image.fromarray(image[..., 0]).save(root / "images" / "lesion_001.png")  # grayscale
  Image.fromarray((mask // 255).astype(np.uint8)).save(root / "masks" / "lesion_001.png")
  os.remove(root / "masks" / "lesion_001_segmentation.png")
  b = _build(tmp_path / "tfds", root)
  ex = {r["id"]: r for r in tfds.as_numpy(b.as_dataset(split="train"))}[b"lesion_001"]
  np.testing.assert_array_equal(ex["image"], np.repeat(image[..., :1], 3, -1))
  np.testing.assert_array_equal(ex["mask"][..., 0], mask)


def test_a_missing_manual_dir_is_an_error_not_a_download(tmp_path):
  b = isic2017_tfds.Isic2017(data_dir=str(tmp_path / "tfds"))
  with pytest.raises(folder.DataError, match="no such folder, or an empty one"):
    isic2017_tfds.prepare(b, str(tmp_path / "missing"))
  os.makedirs(tmp_path / "empty")
  with pytest.raises(folder.DataError, match="no such folder, or an empty one"):
    isic2017_tfds.prepare(b, str(tmp_path / "empty"))
