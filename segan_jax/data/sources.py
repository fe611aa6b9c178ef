"""Where examples come from: the embedded synthetic set, a folder of pairs, or TFDS."""

import ml_collections

from segan_jax.data.arrays import Example


def synthetic_examples(seed: int, start: int, count: int) -> list[Example]:
  """Procedural dermoscopy-like pairs start..start+count-1 of the synthetic set with this seed."""
  from segan_jax.data import synthetic
  examples = []
  for index in range(start, start + count):
    image, mask = synthetic.generate_example(seed, index)
    examples.append(Example(id=f"synthetic_{seed}_{index:06d}", image=image, mask=mask))
  return examples


def load_splits(config: ml_collections.ConfigDict) -> tuple[list[Example], list[Example]]:
  """Returns the (training, validation) examples that config.data selects."""
  data = config.data
  if data.source == "synthetic":
    train = synthetic_examples(data.seed, 0, data.train_size)
    val = synthetic_examples(data.seed, data.train_size, data.val_size)
    return train, val
  raise NotImplementedError(f"config.data.source={data.source!r} is not available yet.")
