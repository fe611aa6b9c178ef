"""Each player's Adam, optionally restarted (moments and bias correction reset) at given steps.

The authors' train.py re-creates both Adams whenever it decays the learning rate, which throws
away their moment estimates and restarts Adam's bias correction; `optim.reset_at_decay` does the
same here. optax offers no transform for this, so `restart_at` wraps one.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

StepPredicate = Callable[[jax.Array], jax.Array]


class RestartState(NamedTuple):
  """The wrapped transform's state and the number of updates made so far."""
  count: jax.Array
  inner: optax.OptState


def restart_at(inner: optax.GradientTransformation,
               restart: StepPredicate) -> optax.GradientTransformation:
  """`inner`, its state re-initialised before the update of every step s where restart(s) holds.

  Steps count this transform's updates from 0. `inner`'s init must depend only on the shapes and
  dtypes of its argument (true of Adam's zero moments and count).
  """

  def init(params):
    return RestartState(count=jnp.zeros([], jnp.int32), inner=inner.init(params))

  def update(updates, state, params=None):
    fresh = inner.init(params if params is not None else updates)
    now = jnp.asarray(restart(state.count), bool)
    inner_state = jax.tree.map(lambda f, s: jnp.where(now, f, s), fresh, state.inner)
    updates, inner_state = inner.update(updates, inner_state, params)
    return updates, RestartState(count=optax.safe_increment(state.count), inner=inner_state)

  return optax.GradientTransformation(init, update)


def adam(learning_rate: optax.Schedule, b1: float, b2: float,
         restart: StepPredicate | None = None) -> optax.GradientTransformation:
  """optax.adam; with `restart`, Adam's moments and count reset at those steps (the learning-rate
  schedule keeps counting). Without it the state is optax.adam's, so checkpoints stay compatible."""
  if restart is None:
    return optax.adam(learning_rate, b1=b1, b2=b2)
  return optax.chain(restart_at(optax.scale_by_adam(b1=b1, b2=b2), restart),
                     optax.scale_by_learning_rate(learning_rate))
