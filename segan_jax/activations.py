"""The adaptive logistic activation of SegAN."""

import jax
import jax.numpy as jnp


def adaptive_logistic(z: jax.Array, k: jax.Array | float) -> jax.Array:
  """Returns 1 / (1 + exp(-z / k)), computed as sigmoid(z / k) so it is stable for any k > 0.

  A smaller k sharpens the output towards a binary mask (SegAN's schedule lowers k during training).
  """
  k = jnp.asarray(k, dtype=jnp.result_type(z, jnp.float32))
  return jax.nn.sigmoid(z / k.astype(z.dtype))
