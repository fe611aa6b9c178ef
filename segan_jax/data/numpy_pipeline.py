"""The numpy/PIL training pipeline: the tf.data pipeline's augmentations without TensorFlow.

Same stream structure as tf_pipeline (seeded epochs, per-element seeds from the position in the
stream, per-process slices of each global batch), so it is deterministic and resumable; the
random draws differ from TensorFlow's, so the two loaders give different (equally valid) streams.
"""

import concurrent.futures
import queue
import threading
from collections.abc import Iterator

import ml_collections
import numpy as np

from segan_jax.data.arrays import IMAGENET_MEAN, IMAGENET_STD, TrainArrays

_AUGMENT_SALT = 1_000_003


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
  """RGB in [0,1] (..., 3) to HSV with hue in [0,1)."""
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  v = rgb.max(-1)
  c = v - rgb.min(-1)
  s = np.where(v > 0, c / np.where(v > 0, v, 1), 0)
  safe_c = np.where(c > 0, c, 1)
  h = np.where(v == r, (g - b) / safe_c, np.where(v == g, 2 + (b - r) / safe_c, 4 + (r - g) / safe_c))
  h = np.where(c > 0, (h / 6.0) % 1.0, 0.0)
  return np.stack([h, s, v], axis=-1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
  """Inverse of rgb_to_hsv."""
  h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  i = np.floor(h * 6.0)
  f = h * 6.0 - i
  p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
  i = i.astype(np.int32) % 6
  choices = [np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v),
                                       (v, p, q))]
  return np.choose(i[..., None], choices)


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, size: int,
            data: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray]:
  """Random crop and flips shared by image and mask, colour jitter on the image only, normalised."""
  h, w = image.shape[:2]
  top, left = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
  image = image[top:top + size, left:left + size].astype(np.float32) / 255.0
  mask = mask[top:top + size, left:left + size].astype(np.float32)
  flips = rng.uniform(size=2) < 0.5
  if data.hflip and flips[0]:
    image, mask = image[:, ::-1], mask[:, ::-1]
  if data.vflip and flips[1]:
    image, mask = image[::-1], mask[::-1]
  if data.brightness:
    image = image + rng.uniform(-data.brightness, data.brightness)
  if data.contrast:
    mean = image.mean(axis=(0, 1), keepdims=True)
    image = (image - mean) * rng.uniform(1 - data.contrast, 1 + data.contrast) + mean
  if data.saturation or data.hue:
    hsv = rgb_to_hsv(np.clip(image, 0.0, 1.0))
    if data.saturation:
      hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(1 - data.saturation, 1 + data.saturation),
                            0, 1)
    if data.hue:
      hsv[..., 0] = (hsv[..., 0] + rng.uniform(-data.hue, data.hue)) % 1.0
    image = hsv_to_rgb(hsv)
  image = (np.clip(image, 0.0, 1.0) - IMAGENET_MEAN) / IMAGENET_STD
  return np.ascontiguousarray(image, np.float32), np.ascontiguousarray(mask)


def _positions(n: int, global_batch: int, seed: int, start_step: int, process_index: int,
               process_count: int) -> Iterator[list[tuple[int, int]]]:
  """This process's (example index, stream position) pairs of each global batch from start_step."""
  steps_per_epoch = n // global_batch
  local = global_batch // process_count
  step = start_step
  while True:
    epoch, within = divmod(step, steps_per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    first = within * global_batch + process_index * local
    base = epoch * steps_per_epoch * global_batch
    yield [(int(order[first + i]), base + first + i) for i in range(local)]
    step += 1


def train_iterator(arrays: TrainArrays, config: ml_collections.ConfigDict, start_step: int = 0,
                   process_index: int = 0, process_count: int = 1,
                   workers: int = 4, prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
  """Per-process batches {'image', 'mask'} from global step start_step, decoded by a thread pool."""
  n, global_batch = len(arrays), config.train.batch_size
  if global_batch % process_count:
    raise ValueError(f"config.train.batch_size={global_batch} must divide by the number of "
                     f"processes ({process_count}).")
  if n < global_batch:
    raise ValueError(f"The training split has {n} examples, fewer than config.train.batch_size="
                     f"{global_batch}.")
  seed, size = config.train.seed, config.data.image_size

  def element(item: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    index, position = item
    rng = np.random.default_rng([seed, _AUGMENT_SALT, position])
    return augment(arrays.images[index], arrays.masks[index], rng, size, config.data)

  batches: queue.Queue = queue.Queue(maxsize=prefetch)
  stop = threading.Event()

  def put(item) -> bool:
    while not stop.is_set():
      try:
        batches.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def produce():
    try:
      with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for items in _positions(n, global_batch, seed, start_step, process_index, process_count):
          pairs = list(pool.map(element, items))
          if not put({"image": np.stack([p[0] for p in pairs]),
                      "mask": np.stack([p[1] for p in pairs])}):
            return
    except Exception as e:  # handed to the consumer, which re-raises it instead of waiting forever
      put(e)

  thread = threading.Thread(target=produce, daemon=True)
  thread.start()
  try:
    while True:
      item = batches.get()
      if isinstance(item, Exception):
        raise item
      yield item
  finally:
    stop.set()
