"""Multi-class CPU demo: SegAN on the synthetic data with three classes (lesion, hair, gel bubbles).

The default demo's recipe (width 8, adversarial multi-scale L1 loss, adaptive logistic) with
model.num_classes=3 (segan_jax/data/synthetic.py: CLASS_NAMES[:3] as index masks), 1200 steps,
and soft Dice and cross-entropy terms beside the adversarial one. Hairs and bubbles cover about
2% of the pixels each and are absent from a third and a half of the images; the L1 terms' best
constant for a pixel the network cannot yet tell apart is 0, and such maps, pushed to large
negative logits where sigmoid(z / k) is saturated, stop learning. The cross-entropy's logit
gradient, (p - y) / k, does not vanish there. Final validation Jaccard on the 100 held-out
images (ISIC per-image means; pooled over the images in brackets), lesion / hair / bubbles, 1200
steps each:
  adversarial + Dice:        0.870 (0.882) / 0.320 (0.000) / 0.630 (0.000)
  adversarial + BCE:         0.864 (0.872) / 0.189 (0.173) / 0.591 (0.001)
  adversarial + Dice + BCE:  0.880 (0.888) / 0.410 (0.338) / 0.630 (0.000)   (this config)
0.320 and 0.630 are the shares of images without hair and without bubbles, which score 1 when
nothing is predicted: at this width and length the bubbles' map (a disc whose only cue is a
faint rim and a glint) is never predicted.
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
