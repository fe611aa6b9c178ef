"""The SegAN authors' recipe on ISIC 2017 Part 1, as far as segan_jax expresses it.

From their public code (YuanXue1993/SegAN, commit aa892a6: train.py, net.py, LoadData.py); each
field below names what it reproduces. Everything else is the paper's recipe
(configs/isic2017.py): 300 epochs, the data folder to name with `--config.data.dir`. What this
config does not reproduce (docs/architecture.md, "Paper vs the authors' code"): Adam re-created
(moments reset) at each decay (`--config.optim.reset_at_decay=True` does it; off, as it
measured the same at the reference budget), two forward passes of S per iteration, PyTorch's
unbiased running variance, the 2017 align_corners upsampling, biases in the global convolutions
and none in e1/out/c1, and the checkpoint of best validation Jaccard (`segan_jax.evaluate
--search` picks among the kept checkpoints instead). At the reference budget of
experiments/RESULTS.md it scores within a point of the authors' own code (+0.55, 95% interval
over seeds and images [-1.55, +2.66]); with Flax's default initialisation
(`--config.model.init=lecun`) it scored a point higher (+1.03 [-0.42, +2.62]), which two seeds
cannot separate from the noise.
"""

import ml_collections

from segan_jax.configs import isic2017


def get_config() -> ml_collections.ConfigDict:
  config = isic2017.get_config()
  # train.py: `--batchSize` default 36.
  config.train.batch_size = 36
  # train.py: optim.Adam(lr=opt.lr, betas=(opt.beta1, 0.999)), `--lr` 0.0002, `--beta1` 0.5.
  config.optim.learning_rate = 2e-4
  config.optim.b1 = 0.5
  config.optim.b2 = 0.999
  # train.py: `if epoch % 25 == 0: lr = lr * decay` after each epoch (`--decay` 0.5), first after
  # epoch 0, floored at 1e-8.
  config.optim.schedule = "step_authors"
  config.optim.decay_epochs = 25
  config.optim.decay_factor = 0.5
  config.optim.end_learning_rate = 1e-8
  # train.py: `output = F.sigmoid(output)`, the adaptive `F.sigmoid(output * k)` commented out.
  config.schedule.k_decay = 1.0
  # train.py: `loss_G_joint = mean|result - target_G| + loss_dice`, with their `dice_loss`
  # 1 - 2 sum(p y) / (sum p^2 + sum y^2) at weight 1.
  config.loss.dice_weight = 1.0
  config.loss.dice_form = "authors"
  # net.py: NetC.forward concatenates [input, c1 .. c6] flattened, scaled by 1, 1, 2, 2, 2, 2, 4;
  # train.py takes one mean |NetC(fake) - NetC(real)| over all of it.
  config.loss.feature_reduction = "concatenated"
  config.loss.layer_weights = (1, 1, 2, 2, 2, 2, 4)
  # train.py: `p.data.clamp_(-0.05, 0.05)` for every NetC parameter after its step.
  config.train.critic_constraint = "clip"
  config.train.critic_clip = 0.05
  # net.py: after building NetS and NetC, every Conv2d weight ~ N(0, 2 / (kh * kw * c_out)) and
  # every BatchNorm weight ~ N(1, 0.02), biases 0.
  config.model.init = "authors"
  # net.py: ResidualBlock / ResidualBlock_D build norm1-norm3 but their forward never calls them.
  config.model.residual_batchnorm = False
  # net.py: NetC's global-convolution blocks (convblock1_1 .. 5_1) are commented out of forward.
  config.model.critic_global_conv = False
  # LoadData.py: the ColorJitter line is commented out; no colour augmentation.
  config.data.brightness = 0.0
  config.data.contrast = 0.0
  config.data.saturation = 0.0
  config.data.hue = 0.0
  # LoadData.py: Scale((180, 135)), then random horizontal and vertical flips (p 0.5 each).
  config.data.resize_width = 180
  config.data.resize_height = 135
  config.data.hflip = True
  config.data.vflip = True
  # LoadData.py: after the flips, `if random.random() > 0.5` the whole 180x135 image is resized
  # to 128x128, else a random 128x128 crop is taken.
  config.data.whole_image_prob = 0.5
  # train.py: validation every 10 epochs (`if epoch % 10 == 0`) thresholds the logits at 0.5, a
  # sigmoid output of 0.6225.
  config.eval.threshold = 0.6225
  return config
