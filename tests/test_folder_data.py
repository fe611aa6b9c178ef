"""Folder source: layouts, pairing, splits, and every bad-input case, on files the tests create."""

import io
import logging
import os

import numpy as np
import pytest
from PIL import Image

import isic_fixtures as fx
from segan_jax.config_validation import ConfigError, validate_config
from segan_jax.configs import default
from segan_jax.data import arrays, folder, sources
from segan_jax.data.folder import DataError, Options

REAL_DATA = fx.real_isic2017_dir()

COUNTS = {"Training": 6, "Validation": 2, "Test_v2": 3}


def folder_config(root, **data):
  config = default.get_config()
  config.data.source = "folder"
  config.data.dir = str(root)
  config.data.decode_workers = 2
  for k, v in data.items():
    config.data[k] = v
  validate_config(config)
  return config


# --- layouts and pairing ---------------------------------------------------------------------

def test_isic_folders_pair_by_id_and_ignore_extras(tmp_path):
  fx.write_folders(tmp_path, fx.isic_files(COUNTS, test_masks=False))
  splits = folder.scan(str(tmp_path))
  ids = fx.isic_ids(COUNTS)
  assert sorted(splits) == ["test", "train", "validation"]
  assert [p.id for p in splits["train"]] == ids["Training"]
  assert [p.id for p in splits["validation"]] == ids["Validation"]
  assert [p.id for p in splits["test"]] == ids["Test_v2"]
  assert all(p.mask is None for p in splits["test"])  # no ground truth: prediction only
  for p in splits["train"]:
    assert p.image.name == f"{p.id}.jpg" and p.mask.name == f"{p.id}_segmentation.png"
  test = folder.load_split(str(tmp_path), "test")
  assert [d.original_size for d in test] == [(24, 32)] * 3 and test[0].mask is None


def test_isic_zips_read_in_place_match_folders(tmp_path):
  files = fx.isic_files(COUNTS)
  fx.write_folders(tmp_path / "folders", files)
  fx.write_zips(tmp_path / "zips", files)
  a = folder.load_split(str(tmp_path / "folders"), "validation")
  b = folder.load_split(str(tmp_path / "zips"), "validation")
  assert [d.id for d in a] == [d.id for d in b]
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x.image, y.image)
    np.testing.assert_array_equal(x.mask, y.mask)
  assert sorted(folder.scan(str(tmp_path / "zips"))) == ["test", "train", "validation"]


def test_decoded_pairs_are_aligned(tmp_path):
  fx.write_folders(tmp_path, fx.isic_files(COUNTS))
  for d in folder.load_split(str(tmp_path), "train"):
    assert d.image.shape == (24, 32, 3) and d.image.dtype == np.uint8
    assert set(np.unique(d.mask)) <= {0, 255}
    lesion = d.image[d.mask > 0].astype(int)
    skin = d.image[d.mask == 0].astype(int)
    assert np.abs(lesion.mean(0) - fx.LESION).max() < 12  # JPEG
    assert np.abs(skin.mean(0) - fx.SKIN).max() < 12


def test_generic_layout_with_suffix_and_bare_names(tmp_path):
  ids = fx.write_generic(tmp_path, 7, mask_suffix="_mask")
  pairs = folder.scan(str(tmp_path), Options(mask_suffix="_mask"))["train"]
  assert [p.id for p in pairs] == ids
  assert {p.mask.name for p in pairs} >= {"lesion_000.png", "lesion_001_mask.png"}
  for d in folder.decode(pairs):
    np.testing.assert_array_equal(d.mask, fx.lesion_pair(int(d.id[-3:]))[1])
  with pytest.raises(DataError, match="lesion_001.png: no mask"):
    folder.scan(str(tmp_path))  # default suffix _segmentation: lesion_001_mask.png is stray


def test_generic_split_folders(tmp_path):
  fx.write_generic(tmp_path / "train", 5)
  fx.write_generic(tmp_path / "val", 2, start=5)
  os.makedirs(tmp_path / "test" / "images")
  Image.fromarray(fx.lesion_pair(9)[0]).save(tmp_path / "test" / "images" / "x.png")
  splits = folder.scan(str(tmp_path))
  assert {k: len(v) for k, v in splits.items()} == {"train": 5, "validation": 2, "test": 1}
  assert splits["test"][0].mask is None


# --- splits ----------------------------------------------------------------------------------

def test_official_validation_split_is_used(tmp_path):
  fx.write_folders(tmp_path, fx.isic_files(COUNTS))
  train, val = sources.load_splits(folder_config(tmp_path))
  ids = fx.isic_ids(COUNTS)
  assert [e.id for e in train] == ids["Training"] and [e.id for e in val] == ids["Validation"]
  assert train[0].image.shape == (135, 180, 3) and train[0].mask.shape == (135, 180)
  assert val[0].image.shape == (128, 128, 3) and val[0].mask.shape == (24, 32)


def test_holdout_is_seeded_disjoint_and_deterministic(tmp_path):
  ids = fx.write_generic(tmp_path, 20)
  config = folder_config(tmp_path, val_fraction=0.25, seed=3)
  train, val = sources.load_splits(config)
  train_ids, val_ids = [e.id for e in train], [e.id for e in val]
  assert len(val_ids) == 5 and len(train_ids) == 15
  assert not set(train_ids) & set(val_ids) and sorted(train_ids + val_ids) == ids
  again = sources.load_splits(config)
  assert [e.id for e in again[1]] == val_ids
  np.testing.assert_array_equal(np.stack([e.image for e in again[0]]),
                                np.stack([e.image for e in train]))
  other = folder.holdout_ids(ids, 0.25, seed=4)
  assert other != val_ids and len(other) == 5
  assert folder.holdout_ids(list(reversed(ids)), 0.25, 3) == val_ids  # listing order is irrelevant


def test_val_ids_file_is_written_then_read(tmp_path):
  fx.write_generic(tmp_path / "data", 10)
  ids_file = str(tmp_path / "ids" / "val.txt")
  config = folder_config(tmp_path / "data", val_fraction=0.2, val_ids_file=ids_file)
  _, val = sources.load_splits(config)
  assert folder.read_ids(ids_file) == [e.id for e in val]
  folder.write_ids(ids_file, ["lesion_001", "lesion_007"])
  train, val = sources.load_splits(config)
  assert [e.id for e in val] == ["lesion_001", "lesion_007"] and len(train) == 8
  folder.write_ids(ids_file, ["lesion_001", "nope"])
  with pytest.raises(DataError, match="not among the training ids"):
    sources.load_splits(config)


def test_train_limit_keeps_a_seeded_nested_subset_of_the_training_pairs(tmp_path):
  fx.write_generic(tmp_path, 20)
  full_train, full_val = sources.load_splits(folder_config(tmp_path, val_fraction=0.25, seed=3))
  full_ids = [e.id for e in full_train]
  subsets = {}
  for limit in (4, 8):
    train, val = sources.load_splits(
        folder_config(tmp_path, val_fraction=0.25, seed=3, train_limit=limit))
    ids = [e.id for e in train]
    assert len(ids) == limit and set(ids) <= set(full_ids)
    assert ids == [i for i in full_ids if i in ids]  # the training split's order is kept
    assert [e.id for e in val] == [e.id for e in full_val]  # the hold-out does not move
    by_id = {e.id: e for e in full_train}
    for e in train:
      np.testing.assert_array_equal(e.image, by_id[e.id].image)
      np.testing.assert_array_equal(e.mask, by_id[e.id].mask)
    subsets[limit] = set(ids)
  assert subsets[4] < subsets[8]
  other = sources.load_splits(folder_config(tmp_path, val_fraction=0.25, seed=4, train_limit=4))
  assert {e.id for e in other[0]} != subsets[4]  # another data.seed draws another subset
  # The draw depends on the ids, not on the order the source lists them in.
  assert ([e.id for e in sources.limit_training(list(reversed(full_train)), 4, 3)]
          == list(reversed([i for i in full_ids if i in subsets[4]])))
  assert sources.limit_training(full_train, 0, 3) == full_train
  with pytest.raises(ConfigError, match=r"data\.train_limit=16 is more than the 15 training"):
    sources.load_splits(folder_config(tmp_path, val_fraction=0.25, seed=3, train_limit=16))


def test_resized_examples_equal_resizing_the_originals(tmp_path):
  fx.write_generic(tmp_path, 6)
  config = folder_config(tmp_path)
  train, val = sources.load_splits(config)
  originals = {d.id: d for d in folder.load_split(str(tmp_path), "train")}
  ours = arrays.prepare_train(train, 135, 180)
  ref = arrays.prepare_train([originals[e.id].example() for e in train], 135, 180)
  np.testing.assert_array_equal(ours.images, ref.images)
  np.testing.assert_array_equal(ours.masks, ref.masks)
  ev = arrays.prepare_eval(val, 128)
  ref_ev = arrays.prepare_eval([originals[e.id].example() for e in val], 128)
  np.testing.assert_array_equal(ev.images, ref_ev.images)
  assert ev.original_sizes == ref_ev.original_sizes == [(24, 32)] * len(val)


@pytest.mark.parametrize("layout, num_classes", [("official", 1), ("held_out", 1),
                                                 ("held_out", 3)])
def test_validation_alone_is_load_train_val_validation_without_its_training_pairs(
    tmp_path, layout, num_classes):
  """load_validation returns exactly load_train_val's validation examples (ids, images at the
  network size, original-size masks) and decodes no training pair: with every training-only
  image unreadable it still loads, where load_train_val fails."""
  if layout == "official":
    fx.write_folders(tmp_path, fx.isic_files(COUNTS))
    config = folder_config(tmp_path)
  elif num_classes == 1:
    fx.write_generic(tmp_path, 20)
    config = folder_config(tmp_path, val_fraction=0.25, seed=3)
  else:
    _index_masks(tmp_path, count=9)
    config = folder_config(tmp_path, val_fraction=0.34)
  config.model.num_classes = num_classes
  _, expected = folder.load_train_val(config.data, num_classes)
  val = folder.load_validation(config.data, num_classes)
  assert len(val) >= 2 and [e.id for e in val] == [e.id for e in expected]
  for got, want in zip(val, expected):
    assert got.image.shape == (128, 128, 3) and got.image.dtype == want.image.dtype
    np.testing.assert_array_equal(got.image, want.image)
    assert got.mask.shape == want.mask.shape == (24, 32) and got.mask.dtype == want.mask.dtype
    np.testing.assert_array_equal(got.mask, want.mask)
  by_source = sources.load_validation(config)
  assert [e.id for e in by_source] == [e.id for e in val]
  for got, want in zip(by_source, val):
    np.testing.assert_array_equal(got.image, want.image)
    np.testing.assert_array_equal(got.mask, want.mask)

  held = {e.id for e in val}
  for pair in folder.scan(str(tmp_path), Options(num_classes=num_classes))["train"]:
    if pair.id not in held:
      fx.truncate_pixels(pair.image.path)
  with pytest.raises(DataError, match="unreadable"):
    folder.load_train_val(config.data, num_classes)
  again = folder.load_validation(config.data, num_classes)
  assert [e.id for e in again] == [e.id for e in val]
  for got, want in zip(again, val):
    np.testing.assert_array_equal(got.image, want.image)


# --- bad input -------------------------------------------------------------------------------

def test_wrong_path_file_and_empty_folder(tmp_path):
  with pytest.raises(DataError, match="no such folder"):
    folder.scan(str(tmp_path / "missing"))
  (tmp_path / "file.txt").write_text("x")
  with pytest.raises(DataError, match="not a folder"):
    folder.scan(str(tmp_path / "file.txt"))
  os.makedirs(tmp_path / "empty")
  with pytest.raises(DataError, match="empty"):
    folder.scan(str(tmp_path / "empty"))
  with pytest.raises(DataError, match="neither the ISIC 2017 layout"):
    folder.scan(str(tmp_path))
  os.makedirs(tmp_path / "noimg" / "images")
  os.makedirs(tmp_path / "noimg" / "masks")
  with pytest.raises(DataError, match="no images"):
    folder.scan(str(tmp_path / "noimg"))


def test_config_rejects_a_missing_folder_and_bad_options(tmp_path):
  config = default.get_config()
  config.data.source = "folder"
  config.data.dir = str(tmp_path / "missing")
  with pytest.raises(ConfigError, match=r"data\.dir"):
    validate_config(config)
  for field, value in (("on_bad_pairs", "ignore"), ("size_check", "loose"),
                       ("nonbinary_masks", "round"), ("decode_workers", -1),
                       ("train_limit", -1)):
    config = default.get_config()
    config.data[field] = value
    with pytest.raises(ConfigError, match=rf"data\.{field}"):
      validate_config(config)


def test_missing_mask_errors_or_is_skipped(tmp_path, caplog):
  fx.write_generic(tmp_path, 5)
  os.remove(tmp_path / "masks" / "lesion_002_segmentation.png")
  with pytest.raises(DataError, match=r"lesion_002\.png: no mask"):
    folder.scan(str(tmp_path))
  with caplog.at_level(logging.WARNING):
    pairs = folder.scan(str(tmp_path), Options(on_bad_pairs="skip"))["train"]
  assert [p.id for p in pairs] == ["lesion_000", "lesion_001", "lesion_003", "lesion_004"]
  assert "Skipped 1 bad pair" in caplog.text


def test_extra_mask_errors_or_is_ignored(tmp_path):
  fx.write_generic(tmp_path, 3)
  Image.fromarray(fx.lesion_pair(0)[1]).save(tmp_path / "masks" / "orphan_segmentation.png")
  (tmp_path / "masks" / "notes.txt").write_text("not an image: ignored")
  with pytest.raises(DataError, match="orphan_segmentation.png: a mask without an image"):
    folder.scan(str(tmp_path))
  assert len(folder.scan(str(tmp_path), Options(on_bad_pairs="skip"))["train"]) == 3


def test_duplicate_ids_and_jpeg_masks(tmp_path):
  fx.write_generic(tmp_path / "dup", 3)
  Image.fromarray(fx.lesion_pair(1)[0]).save(tmp_path / "dup" / "images" / "lesion_001.jpg")
  with pytest.raises(DataError, match="two images with the id 'lesion_001'"):
    folder.scan(str(tmp_path / "dup"))
  fx.write_generic(tmp_path / "jpg", 3)
  os.remove(tmp_path / "jpg" / "masks" / "lesion_001_segmentation.png")
  Image.fromarray(fx.lesion_pair(1)[1]).save(tmp_path / "jpg" / "masks" / "lesion_001.jpg")
  with pytest.raises(DataError, match=r"lesion_001\.jpg: masks must be PNG"):
    folder.scan(str(tmp_path / "jpg"))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_or_truncated_image(tmp_path, damage, caplog):
  fx.write_generic(tmp_path, 4, fmt="JPEG")
  path = tmp_path / "images" / "lesion_002.jpg"
  big = np.random.default_rng(0).integers(0, 255, (96, 128, 3), np.uint8)  # incompressible
  data = fx.encode(big, "JPEG", quality=95)
  path.write_bytes(b"not an image at all" if damage == "garbage" else data[:len(data) // 2])
  Image.fromarray(fx.lesion_pair(2)[1]).resize((128, 96)).save(
      tmp_path / "masks" / "lesion_002_segmentation.png")
  config = folder_config(tmp_path, size_check="any")
  with pytest.raises(DataError, match=r"lesion_002\.jpg: unreadable"):
    sources.load_splits(config)
  config.data.on_bad_pairs = "skip"
  config.data.val_fraction = 0.3
  with caplog.at_level(logging.WARNING):
    train, val = sources.load_splits(config)
  assert sorted(e.id for e in train + val) == ["lesion_000", "lesion_001", "lesion_003"]
  assert "Skipped 1 bad pair" in caplog.text


def test_truncated_mask(tmp_path):
  fx.write_generic(tmp_path, 3)
  path = tmp_path / "masks" / "lesion_001_segmentation.png"
  noise = (np.random.default_rng(1).random((64, 64)) > 0.5).astype(np.uint8) * 255
  Image.fromarray(noise).save(path)
  path.write_bytes(path.read_bytes()[:200])
  Image.fromarray(fx.lesion_pair(1)[0]).resize((64, 64)).save(tmp_path / "images" / "lesion_001.png")
  with pytest.raises(DataError, match=r"lesion_001_segmentation\.png: unreadable"):
    list(folder.decode(folder.scan(str(tmp_path))["train"]))


def _resize_image(root, stem, size):
  path = root / "images" / f"{stem}.png"
  Image.open(path).resize(size).save(path)


def test_size_check_modes(tmp_path):
  fx.write_generic(tmp_path, 4)
  _resize_image(tmp_path, "lesion_001", (16, 12))  # proportional (32x24 -> 16x12)
  folder.scan(str(tmp_path))  # auto accepts a proportional downscale
  with pytest.raises(DataError, match=r"lesion_001\.png: image is 16x12 but its mask .* is 32x24"):
    folder.scan(str(tmp_path), Options(size_check="equal"))
  _resize_image(tmp_path, "lesion_002", (20, 20))  # squashed, while the other images differ
  for mode in ("auto", "aspect"):
    with pytest.raises(DataError, match=r"lesion_002\.png: image is 20x20"):
      folder.scan(str(tmp_path), Options(size_check=mode))
  assert len(folder.scan(str(tmp_path), Options(size_check="any"))["train"]) == 4
  assert [p.id for p in folder.scan(str(tmp_path), Options(on_bad_pairs="skip"))["train"]] == [
      "lesion_000", "lesion_001", "lesion_003"]


def test_uniformly_resized_images_are_accepted_with_the_mask_as_original_size(tmp_path):
  # Like the real-data copy of the tests: every image squashed to one size, masks at original size.
  fx.write_folders(tmp_path, fx.isic_files({"Training": 4}, mask_scale=2, image_size=(16, 16)))
  pairs = folder.scan(str(tmp_path))["train"]
  assert {p.image_size for p in pairs} == {(16, 16)} and {p.mask_size for p in pairs} == {(48, 64)}
  decoded = list(folder.decode(pairs))
  assert decoded[0].original_size == (48, 64) and decoded[0].mask.shape == (48, 64)
  with pytest.raises(DataError, match="image is 16x16"):
    folder.scan(str(tmp_path), Options(size_check="aspect"))


def test_same_size_folders_name_masks_of_unusual_shape(tmp_path, caplog):
  """A square or rotated mask among 3:2 ones cannot be checked against a squashed image: named."""
  folders = fx.isic_files({"Training": 6}, mask_scale=2, image_size=(16, 16))
  truth = folders["ISIC-2017_Training_Part1_GroundTruth"]
  names = sorted(truth)
  for name in names:  # 3:2 originals, the commonest ISIC shape
    truth[name] = fx.encode(np.asarray(Image.open(io.BytesIO(truth[name])).resize(
        (72, 48), Image.NEAREST)))
  rotated = np.asarray(Image.open(io.BytesIO(truth[names[1]]))).T.copy()
  truth[names[1]] = fx.encode(rotated)
  truth[names[2]] = fx.encode(np.zeros((80, 80), np.uint8))
  fx.write_folders(tmp_path, folders)
  caplog.set_level(logging.WARNING)
  pairs = folder.scan(str(tmp_path))["train"]
  assert len(pairs) == 6  # still accepted: such shapes exist among real originals
  assert [p.mask.name for p in folder.unusual_mask_shapes(pairs)] == names[1:3]
  (warning,) = [r.getMessage() for r in caplog.records if "unlike the rest" in r.getMessage()]
  assert f"{names[1]} (48x72)" in warning and f"{names[2]} (80x80)" in warning
  assert names[0] not in warning
  caplog.clear()
  fx.write_folders(tmp_path / "clean", fx.isic_files({"Training": 6}, mask_scale=2,
                                                      image_size=(16, 16)))
  folder.scan(str(tmp_path / "clean"))
  assert not [r for r in caplog.records if "unlike the rest" in r.getMessage()]


def _one_mask(tmp_path, mask, stem="lesion_001"):
  if not (tmp_path / "masks").exists():
    fx.write_generic(tmp_path, 3)
  Image.fromarray(mask).save(tmp_path / "masks" / f"{stem}_segmentation.png")
  return folder.scan(str(tmp_path))["train"]


def test_antialiased_mask_is_binarised_or_rejected(tmp_path):
  mask = fx.lesion_pair(1)[1]
  soft = np.asarray(Image.fromarray(mask).resize((16, 12), Image.BILINEAR).resize(
      (32, 24), Image.BILINEAR))
  assert len(np.unique(soft)) > 2
  pairs = _one_mask(tmp_path, soft)
  got = {d.id: d.mask for d in folder.decode(pairs)}["lesion_001"]
  np.testing.assert_array_equal(got, np.where(soft > 127, 255, 0))
  with pytest.raises(DataError, match=r"lesion_001_segmentation\.png: a non-binary mask"):
    list(folder.decode(pairs, Options(nonbinary_masks="error")))


@pytest.mark.parametrize("kind", ["zero_one", "bilevel", "rgb_gray", "sixteen_bit"])
def test_binary_masks_in_other_encodings(tmp_path, kind):
  mask = fx.lesion_pair(1)[1]
  encoded = {"zero_one": (mask // 255).astype(np.uint8),
             "bilevel": mask > 0,
             "rgb_gray": np.repeat(mask[..., None], 3, axis=-1),
             "sixteen_bit": (mask.astype(np.uint16) * 257)}[kind]
  pairs = _one_mask(tmp_path, encoded)
  got = {d.id: d.mask for d in folder.decode(pairs)}["lesion_001"]
  np.testing.assert_array_equal(got, mask)


@pytest.mark.parametrize("mask,match", [
    (np.arange(24 * 32).reshape(24, 32) % 3, "label map"),
    (np.stack([np.full((24, 32), 255), np.zeros((24, 32)), np.zeros((24, 32))], -1), "colour mask"),
])
def test_label_map_and_colour_masks_are_errors(tmp_path, mask, match):
  pairs = _one_mask(tmp_path, mask.astype(np.uint8))
  with pytest.raises(DataError, match=rf"lesion_001_segmentation\.png: .*{match}"):
    list(folder.decode(pairs))


@pytest.mark.parametrize("kind", ["gray", "rgba", "palette", "gray16", "rgb16"])
def test_image_modes_are_converted_to_rgb8(tmp_path, kind):
  fx.write_generic(tmp_path, 3)
  image = fx.lesion_pair(1)[0]
  gray = image[..., 0]
  path = tmp_path / "images" / "lesion_001.png"
  expected = image
  if kind == "gray":
    Image.fromarray(gray).save(path)
    expected = np.repeat(gray[..., None], 3, -1)
  elif kind == "rgba":
    Image.fromarray(np.concatenate([image, np.full(gray.shape + (1,), 128, np.uint8)], -1)).save(path)
  elif kind == "palette":
    Image.fromarray(image).convert("P", palette=Image.ADAPTIVE, colors=4).save(path)
  elif kind == "gray16":
    Image.fromarray(gray.astype(np.uint16) * 257 + 3).save(path)
    expected = np.repeat(gray[..., None], 3, -1)
  else:
    path.write_bytes(fx.png16_rgb(image.astype(np.uint16) * 257 + 3))
  got = {d.id: d.image for d in folder.decode(folder.scan(str(tmp_path))["train"])}["lesion_001"]
  assert got.shape == (24, 32, 3) and got.dtype == np.uint8
  np.testing.assert_array_equal(got, expected)


def test_all_pairs_bad_is_an_error_even_when_skipping(tmp_path):
  fx.write_generic(tmp_path, 2)
  for stem in ("lesion_000", "lesion_001"):
    (tmp_path / "images" / f"{stem}.png").write_bytes(b"broken")
  with pytest.raises(DataError, match="No usable pairs"):
    folder.scan(str(tmp_path), Options(on_bad_pairs="skip"))


# --- real data ($SEGAN_ISIC2017_DIR, see isic_fixtures.py), skipped where absent -------------

@pytest.mark.skipif(not os.path.isdir(REAL_DATA),
                    reason=f"no real ISIC 2017 data at {REAL_DATA} (set {fx.ISIC2017_DIR_VARIABLE})")
def test_real_isic2017_folder():
  """Scans all 2000 pairs (headers only) and decodes a few; SEGAN_REAL_DATA_FULL=1 decodes all."""
  splits = folder.scan(REAL_DATA)
  pairs = splits["train"]
  assert len(pairs) == 2000 and pairs[0].id == "ISIC_0000000"
  # Every image's size read from its header (the development copy: all squashed to 256x256).
  assert all(len(p.image_size) == 2 and min(p.image_size) > 0 for p in pairs)
  subset = pairs if os.environ.get("SEGAN_REAL_DATA_FULL") else pairs[::250]
  for d in folder.decode(subset, image_size=(135, 180), mask_size=(135, 180)):
    assert d.image.shape == (135, 180, 3) and set(np.unique(d.mask)) <= {0, 255}
    assert d.original_size[0] > 256 and 0 < (d.mask > 0).mean() < 1
  val = folder.holdout_ids([p.id for p in pairs], 0.1, 0)
  assert len(val) == 200 and val == folder.holdout_ids([p.id for p in pairs], 0.1, 0)


# --- several classes (config.model.num_classes > 1): index and palette masks ----------------

def _index_masks(root, count=6, num_classes=3):
  """A generic folder whose masks are index masks 0..num_classes; returns {id: index mask}."""
  ids = fx.write_generic(root, count)
  truth = {}
  for i, stem in enumerate(ids):
    mask = np.zeros((24, 32), np.uint8)
    for c in range(1, num_classes + 1):  # one band per class, placed by the image's index
      mask[(4 * c + i) % 24, :] = c
    mask[:, i] = num_classes
    name = stem + (".png" if i % 3 == 0 else "_segmentation.png")
    Image.fromarray(mask).save(os.path.join(root, "masks", name))
    truth[stem] = mask
  return truth


def test_index_and_palette_masks_decode_to_class_indices(tmp_path):
  truth = _index_masks(tmp_path)
  options = Options(num_classes=3)
  got = {d.id: d.mask for d in folder.decode(folder.scan(str(tmp_path), options)["train"],
                                             options)}
  assert got.keys() == truth.keys()
  for stem in truth:
    np.testing.assert_array_equal(got[stem], truth[stem])
  # A palette PNG: the palette index is the class, whatever colour the palette gives it.
  palette = Image.fromarray(truth["lesion_001"], mode="P")
  palette.putpalette([0, 0, 0, 200, 30, 30, 30, 200, 30, 30, 30, 200] + [0] * (3 * 252))
  palette.save(tmp_path / "masks" / "lesion_001_segmentation.png")
  pairs = folder.scan(str(tmp_path), options)["train"]
  got = {d.id: d.mask for d in folder.decode(pairs, options)}["lesion_001"]
  np.testing.assert_array_equal(got, truth["lesion_001"])


def test_multiclass_folder_trains_on_one_map_per_class(tmp_path):
  truth = _index_masks(tmp_path)
  config = folder_config(tmp_path, val_fraction=0.34)
  config.model.num_classes = 3
  train, val = sources.load_splits(config)
  data = arrays.prepare_train(train, 24, 32, 3)
  assert data.masks.shape == (len(train), 24, 32, 3) and data.masks.dtype == np.uint8
  for example, maps in zip(train, data.masks):
    for c in range(3):
      np.testing.assert_array_equal(maps[..., c], truth[example.id] == c + 1)
  assert all(np.array_equal(ex.mask, truth[ex.id]) for ex in val)  # original-size index masks


@pytest.mark.parametrize("num_classes,mask,match", [
    (2, np.arange(24 * 32).reshape(24, 32) % 4, r"class index 3, above config\.model\.num_classes=2"),
    (3, fx.lesion_pair(1)[1], r"binary 0/255 mask, but config\.model\.num_classes=3"),
    (3, np.stack([np.full((24, 32), 1), np.zeros((24, 32)), np.zeros((24, 32))], -1),
     "colour mask"),
    (1, np.arange(24 * 32).reshape(24, 32) % 3, r"label map .*config\.model\.num_classes"),
])
def test_masks_that_do_not_fit_num_classes_are_errors(tmp_path, num_classes, mask, match):
  if num_classes > 1:
    _index_masks(tmp_path, num_classes=num_classes)  # every other mask fits
  pairs = _one_mask(tmp_path, mask.astype(np.uint8))
  with pytest.raises(DataError, match=rf"lesion_001_segmentation\.png: .*{match}"):
    list(folder.decode(pairs, Options(num_classes=num_classes)))


def test_config_names_the_class_limits(tmp_path):
  config = default.get_config()
  config.model.num_classes = 7
  with pytest.raises(ConfigError, match=r"model\.num_classes must be 1\.\.6 with the synthetic"):
    validate_config(config)
  config.model.num_classes = 3
  validate_config(config)
  config.data.source = "tfds"
  with pytest.raises(ConfigError, match=r"model\.num_classes must be 1 with data\.source='tfds'"):
    validate_config(config)
