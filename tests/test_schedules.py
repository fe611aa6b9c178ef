import numpy as np
import pytest

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
