"""Schedules as optax-style functions of the training step: SegAN's k, and the learning rates."""

from collections.abc import Callable

import jax.numpy as jnp
import optax

Schedule = Callable[[jnp.ndarray | int], jnp.ndarray]


def k_schedule(steps_per_epoch: int, k_init: float = 1.0, decay: float = 0.9,
               decay_epochs: int = 25, k_floor: float = 0.3) -> Schedule:
  """k = max(k_init * decay ** floor(epoch / decay_epochs), k_floor), epoch = step // steps_per_epoch.

  The paper starts at k = 1 and multiplies by 0.9 every 25 epochs down to 0.3.
  """
  if steps_per_epoch <= 0 or decay_epochs <= 0:
    raise ValueError("k_schedule needs positive steps_per_epoch and decay_epochs.")

  def schedule(step):
    epoch = jnp.asarray(step) // steps_per_epoch
    k = k_init * jnp.power(jnp.float32(decay), (epoch // decay_epochs).astype(jnp.float32))
    return jnp.maximum(k, jnp.float32(k_floor)).astype(jnp.float32)

  return schedule


LR_SCHEDULES = ("linear", "step", "constant")


def learning_rate_schedule(kind: str, base: float, num_steps: int, steps_per_epoch: int,
                           end_value: float = 0.0, decay_epochs: int = 25,
                           decay_factor: float = 0.5) -> optax.Schedule:
  """The paper's linear decay to `end_value`, the authors' step decay (x0.5 every 25 epochs), or constant."""
  if kind == "linear":
    return optax.linear_schedule(base, end_value, transition_steps=max(num_steps, 1))
  if kind == "step":
    return optax.exponential_decay(base, transition_steps=decay_epochs * steps_per_epoch,
                                   decay_rate=decay_factor, staircase=True)
  if kind == "constant":
    return optax.constant_schedule(base)
  raise ValueError(f"optim.schedule={kind!r} is not one of {LR_SCHEDULES}.")
