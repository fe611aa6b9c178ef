"""Multi-class CPU demo: SegAN on the synthetic data with three classes (lesion, hair, gel bubbles).

The default demo's recipe (width 8, adversarial multi-scale L1 loss, adaptive logistic) with
model.num_classes=3 (segan_jax/data/synthetic.py: CLASS_NAMES[:3] as index masks), a soft Dice
term beside the adversarial one (hairs and bubbles cover about 2% of the pixels each; the Dice
term weighs every class alike, as the authors' code adds it), and 1200 steps.
"""

import ml_collections

from segan_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model.num_classes = 3
  config.loss.dice_weight = 1.0
  config.train.num_steps = 1200
  config.train.eval_every = 300
  config.train.checkpoint_every = 300
  return config
