"""segan_jax.flop_count against hand counts and XLA's CPU cost analysis."""

import jax
import jax.numpy as jnp
import pytest
from jax import lax

from segan_jax import flop_count


def _conv(x, w, stride=1, padding="SAME"):
  return lax.conv_general_dilated(x, w, (stride, stride), padding,
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _xla_flops(fn, *args):
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return cost["flops"]


def test_dot_and_valid_conv_by_hand():
  a, b = jnp.ones((3, 5)), jnp.ones((5, 7))
  assert flop_count.count(jnp.dot, a, b) == 2 * 3 * 7 * 5
  x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
  # VALID: 6x6 outputs, each 3*3*3 products
  assert flop_count.count(lambda x, w: _conv(x, w, padding="VALID"), x, w) == 2 * 2 * 36 * 4 * 27


def test_padding_taps_are_not_counted():
  x, w = jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1))
  # SAME 3x3 on 4x4: per axis, 4 outputs x 3 taps minus the 2 that fall on padding = 10.
  assert flop_count.count(_conv, x, w) == 2 * 10 * 10


@pytest.mark.parametrize("kernel,stride", [(3, 1), (4, 2), (7, 2), (1, 1)])
def test_forward_and_backward_match_xla_cpu(kernel, stride):
  x = jnp.ones((2, 16, 16, 16))
  w = jnp.ones((kernel, kernel, 16, 32))

  def loss(x, w):
    return jnp.sum(_conv(x, w, stride) ** 2)

  fn = jax.grad(loss, argnums=(0, 1))
  ours = flop_count.count(fn, x, w)
  # XLA also counts the elementwise square and sum: ours is the larger share, never more.
  assert ours <= _xla_flops(fn, x, w)
  assert ours == pytest.approx(_xla_flops(fn, x, w), rel=0.05)


def test_scan_bodies_count_once_per_iteration():
  w = jnp.ones((6, 6))

  def body(c, _):
    return c @ w, None

  fn = lambda c: lax.scan(body, c, None, length=5)[0]
  assert flop_count.count(fn, jnp.ones((2, 6))) == 5 * 2 * 2 * 6 * 6


def test_shapes_need_no_arrays():
  spec = jax.ShapeDtypeStruct((4, 32, 32, 3), jnp.float32)
  wspec = jax.ShapeDtypeStruct((3, 3, 3, 16), jnp.float32)
  assert flop_count.count(_conv, spec, wspec) == flop_count.count(
      _conv, jnp.ones(spec.shape), jnp.ones(wspec.shape))


def test_cond_counts_its_costliest_branch_once():
  w = jnp.ones((6, 6))
  fn = lambda p, x: lax.cond(p, lambda x: x @ w @ w, lambda x: x @ w, x)
  assert flop_count.count(fn, True, jnp.ones((2, 6))) == 2 * (2 * 2 * 6 * 6)
