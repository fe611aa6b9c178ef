"""SegAN objectives: the multi-scale L1 critic loss, and the pixel-wise losses used beside it."""

from collections.abc import Sequence

import jax
import jax.numpy as jnp

FEATURE_REDUCTIONS = ("per_layer", "concatenated")


def multiscale_l1(features_a: Sequence[jax.Array],
                  features_b: Sequence[jax.Array],
                  weights: Sequence[float] | None = None,
                  reduction: str = "per_layer") -> jax.Array:
  """The paper's l_mae between two lists of critic feature maps.

  `per_layer` (paper): (1/L) sum_i w_i mean|f_i - f'_i|, every layer counts equally.
  `concatenated` (authors' code): mean over all layers' elements concatenated, layer i scaled by
  w_i, so layers with many elements dominate.
  """
  if len(features_a) != len(features_b):
    raise ValueError(f"multiscale_l1 got {len(features_a)} and {len(features_b)} feature maps.")
  if weights is None:
    weights = (1.0,) * len(features_a)
  if len(weights) != len(features_a):
    raise ValueError(f"loss.layer_weights has {len(weights)} entries but the critic returns "
                     f"{len(features_a)} feature maps (masked input plus one per layer).")
  diffs = [jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))
           for a, b in zip(features_a, features_b)]
  if reduction == "per_layer":
    return sum(w * jnp.mean(d) for w, d in zip(weights, diffs)) / len(diffs)
  if reduction == "concatenated":
    total = sum(d.size for d in diffs)
    return sum(w * jnp.sum(d) for w, d in zip(weights, diffs)) / total
  raise ValueError(f"Unknown feature reduction {reduction!r}; expected one of {FEATURE_REDUCTIONS}.")


def soft_dice_loss(probs: jax.Array, targets: jax.Array, eps: float = 1.0) -> jax.Array:
  """1 - (2 sum(p y) + eps) / (sum p + sum y + eps), per image and label map, averaged.

  segan_jax's own smoothed form (eps keeps empty masks finite). It is not the authors' formula,
  which squares the denominator's terms and has no smoothing: see authors_dice_loss.
  """
  probs = probs.astype(jnp.float32)
  targets = targets.astype(jnp.float32)
  axes = (1, 2)
  intersection = jnp.sum(probs * targets, axis=axes)
  denominator = jnp.sum(probs, axis=axes) + jnp.sum(targets, axis=axes)
  return 1.0 - jnp.mean((2.0 * intersection + eps) / (denominator + eps))


def authors_dice_loss(probs: jax.Array, targets: jax.Array) -> jax.Array:
  """1 - 2 sum(p y) / (sum p^2 + sum y^2), per image and label map, averaged.

  The SegAN authors' `dice_loss` (train.py): squared terms in the denominator, no smoothing. For
  their single label map this is exactly their value (they sum over maps and divide by the batch
  size); with several maps segan_jax averages over maps too. An empty target map, where their
  formula is 0 / 0 once the prediction underflows, counts its limit 0 (loss 1, no gradient) instead
  of NaN; any non-empty target has a denominator of at least 1 and its exact value.
  """
  probs = probs.astype(jnp.float32)
  targets = targets.astype(jnp.float32)
  axes = (1, 2)
  intersection = jnp.sum(probs * targets, axis=axes)
  denominator = jnp.sum(probs * probs, axis=axes) + jnp.sum(targets * targets, axis=axes)
  defined = denominator > AUTHORS_DICE_MIN_DENOMINATOR
  ratio = 2.0 * intersection / jnp.where(defined, denominator, 1.0)  # finite in both branches
  return 1.0 - jnp.mean(jnp.where(defined, ratio, 0.0))


# Below this the authors' Dice denominator only arises from an empty target (a non-empty binary one
# adds at least 1), where float32 squares underflow and their ratio becomes 0 / 0.
AUTHORS_DICE_MIN_DENOMINATOR = 1e-6


DICE_FORMS = ("soft", "authors")


def dice_loss(probs: jax.Array, targets: jax.Array, form: str = "soft") -> jax.Array:
  """The Dice term of S's objective in the chosen form (`loss.dice_form`)."""
  if form == "soft":
    return soft_dice_loss(probs, targets)
  if form == "authors":
    return authors_dice_loss(probs, targets)
  raise ValueError(f"Unknown Dice form {form!r}; expected one of {DICE_FORMS}.")


def binary_cross_entropy_with_logits(logits: jax.Array, targets: jax.Array,
                                     k: jax.Array | float = 1.0) -> jax.Array:
  """Mean BCE of sigmoid(logits / k) against targets, from logits for numerical stability."""
  z = logits.astype(jnp.float32) / k
  targets = targets.astype(jnp.float32)
  return jnp.mean(jnp.maximum(z, 0) - z * targets + jnp.log1p(jnp.exp(-jnp.abs(z))))
