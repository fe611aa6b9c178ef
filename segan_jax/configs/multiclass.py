"""Multi-class CPU demo: SegAN on the synthetic data with three classes (lesion, hair, gel bubbles).

The default demo's recipe (width 8, adversarial multi-scale L1 loss, adaptive logistic) with
model.num_classes=3 (segan_jax/data/synthetic.py: CLASS_NAMES[:3] as index masks), 1200 steps,
and a cross-entropy term beside the adversarial one. Hairs and bubbles cover about 2% of the
pixels each and are absent from a third and a half of the images. The L1 terms' best constant
for a pixel the network cannot yet tell apart is 0, so without cross-entropy those maps were
pushed to large negative logits, where sigmoid(z / k) is saturated and they stopped learning; the
cross-entropy's logit gradient, (p - y) / k, does not vanish on a saturated wrong map. The soft
Dice term did the same harm (on a map whose truth is empty it pulls every pixel towards 0 with a
gradient four orders of magnitude above the cross-entropy's): measured on this config with Dice
(dice_weight=1), the bubbles' map never exceeded 0.02 and scored 0 wherever bubbles were present.
"""

import ml_collections

from segan_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model.num_classes = 3
  config.loss.bce_weight = 1.0
  config.train.num_steps = 1200
  config.train.eval_every = 300
  config.train.checkpoint_every = 300
  return config
