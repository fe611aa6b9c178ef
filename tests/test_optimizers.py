"""Adam restarted at the learning rate's decay steps (optim.reset_at_decay), as the authors'
train.py re-creates it: the restart wrapper, the decay steps, the config check, and both
players' Adams restarted through the training step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from segan_jax import checkpoints, optimizers, schedules, steps, train
from segan_jax.config_validation import ConfigError, validate_config
from segan_jax.configs import default, isic2017_authors


def _params():
  return {"w": jnp.ones((3, 2)), "b": jnp.zeros((2,))}


def _grads(n):
  keys = jax.random.split(jax.random.key(0), n)
  return [{"w": jax.random.normal(k, (3, 2)),
           "b": jax.random.normal(jax.random.fold_in(k, 1), (2,))} for k in keys]


def _updates(tx, grads):
  params = _params()
  state = tx.init(params)
  out = []
  for g in grads:
    u, state = tx.update(g, state, params)
    out.append(u)
    params = optax.apply_updates(params, u)
  return out, state


def _assert_trees_close(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a, b)


def test_without_restarts_it_is_optax_adam():
  grads = _grads(5)
  lr = optax.linear_schedule(1e-2, 1e-3, 5)
  never = lambda step: jnp.zeros([], bool)
  wrapped, _ = _updates(optimizers.adam(lr, 0.5, 0.999, restart=never), grads)
  plain, _ = _updates(optax.adam(lr, b1=0.5, b2=0.999), grads)
  _assert_trees_close(wrapped, plain)
  # Without a restart predicate the state is optax.adam's own (older checkpoints restore).
  structure = lambda tx: jax.tree.structure(tx.init(_params()))
  assert structure(optimizers.adam(lr, 0.5, 0.999)) == structure(optax.adam(lr, b1=0.5))


def test_a_restart_forgets_the_moments_and_restarts_bias_correction():
  grads = _grads(6)
  at_two = lambda step: step == 2
  restarted, state = _updates(optimizers.adam(1e-2, 0.5, 0.999, restart=at_two), grads)
  before, _ = _updates(optax.adam(1e-2, b1=0.5), grads[:2])
  after, _ = _updates(optax.adam(1e-2, b1=0.5), grads[2:])  # a fresh Adam from step 2 on
  _assert_trees_close(restarted[:2], before)
  _assert_trees_close(restarted[2:], after)
  kept, _ = _updates(optax.adam(1e-2, b1=0.5), grads)
  assert not np.allclose(restarted[3]["w"], kept[3]["w"])
  restart_state, _ = state
  assert int(restart_state.count) == 6 and int(restart_state.inner.count) == 4


@pytest.mark.parametrize("kind, expected", [
    ("step_authors", [3, 9, 15]),  # epochs 1, 3, 5 start at a new rate
    ("step", [6, 12, 18]),         # epochs 2, 4, 6
])
def test_decay_steps_are_where_the_rate_changes(kind, expected):
  spe, epochs = 3, 2
  decays = schedules.decay_steps(kind, spe, epochs)
  lr = schedules.learning_rate_schedule(kind, 1.0, 20, spe, decay_epochs=epochs)
  steps = [s for s in range(20) if bool(decays(s))]
  assert steps == expected
  changes = [s for s in range(1, 20) if float(lr(s)) != float(lr(s - 1))]
  assert changes == expected


def test_decay_steps_refuse_schedules_without_decays():
  with pytest.raises(ValueError, match="linear"):
    schedules.decay_steps("linear", 3, 2)


@pytest.mark.parametrize("schedule", ["linear", "constant"])
def test_reset_at_decay_needs_a_step_schedule(schedule):
  config = default.get_config()
  config.optim.schedule = schedule
  config.optim.reset_at_decay = True
  with pytest.raises(ConfigError, match=r"optim\.reset_at_decay"):
    validate_config(config)


def _batch(seed, side, b=2):
  """b images of a bright disc on noise, and the disc as the mask."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:side, :side]
  masks = np.stack([(yy - side // 2 - 5 * i) ** 2 + (xx - side // 2) ** 2 < (side // 4) ** 2
                    for i in range(b)])
  images = rng.normal(size=(b, side, side, 3)).astype(np.float32) + 1.5 * masks[..., None]
  return {"image": jnp.asarray(images), "mask": jnp.asarray(masks[..., None], jnp.float32)}


def _fresh_moments(adam_state, b1, b2):
  """Whether Adam's moments are those of a single gradient g: mu = (1 - b1) g and
  nu = (1 - b2) g^2, so mu^2 (1 - b2) = nu (1 - b1)^2 for every parameter."""
  mu, nu = jax.tree.leaves(adam_state.mu), jax.tree.leaves(adam_state.nu)
  return all(np.allclose(np.asarray(m) ** 2 * (1 - b2), np.asarray(n) * (1 - b1) ** 2,
                         rtol=1e-4, atol=1e-30) for m, n in zip(mu, nu))


def test_reset_at_decay_restarts_both_adams_at_the_decay_step(tmp_path):
  """Through the training states and the jitted training step: with 2 steps an epoch,
  step_authors decays at step 2, where both players' Adams forget their moments and restart
  their bias correction; a checkpoint keeps the restarted state."""
  config = isic2017_authors.get_config()
  config.optim.reset_at_decay = True
  config.model.width = 2
  config.data.source = "synthetic"
  validate_config(config)
  cfg = train.build_step_config(config, steps_per_epoch=2)
  assert [s for s in range(6) if bool(cfg.adam_restart(s))] == [2]
  assert [s for s in range(6) if bool(cfg.critic_adam_restart(s))] == [2]
  seg, critic = train.create_states(config, cfg)
  jitted = steps.make_jitted_steps(cfg)
  b1, b2 = config.optim.b1, config.optim.b2
  adam = lambda state: state.opt_state[0].inner  # the restart wrapper's ScaleByAdamState
  for step in range(3):
    seg, critic, metrics = jitted.train_step(seg, critic, _batch(step, config.data.image_size))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    if step == 1:  # two updates in: the moments mix two gradients
      for state in (seg, critic):
        assert int(adam(state).count) == 2 and not _fresh_moments(adam(state), b1, b2)
  for state in (seg, critic):
    restart_state, _ = state.opt_state
    # Three updates in all, one since the restart at step 2, whose gradient alone is in the moments.
    assert int(restart_state.count) == 3 and int(restart_state.inner.count) == 1
    assert _fresh_moments(adam(state), b1, b2)

  manager = checkpoints.make_manager(str(tmp_path / "run"))
  checkpoints.save(manager, 3, seg, critic)
  restored_seg, restored_critic, _, step = checkpoints.restore(manager, seg, critic)
  manager.close()
  assert step == 3
  for state, restored in ((seg, restored_seg), (critic, restored_critic)):
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, restored.opt_state),
                 jax.tree.map(np.asarray, state.opt_state))
