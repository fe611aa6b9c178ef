"""segan_jax: SegAN (adversarial lesion segmentation with a multi-scale L1 critic) in JAX/Flax."""

import sys

__version__ = "0.1.0"

# The TFDS dataset `isic2017` is registered here only when tensorflow_datasets is already loaded,
# so that `import segan_jax` never imports TensorFlow. Otherwise register it explicitly with
# `import segan_jax.data.isic2017_tfds`.
if sys.modules.get("tensorflow_datasets") is not None:
  from segan_jax.data import isic2017_tfds  # noqa: F401,E402
