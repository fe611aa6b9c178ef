"""One optax train state per player, with BatchNorm statistics."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
  """A player's parameters, optimizer state and BatchNorm running statistics."""
  batch_stats: Any = None


def create_train_state(module: nn.Module, rng: jax.Array, input_shape: tuple[int, ...],
                       tx: optax.GradientTransformation) -> TrainState:
  """Initialises `module` on zeros of input_shape; the step is an int32 array, not a Python int.

  (A Python int step would make the first jitted call compile for an int and the next for an array.)
  """
  variables = jax.jit(lambda r: module.init(r, jnp.zeros(input_shape, jnp.float32), train=False))(rng)
  state = TrainState.create(apply_fn=module.apply, params=variables["params"],
                            batch_stats=variables.get("batch_stats", {}), tx=tx)
  return state.replace(step=jnp.asarray(0, jnp.int32))


def clip_params(params: Any, bound: float) -> Any:
  """Clips every parameter leaf to [-bound, bound] (WGAN-style critic clipping)."""
  return jax.tree.map(lambda p: jnp.clip(p, -bound, bound), params)


def count_kernel_weights(params: Any) -> int:
  """Number of convolution-kernel weights (leaves named 'kernel')."""
  leaves = jax.tree_util.tree_leaves_with_path(params)
  return sum(int(leaf.size) for path, leaf in leaves
             if getattr(path[-1], "key", None) == "kernel")
