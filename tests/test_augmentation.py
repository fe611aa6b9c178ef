"""Augmentation invariants of the tf.data pipeline: the mask stays binary and aligned with the image
under every transform, colour jitter touches the image only, and streams are deterministic."""

import numpy as np
import pytest
import tensorflow as tf

from segan_jax.configs import default
from segan_jax.data import tf_pipeline
from segan_jax.data.arrays import IMAGENET_MEAN, IMAGENET_STD, TrainArrays

H, W, SIZE = 135, 180, 128
LESION = np.array([200, 30, 120], np.uint8)
SKIN = np.array([40, 200, 60], np.uint8)
NUM_SEEDS = 96


def lesion_mask() -> np.ndarray:
  """An irregular lesion (off-centre ellipse with an arm) with no flip symmetry, (H, W) in {0,1}."""
  y, x = np.mgrid[:H, :W]
  mask = ((y - 50) / 30.0) ** 2 + ((x - 70) / 45.0) ** 2 <= 1
  mask |= (y >= 60) & (y < 120) & (x >= 100) & (x < 115)
  return mask.astype(np.uint8)


def coordinate_image(mask: np.ndarray) -> np.ndarray:
  """R = source row, G = source column, B = 255 inside the lesion: every pixel says where it came
  from and what it is."""
  y, x = np.mgrid[:H, :W]
  return np.stack([y, x, mask * 255], -1).astype(np.uint8)


def colour_image(mask: np.ndarray) -> np.ndarray:
  return np.where(mask[..., None] > 0, LESION, SKIN).astype(np.uint8)


def data_config(jitter: bool):
  data = default.get_config().data
  if not jitter:
    data.brightness = data.contrast = data.saturation = data.hue = 0.0
  return data


def run_augment(image: np.ndarray, mask: np.ndarray, data, seeds=NUM_SEEDS):
  image_t, mask_t = tf.constant(image), tf.constant(mask[..., None])
  seeds = tf.stack([tf.zeros(seeds, tf.int64), tf.range(seeds, dtype=tf.int64)], -1)
  ds = tf.data.Dataset.from_tensor_slices(seeds).map(
      lambda s: tf_pipeline.augment(image_t, mask_t, s, SIZE, data)).batch(NUM_SEEDS)
  images, masks = next(iter(ds))
  return images.numpy(), masks.numpy()


def denormalize(images: np.ndarray) -> np.ndarray:
  return (images * IMAGENET_STD + IMAGENET_MEAN) * 255.0


@pytest.fixture(scope="module")
def geometric():
  mask = lesion_mask()
  return mask, run_augment(coordinate_image(mask), mask, data_config(jitter=False))


def test_mask_is_binary_and_shapes(geometric):
  _, (images, masks) = geometric
  assert images.shape == (NUM_SEEDS, SIZE, SIZE, 3) and masks.shape == (NUM_SEEDS, SIZE, SIZE, 1)
  assert set(np.unique(masks)) <= {0.0, 1.0}


def test_every_output_is_one_crop_and_flip_shared_by_image_and_mask(geometric):
  mask, (images, masks) = geometric
  pixels = np.round(denormalize(images)).astype(int)
  assert np.abs(denormalize(images) - pixels).max() < 1e-2  # exact pixels, no resampling
  transforms = set()
  for img, m in zip(pixels, masks[..., 0]):
    rows, cols = img[..., 0], img[..., 1]
    # Rows are constant along each output row and step by +-1 down it; same for columns.
    assert (rows == rows[:, :1]).all() and (cols == cols[:1, :]).all()
    drow, dcol = np.diff(rows[:, 0]), np.diff(cols[0, :])
    assert len(set(drow)) == 1 and set(drow) <= {1, -1}
    assert len(set(dcol)) == 1 and set(dcol) <= {1, -1}
    # The mask at each output pixel is the source mask where the image pixel came from.
    np.testing.assert_array_equal(m, mask[rows, cols])
    np.testing.assert_array_equal(img[..., 2] > 127, m > 0)
    transforms.add((rows.min(), cols.min(), drow[0], dcol[0]))
  flips = {(t[2], t[3]) for t in transforms}
  assert flips == {(1, 1), (1, -1), (-1, 1), (-1, -1)}  # both flips, both ways, all combinations
  assert len({t[:2] for t in transforms}) > NUM_SEEDS // 2  # crop offsets vary


def test_masked_region_has_the_lesion_colour():
  mask = lesion_mask()
  images, masks = run_augment(colour_image(mask), mask, data_config(jitter=False))
  pixels = denormalize(images)
  inside, outside = masks[..., 0] > 0, masks[..., 0] == 0
  assert inside.any() and outside.any()
  np.testing.assert_allclose(pixels[inside], np.broadcast_to(LESION, pixels[inside].shape), atol=0.02)
  np.testing.assert_allclose(pixels[outside], np.broadcast_to(SKIN, pixels[outside].shape),
                             atol=0.02)


def test_colour_jitter_changes_the_image_only():
  mask = lesion_mask()
  image = colour_image(mask)
  plain_images, plain_masks = run_augment(image, mask, data_config(jitter=False))
  images, masks = run_augment(image, mask, data_config(jitter=True))
  np.testing.assert_array_equal(masks, plain_masks)  # same geometry from the same seed
  assert np.abs(images - plain_images).max() > 0.05
  lo, hi = (0 - IMAGENET_MEAN) / IMAGENET_STD, (1 - IMAGENET_MEAN) / IMAGENET_STD
  assert (images >= lo - 1e-5).all() and (images <= hi + 1e-5).all()
  # Jitter acts on the whole image: the lesion stays distinguishable from the skin.
  for img, m in zip(denormalize(images), masks[..., 0]):
    lesion, skin = img[m > 0].mean(0), img[m == 0].mean(0)
    assert np.abs(lesion - skin).sum() > 100


def test_augment_is_deterministic_given_the_seed():
  mask = lesion_mask()
  a = run_augment(colour_image(mask), mask, data_config(jitter=True))
  b = run_augment(colour_image(mask), mask, data_config(jitter=True))
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])


def _arrays(n=8):
  rng = np.random.default_rng(0)
  masks = (rng.random((n, H, W, 1)) > 0.5).astype(np.uint8)
  images = rng.integers(0, 256, (n, H, W, 3), np.uint8)
  return TrainArrays(images=images, masks=masks)


def _batches(arrays, config, start=0, count=3, **kw):
  it = tf_pipeline.train_iterator(arrays, config, start, **kw)
  return [next(it) for _ in range(count)]


def test_train_stream_resumes_and_shards_exactly():
  config = default.get_config()
  config.train.batch_size = 4
  arrays = _arrays()
  full = _batches(arrays, config, count=4)
  again = _batches(arrays, config, count=4)
  for x, y in zip(full, again):
    np.testing.assert_array_equal(x["image"], y["image"])
  resumed = _batches(arrays, config, start=3, count=1)[0]  # step 3 is in the second epoch
  np.testing.assert_array_equal(resumed["image"], full[3]["image"])
  np.testing.assert_array_equal(resumed["mask"], full[3]["mask"])
  shards = [_batches(arrays, config, count=2, process_index=i, process_count=2) for i in (0, 1)]
  for step in range(2):
    np.testing.assert_array_equal(
        np.concatenate([shards[0][step]["image"], shards[1][step]["image"]]), full[step]["image"])
  for b in full:
    assert set(np.unique(b["mask"])) <= {0.0, 1.0}
