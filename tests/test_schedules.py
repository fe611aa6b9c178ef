import numpy as np
import pytest

from segan_jax import schedules
from segan_jax.schedules import k_schedule, learning_rate_schedule


def test_k_schedule_paper_values():
  spe = 80
  k = k_schedule(spe, k_init=1.0, decay=0.9, decay_epochs=25, k_floor=0.3)
  at_epoch = lambda e: float(k(e * spe))
  np.testing.assert_allclose(at_epoch(0), 1.0)
  np.testing.assert_allclose(at_epoch(24), 1.0)
  np.testing.assert_allclose(float(k(25 * spe - 1)), 1.0)
  np.testing.assert_allclose(at_epoch(25), 0.9, rtol=1e-6)
  np.testing.assert_allclose(at_epoch(50), 0.81, rtol=1e-6)
  # 0.9**11 = 0.314 > 0.3 > 0.9**12 = 0.282: the floor takes over at epoch 300.
  np.testing.assert_allclose(at_epoch(275), 0.9 ** 11, rtol=1e-5)
  np.testing.assert_allclose(at_epoch(300), 0.3, rtol=1e-6)
  np.testing.assert_allclose(at_epoch(10_000), 0.3, rtol=1e-6)


def test_last_update_k_is_the_k_of_the_step_before():
  k = k_schedule(4, k_init=1.0, decay=0.9, decay_epochs=1, k_floor=0.3)
  assert float(schedules.last_update_k(k, 0)) == float(k(0)) == 1.0
  assert float(schedules.last_update_k(k, 4)) == 1.0 and float(k(4)) == pytest.approx(0.9)
  assert float(schedules.last_update_k(k, 5)) == pytest.approx(0.9)
  # The paper's 300 epochs: the last 25 train at 0.9 ** 11, the floor 0.3 comes after the end.
  paper = k_schedule(80, decay_epochs=25)
  np.testing.assert_allclose(float(schedules.last_update_k(paper, 300 * 80)), 0.9 ** 11, rtol=1e-5)


def test_k_schedule_rejects_bad_arguments():
  with pytest.raises(ValueError):
    k_schedule(0)


def test_learning_rate_schedules():
  linear = learning_rate_schedule("linear", 0.003, num_steps=100, steps_per_epoch=10)
  np.testing.assert_allclose(float(linear(0)), 0.003)
  np.testing.assert_allclose(float(linear(50)), 0.0015, rtol=1e-6)
  np.testing.assert_allclose(float(linear(100)), 0.0, atol=1e-9)
  step = learning_rate_schedule("step", 2e-4, num_steps=10_000, steps_per_epoch=10,
                                decay_epochs=25, decay_factor=0.5)
  np.testing.assert_allclose(float(step(249)), 2e-4, rtol=1e-6)
  np.testing.assert_allclose(float(step(250)), 1e-4, rtol=1e-6)
  np.testing.assert_allclose(float(step(500)), 5e-5, rtol=1e-6)
  with pytest.raises(ValueError, match="optim.schedule"):
    learning_rate_schedule("cosine", 1e-3, 10, 1)


def test_step_authors_halves_after_epoch_0_then_every_25_epochs():
  """The authors' train.py: `if epoch % 25 == 0: lr *= 0.5` at the end of each epoch, floored."""
  per_epoch = 10
  lr = learning_rate_schedule("step_authors", 2e-4, num_steps=10_000, steps_per_epoch=per_epoch,
                              decay_epochs=25, decay_factor=0.5)

  def theirs(epoch):  # the rate their loop uses during `epoch`
    rate = 2e-4
    for e in range(epoch):
      if e % 25 == 0:
        rate = max(rate * 0.5, 1e-8)
    return rate

  for epoch in (0, 1, 2, 25, 26, 50, 51, 76, 400):
    for step in (epoch * per_epoch, epoch * per_epoch + per_epoch - 1):
      np.testing.assert_allclose(float(lr(step)), theirs(epoch), rtol=1e-6, err_msg=str(epoch))
  assert theirs(400) == 1e-8  # the floor is reached
  with pytest.raises(ValueError, match="steps_per_epoch"):
    learning_rate_schedule("step_authors", 2e-4, 10, 0)


def test_per_update_schedule_and_restart_count_training_steps():
  """An optimiser updated n times a step (train.critic_steps) sees the step's rate and restarts
  once, at the first update of the step where the step's restart falls."""
  base = schedules.learning_rate_schedule("linear", 1.0, num_steps=10, steps_per_epoch=5)
  per = schedules.per_update(base, 3)
  assert [float(per(c)) for c in range(6)] == pytest.approx([1.0] * 3 + [0.9] * 3)
  assert schedules.per_update(base, 1) is base
  restart = lambda step: step == 2
  per_restart = schedules.per_update_restart(restart, 3)
  assert [bool(per_restart(c)) for c in range(9)] == [False] * 6 + [True, False, False]
  assert schedules.per_update_restart(None, 3) is None
