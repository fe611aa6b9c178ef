"""The training augmentation (segan_jax/data/augment.py): the mask stays binary and aligned with the
image under every transform, the whole-image view is the whole pair resized, colour jitter touches
the image only and stays in range, and each pair's result is a pure function of its key."""

import colorsys
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segan_jax.configs import default
from segan_jax.data import augment as aug_lib
from segan_jax.data.arrays import IMAGENET_MEAN, IMAGENET_STD

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


def colour_image(mask: np.ndarray, lesion=LESION, skin=SKIN) -> np.ndarray:
  return np.where(mask[..., None] > 0, lesion, skin).astype(np.uint8)


def settings(jitter: bool, **changes) -> aug_lib.Augmentation:
  data = default.get_config().data
  if not jitter:
    data.brightness = data.contrast = data.saturation = data.hue = 0.0
  return dataclasses.replace(aug_lib.Augmentation.from_config(data), **changes)


def run_augment(image: np.ndarray, mask: np.ndarray, aug: aug_lib.Augmentation,
                seeds: int = NUM_SEEDS, first_seed: int = 0):
  """The augmentation of one pair under `seeds` keys: images (seeds, S, S, 3), masks."""
  pair = aug_lib.pairs(image[None], mask[None, ..., None])[0]
  whole = aug_lib.whole_views(image[None], mask[None, ..., None], aug.size)[0]
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(
      jnp.arange(first_seed, first_seed + seeds))
  fn = jax.jit(jax.vmap(lambda key, p, w: aug_lib.augment(key, p, aug, w), in_axes=(0, None, None)))
  images, masks = fn(keys, pair, whole)
  return np.asarray(images), np.asarray(masks)


def denormalize(images: np.ndarray) -> np.ndarray:
  return (images * IMAGENET_STD + IMAGENET_MEAN) * 255.0


@pytest.fixture(scope="module")
def geometric():
  mask = lesion_mask()
  return mask, run_augment(coordinate_image(mask), mask, settings(jitter=False))


def test_mask_is_binary_and_shapes(geometric):
  _, (images, masks) = geometric
  assert images.shape == (NUM_SEEDS, SIZE, SIZE, 3) and masks.shape == (NUM_SEEDS, SIZE, SIZE, 1)
  assert images.dtype == np.float32 and masks.dtype == np.float32
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
  offsets = {t[:2] for t in transforms}
  assert len(offsets) > NUM_SEEDS // 2  # crop offsets vary
  rows, cols = zip(*offsets)
  assert min(rows) <= 1 and max(rows) >= H - SIZE - 1  # the whole range of offsets is reached
  assert min(cols) <= 5 and max(cols) >= W - SIZE - 5


@pytest.mark.parametrize("flip", ["hflip", "vflip"])
def test_a_disabled_flip_never_happens(flip):
  mask = lesion_mask()
  images, _ = run_augment(coordinate_image(mask), mask, settings(False, **{flip: False}), seeds=32)
  pixels = np.round(denormalize(images)).astype(int)
  axis = 1 if flip == "hflip" else 0
  channel = pixels[..., 1] if flip == "hflip" else pixels[..., 0]
  assert (np.diff(channel, axis=axis + 1) == 1).all()


def test_rot90_gives_all_eight_right_angle_transforms_of_image_and_mask_together():
  mask = lesion_mask()
  images, masks = run_augment(coordinate_image(mask), mask, settings(False, rot90=True))
  pixels = np.round(denormalize(images)).astype(int)
  transforms = set()
  for img, m in zip(pixels, masks[..., 0]):
    rows, cols = img[..., 0], img[..., 1]
    transposed = bool((rows == rows[:1, :]).all())  # source rows run along the output's columns
    if transposed:
      rows, cols = rows.T, cols.T
    assert (rows == rows[:, :1]).all() and (cols == cols[:1, :]).all()
    drow, dcol = np.diff(rows[:, 0]), np.diff(cols[0, :])
    assert len(set(drow)) == 1 and len(set(dcol)) == 1 and {drow[0], dcol[0]} <= {1, -1}
    np.testing.assert_array_equal(m, mask[img[..., 0], img[..., 1]])
    np.testing.assert_array_equal(img[..., 2] > 127, m > 0)
    transforms.add((transposed, drow[0], dcol[0]))
  assert len(transforms) == 8


def test_rot90_leaves_every_other_draw_as_it_was():
  mask = lesion_mask()
  image = coordinate_image(mask)
  plain, _ = run_augment(image, mask, settings(False), seeds=48)
  rotated, _ = run_augment(image, mask, settings(False, rot90=True), seeds=48)
  same = [np.allclose(a, b, atol=1e-5) for a, b in zip(plain, rotated)]
  transposed = [np.allclose(a, np.swapaxes(b, 0, 1), atol=1e-5) for a, b in zip(plain, rotated)]
  assert all(s or t for s, t in zip(same, transposed))
  assert 12 <= sum(transposed) <= 36  # about half of the views are transposed


def test_whole_image_view_is_the_whole_pair_resized():
  mask = lesion_mask()
  image = colour_image(mask)
  whole = aug_lib.whole_views(image[None], mask[None, ..., None], SIZE)[0]
  images, masks = run_augment(image, mask, settings(jitter=False, whole_image_prob=1.0))
  pixels = np.round(denormalize(images)).astype(np.uint8)
  views = {"plain": (whole[..., :3], whole[..., 3]),
           "h": (whole[:, ::-1, :3], whole[:, ::-1, 3]), "v": (whole[::-1, :, :3], whole[::-1, :, 3]),
           "hv": (whole[::-1, ::-1, :3], whole[::-1, ::-1, 3])}
  seen = set()
  for img, m in zip(pixels, masks[..., 0]):
    name = next(k for k, (vi, vm) in views.items() if np.array_equal(vm, m))
    np.testing.assert_array_equal(img, views[name][0])
    seen.add(name)
  assert seen == set(views)
  # The whole lesion is in view: the mask covers the resized lesion's area.
  assert masks[0].mean() == pytest.approx(mask.mean(), rel=0.05)


def test_whole_image_view_is_drawn_with_its_probability():
  mask = lesion_mask()
  aug = settings(jitter=False, whole_image_prob=0.5)
  images, masks = run_augment(coordinate_image(mask), mask, aug, seeds=200)
  crops, crop_masks = run_augment(coordinate_image(mask), mask, settings(jitter=False), seeds=200)
  # A crop is exact source pixels whose rows step by one; a whole view is resampled (the rows of
  # the 135 source rows squeezed into 128).
  rows = np.round(denormalize(images)[..., 0]).astype(int)
  whole = np.array([not set(np.abs(np.diff(r[:, 0]))) <= {1} for r in rows])
  assert 70 <= whole.sum() <= 130
  # Crops drawn with the same keys are the same crops whether the whole view is possible or not.
  np.testing.assert_array_equal(images[~whole], crops[~whole])
  np.testing.assert_array_equal(masks[~whole], crop_masks[~whole])


def test_masked_region_has_the_lesion_colour():
  mask = lesion_mask()
  images, masks = run_augment(colour_image(mask), mask, settings(jitter=False))
  pixels = denormalize(images)
  inside, outside = masks[..., 0] > 0, masks[..., 0] == 0
  assert inside.any() and outside.any()
  np.testing.assert_allclose(pixels[inside], np.broadcast_to(LESION, pixels[inside].shape), atol=0.02)
  np.testing.assert_allclose(pixels[outside], np.broadcast_to(SKIN, pixels[outside].shape),
                             atol=0.02)


def test_colour_jitter_changes_the_image_only():
  mask = lesion_mask()
  image = colour_image(mask)
  plain_images, plain_masks = run_augment(image, mask, settings(jitter=False))
  images, masks = run_augment(image, mask, settings(jitter=True))
  np.testing.assert_array_equal(masks, plain_masks)  # same geometry from the same key
  assert np.abs(images - plain_images).max() > 0.05
  lo, hi = (0 - IMAGENET_MEAN) / IMAGENET_STD, (1 - IMAGENET_MEAN) / IMAGENET_STD
  assert (images >= lo - 1e-5).all() and (images <= hi + 1e-5).all()
  # Jitter acts on the whole image: the lesion stays distinguishable from the skin.
  for img, m in zip(denormalize(images), masks[..., 0]):
    lesion, skin = img[m > 0].mean(0), img[m == 0].mean(0)
    assert np.abs(lesion - skin).sum() > 100


@pytest.mark.parametrize("field", ["brightness", "contrast", "saturation", "hue"])
def test_each_jitter_acts_within_its_range(field):
  mask = lesion_mask()
  # Mid-range colours, so that no jitter below is clipped at 0 or 1.
  image = colour_image(mask, np.array([180, 60, 120]), np.array([80, 170, 100]))
  plain, _ = run_augment(image, mask, settings(jitter=False), seeds=32)
  amount = {"brightness": 0.2, "contrast": 0.2, "saturation": 0.5, "hue": 0.1}[field]
  jittered, _ = run_augment(image, mask, settings(jitter=False, **{field: amount}), seeds=32)
  rgb0, rgb1 = denormalize(plain) / 255.0, denormalize(jittered) / 255.0
  assert not np.allclose(rgb0, rgb1, atol=1e-3)
  if field == "brightness":  # a shift by one delta per image, |delta| <= 0.2
    deltas = (rgb1 - rgb0).reshape(32, -1)
    np.testing.assert_allclose(deltas, deltas[:, :1].repeat(deltas.shape[1], 1), atol=1e-4)
    assert np.abs(deltas).max() <= 0.2 + 1e-4 and len(np.unique(deltas[:, 0].round(4))) > 16
  elif field == "contrast":  # the image's mean colour is kept
    np.testing.assert_allclose(rgb1.mean((1, 2)), rgb0.mean((1, 2)), atol=2e-3)
  elif field == "saturation":  # the brightest channel (HSV value) is kept
    np.testing.assert_allclose(rgb1.max(-1), rgb0.max(-1), atol=1e-4)
  else:  # hue: value and saturation kept, the colours rotate
    np.testing.assert_allclose(rgb1.max(-1), rgb0.max(-1), atol=1e-4)
    np.testing.assert_allclose(rgb1.min(-1), rgb0.min(-1), atol=1e-4)


@pytest.mark.parametrize("saturation,hue", [(0.5, 0.0), (0.0, 0.3), (0.5, 0.3)])
def test_colour_jitter_is_the_hsv_model(saturation, hue):
  """Against Python's colorsys: brightness, contrast, then saturation scaled and clipped and hue
  shifted in HSV, each step clipped to [0, 1]."""
  rng = np.random.default_rng(0)
  image = rng.uniform(size=(16, 16, 3)).astype(np.float32)
  image[0, :4] = [[0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5], [1, 0, 0]]  # grey (no hue), pure red
  aug = aug_lib.Augmentation(16, brightness=0.2, contrast=0.3, saturation=saturation, hue=hue)
  for seed in range(4):
    draws = np.asarray(rng.uniform(size=aug_lib.NUM_DRAWS), np.float32)
    got = np.asarray(jax.jit(aug_lib.colour_jitter, static_argnums=2)(draws, image, aug))
    delta, contrast = 0.4 * draws[5] - 0.2, 0.7 + 0.6 * draws[6]
    want = np.clip(image + delta, 0, 1)
    want = np.clip((want - want.mean((0, 1))) * contrast + want.mean((0, 1)), 0, 1)
    s_factor, h_shift = 1 + saturation * (2 * draws[7] - 1), hue * (2 * draws[8] - 1)
    for pixel in want.reshape(-1, 3):
      h, s, v = colorsys.rgb_to_hsv(*pixel)
      pixel[:] = colorsys.hsv_to_rgb((h + h_shift) % 1.0, min(max(s * s_factor, 0), 1), v)
    np.testing.assert_allclose(got, np.clip(want, 0, 1), atol=2e-6)


def test_augment_is_a_pure_function_of_the_key():
  mask = lesion_mask()
  a = run_augment(colour_image(mask), mask, settings(jitter=True))
  b = run_augment(colour_image(mask), mask, settings(jitter=True))
  c = run_augment(colour_image(mask), mask, settings(jitter=True), seeds=8, first_seed=4)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  np.testing.assert_array_equal(a[0][4:12], c[0])  # the same key gives the same pair in any batch
  assert not np.array_equal(a[0][0], a[0][1])


def test_arrays_smaller_than_the_crop_are_an_error():
  mask = lesion_mask()
  with pytest.raises(ValueError, match="resize_height"):
    run_augment(colour_image(mask), mask, settings(jitter=False, size=256), seeds=1)
