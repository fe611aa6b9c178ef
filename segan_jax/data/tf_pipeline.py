"""The tf.data training pipeline: seeded epochs, paired geometric augmentation, colour jitter.

Every element's augmentation is drawn from a stateless seed (data seed, position in the stream), so
the stream is a pure function of (seed, step): resuming at step t reproduces the batches exactly.
"""

from collections.abc import Iterator

import ml_collections
import numpy as np
import tensorflow as tf

from segan_jax.data.arrays import IMAGENET_MEAN, IMAGENET_STD, TrainArrays

# tf.data runs on the host: keep TensorFlow off any GPU so it does not take JAX's device memory.
tf.config.set_visible_devices([], "GPU")


def augment(image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, size: int,
            data: ml_collections.ConfigDict) -> tuple[tf.Tensor, tf.Tensor]:
  """Random crop and flips shared by image and mask (one draw), colour jitter on the image only."""
  seeds = tf.random.experimental.stateless_split(seed, num=7)
  pair = tf.concat([tf.cast(image, tf.float32), tf.cast(mask, tf.float32)], axis=-1)
  pair = tf.image.stateless_random_crop(pair, [size, size, 4], seed=seeds[0])
  if data.hflip:
    pair = tf.image.stateless_random_flip_left_right(pair, seed=seeds[1])
  if data.vflip:
    pair = tf.image.stateless_random_flip_up_down(pair, seed=seeds[2])
  image, mask = pair[..., :3] / 255.0, pair[..., 3:]
  if data.brightness:
    image = tf.image.stateless_random_brightness(image, data.brightness, seed=seeds[3])
  if data.contrast:
    image = tf.image.stateless_random_contrast(image, 1 - data.contrast, 1 + data.contrast,
                                               seed=seeds[4])
  if data.saturation:
    image = tf.image.stateless_random_saturation(image, 1 - data.saturation, 1 + data.saturation,
                                                 seed=seeds[5])
  if data.hue:
    image = tf.image.stateless_random_hue(image, data.hue, seed=seeds[6])
  image = (tf.clip_by_value(image, 0.0, 1.0) - IMAGENET_MEAN) / IMAGENET_STD
  return image, mask


def train_dataset(arrays: TrainArrays, config: ml_collections.ConfigDict,
                  start_step: int = 0, process_index: int = 0,
                  process_count: int = 1) -> tf.data.Dataset:
  """Infinite dataset of per-process batches {'image', 'mask'} starting at global step start_step.

  Each epoch is a stateless shuffle of all examples seeded by (train.seed, epoch); the remainder
  that does not fill a global batch is dropped, so steps per epoch = N // batch_size.
  """
  n = len(arrays)
  global_batch = config.train.batch_size
  if global_batch % process_count:
    raise ValueError(f"config.train.batch_size={global_batch} must divide by the number of "
                     f"processes ({process_count}).")
  local_batch = global_batch // process_count
  steps_per_epoch = n // global_batch
  if steps_per_epoch == 0:
    raise ValueError(f"The training split has {n} examples, fewer than config.train.batch_size="
                     f"{global_batch}.")
  per_epoch = steps_per_epoch * global_batch
  seed = config.train.seed
  images = tf.constant(arrays.images)
  masks = tf.constant(arrays.masks)

  def epoch_positions(epoch):
    order = tf.random.experimental.stateless_shuffle(
        tf.range(n, dtype=tf.int64), seed=tf.stack([tf.cast(seed, tf.int64), epoch]))[:per_epoch]
    position = epoch * per_epoch + tf.range(per_epoch, dtype=tf.int64)
    return tf.data.Dataset.from_tensor_slices((order, position))

  def load(index, position):
    image, mask = augment(tf.gather(images, index), tf.gather(masks, index),
                          tf.stack([tf.cast(seed, tf.int64) + 1_000_003, position]),
                          config.data.image_size, config.data)
    return {"image": image, "mask": mask}

  start = start_step * global_batch
  ds = tf.data.Dataset.range(start // per_epoch, np.iinfo(np.int64).max).flat_map(epoch_positions)
  ds = ds.skip(start % per_epoch)
  # Each process takes its contiguous slice of every global batch.
  ds = ds.batch(global_batch).unbatch() if process_count == 1 else ds.batch(global_batch).map(
      lambda o, p: (o[process_index * local_batch:(process_index + 1) * local_batch],
                    p[process_index * local_batch:(process_index + 1) * local_batch])).unbatch()
  ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds.prefetch(2)


def train_iterator(arrays: TrainArrays, config: ml_collections.ConfigDict, start_step: int = 0,
                   process_index: int = 0, process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Numpy batches from train_dataset."""
  ds = train_dataset(arrays, config, start_step, process_index, process_count)
  return map(lambda b: {k: np.asarray(v) for k, v in b.items()}, ds.as_numpy_iterator())
