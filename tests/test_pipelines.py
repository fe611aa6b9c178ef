"""Both training loaders: deterministic, resumable at any step, per-process slices, binary aligned
masks; the numpy loader's colour conversions and error propagation."""

import itertools

import numpy as np
import pytest

from segan_jax.configs import tiny
from segan_jax.data import numpy_pipeline
from segan_jax.data.arrays import IMAGENET_MEAN, IMAGENET_STD, TrainArrays

LOADERS = ["numpy", "tfdata"]


def _iterator(loader):
  if loader == "numpy":
    return numpy_pipeline.train_iterator
  from segan_jax.data import tf_pipeline
  return tf_pipeline.train_iterator


def _arrays(n=10, h=135, w=180):
  """Images whose lesion (mask 1) is pure red on a pure blue background."""
  rng = np.random.default_rng(0)
  masks = np.zeros((n, h, w, 1), np.uint8)
  for i in range(n):
    cy, cx, r = rng.integers(40, 95), rng.integers(40, 140), rng.integers(15, 40)
    yy, xx = np.mgrid[:h, :w]
    masks[i, ..., 0] = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
  images = np.where(masks.astype(bool), np.array([255, 0, 0], np.uint8),
                    np.array([0, 0, 255], np.uint8)).astype(np.uint8)
  return TrainArrays(images=images, masks=masks)


def _config(jitter=True):
  config = tiny.get_config()
  config.train.batch_size = 4
  if not jitter:
    for field in ("brightness", "contrast", "saturation", "hue"):
      config.data[field] = 0.0
  return config


def _take(it, n):
  return list(itertools.islice(it, n))


@pytest.mark.parametrize("loader", LOADERS)
def test_deterministic_and_resumable(loader):
  arrays, config = _arrays(), _config()
  full = _take(_iterator(loader)(arrays, config, 0), 6)  # 2 steps per epoch: crosses epochs
  again = _take(_iterator(loader)(arrays, config, 0), 6)
  resumed = _take(_iterator(loader)(arrays, config, 3), 3)
  for a, b in zip(full, again):
    np.testing.assert_array_equal(a["image"], b["image"])
  for a, b in zip(full[3:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["mask"], b["mask"])
  assert not np.array_equal(full[0]["image"], full[2]["image"])  # epochs are reshuffled
  assert full[0]["image"].shape == (4, 128, 128, 3) and full[0]["mask"].shape == (4, 128, 128, 1)


@pytest.mark.parametrize("loader", LOADERS)
def test_process_slices_make_the_global_batch(loader):
  arrays, config = _arrays(), _config()
  whole = _take(_iterator(loader)(arrays, config, 1), 2)
  halves = [_take(_iterator(loader)(arrays, config, 1, p, 2), 2) for p in (0, 1)]
  for step in range(2):
    joined = np.concatenate([halves[0][step]["image"], halves[1][step]["image"]])
    np.testing.assert_array_equal(joined, whole[step]["image"])


@pytest.mark.parametrize("loader", LOADERS)
def test_masks_stay_binary_and_aligned(loader):
  arrays, config = _arrays(), _config(jitter=False)
  for batch in _take(_iterator(loader)(arrays, config, 0), 5):
    assert set(np.unique(batch["mask"])) <= {0.0, 1.0}
    rgb = batch["image"] * IMAGENET_STD + IMAGENET_MEAN
    red = rgb[..., 0] > rgb[..., 2]
    np.testing.assert_array_equal(red, batch["mask"][..., 0] == 1)


def test_colour_jitter_changes_only_the_image():
  arrays = _arrays()
  plain = _take(numpy_pipeline.train_iterator(arrays, _config(jitter=False), 0), 1)[0]
  jittered = _take(numpy_pipeline.train_iterator(arrays, _config(jitter=True), 0), 1)[0]
  np.testing.assert_array_equal(plain["mask"], jittered["mask"])
  assert not np.allclose(plain["image"], jittered["image"])


def test_hsv_round_trip():
  rgb = np.random.default_rng(1).uniform(size=(50, 3)).astype(np.float32)
  np.testing.assert_allclose(numpy_pipeline.hsv_to_rgb(numpy_pipeline.rgb_to_hsv(rgb)), rgb,
                             atol=1e-5)
  np.testing.assert_allclose(numpy_pipeline.rgb_to_hsv(np.array([[1.0, 0.0, 0.0]])),
                             [[0.0, 1.0, 1.0]])
  np.testing.assert_allclose(numpy_pipeline.rgb_to_hsv(np.array([[0.0, 0.0, 0.5]])),
                             [[2 / 3, 1.0, 0.5]], atol=1e-6)


def test_numpy_loader_errors_reach_the_consumer():
  arrays = _arrays()
  config = _config()
  config.data.image_size = 256  # larger than the 135x180 arrays: cropping fails in a worker
  with pytest.raises(ValueError):
    next(numpy_pipeline.train_iterator(arrays, config, 0))


@pytest.mark.parametrize("loader", LOADERS)
def test_batch_larger_than_data_is_an_error(loader):
  config = _config()
  config.train.batch_size = 64
  with pytest.raises(ValueError, match="batch_size"):
    next(iter(_iterator(loader)(_arrays(), config, 0)))
