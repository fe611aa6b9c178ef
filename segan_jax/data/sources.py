"""Where examples come from: the embedded synthetic set, a folder of pairs, or TFDS."""

import ml_collections
import numpy as np
from absl import logging

from segan_jax.config_validation import ConfigError
from segan_jax.data.arrays import Example
from segan_jax.errors import UserError


def synthetic_examples(seed: int, start: int, count: int, num_classes: int = 1) -> list[Example]:
  """Procedural dermoscopy-like pairs start..start+count-1 of the synthetic set with this seed:
  lesion masks (0/255), or index masks of the first num_classes kinds (synthetic.CLASS_NAMES)."""
  from segan_jax.data import synthetic
  examples = []
  for index in range(start, start + count):
    image, mask = synthetic.generate_example(seed, index, num_classes=num_classes)
    examples.append(Example(id=f"synthetic_{seed}_{index:06d}", image=image, mask=mask))
  return examples


def limit_training(examples: list[Example], limit: int, seed: int) -> list[Example]:
  """A seeded random `limit` of the training examples in their original order (all for 0).

  The draw depends on the examples' ids and seed alone, so runs that differ only in train.seed
  train on the same pairs, and a larger limit keeps a smaller one's pairs (nested subsets).
  """
  if not limit:
    return examples
  if limit > len(examples):
    raise ConfigError(f"config.data.train_limit={limit} is more than the {len(examples)} training "
                      "pairs left after the hold-out; lower it, or set 0 to train on all of them.")
  order = sorted(range(len(examples)), key=lambda i: examples[i].id)
  keep = np.random.default_rng(seed).permutation(len(examples))[:limit]
  chosen = sorted(order[i] for i in keep)
  logging.info("Training on %d of the %d training pairs (data.train_limit, drawn with "
               "data.seed=%d).", limit, len(examples), seed)
  return [examples[i] for i in chosen]


def load_splits(config: ml_collections.ConfigDict) -> tuple[list[Example], list[Example]]:
  """Returns the (training, validation) examples that config.data selects.

  synthetic: the embedded procedural set. folder: image/mask pairs read in place from
  config.data.dir (segan_jax/data/folder.py). tfds: the `isic2017` TFDS dataset in data_dir
  config.data.dir (TFDS's default when empty), built first if needed from config.data.manual_dir
  or the official URLs (segan_jax/data/isic2017_tfds.py). For folder and tfds the validation split
  is the official one when present, else a seeded hold-out of config.data.val_fraction of the
  training ids (config.data.seed; written to / read from config.data.val_ids_file when set); both
  sources hold out the same ids from the same data. Folder and tfds training examples come
  already resized to (resize_height, resize_width) and validation images to image_size, so that
  full-resolution images never all sit in memory; validation masks keep their original size.
  Bad input raises segan_jax.data.folder.DataError naming the file.

  With config.data.train_limit > 0, training keeps a seeded random subset of that many pairs
  (limit_training); validation is unchanged.

  Masks follow config.model.num_classes: 0/255 lesion masks for one class, index masks (0
  background, 1..N) for N > 1 (synthetic: its first N kinds; folder: index or palette PNGs).
  """
  train, val = _source_splits(config)
  return limit_training(train, int(config.data.get("train_limit", 0)), int(config.data.seed)), val


def _source_splits(config: ml_collections.ConfigDict) -> tuple[list[Example], list[Example]]:
  data = config.data
  num_classes = int(config.model.num_classes)
  if data.source == "synthetic":
    train = synthetic_examples(data.seed, 0, data.train_size, num_classes)
    val = synthetic_examples(data.seed, data.train_size, data.val_size, num_classes)
    return train, val
  if data.source == "folder":
    from segan_jax.data import folder
    return folder.load_train_val(data, num_classes)
  if data.source == "tfds":
    if num_classes != 1:
      raise UserError(f"config.data.source='tfds' is the ISIC 2017 lesion set (one class); "
                      f"config.model.num_classes={num_classes} needs index masks from "
                      "config.data.source='folder' or the synthetic set.")
    try:
      from segan_jax.data import isic2017_tfds
    except ImportError as e:
      raise UserError("config.data.source='tfds' needs TensorFlow and tensorflow-datasets "
                      f"({e}): pip install 'segan_jax[tfds]', or read the pairs in place with "
                      "config.data.source='folder'.") from e
    return isic2017_tfds.load_train_val(data)
  raise NotImplementedError(f"config.data.source={data.source!r} is not available.")


def load_validation(config: ml_collections.ConfigDict) -> list[Example]:
  """The validation examples of load_splits(config), without decoding the training pairs where
  the source allows it (synthetic, folder): what scoring the validation split needs."""
  data = config.data
  num_classes = int(config.model.num_classes)
  if data.source == "synthetic":
    return synthetic_examples(data.seed, data.train_size, data.val_size, num_classes)
  if data.source == "folder":
    from segan_jax.data import folder
    return folder.load_validation(data, num_classes)
  return load_splits(config)[1]
