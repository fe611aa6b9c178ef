"""The authors' parameter initialisation (model.init=authors) against Flax's defaults."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from segan_jax import initializers
from segan_jax.models import Critic, Segmentor
from segan_jax.train_state import create_train_state

SHAPE = (1, 128, 128, 3)


def _params(module, seed=0):
  return jax.jit(lambda r: module.init(r, jnp.zeros(SHAPE), train=False))(
      jax.random.key(seed))["params"]


def _named(params, name):
  return [(jax.tree_util.keystr(path), leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(params)
          if getattr(path[-1], "key", None) == name]


@pytest.fixture(scope="module")
def flax_and_authors():
  out = []
  for module in (Segmentor(width=4), Critic(width=4)):
    params = _params(module)
    out.append((params, initializers.authors_init(params, jax.random.key(1))))
  return out


def test_authors_kernels_are_he_normal_over_the_fan_out(flax_and_authors):
  """Every kernel ~ N(0, 2 / (kh kw c_out)), as net.py's normal_(0, sqrt(2. / n)); checked on the
  kernels large enough for their sample deviation to say so (within 10%)."""
  checked = 0
  for _, params in flax_and_authors:
    for name, kernel in _named(params, "kernel"):
      kh, kw, _, c_out = kernel.shape
      if kernel.size < 2000:
        continue
      std = math.sqrt(2.0 / (kh * kw * c_out))
      assert abs(float(jnp.std(kernel)) / std - 1.0) < 0.1, name
      assert abs(float(jnp.mean(kernel))) < 0.1 * std, name
      checked += 1
  assert checked >= 20


def test_authors_batchnorm_scales_are_near_one_and_the_rest_is_kept(flax_and_authors):
  for flax_params, params in flax_and_authors:
    scales = np.concatenate([np.ravel(s) for _, s in _named(params, "scale")])
    assert abs(scales.mean() - 1.0) < 0.005 and 0.015 < scales.std() < 0.025
    assert jax.tree.structure(params) == jax.tree.structure(flax_params)
    for (path, new), old in zip(jax.tree_util.tree_leaves_with_path(params),
                                jax.tree.leaves(flax_params)):
      assert new.shape == old.shape and new.dtype == old.dtype
      if getattr(path[-1], "key", None) not in ("kernel", "scale"):  # biases, BN offsets: zero
        np.testing.assert_array_equal(new, old)
        assert not np.any(np.asarray(new))


def test_the_draw_follows_its_key():
  params = _params(Critic(width=2))
  a = initializers.authors_init(params, jax.random.key(3))
  b = initializers.authors_init(params, jax.random.key(3))
  c = initializers.authors_init(params, jax.random.key(4))
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert not np.allclose(_named(a, "kernel")[0][1], _named(c, "kernel")[0][1])


def test_lecun_keeps_flax_initialisation_and_unknown_names_are_refused():
  params = _params(Critic(width=2))
  assert initializers.initialize(params, "lecun", jax.random.key(0)) is params
  with pytest.raises(ValueError, match="he_normal.*lecun.*authors"):
    initializers.initialize(params, "he_normal", jax.random.key(0))


def test_create_train_state_draws_as_asked_and_lecun_is_unchanged():
  """init=lecun gives exactly module.init's parameters (so seeded runs keep their weights);
  init=authors the same tree with other kernels, the optimiser state built on them."""
  module, rng = Critic(width=2), jax.random.key(5)
  lecun = create_train_state(module, rng, SHAPE, optax.adam(1e-3))
  jax.tree.map(np.testing.assert_array_equal, lecun.params, _params(module, 5))
  authors = create_train_state(module, rng, SHAPE, optax.adam(1e-3), init="authors")
  assert jax.tree.structure(authors.params) == jax.tree.structure(lecun.params)
  assert not np.allclose(_named(authors.params, "kernel")[0][1],
                         _named(lecun.params, "kernel")[0][1])
  assert jax.tree.structure(authors.opt_state) == jax.tree.structure(lecun.opt_state)
