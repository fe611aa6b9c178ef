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


def last_update_k(schedule: Schedule, steps_done: jnp.ndarray | int) -> jnp.ndarray:
  """The k of the last update of a model that has made `steps_done` updates (the schedule at step
  steps_done - 1; at 0 for an untrained model): the k it is validated, scored and served at."""
  return schedule(jnp.maximum(jnp.asarray(steps_done) - 1, 0))


def per_update(schedule: Schedule, updates_per_step: int) -> Schedule:
  """`schedule` of the training step for an optimiser updated updates_per_step times a step (the
  critic with train.critic_steps > 1), whose own count runs that much faster."""
  if updates_per_step == 1:
    return schedule
  return lambda count: schedule(jnp.asarray(count) // updates_per_step)


def per_update_restart(restart: Callable | None, updates_per_step: int) -> Callable | None:
  """A restart predicate of the training step for such an optimiser: true at the first of the
  updates of each step where `restart` holds."""
  if restart is None or updates_per_step == 1:
    return restart
  return lambda count: jnp.logical_and(jnp.asarray(count) % updates_per_step == 0,
                                       restart(jnp.asarray(count) // updates_per_step))


LR_SCHEDULES = ("linear", "step", "step_authors", "constant")


def learning_rate_schedule(kind: str, base: float, num_steps: int, steps_per_epoch: int,
                           end_value: float = 0.0, decay_epochs: int = 25,
                           decay_factor: float = 0.5) -> optax.Schedule:
  """The learning rate at each step, by `kind`:

  linear: the paper's linear decay from `base` to `end_value` over num_steps.
  step: base * decay_factor ** floor(epoch / decay_epochs) (x0.5 every 25 epochs).
  step_authors: the authors' train.py exactly: they multiply the rate by 0.5 after every epoch
    with `epoch % 25 == 0`, the first time after epoch 0, so epoch e runs at
    base * decay_factor ** ceil(e / decay_epochs) (epoch 0 at base, epochs 1-25 at base / 2,
    ...), never below max(end_value, 1e-8) (their floor). (They also re-create Adam at each
    decay, resetting its moments: `optim.reset_at_decay`, at the steps of `decay_steps`.)
  constant: base.
  """
  if kind == "linear":
    return optax.linear_schedule(base, end_value, transition_steps=max(num_steps, 1))
  if kind == "step":
    return optax.exponential_decay(base, transition_steps=decay_epochs * steps_per_epoch,
                                   decay_rate=decay_factor, staircase=True)
  if kind == "step_authors":
    if steps_per_epoch <= 0 or decay_epochs <= 0:
      raise ValueError("The step_authors schedule needs positive steps_per_epoch and "
                       "optim.decay_epochs.")
    floor = max(float(end_value), 1e-8)

    def authors(step):
      epoch = jnp.asarray(step) // steps_per_epoch
      decays = (epoch + decay_epochs - 1) // decay_epochs  # ceil(epoch / decay_epochs)
      rate = base * jnp.power(jnp.float32(decay_factor), decays.astype(jnp.float32))
      return jnp.maximum(rate, jnp.float32(floor)).astype(jnp.float32)

    return authors
  if kind == "constant":
    return optax.constant_schedule(base)
  raise ValueError(f"optim.schedule={kind!r} is not one of {LR_SCHEDULES}.")


DECAYING_SCHEDULES = ("step", "step_authors")


def decay_steps(kind: str, steps_per_epoch: int, decay_epochs: int
                ) -> Callable[[jnp.ndarray | int], jnp.ndarray]:
  """Whether the step schedule `kind` decays the rate at a step (the first step at the new rate).

  step: every decay_epochs * steps_per_epoch steps. step_authors: at the start of epochs 1,
  decay_epochs + 1, 2 * decay_epochs + 1, ... (the authors decay after each epoch e with
  e % decay_epochs == 0), also once the rate sits at its floor, as their code does.
  """
  if kind not in DECAYING_SCHEDULES:
    raise ValueError(f"optim.schedule={kind!r} has no decay steps; only {DECAYING_SCHEDULES} do.")
  if steps_per_epoch <= 0 or decay_epochs <= 0:
    raise ValueError("decay_steps needs positive steps_per_epoch and optim.decay_epochs.")
  period = decay_epochs * steps_per_epoch
  offset = steps_per_epoch if kind == "step_authors" else 0

  def decays(step):
    step = jnp.asarray(step)
    return (step >= max(offset, 1)) & ((step - offset) % period == 0)

  return decays
