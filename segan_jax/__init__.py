"""segan_jax: SegAN (adversarial lesion segmentation with a multi-scale L1 critic) in JAX/Flax."""

__version__ = "0.1.0"
