"""The paper's recipe on ISIC 2017 Part 1 (2000 training images, batch 25: 80 steps per epoch)."""

import ml_collections

from segan_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model.width = 64
  config.data.source = "tfds"
  config.train.batch_size = 25
  config.train.num_steps = 80 * 300  # 300 epochs: k reaches its floor 0.3 after 275
  config.optim.learning_rate = 0.003
  config.optim.schedule = "linear"
  config.schedule.k_decay_epochs = 25
  config.schedule.k_floor = 0.3
  config.train.log_every = 50
  config.train.eval_every = 800
  config.train.checkpoint_every = 800
  config.eval.threshold = 0.4
  return config
