"""The training stream (segan_jax/data/pipeline.py) on both placements: a pure function of
(seed, step), so deterministic and resumable at any step; epochs are permutations; per-process
slices make the global batch; 'device' and 'host' give the same batches; masks binary and
aligned; the batches reach the training step through sharding.global_batch."""

import itertools
import json

import jax
import numpy as np
import pytest

from segan_jax import sharding
from segan_jax.config_validation import ConfigError, validate_config
from segan_jax.configs import tiny
from segan_jax.data import pipeline
from segan_jax.data.arrays import IMAGENET_MEAN, IMAGENET_STD, TrainArrays

LOADERS = list(pipeline.LOADERS)


def _arrays(n=10, h=135, w=180):
  """Images whose lesion (mask 1) is pure red on a blue background whose blue level is the
  example's index: every output pixel says which example it came from."""
  rng = np.random.default_rng(0)
  masks = np.zeros((n, h, w, 1), np.uint8)
  yy, xx = np.mgrid[:h, :w]
  for i in range(n):
    cy, cx, r = rng.integers(40, 95), rng.integers(40, 140), rng.integers(15, 40)
    masks[i, ..., 0] = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
  background = np.zeros((n, 1, 1, 3), np.uint8)
  background[..., 2] = 100 + 10 * np.arange(n)[:, None, None]
  images = np.where(masks.astype(bool), np.array([255, 0, 0], np.uint8), background)
  return TrainArrays(images=images.astype(np.uint8), masks=masks)


def _config(jitter=True, loader="device", batch_size=4):
  config = tiny.get_config()
  config.train.batch_size = batch_size
  config.data.loader = loader
  if not jitter:
    for field in ("brightness", "contrast", "saturation", "hue"):
      config.data[field] = 0.0
  return config


def _take(arrays, config, start, n):
  it = pipeline.train_batches(arrays, config, sharding.make_mesh(), start)
  return [{k: np.asarray(v) for k, v in b.items()} for b in itertools.islice(it, n)]


def _example_ids(batch) -> list[int]:
  """Which example each image of a jitter-free batch came from (its background's blue level)."""
  rgb = np.round((batch["image"] * IMAGENET_STD + IMAGENET_MEAN) * 255)
  blue = [img[m[..., 0] == 0][:, 2] for img, m in zip(rgb, batch["mask"])]
  return [int(round((np.median(b) - 100) / 10)) for b in blue]


@pytest.mark.parametrize("loader", LOADERS)
def test_deterministic_and_resumable(loader):
  arrays, config = _arrays(), _config(loader=loader)
  full = _take(arrays, config, 0, 6)  # 2 steps per epoch: crosses epochs
  again = _take(arrays, config, 0, 6)
  resumed = _take(arrays, config, 3, 3)
  for a, b in zip(full, again):
    np.testing.assert_array_equal(a["image"], b["image"])
  for a, b in zip(full[3:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["mask"], b["mask"])
  assert full[0]["image"].shape == (4, 128, 128, 3) and full[0]["mask"].shape == (4, 128, 128, 1)
  assert full[0]["image"].dtype == np.float32 and full[0]["mask"].dtype == np.float32


def test_device_and_host_give_the_same_batches():
  arrays = _arrays()
  device = _take(arrays, _config(loader="device"), 2, 3)
  host = _take(arrays, _config(loader="host"), 2, 3)
  for a, b in zip(device, host):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["mask"], b["mask"])


def test_each_epoch_is_a_permutation_and_epochs_differ():
  arrays, config = _arrays(n=10), _config(jitter=False, batch_size=3)  # 3 steps, 1 left out
  ids = [_example_ids(b) for b in _take(arrays, config, 0, 9)]
  epochs = [sum(ids[3 * e:3 * e + 3], []) for e in range(3)]
  for epoch in epochs:
    assert len(set(epoch)) == 9 and set(epoch) <= set(range(10))
  assert len({tuple(e) for e in epochs}) == 3  # reshuffled every epoch
  other_seed = _config(jitter=False, batch_size=3)
  other_seed.train.seed = 1
  assert sum((_example_ids(b) for b in _take(arrays, other_seed, 0, 3)), []) != epochs[0]


def test_process_slices_make_the_global_batch():
  arrays, config = _arrays(), _config(loader="host")
  whole = _take(arrays, config, 1, 2)
  halves = [list(itertools.islice(pipeline.host_batches(arrays, config, 1, p, 2), 2))
            for p in (0, 1)]
  for step in range(2):
    joined = np.concatenate([halves[0][step]["image"], halves[1][step]["image"]])
    np.testing.assert_array_equal(joined, whole[step]["image"])


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("whole_image_prob, rot90", [(0.0, False), (0.5, False), (0.5, True)])
def test_masks_stay_binary_and_aligned(loader, whole_image_prob, rot90):
  arrays, config = _arrays(), _config(jitter=False, loader=loader)
  config.data.whole_image_prob = whole_image_prob
  config.data.rot90 = rot90
  for batch in _take(arrays, config, 0, 5):
    assert set(np.unique(batch["mask"])) <= {0.0, 1.0}
    rgb = batch["image"] * IMAGENET_STD + IMAGENET_MEAN
    red = rgb[..., 0] > 0.5
    if whole_image_prob:  # bilinear resizing blends the lesion's border: compare away from it
      edge = np.abs(rgb[..., 0] - 0.5) < 0.45
      red, mask = red[~edge], batch["mask"][..., 0][~edge]
      assert (red == (mask == 1)).mean() > 0.995
    else:
      np.testing.assert_array_equal(red, batch["mask"][..., 0] == 1)


def test_colour_jitter_changes_only_the_image():
  arrays = _arrays()
  plain = _take(arrays, _config(jitter=False), 0, 1)[0]
  jittered = _take(arrays, _config(jitter=True), 0, 1)[0]
  np.testing.assert_array_equal(plain["mask"], jittered["mask"])
  assert not np.allclose(plain["image"], jittered["image"])


def test_device_batches_arrive_sharded_and_pass_through_global_batch():
  arrays, config = _arrays(), _config()
  mesh = sharding.make_mesh()
  batch = next(pipeline.train_batches(arrays, config, mesh, 0))
  assert isinstance(batch["image"], jax.Array)
  assert batch["image"].sharding.is_equivalent_to(sharding.batch_sharding(mesh), 4)
  assert sharding.global_batch(batch, mesh)["image"] is batch["image"]


@pytest.mark.parametrize("loader", LOADERS)
def test_batch_larger_than_data_is_an_error(loader):
  config = _config(loader=loader, batch_size=64)
  with pytest.raises(ValueError, match="batch_size"):
    next(iter(pipeline.train_batches(_arrays(), config, sharding.make_mesh(), 0)))


@pytest.mark.parametrize("loader", LOADERS)
def test_arrays_smaller_than_the_crop_are_an_error(loader):
  config = _config(loader=loader)
  config.data.image_size = 256  # larger than the 135x180 arrays
  with pytest.raises(ValueError, match="resize_height"):
    next(iter(pipeline.train_batches(_arrays(), config, sharding.make_mesh(), 0)))


@pytest.mark.parametrize("loader,message", [("tfdata", "names a removed loader"),
                                            ("numpy", "names a removed loader"),
                                            ("disk", "must be one of")])
def test_config_names_a_current_loader(loader, message):
  config = _config(loader=loader)
  with pytest.raises(ConfigError, match=f"data.loader {message}"):
    validate_config(config)


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), float("inf"), "half"])
def test_config_whole_image_prob_is_a_probability(value):
  config = _config()
  with config.data.ignore_type():
    config.data.whole_image_prob = value
  with pytest.raises(ConfigError, match=r"data\.whole_image_prob must be a finite number in"):
    validate_config(config)


@pytest.mark.parametrize("flag", ["hflip", "vflip", "rot90"])
def test_config_flip_and_transpose_flags_are_booleans(flag):
  config = _config()
  with config.data.ignore_type():
    config.data[flag] = 1
  with pytest.raises(ConfigError, match=rf"data\.{flag} must be True or False"):
    validate_config(config)


def test_runs_saved_before_rot90_load_and_resume_with_it_off(tmp_path):
  from segan_jax import inference, workdir
  saved = json.loads(workdir.config_as_json(_config()))  # as train.py writes config.json
  del saved["data"]["rot90"]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  assert inference.load_config(str(tmp_path)).data.rot90 is False
  assert workdir.config_changes(saved, _config()) == []
