"""A tiny config for tests and smoke runs: width 2, a handful of 128x128 examples, few steps."""

import ml_collections

from segan_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model.width = 2
  config.data.train_size = 16
  config.data.val_size = 4
  config.train.batch_size = 4
  config.train.num_steps = 6
  config.train.log_every = 2
  config.train.eval_every = 3
  config.train.checkpoint_every = 3
  config.eval.batch_size = 4
  config.eval.num_panels = 2
  return config
