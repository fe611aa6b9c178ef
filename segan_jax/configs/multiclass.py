"""Multi-class CPU demo: SegAN on the synthetic data with three classes (lesion, hair, gel bubbles).

The default demo's recipe (width 8, adversarial multi-scale L1 loss, adaptive logistic) with
model.num_classes=3 (segan_jax/data/synthetic.py: CLASS_NAMES[:3] as index masks) and 1200 steps,
plus soft Dice and cross-entropy terms beside the adversarial one. Hairs and bubbles cover about
2% of the pixels each: trained on the adversarial term (and Dice) alone their maps were pushed to
large negative logits within the first 300 steps and, with sigmoid(z / k) saturated there, never
came back (validation Jaccard 0 wherever the class was present, at every step to 1200); the
cross-entropy's logit gradient, (p - y) / k, does not vanish on a saturated wrong map. The Dice
term weighs every class alike, whatever its area.
"""

import ml_collections

from segan_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model.num_classes = 3
  config.loss.dice_weight = 1.0
  config.loss.bce_weight = 1.0
  config.train.num_steps = 1200
  config.train.eval_every = 300
  config.train.checkpoint_every = 300
  return config
