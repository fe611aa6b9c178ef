"""One optax train state per player, with BatchNorm statistics (and S's moving average)."""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from segan_jax import initializers


class TrainState(train_state.TrainState):
  """A player's parameters, optimizer state and BatchNorm running statistics."""
  batch_stats: Any = None

  def inference_variables(self) -> dict[str, Any]:
    """The variables to predict with: the moving average where the state has one (EMATrainState),
    else the raw ones."""
    ema = getattr(self, "ema", None)
    if ema is not None:
      return ema
    return {"params": self.params, "batch_stats": self.batch_stats}


class EMATrainState(TrainState):
  """A TrainState that also holds `ema`, {"params", "batch_stats"}: the moving average of both for
  inference (train.ema_decay > 0). A separate class, so that states and checkpoints without a
  moving average keep exactly the structure they had before it existed."""
  ema: Any = None


def create_train_state(module: nn.Module, rng: jax.Array, input_shape: tuple[int, ...],
                       tx: optax.GradientTransformation, init: str = "lecun") -> TrainState:
  """Initialises `module` on zeros of input_shape, its parameters drawn as `init`
  (segan_jax.initializers.INITS) says; the step is an int32 array, not a Python int.

  (A Python int step would make the first jitted call compile for an int and the next for an array.)
  """
  variables = jax.jit(lambda r: module.init(r, jnp.zeros(input_shape, jnp.float32),
                                            train=False))(rng)
  params = initializers.initialize(variables["params"], init, jax.random.fold_in(rng, 1))
  state = TrainState.create(apply_fn=module.apply, params=params,
                            batch_stats=variables.get("batch_stats", {}), tx=tx)
  return state.replace(step=jnp.asarray(0, jnp.int32))


def with_ema(state: TrainState) -> EMATrainState:
  """The state as an EMATrainState whose moving average starts at (copies of) its parameters and
  statistics.

  Copies, not the same arrays: the jitted steps donate the state, and a buffer donated twice fails.
  """
  current = {"params": state.params, "batch_stats": state.batch_stats}
  fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
  fields["ema"] = jax.tree.map(lambda x: jnp.array(x, copy=True), current)
  return EMATrainState(**fields)


def update_ema(state: EMATrainState, decay: float) -> EMATrainState:
  """Moves state.ema towards the state's (already updated) variables; state.step counts updates.

  The average is debiased (as Adam's moments): after t updates it is
  sum_i (1 - decay) decay^(t - i) v_i / (1 - decay^t), a weighted mean of the variables seen, so
  the initial weights carry no weight and short runs are not held back. Stored debiased, it is
  usable as is; the per-update factor is decay (1 - decay^(t-1)) / (1 - decay^t), 0 at t = 1.
  """
  t = state.step.astype(jnp.float32)
  d = jnp.float32(decay)
  factor = d * (1.0 - d ** (t - 1.0)) / (1.0 - d ** t)
  current = {"params": state.params, "batch_stats": state.batch_stats}
  ema = jax.tree.map(lambda e, v: (factor * e + (1.0 - factor) * v).astype(e.dtype), state.ema,
                     current)
  return state.replace(ema=ema)


def clip_params(params: Any, bound: float) -> Any:
  """Clips every parameter leaf to [-bound, bound] (WGAN-style critic clipping)."""
  return jax.tree.map(lambda p: jnp.clip(p, -bound, bound), params)


def clip_params_except_kernels(params: Any, bound: float) -> Any:
  """Clips every parameter leaf but the convolution kernels (leaves named 'kernel') to
  [-bound, bound]: the clipping that remains when spectral normalisation bounds the kernels."""
  return jax.tree_util.tree_map_with_path(
      lambda path, p: p if getattr(path[-1], "key", None) == "kernel"
      else jnp.clip(p, -bound, bound), params)


def count_kernel_weights(params: Any) -> int:
  """Number of convolution-kernel weights (leaves named 'kernel')."""
  leaves = jax.tree_util.tree_leaves_with_path(params)
  return sum(int(leaf.size) for path, leaf in leaves
             if getattr(path[-1], "key", None) == "kernel")
