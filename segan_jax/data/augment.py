"""The training augmentation, in JAX: the one definition every input path runs.

One training pair, stored as a uint8 (H, W, 3 + N) array (RGB image resized to data.resize_height
x data.resize_width, then its N 0/1 label maps), becomes a network input of side S =
data.image_size:

1. a random S x S crop, or, with probability data.whole_image_prob, the whole image resized to
   S x S (the authors' loader's second view: bilinear for the image, nearest for the mask,
   precomputed once per pair by `whole_views`);
2. horizontal and vertical flips, each with probability 0.5 (data.hflip, data.vflip), of image
   and mask together;
3. brightness, contrast, saturation and hue jitter of the image only (data.brightness, ...;
   dm-pix's arithmetic, clipped to [0, 1] after each step, as torchvision's ColorJitter does);
4. ImageNet normalisation.

Every draw comes from the pair's own key (one uniform vector of NUM_DRAWS values with fixed
roles), so a pair's augmentation is a pure function of its key and settings, on any device count,
process count or install.
"""

import dataclasses

import dm_pix as pix
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from segan_jax.data.arrays import IMAGENET_MEAN, IMAGENET_STD, resize_image, resize_mask

# The roles of the uniform draws: crop row, crop column, whole view, horizontal flip, vertical
# flip, brightness, contrast, saturation, hue. Drawn whether or not each is used, so the geometry
# of a pair does not depend on the colour settings.
NUM_DRAWS = 9


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """The augmentation's settings (hashable: a static argument of the jitted batch function)."""
  size: int
  whole_image_prob: float = 0.0
  hflip: bool = True
  vflip: bool = True
  brightness: float = 0.0
  contrast: float = 0.0
  saturation: float = 0.0
  hue: float = 0.0

  @classmethod
  def from_config(cls, data: ml_collections.ConfigDict) -> "Augmentation":
    """The settings of config.data (whole_image_prob 0 where an older config lacks it)."""
    return cls(size=int(data.image_size),
               whole_image_prob=float(data.get("whole_image_prob", 0.0)),
               hflip=bool(data.hflip), vflip=bool(data.vflip),
               brightness=float(data.brightness), contrast=float(data.contrast),
               saturation=float(data.saturation), hue=float(data.hue))


def pairs(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
  """Images (M, H, W, 3) and label maps (M, H, W, N), uint8, as one (M, H, W, 3 + N) uint8 array."""
  return np.concatenate([images, masks.astype(np.uint8)], axis=-1)


def whole_views(images: np.ndarray, masks: np.ndarray, size: int) -> np.ndarray:
  """Every pair resized whole to size x size (bilinear image, nearest mask, as PIL does for the
  authors' loader): (M, size, size, 3 + N) uint8."""
  out = np.empty((len(images), size, size, 3 + masks.shape[-1]), np.uint8)
  for i, (image, mask) in enumerate(zip(images, masks)):
    out[i, ..., :3] = resize_image(image, size, size)
    for c in range(mask.shape[-1]):
      out[i, ..., 3 + c] = resize_mask(mask[..., c], size, size)
  return out


def _between(u: jax.Array, lo: float, hi: float) -> jax.Array:
  return lo + (hi - lo) * u


def geometry(draws: jax.Array, pair: jax.Array, whole: jax.Array | None,
             aug: Augmentation) -> jax.Array:
  """The crop (or whole view) and flips of one (H, W, 3 + N) uint8 pair: (S, S, 3 + N) uint8.

  One gather whose indices carry the crop offset and the flips: XLA fuses it into the colour
  arithmetic that follows without re-reading the image for each branch of a flip.
  """
  h, w = pair.shape[:2]
  s = aug.size
  if h < s or w < s:
    raise ValueError(f"The training arrays are {h}x{w}, smaller than data.image_size={s}: "
                     "set data.resize_height and data.resize_width to at least image_size.")
  top = jnp.minimum(jnp.floor(draws[0] * (h - s + 1)), h - s).astype(jnp.int32)
  left = jnp.minimum(jnp.floor(draws[1] * (w - s + 1)), w - s).astype(jnp.int32)
  ramp = jnp.arange(s, dtype=jnp.int32)
  rows = jnp.where((draws[4] < 0.5) & aug.vflip, s - 1 - ramp, ramp)
  cols = jnp.where((draws[3] < 0.5) & aug.hflip, s - 1 - ramp, ramp)
  out = pair[top + rows[:, None], left + cols[None, :]]
  if aug.whole_image_prob > 0:
    if whole is None:
      raise ValueError("data.whole_image_prob > 0 needs the pairs' whole views (whole_views).")
    out = jnp.where(draws[2] < aug.whole_image_prob, whole[rows[:, None], cols[None, :]], out)
  return out


def colour_jitter(draws: jax.Array, image: jax.Array, aug: Augmentation) -> jax.Array:
  """Brightness, contrast, saturation and hue jitter of a float image in [0, 1] (stays there)."""
  if aug.brightness:
    delta = _between(draws[5], -aug.brightness, aug.brightness)
    image = jnp.clip(pix.adjust_brightness(image, delta), 0.0, 1.0)
  if aug.contrast:
    factor = _between(draws[6], 1 - aug.contrast, 1 + aug.contrast)
    image = jnp.clip(pix.adjust_contrast(image, factor), 0.0, 1.0)
  if aug.saturation or aug.hue:
    # One HSV round trip for both (pix.adjust_saturation then pix.adjust_hue, without converting
    # back and forth in between).
    hsv = pix.rgb_to_hsv(image)
    hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    if aug.saturation:
      factor = _between(draws[7], 1 - aug.saturation, 1 + aug.saturation)
      saturation = jnp.clip(saturation * factor, 0.0, 1.0)
    if aug.hue:
      hue = hue + _between(draws[8], -aug.hue, aug.hue)
      hue = hue - jnp.floor(hue)  # wrap to [0, 1)
    image = jnp.clip(pix.hsv_to_rgb(jnp.stack([hue, saturation, value], -1)), 0.0, 1.0)
  return image


def augment(key: jax.Array, pair: jax.Array, aug: Augmentation,
            whole: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """One training pair (H, W, 3 + N) uint8, and its whole view (S, S, 3 + N) where
  aug.whole_image_prob > 0 -> normalised float32 image (S, S, 3), float32 0/1 maps (S, S, N)."""
  draws = jax.random.uniform(key, (NUM_DRAWS,), jnp.float32)
  out = geometry(draws, pair, whole, aug)
  image = colour_jitter(draws, out[..., :3].astype(jnp.float32) / 255.0, aug)
  return (image - IMAGENET_MEAN) / IMAGENET_STD, out[..., 3:].astype(jnp.float32)
