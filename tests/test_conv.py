"""segan_jax.conv.conv2d: 'cpu' equals lax.conv_general_dilated in value and in both gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from segan_jax import conv as conv_ops
from segan_jax.models import Critic, Segmentor

DN = ("NHWC", "HWIO", "NHWC")

# (batch, h, w, cin, cout, kh, kw, strides, padding): the SegAN layer kinds at small sizes,
# with outputs down to 1x1 and 2x2, odd sizes, rectangular kernels and mixed strides.
CASES = [
    (2, 16, 16, 3, 4, 7, 7, (2, 2), ((3, 3), (3, 3))),  # e1 / c1
    (2, 9, 9, 3, 4, 7, 7, (2, 2), ((3, 3), (3, 3))),  # odd size
    (2, 8, 8, 4, 5, 5, 5, (2, 2), ((2, 2), (2, 2))),  # e2-e5
    (2, 4, 4, 4, 5, 5, 5, (2, 2), ((2, 2), (2, 2))),  # e5 at 4x4 -> 2x2
    (2, 8, 8, 4, 5, 4, 4, (2, 2), ((1, 1), (1, 1))),  # critic 4x4 s2
    (2, 4, 4, 4, 5, 4, 4, (2, 2), ((1, 1), (1, 1))),  # e6: 4 -> 2
    (2, 2, 2, 4, 5, 3, 3, (2, 2), ((1, 1), (1, 1))),  # e7: 2 -> 1
    (2, 4, 4, 4, 5, 3, 3, (2, 2), ((1, 1), (1, 1))),  # c6: 4 -> 2
    (2, 8, 8, 4, 5, 3, 3, (1, 1), ((1, 1), (1, 1))),  # residual 3x3
    (2, 2, 2, 4, 5, 3, 3, (1, 1), ((1, 1), (1, 1))),  # d2 at 2x2
    (2, 1, 1, 4, 5, 3, 3, (1, 1), ((1, 1), (1, 1))),  # 1x1 map
    (2, 6, 6, 4, 5, 1, 1, (1, 1), ((0, 0), (0, 0))),  # 1x1
    (2, 1, 1, 4, 5, 1, 1, (1, 1), ((0, 0), (0, 0))),  # e8 / d1 at 1x1
    (2, 7, 6, 4, 5, 1, 1, (2, 2), ((0, 0), (0, 0))),  # strided 1x1
    (2, 6, 6, 4, 5, 1, 1, (1, 1), ((1, 0), (0, 1))),  # padded 1x1
    (2, 8, 8, 4, 5, 7, 1, (1, 1), ((3, 3), (0, 0))),  # global conv kx1 / 1xk
    (2, 8, 8, 4, 5, 1, 7, (1, 1), ((0, 0), (3, 3))),
    (2, 12, 12, 3, 4, 11, 1, (1, 1), ((5, 5), (0, 0))),
    (2, 12, 12, 3, 4, 1, 11, (1, 1), ((0, 0), (5, 5))),
    (2, 4, 4, 4, 5, 7, 1, (1, 1), ((3, 3), (0, 0))),  # kernel taller than the map
    (2, 12, 12, 3, 4, 11, 1, (2, 1), ((5, 5), (0, 0))),  # strided global conv (critic)
    (2, 6, 12, 3, 4, 1, 11, (1, 2), ((0, 0), (5, 5))),
    (2, 8, 8, 4, 5, 7, 1, (2, 1), ((3, 3), (0, 0))),
    (2, 2, 4, 4, 5, 1, 7, (1, 2), ((0, 0), (3, 3))),
    (2, 16, 16, 4, 1, 5, 5, (1, 1), ((2, 2), (2, 2))),  # out_conv: ndf -> 1
    (2, 7, 5, 3, 4, 3, 2, (2, 3), ((1, 0), (2, 1))),  # asymmetric everything
]
# Wide layers on small maps: the forward pass as one im2col product (_im2col_pays).
IM2COL_CASES = [
    (1, 8, 8, 512, 3, 3, 3, (1, 1), ((1, 1), (1, 1))),  # e4/d4 residual 3x3 at width 64
    (1, 8, 8, 512, 3, 5, 5, (2, 2), ((2, 2), (2, 2))),  # e5: 8 -> 4
    (1, 4, 8, 512, 3, 1, 5, (1, 1), ((0, 0), (2, 2))),  # d4's global convolution at width 64
    (1, 8, 4, 512, 3, 7, 1, (2, 1), ((3, 3), (0, 0))),  # a strided one
]
# Wide 3x3 layers on 16x16-32x32 maps: Winograd F(2x2, 3x3) (_winograd_pays), forward only and
# forward plus input gradient (whose flipped kernel is as wide).
WINOGRAD_CASES = [
    (1, 16, 16, 256, 3, 3, 3, (1, 1), ((1, 1), (1, 1))),
    (1, 16, 16, 256, 256, 3, 3, (1, 1), ((1, 1), (1, 1))),
]
# A wide k x 1 layer into wide outputs: its stride-1 input gradient is an im2col product too.
KX1_WIDE_OUT = (1, 4, 8, 512, 512, 1, 5, (1, 1), ((0, 0), (2, 2)))
# Winograd at batch 2 on maps that are not square (the tiles' row and column order).
WINOGRAD_BATCH_CASES = [
    (2, 16, 32, 256, 8, 3, 3, (1, 1), ((1, 1), (1, 1))),
    (2, 32, 16, 256, 256, 3, 3, (1, 1), ((1, 1), (1, 1))),  # its input gradient too
]
# Strided 2-D kernels onto outputs over 8x8 (col2im's limit): the input gradient in sub-pixel
# form, one stride-1 convolution with 4 * cin outputs (e1-e3 and c1-c3 at 128x128).
SUBPIXEL_CASES = [
    (2, 32, 32, 3, 4, 7, 7, (2, 2), ((3, 3), (3, 3))),  # e1 / c1
    (2, 33, 29, 3, 4, 7, 7, (2, 2), ((3, 3), (3, 3))),  # odd sides
    (2, 24, 20, 4, 5, 5, 5, (2, 2), ((2, 2), (2, 2))),  # e2, e3 / c2
    (2, 20, 20, 4, 5, 4, 4, (2, 2), ((1, 1), (1, 1))),  # c3
    (2, 18, 18, 4, 5, 3, 3, (2, 2), ((1, 1), (1, 1))),  # 9x9 outputs
]
# Strided k x 1 / 1 x k kernels with wide outputs on small maps (the critic's global convolutions
# at width 64): the sub-pixel input gradient's stride-1 convolution is a k x 1 im2col product.
SUBPIXEL_KX1_IM2COL_CASES = [
    (1, 8, 4, 3, 512, 7, 1, (2, 1), ((3, 3), (0, 0))),
    (1, 4, 8, 3, 512, 1, 7, (1, 2), ((0, 0), (3, 3))),
]
CASES += (IM2COL_CASES + [KX1_WIDE_OUT] + WINOGRAD_CASES + WINOGRAD_BATCH_CASES + SUBPIXEL_CASES
          + SUBPIXEL_KX1_IM2COL_CASES)


def _reference(x, kernel, strides, padding):
  return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=DN)


def _inputs(case, dtype=jnp.float32):
  b, h, w, cin, cout, kh, kw, strides, padding = case
  rng = np.random.default_rng(sum(case[:7]))  # numpy: no per-shape compiles for random numbers
  x = rng.standard_normal((b, h, w, cin), np.float32)
  kernel = rng.standard_normal((kh, kw, cin, cout), np.float32)
  ho = (h + sum(padding[0]) - kh) // strides[0] + 1
  wo = (w + sum(padding[1]) - kw) // strides[1] + 1
  cotangent = rng.standard_normal((b, ho, wo, cout), np.float32)
  return (jnp.asarray(x, dtype), jnp.asarray(kernel, dtype), jnp.asarray(cotangent, dtype),
          strides, padding)


def _cpu(x, kernel, strides, padding):
  return conv_ops.conv2d(x, kernel, strides=strides, padding=padding, impl="cpu")


def _value_and_grads(conv_fn, x, kernel, cotangent, strides, padding):
  """One jitted call: the output and the VJP of `cotangent` w.r.t. x and the kernel."""
  def run(x, kernel, cotangent):
    y, vjp = jax.vjp(lambda a, k: conv_fn(a, k, strides, padding), x, kernel)
    return (y, *vjp(cotangent))
  return jax.jit(run)(x, kernel, cotangent)


def _close(actual, expected, scale):
  np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=1e-5,
                             atol=1e-5 * scale)


def _case_id(case):
  b, h, w, cin, cout, kh, kw, (sh, sw), _ = case
  return f"{h}x{w}_{cin}to{cout}_k{kh}x{kw}_s{sh}{sw}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_cpu_matches_xla_value_and_gradients(monkeypatch, case):
  # The per-tap kernel gradient for every shape (the shape rule would give most of these small
  # layers XLA's own kernel gradient, which other tests cover).
  monkeypatch.setattr(conv_ops, "_use_tap_kernel_grad", lambda *_: True)
  x, kernel, cotangent, strides, padding = _inputs(case)
  y, dx, dk = _value_and_grads(_cpu, x, kernel, cotangent, strides, padding)
  y_ref, dx_ref, dk_ref = _value_and_grads(_reference, x, kernel, cotangent, strides, padding)
  assert y.shape == y_ref.shape and dx.shape == x.shape and dk.shape == kernel.shape
  scale = np.sqrt(case[5] * case[6] * case[3])  # typical magnitude of one output
  _close(y, y_ref, scale)
  _close(dx, dx_ref, scale)
  # Each kernel-gradient entry sums batch x output pixels products.
  _close(dk, dk_ref, np.sqrt(cotangent.size / cotangent.shape[-1]) * 2)


@pytest.mark.parametrize("case", [CASES[0], CASES[6], CASES[11], CASES[20]],
                         ids=["7x7s2", "3x3s2_1x1out", "1x1", "11x1s21"])
def test_bfloat16_dtypes_and_values(case):
  x, kernel, cotangent, strides, padding = _inputs(case, jnp.bfloat16)
  y, dx, dk = _value_and_grads(_cpu, x, kernel, cotangent, strides, padding)
  assert y.dtype == dx.dtype == dk.dtype == jnp.bfloat16
  f32 = lambda a: a.astype(jnp.float32)
  y_ref, dx_ref, dk_ref = _value_and_grads(_reference, f32(x), f32(kernel), f32(cotangent),
                                           strides, padding)
  for actual, expected in ((y, y_ref), (dx, dx_ref), (dk, dk_ref)):
    actual, expected = np.asarray(actual, np.float32), np.asarray(expected)
    tol = 0.02 * np.abs(expected).max() + 1e-6
    np.testing.assert_allclose(actual, expected, rtol=0.02, atol=tol)


@pytest.mark.parametrize("case", SUBPIXEL_CASES[:3] + SUBPIXEL_KX1_IM2COL_CASES[:1],
                         ids=["7x7s2", "7x7s2_odd", "5x5s2", "7x1s21_im2col"])
def test_bfloat16_subpixel_input_gradient(case):
  """The sub-pixel input gradient (and the forward pass and kernel gradient) in bfloat16: the
  float32 values of the same bfloat16 inputs, to within bfloat16 rounding (8 significant bits:
  2 units in the last place of each value, 2^-8 of the largest for values near zero)."""
  x, kernel, cotangent, strides, padding = _inputs(case, jnp.bfloat16)
  y, dx, dk = _value_and_grads(_cpu, x, kernel, cotangent, strides, padding)
  assert y.dtype == dx.dtype == dk.dtype == jnp.bfloat16
  f32 = lambda a: a.astype(jnp.float32)
  want = _value_and_grads(_reference, f32(x), f32(kernel), f32(cotangent), strides, padding)
  for got, expected in zip((y, dx, dk), want):
    expected = np.asarray(expected)
    np.testing.assert_allclose(np.asarray(got, np.float32), expected, rtol=2 ** -6,
                               atol=2 ** -8 * np.abs(expected).max())


@pytest.mark.parametrize("rows, case", [
    (2 * 2 * 8, (2, 8, 8, 3, 4, 7, 1, (1, 1), ((3, 3), (0, 0)))),  # 4 bands of 2 output rows
    (2 * 1 * 8, (2, 8, 8, 3, 4, 7, 1, (2, 1), ((3, 3), (0, 0)))),  # bands with a row stride
    (2 * 2 * 4, (2, 8, 8, 3, 4, 3, 3, (2, 2), ((1, 1), (1, 1)))),
    (2 * 3 * 5, (2, 7, 5, 3, 4, 3, 3, (1, 1), ((1, 1), (1, 1)))),  # 7 rows: bands of 1
], ids=["7x1", "7x1s21", "3x3s2", "3x3_7rows"])
def test_kernel_gradient_row_bands(monkeypatch, rows, case):
  """The per-tap kernel gradient, looped over bands of output rows, equals XLA's."""
  monkeypatch.setattr(conv_ops, "_KERNEL_GRAD_CHUNK_ROWS", rows)
  monkeypatch.setattr(conv_ops, "_use_tap_kernel_grad", lambda *_: True)
  x, kernel, cotangent, strides, padding = _inputs(case)
  dk = _value_and_grads(_cpu, x, kernel, cotangent, strides, padding)[2]
  dk_ref = _value_and_grads(_reference, x, kernel, cotangent, strides, padding)[2]
  _close(dk, dk_ref, 20.0)


def test_impls_and_padding_forms():
  x, kernel, _, strides, padding = _inputs(CASES[8])
  expected = _reference(x, kernel, strides, padding)
  for impl in ("auto", "xla", "cpu"):
    got = jax.jit(lambda a, k, impl=impl: conv_ops.conv2d(a, k, strides=strides, padding=padding,
                                                          impl=impl))(x, kernel)
    _close(got, expected, 10.0)
  same = conv_ops.conv2d(x, kernel, padding="SAME", impl="cpu")
  _close(same, expected, 10.0)
  with pytest.raises(ValueError):
    conv_ops.conv2d(x, kernel, impl="fast")


def test_auto_picks_cpu_path_on_cpu(monkeypatch):
  assert jax.default_backend() == "cpu"
  calls = []
  monkeypatch.setattr(conv_ops, "_cpu_conv", lambda *a: calls.append("cpu") or _reference(*a))
  x, kernel, _, strides, padding = _inputs(CASES[8])
  conv_ops.conv2d(x, kernel, strides=strides, padding=padding)
  assert calls == ["cpu"]
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  conv_ops.conv2d(x, kernel, strides=strides, padding=padding)
  assert calls == ["cpu"]  # 'auto' -> 'xla' off the CPU


@pytest.mark.parametrize("case, per_tap", [
    ((2, 8, 8, 16, 32, 7, 1, (1, 1), ((3, 3), (0, 0))), True),
    ((2, 6, 6, 16, 16, 3, 3, (1, 1), ((1, 1), (1, 1))), False),  # XLA's kernel gradient
], ids=["rule_per_tap", "rule_xla"])
def test_default_rule(case, per_tap):
  x, kernel, cotangent, strides, padding = _inputs(case)
  assert conv_ops._use_tap_kernel_grad(kernel.shape, cotangent.shape) == per_tap
  got = _value_and_grads(_cpu, x, kernel, cotangent, strides, padding)
  want = _value_and_grads(_reference, x, kernel, cotangent, strides, padding)
  for g, w in zip(got, want):
    _close(g, w, float(np.abs(np.asarray(w)).max()) * 10)


@pytest.mark.parametrize("kernel, out_hw, cin, im2col, col2im", [
    ((3, 3), (2, 2), 4, True, True),  # the bottleneck: any width
    ((7, 1), (2, 2), 4, True, True),
    ((7, 1), (4, 4), 1024, True, False),  # k x 1 kernels: im2col (no col2im), wide, up to 8x8
    ((1, 7), (8, 8), 512, True, False),
    ((7, 1), (8, 8), 256, False, False),
    ((1, 7), (16, 8), 1024, False, False),
    ((3, 3), (8, 8), 1024, True, True),
    ((3, 3), (8, 8), 256, False, True),  # narrow: YNNPACK keeps up forward
    ((5, 5), (8, 8), 512, False, True),  # 1600 pixel-taps
    ((5, 5), (4, 4), 512, True, True),
    ((3, 3), (16, 16), 1024, False, False),
])
def test_im2col_rule(kernel, out_hw, cin, im2col, col2im):
  shape = (*kernel, cin, 8)
  assert conv_ops._im2col_pays(shape, *out_hw, transposed=False) == im2col
  assert conv_ops._im2col_pays(shape, *out_hw, transposed=True) == col2im


@pytest.mark.parametrize("case", IM2COL_CASES, ids=["3x3", "5x5_s2", "1x5", "7x1_s2"])
def test_wide_small_map_forward_is_one_matrix_product(case):
  x, kernel, _, strides, padding = _inputs(case)
  jaxpr = str(jax.make_jaxpr(lambda a, k: _cpu(a, k, strides, padding))(x, kernel))
  assert "conv_general_dilated" not in jaxpr and jaxpr.count("dot_general") == 1


def test_wide_kx1_input_gradient_is_one_matrix_product():
  x, kernel, cotangent, strides, padding = _inputs(KX1_WIDE_OUT)
  jaxpr = str(jax.make_jaxpr(lambda g, k: conv_ops._input_grad(g, k, x.shape, strides, padding))(
      cotangent, kernel))
  assert "conv_general_dilated" not in jaxpr and jaxpr.count("dot_general") == 1


@pytest.mark.parametrize("shape, dtype, padding, winograd", [
    ((1, 16, 16, 256), jnp.float32, ((1, 1), (1, 1)), True),
    ((1, 32, 32, 512), jnp.float32, ((1, 1), (1, 1)), True),
    ((1, 64, 64, 256), jnp.float32, ((1, 1), (1, 1)), False),  # measured slower
    ((1, 8, 8, 1024), jnp.float32, ((1, 1), (1, 1)), False),  # im2col's
    ((1, 16, 16, 128), jnp.float32, ((1, 1), (1, 1)), False),  # narrow
    ((1, 16, 16, 256), jnp.bfloat16, ((1, 1), (1, 1)), False),
    ((1, 16, 16, 256), jnp.float32, ((0, 0), (1, 1)), False),
    ((1, 15, 16, 256), jnp.float32, ((1, 1), (1, 1)), False),  # odd side
])
def test_winograd_rule(shape, dtype, padding, winograd):
  x = jax.ShapeDtypeStruct(shape, dtype)
  kernel = jax.ShapeDtypeStruct((3, 3, shape[-1], 8), dtype)
  assert conv_ops._winograd_pays(x, kernel, (1, 1), padding) == winograd
  assert not conv_ops._winograd_pays(x, jax.ShapeDtypeStruct((3, 3, shape[-1], 8), dtype), (2, 2),
                                     padding)


@pytest.mark.parametrize("case", WINOGRAD_BATCH_CASES, ids=["16x32_forward", "32x16_input_grad"])
def test_winograd_at_batch_2_on_non_square_maps(case):
  """Forward (and, 256 outputs wide, the input gradient) as Winograd, no convolution left."""
  x, kernel, cotangent, strides, padding = _inputs(case)
  assert conv_ops._winograd_pays(x, kernel, strides, padding)
  jaxpr = str(jax.make_jaxpr(lambda a, k: _cpu(a, k, strides, padding))(x, kernel))
  assert "conv_general_dilated" not in jaxpr
  if case[4] >= conv_ops._WINOGRAD_MIN_CHANNELS:
    jaxpr = str(jax.make_jaxpr(lambda g, k: conv_ops._input_grad(g, k, x.shape, strides, padding))(
        cotangent, kernel))
    assert "conv_general_dilated" not in jaxpr
  y, dx, _ = _value_and_grads(_cpu, x, kernel, cotangent, strides, padding)
  y_ref, dx_ref, _ = _value_and_grads(_reference, x, kernel, cotangent, strides, padding)
  _close(y, y_ref, np.sqrt(9 * case[3]))
  _close(dx, dx_ref, np.sqrt(9 * case[4]))


@pytest.mark.parametrize("case", SUBPIXEL_CASES, ids=_case_id)
def test_strided_input_gradient_is_one_subpixel_convolution(monkeypatch, case):
  """The input gradient of a strided 2-D kernel onto outputs over 8x8: one stride-1 convolution
  of the output gradient with 4 * cin output channels (the 2 x 2 phases), no lhs dilation."""
  x, kernel, cotangent, strides, padding = _inputs(case)
  ho, wo = cotangent.shape[1:3]
  assert not conv_ops._im2col_pays(kernel.shape, ho, wo, transposed=True)
  calls = []
  forward = conv_ops._forward
  monkeypatch.setattr(conv_ops, "_forward", lambda *a: calls.append(a) or forward(*a))
  jaxpr = jax.make_jaxpr(lambda g, k: conv_ops._input_grad(g, k, x.shape, strides, padding))(
      cotangent, kernel)
  ((g, phase_kernel, phase_strides, _),) = calls
  assert g.shape == cotangent.shape and phase_strides == (1, 1)
  assert phase_kernel.shape[2:] == (case[4], 4 * case[3])
  assert str(jaxpr).count("conv_general_dilated") == 1 and "lhs_dilation=(1, 1)" in str(jaxpr)
  dx = jax.jit(lambda g, k: conv_ops._input_grad(g, k, x.shape, strides, padding))(cotangent,
                                                                                   kernel)
  _, vjp = jax.vjp(lambda a: _reference(a, kernel, strides, padding), x)
  _close(dx, vjp(cotangent)[0], np.sqrt(case[5] * case[6] * case[4]))


@pytest.mark.parametrize("case", SUBPIXEL_KX1_IM2COL_CASES, ids=["7x1_s21", "1x7_s12"])
def test_strided_kx1_input_gradient_is_one_matrix_product(case):
  """Sub-pixel form whose stride-1 convolution (512 input channels, 28 pixels) is an im2col
  matrix product: no convolution at all."""
  x, kernel, cotangent, strides, padding = _inputs(case)
  jaxpr = str(jax.make_jaxpr(lambda g, k: conv_ops._input_grad(g, k, x.shape, strides, padding))(
      cotangent, kernel))
  assert "conv_general_dilated" not in jaxpr and jaxpr.count("dot_general") == 1
  dx = jax.jit(lambda g, k: conv_ops._input_grad(g, k, x.shape, strides, padding))(cotangent,
                                                                                   kernel)
  _, vjp = jax.vjp(lambda a: _reference(a, kernel, strides, padding), x)
  _close(dx, vjp(cotangent)[0], np.sqrt(7 * case[4]))


def test_winograd_forward_has_no_convolution():
  x, kernel, _, strides, padding = _inputs(WINOGRAD_CASES[0])
  jaxpr = str(jax.make_jaxpr(lambda a, k: _cpu(a, k, strides, padding))(x, kernel))
  assert "conv_general_dilated" not in jaxpr
  _close(jax.jit(_cpu, static_argnums=(2, 3))(x, kernel, strides, padding),
         _reference(x, kernel, strides, padding), np.sqrt(9 * 256))


def test_gradients_under_jit_of_a_stack():
  """Two stacked convolutions under one jit: cotangents flow through both custom VJPs."""
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.standard_normal((2, 8, 8, 3), np.float32))
  k1 = jnp.asarray(rng.standard_normal((4, 4, 3, 6), np.float32))
  k2 = jnp.asarray(rng.standard_normal((1, 7, 6, 2), np.float32))

  def net(conv_fn, x, k1, k2):
    y = jnp.tanh(conv_fn(x, k1, (2, 2), ((1, 1), (1, 1))))
    return jnp.sum(conv_fn(y, k2, (1, 1), ((0, 0), (3, 3))) ** 2)

  got = jax.jit(jax.grad(lambda *a: net(_cpu, *a), argnums=(0, 1, 2)))(x, k1, k2)
  want = jax.jit(jax.grad(lambda *a: net(_reference, *a), argnums=(0, 1, 2)))(x, k1, k2)
  for g, w in zip(got, want):
    _close(g, w, float(np.abs(np.asarray(w)).max()) * 10)


@pytest.mark.parametrize("per_tap", [True, False], ids=["tap_kernel_grad", "xla_kernel_grad"])
@pytest.mark.parametrize("case", [(3, 9, 9, 4, 6, 3, 3, (1, 1), ((1, 1), (1, 1))),
                                  (5, 10, 10, 3, 4, 5, 5, (2, 2), ((2, 1), (2, 1)))],
                         ids=["3x3_batch3", "5x5s2_batch5"])
def test_batch_pieces_give_the_same_values_and_gradients(monkeypatch, case, per_tap):
  """Every convolution split into batch pieces (on one CPU device) changes no value."""
  monkeypatch.setattr(conv_ops, "_PIECES_MIN_MACS", 0)
  monkeypatch.setattr(conv_ops, "_runtime_threads_each_convolution", lambda: False)
  monkeypatch.setattr(conv_ops, "_use_tap_kernel_grad", lambda *_: per_tap)
  x, kernel, cotangent, strides, padding = _inputs(case)
  if conv_ops.cpu_pieces(x.shape[0], conv_ops._CONV_PIECES) > 1:
    jaxpr = jax.make_jaxpr(lambda a, k: _cpu(a, k, strides, padding))(x, kernel)
    assert str(jaxpr).count("conv_general_dilated") == conv_ops._CONV_PIECES
  y, dx, dk = _value_and_grads(_cpu, x, kernel, cotangent, strides, padding)
  y_ref, dx_ref, dk_ref = _value_and_grads(_reference, x, kernel, cotangent, strides, padding)
  scale = np.sqrt(case[5] * case[6] * case[3])
  _close(y, y_ref, scale)
  _close(dx, dx_ref, scale)
  _close(dk, dk_ref, np.sqrt(cotangent.size / cotangent.shape[-1]) * 2)


@pytest.mark.parametrize("threaded", [False, True], ids=["jaxlib<0.11", "jaxlib>=0.11"])
def test_cpu_pieces_policy(monkeypatch, threaded):
  monkeypatch.setattr(conv_ops, "_runtime_threads_each_convolution", lambda: threaded)
  single_cpu = jax.default_backend() == "cpu" and jax.device_count() == 1
  assert conv_ops.cpu_pieces(25, 2) == (2 if single_cpu and not threaded else 1)
  assert conv_ops.cpu_pieces(1, 2) == 1


def test_runtime_threading_follows_the_jaxlib_version(monkeypatch):
  for version, threaded in (("0.10.2", False), ("0.11.0", True), ("0.11.2.dev20261101", True),
                            ("0.11rc1", True), ("0.9.2", False), ("1.0.0", True)):
    monkeypatch.setattr(conv_ops.jaxlib.version, "__version__", version)
    assert conv_ops._runtime_threads_each_convolution() is threaded, version


def _random_variables(module, x, rng):
  """Random parameters and BatchNorm statistics of the module's shapes (init itself would run
  the model eagerly, or compile it, at several times the cost of the rest of the test)."""
  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      return rng.standard_normal(leaf.shape, np.float32) / np.sqrt(np.prod(leaf.shape[:-1]))
    if name == "var":
      return (0.5 + rng.random(leaf.shape)).astype(np.float32)
    return ((name == "scale") + 0.2 * rng.standard_normal(leaf.shape)).astype(np.float32)
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), x, train=False))
  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.mark.parametrize("model, train", [(Segmentor, False), (Critic, True)],
                         ids=["segmentor_eval", "critic_train"])
def test_whole_model_cpu_equals_xla_values_and_gradients(model, train):
  """S and C (width 2, 128x128, batch 2) with every convolution on impl='cpu': XLA's outputs, and
  its gradients w.r.t. every parameter and the input, to float32 rounding.

  S runs with running BatchNorm statistics: in training mode, BatchNorm over the 1x1 bottleneck
  at batch 2 (two values per channel, Flax's one-pass variance) turns float32 rounding into
  gradient differences of 1-10% between any two float32 programs, XLA's against a float64 run
  included. C trains as in every critic step.
  """
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 128, 128, 3), np.float32))
  variables = _random_variables(model(width=2), x, rng)

  def values_and_grads(impl):
    module = model(width=2, conv_impl=impl)

    def forward(params, x):
      if train:
        return module.apply({**variables, "params": params}, x, train=True,
                            mutable=["batch_stats"])[0]
      return module.apply({**variables, "params": params}, x, train=False)

    def run(params, x, cotangents):
      out, vjp = jax.vjp(forward, params, x)
      return out, vjp(cotangents)

    shapes = jax.eval_shape(forward, variables["params"], x)
    cotangents = jax.tree.map(
        lambda s: jnp.asarray(np.random.default_rng(1).standard_normal(s.shape, np.float32)),
        shapes)
    # XLA's backend optimisations are not what is under test, and take most of the compile time.
    compiled = jax.jit(run).lower(variables["params"], x, cotangents).compile(
        compiler_options={"xla_backend_optimization_level": 0})
    return compiled(variables["params"], x, cotangents)

  got, want = values_and_grads("cpu"), values_and_grads("xla")
  pairs = list(zip(jax.tree.leaves(got), jax.tree.leaves(want)))
  assert len(pairs) == len(jax.tree.leaves(want)) > 10
  for g, w in pairs:
    w = np.asarray(w)
    np.testing.assert_allclose(np.asarray(g), w, rtol=1e-5, atol=2e-5 * np.abs(w).max())
