import jax
import jax.numpy as jnp
import numpy as np

from segan_jax.activations import adaptive_logistic


def np_sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def test_k1_is_sigmoid():
  z = np.linspace(-8, 8, 33).astype(np.float32)
  np.testing.assert_allclose(adaptive_logistic(jnp.asarray(z), 1.0), np_sigmoid(z), rtol=1e-6)


def test_matches_formula_for_other_k():
  z = np.linspace(-5, 5, 21).astype(np.float64)
  for k in (0.3, 0.5, 2.0):
    expected = 1.0 / (1.0 + np.exp(-z / k))
    np.testing.assert_allclose(adaptive_logistic(jnp.asarray(z, jnp.float32), k), expected,
                               rtol=1e-5, atol=1e-7)


def test_sharper_as_k_falls():
  z = jnp.array([-1.0, -0.2, 0.2, 1.0])
  prev = adaptive_logistic(z, 1.0)
  for k in (0.9, 0.5, 0.3, 0.1):
    cur = adaptive_logistic(z, k)
    assert np.all(np.asarray(cur[z > 0]) > np.asarray(prev[z > 0]))
    assert np.all(np.asarray(cur[z < 0]) < np.asarray(prev[z < 0]))
    prev = cur
  np.testing.assert_allclose(adaptive_logistic(jnp.zeros(3), 0.3), 0.5)


def test_gradient_matches_analytic():
  z = np.array([-3.0, -0.5, 0.0, 0.7, 4.0], np.float32)
  for k in (1.0, 0.3):
    grad = jax.vmap(jax.grad(lambda x: adaptive_logistic(x, k)))(jnp.asarray(z))
    s = np_sigmoid(z / k)
    np.testing.assert_allclose(grad, s * (1 - s) / k, rtol=1e-5, atol=1e-7)


def test_stable_for_extreme_inputs_and_small_k():
  z = jnp.array([-1e4, -100.0, 100.0, 1e4])
  for k in (1e-3, 0.3, 1e3):
    y = adaptive_logistic(z, k)
    g = jax.grad(lambda x: adaptive_logistic(x, k).sum())(z)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(g))
    assert np.all((np.asarray(y) >= 0) & (np.asarray(y) <= 1))
