"""Default config: a short CPU demo of SegAN on the embedded synthetic dermoscopy data.

Reduced width (8 instead of 64) so that the whole run fits in about 10 minutes on 2 CPU cores;
the recipe is otherwise the paper's. See isic2017.py for the full-size paper recipe.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.dtype = "float32"  # compute dtype: float32 or bfloat16 (params and statistics stay float32)

  config.model = ml_collections.ConfigDict()
  config.model.width = 8  # ndf; the paper uses 64
  config.model.num_classes = 1  # number of label maps N
  config.model.critic_global_conv = False
  config.model.residual_batchnorm = True  # BN in S's residual blocks (authors' code: none called)
  config.model.init = "lecun"  # lecun (Flax's defaults) | authors (their He-normal, BN N(1, 0.02))
  config.model.conv_impl = "auto"  # auto | xla | cpu (fast kernel gradients on the CPU backend)

  config.data = ml_collections.ConfigDict()
  config.data.source = "synthetic"  # synthetic | folder | tfds
  config.data.dir = ""  # folder of image/mask pairs, or TFDS data_dir ("" = TFDS default)
  config.data.manual_dir = ""  # tfds: folder holding the official zips or any folder of pairs
  config.data.download = False  # tfds: download the six official zips (GBs) when not yet built
  config.data.seed = 0  # seed of the synthetic data and of the validation hold-out
  config.data.train_size = 1000  # synthetic examples in the training split
  config.data.val_size = 100  # synthetic examples in the validation split
  config.data.val_fraction = 0.1  # hold-out fraction where a source has no validation split
  config.data.val_ids_file = ""  # held-out ids: read if the file exists, else written there
  # Train on a seeded random subset of this many training pairs (0: all of them), drawn with
  # data.seed after the hold-out, the same whatever train.seed: for learning curves.
  config.data.train_limit = 0
  # Folder reading and bad input (see segan_jax/data/folder.py; also used when building TFDS):
  config.data.mask_suffix = "_segmentation"  # generic layout: masks/<stem><suffix>.png or <stem>.png
  config.data.on_bad_pairs = "error"  # error | skip (leave bad pairs out, logged with a count)
  config.data.size_check = "auto"  # auto | aspect | equal | any: mask size vs image size
  config.data.nonbinary_masks = "binarize"  # binarize (> 127, as ISIC scoring) | error
  config.data.decode_workers = 0  # image decoding threads (0: one per CPU core, at most 16)
  config.data.image_size = 128  # training crop and evaluation input side (multiple of 128)
  config.data.resize_height = 135  # images are resized to 180x135 (w x h) before cropping
  config.data.resize_width = 180
  config.data.hflip = True
  config.data.vflip = True
  # A transpose with probability 0.5 beside the flips: all eight right-angle rotations and
  # reflections of the view (lesions have no orientation; the authors' loader flips only).
  config.data.rot90 = False
  # Probability of the whole resized image (instead of a crop) as the training view, image
  # and mask together; the authors' loader uses 0.5 (segan_jax/data/augment.py).
  config.data.whole_image_prob = 0.0
  config.data.brightness = 0.2  # colour jitter on the image only (0 disables each)
  config.data.contrast = 0.2
  config.data.saturation = 0.2
  config.data.hue = 0.02
  # Where the augmentation runs (the same arithmetic either way, segan_jax/data/pipeline.py):
  # device (the uint8 arrays on the devices, each augmenting its shard) | host (host CPU).
  config.data.loader = "device"

  config.loss = ml_collections.ConfigDict()
  config.loss.adversarial_weight = 1.0  # weight of the multi-scale L1 term (0: no critic)
  config.loss.layer_weights = ()  # one per critic feature map (7); () means all 1 (paper)
  config.loss.feature_reduction = "per_layer"  # per_layer (paper) | concatenated (authors' code)
  config.loss.dice_weight = 0.0  # soft Dice term in S's objective (authors' code: 1.0)
  config.loss.dice_form = "soft"  # soft (smoothed, plain sums) | authors (squared sums, no eps)
  config.loss.bce_weight = 0.0  # binary cross-entropy term (non-adversarial baselines)

  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 0.003
  # linear (paper) | step (x0.5 every 25 epochs) | step_authors (their loop exactly) | constant
  config.optim.schedule = "linear"
  config.optim.end_learning_rate = 0.0
  config.optim.decay_epochs = 25
  config.optim.decay_factor = 0.5
  config.optim.b1 = 0.9
  config.optim.b2 = 0.999
  # Re-create both Adams (moments and bias correction reset) whenever a step schedule decays the
  # rate, as the authors' train.py does; needs optim.schedule step or step_authors.
  config.optim.reset_at_decay = False

  config.schedule = ml_collections.ConfigDict()
  config.schedule.k_init = 1.0
  config.schedule.k_decay = 0.9
  config.schedule.k_decay_epochs = 1  # the paper decays every 25 epochs; the demo is 12.9 epochs
  config.schedule.k_floor = 0.3

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 16
  config.train.num_steps = 800  # training length in steps, or 0 to give it in epochs:
  config.train.num_epochs = 0  # training length in epochs (0: num_steps is the length)
  config.train.seed = 0
  config.train.critic_clip = 0.05
  config.train.critic_constraint = "clip"  # clip | spectral_norm (kernels; the rest still clipped)
  config.train.critic_steps = 1  # critic updates per iteration, on the same batch (paper: 1)
  # Fine-tuning: S starts from a pretrained model's name (segan_jax.pretrained.available()), a
  # packaged weights file or a run's workdir; C starts fresh. "": both from config.train.seed.
  config.train.init_from = ""
  config.train.ema_decay = 0.0  # moving average of S's weights for inference (0: none; e.g. 0.999)
  config.train.log_every = 20
  config.train.eval_every = 200
  config.train.checkpoint_every = 200
  config.train.keep_checkpoints = 3

  config.eval = ml_collections.ConfigDict()
  config.eval.threshold = 0.4
  config.eval.batch_size = 16  # as evaluate and predict
  config.eval.num_panels = 4
  # Masks reduced to their largest connected component with holes filled, by default, in
  # evaluate and predict (their --postprocess flag overrides it; one class only).
  config.eval.postprocess = False
  # Probabilities averaged over the 4 flipped views, by default, in evaluate, predict and export
  # (their --tta flag overrides it); validation during training scores the plain view.
  config.eval.tta = False
  return config
