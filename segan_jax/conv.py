"""2-D convolution with a backward pass that is fast on XLA's CPU backend.

Why: on the CPU backend (where XLA hands convolutions to YNNPACK) the forward convolution is fast,
but the gradients JAX derives from it often are not:

* the input gradient of a strided convolution is an lhs-dilated convolution, which YNNPACK does not
  take; XLA's fallback runs up to 10-30x slower than the forward pass;
* the kernel gradient is a convolution whose window is the whole output map; it runs 2-8x slower
  than the forward pass, worst for 1x1 kernels, tall (k x 1) kernels and 128x128 maps;
* on the tiny maps of the bottleneck (2x2 -> 1x1, a 3x3 kernel overhanging a 2x2 map) even the
  forward pass is 10-100x slower than the matrix product it amounts to.

`conv2d(..., impl='cpu')` computes the same values, in the same dtypes, through a `jax.custom_vjp`
built only from stride-1 forward convolutions and matrix products (float32 accumulation):

* forward: `lax.conv_general_dilated`, except a 1x1 kernel (one matrix product), small outputs
  (at most 4 pixels, or up to 8x8 for wide 2-D and k x 1 kernels: one im2col matrix product) and
  wide 3x3 layers on 16x16-32x32 maps (Winograd F(2x2, 3x3): 16 multiplications per 2x2 output
  tile and channel pair instead of 36, as 16 matrix products);
* input gradient: a 1x1 kernel is one matrix product; small outputs (at most 4 pixels, 8x8 for 2-D
  kernels) are one transposed-im2col product whose per-tap slices are added back in place
  (col2im); otherwise stride 1 is the forward convolution of the output gradient with the
  flipped, transposed kernel (Winograd or im2col where the forward rules say so), and stride
  s > 1 is split into its s*s output phases ("sub-pixel" form), all computed by ONE stride-1
  convolution with s*s*cin output channels and interleaved by a reshape;
* kernel gradient: one (cin, rows) @ (rows, cout) product per kernel tap (the tap's shifted,
  strided input slice against the output gradient), looped over bands of output rows (the whole
  batch, about 4k rows a band) so that the slices stay in cache. Used where it measured faster
  than XLA: 1x1 kernels, 1x1 outputs and, with at least 16 channels in and out, 128x128 maps and
  most k x 1 kernels (see _use_tap_kernel_grad). Elsewhere (square and 1 x k kernels on smaller
  maps, narrow layers) XLA's own kernel gradient was as fast or faster and is kept.

On the single-device CPU backend before jaxlib 0.11, large forward convolutions (and the stride-1
ones of the input gradients, and XLA's kernel gradients) run on independent batch pieces that
XLA's runtime computes concurrently (cpu_pieces): there one convolution ran on one thread.

Measurements (SegAN's layer shapes, 'xla' against 'cpu'): experiments/conv_benchmark.py.
"""

import re
from collections.abc import Callable, Sequence
from functools import partial
from typing import Literal

import jax
import jax.numpy as jnp
import jaxlib.version
from jax import lax

Impl = Literal["auto", "xla", "cpu"]
Padding = tuple[tuple[int, int], tuple[int, int]]
Strides = tuple[int, int]

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
# Rows (batch x output pixels) per chunk (a band of output rows) of the per-tap kernel gradient.
_KERNEL_GRAD_CHUNK_ROWS = 4096
# Output maps at least this large (per image) use the per-tap kernel gradient for every kernel.
_KERNEL_GRAD_LARGE_MAP = 128 * 128
# k x 1 kernels with fewer than 32 output channels use it above this many rows (batch x pixels).
_KERNEL_GRAD_NARROW_ROWS = 16 * 64 * 64
# Output maps of at most this many pixels use an im2col matrix product in the forward pass and its
# transpose (col2im) in the input gradient; with kernels of more than one tap both ways, maps of up
# to _IM2COL_MAX_PIXEL_TAPS pixels x taps with at least _IM2COL_MIN_CHANNELS input channels
# (forward) and of up to _COL2IM_MAX_PIXELS pixels (input gradient); k x 1 and 1 x k kernels with
# at least _IM2COL_MIN_CHANNELS input channels on up to _IM2COL_KX1_MAX_PIXELS output pixels
# (forward convolutions, the stride-1 input gradient's included; no col2im). See _im2col_pays.
_IM2COL_MAX_PIXELS = 4
_IM2COL_MAX_PIXEL_TAPS = 8 * 8 * 3 * 3
_IM2COL_MIN_CHANNELS = 512
_IM2COL_KX1_MAX_PIXELS = 8 * 8
_COL2IM_MAX_PIXELS = 8 * 8
# 3x3 stride-1 convolutions (padding 1) with at least this many input channels, on maps of
# _WINOGRAD_PIXELS pixels, run as Winograd F(2x2, 3x3) (see _winograd_pays).
_WINOGRAD_MIN_CHANNELS = 256
_WINOGRAD_PIXELS = (16 * 16, 32 * 32)
# Batch pieces of one large convolution on the single-device CPU backend (see cpu_pieces): 2 and
# 4 measured alike on 2 cores (a width-16 training iteration 11% faster than 1 piece), and 4
# compiled 60% slower than 1, 2 20% slower. Convolutions under _PIECES_MIN_MACS stay whole.
_CONV_PIECES = 2
_PIECES_MIN_MACS = 1 << 24


def cpu_pieces(batch: int, limit: int) -> int:
  """Independent batch pieces (at most `limit`) that work is split into on XLA's CPU backend.

  Before jaxlib 0.11, XLA's CPU runtime ran each YNNPACK convolution on one thread but ran
  independent operations concurrently, so a batch computed as independent pieces kept more cores
  busy. 1 from jaxlib 0.11 (see _runtime_threads_each_convolution), on other backends, and with
  several devices (where the batch is sharded and slicing it would move data between devices).
  """
  if (jax.default_backend() != "cpu" or jax.device_count() > 1
      or _runtime_threads_each_convolution()):
    return 1
  return max(1, min(batch, limit))


def _runtime_threads_each_convolution() -> bool:
  """Whether XLA's CPU runtime spreads one convolution over its threads: from jaxlib 0.11 on.

  A 3x3 32->32 convolution at 128x128, batch 25, took 75 ms on 1 core and 77 ms on 2 under
  jaxlib 0.10.2, 55 ms and 31 ms under 0.11.2; there, batch pieces only add copies (a width-16
  training iteration 2% slower with 2 convolution pieces, inference 7% slower).
  """
  major, minor = re.match(r"(\d+)\.(\d+)", jaxlib.version.__version__).groups()
  return (int(major), int(minor)) >= (0, 11)


def in_batch_pieces(fn: Callable[[jax.Array], jax.Array], x: jax.Array,
                    pieces: int) -> jax.Array:
  """fn applied to `pieces` contiguous slices of x's batch, concatenated (fn(x) for 1 piece)."""
  if pieces <= 1:
    return fn(x)
  b = x.shape[0]
  bounds = [(b * i) // pieces for i in range(pieces + 1)]
  return jnp.concatenate([fn(x[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])])


def _conv_in_pieces(x: jax.Array, kernel: jax.Array, strides: Strides, pads: Padding) -> jax.Array:
  """_xla_conv, a large convolution computed on batch pieces (cpu_pieces) and concatenated."""
  b, (kh, kw, cin, cout) = x.shape[0], kernel.shape
  ho = _out_size(x.shape[1], kh, strides[0], pads[0])
  wo = _out_size(x.shape[2], kw, strides[1], pads[1])
  macs = b * ho * wo * kh * kw * cin * cout
  n = cpu_pieces(b, _CONV_PIECES) if macs >= _PIECES_MIN_MACS else 1
  return in_batch_pieces(lambda xs: _xla_conv(xs, kernel, strides, pads), x, n)


def conv2d(x: jax.Array, kernel: jax.Array, *, strides: Sequence[int] = (1, 1),
           padding: str | Sequence[Sequence[int]] = ((0, 0), (0, 0)),
           impl: Impl = "auto") -> jax.Array:
  """A 2-D convolution (cross-correlation, no dilation, no groups) of NHWC `x` with HWIO `kernel`.

  Args:
    x: input, shape (batch, height, width, cin).
    kernel: kernel, shape (kh, kw, cin, cout), same dtype as `x`.
    strides: (row stride, column stride).
    padding: ((top, bottom), (left, right)) zero padding, or 'SAME' / 'VALID'.
    impl: 'xla': `lax.conv_general_dilated` and JAX's own gradients. 'cpu': same values, with the
      gradients (and a few forward cases) computed in the forms that are fast on XLA's CPU backend
      (see the module docstring). 'auto': 'cpu' when the default backend is the CPU, else 'xla'.

  Returns:
    The output, shape (batch, out_height, out_width, cout), dtype of `x`.
  """
  if x.ndim != 4 or kernel.ndim != 4:
    raise ValueError(f"conv2d expects NHWC x and HWIO kernel, got {x.shape} and {kernel.shape}.")
  if x.shape[-1] != kernel.shape[2]:
    raise ValueError(f"Input channels {x.shape[-1]} do not match the kernel's {kernel.shape[2]}.")
  strides = (int(strides[0]), int(strides[1]))
  if min(strides) < 1:
    raise ValueError(f"Strides must be positive, got {strides}.")
  if isinstance(padding, str):
    pads = lax.padtype_to_pads(x.shape[1:3], kernel.shape[:2], strides, padding)
  else:
    pads = padding
  pads = ((int(pads[0][0]), int(pads[0][1])), (int(pads[1][0]), int(pads[1][1])))
  if min(min(p) for p in pads) < 0:
    raise ValueError(f"Padding must be non-negative, got {pads}.")
  for n, k, p in zip(x.shape[1:3], kernel.shape[:2], pads):
    if n + p[0] + p[1] < k:
      raise ValueError(f"Kernel {kernel.shape[:2]} is larger than the padded input "
                       f"{x.shape[1:3]} with padding {pads}.")

  if impl == "auto":
    impl = "cpu" if jax.default_backend() == "cpu" else "xla"
  if impl == "xla":
    return _xla_conv(x, kernel, strides, pads)
  if impl == "cpu":
    return _cpu_conv(x, kernel, strides, pads)
  raise ValueError(f"Unknown conv impl {impl!r}: expected 'auto', 'xla' or 'cpu'.")


def _xla_conv(x: jax.Array, kernel: jax.Array, strides: Strides, pads: Padding) -> jax.Array:
  return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=_DIMENSION_NUMBERS)


def _out_size(n: int, k: int, s: int, pad: tuple[int, int]) -> int:
  return (n + pad[0] + pad[1] - k) // s + 1


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _cpu_conv(x: jax.Array, kernel: jax.Array, strides: Strides, pads: Padding) -> jax.Array:
  return _forward(x, kernel, strides, pads)


def _cpu_conv_fwd(x: jax.Array, kernel: jax.Array, strides: Strides,
                  pads: Padding) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
  return _forward(x, kernel, strides, pads), (x, kernel)


def _cpu_conv_bwd(strides: Strides, pads: Padding, res: tuple[jax.Array, jax.Array],
                  g: jax.Array) -> tuple[jax.Array, jax.Array]:
  x, kernel = res
  g = g.astype(x.dtype)
  dx = _input_grad(g, kernel, x.shape, strides, pads).astype(x.dtype)
  dk = _kernel_grad(x, g, kernel.shape, strides, pads).astype(kernel.dtype)
  return dx, dk


_cpu_conv.defvjp(_cpu_conv_fwd, _cpu_conv_bwd)


def _tap(xp: jax.Array, i: int, j: int, out_hw: tuple[int, int], strides: Strides) -> jax.Array:
  """The padded input's pixels that kernel tap (i, j) meets: shape (batch, ho, wo, cin)."""
  (ho, wo), (sh, sw) = out_hw, strides
  b, _, _, c = xp.shape
  return lax.slice(xp, (0, i, j, 0), (b, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c),
                   (1, sh, sw, 1))


def _pad_hw(x: jax.Array, pads: Padding) -> jax.Array:
  if pads == ((0, 0), (0, 0)):
    return x
  return lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))


def _matmul_last(a: jax.Array, b: jax.Array, dtype: jnp.dtype) -> jax.Array:
  """a (..., k) @ b (k, n) -> (..., n), accumulated in float32, returned in `dtype`."""
  y = lax.dot_general(a, b, (((a.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.float32)
  return y.astype(dtype)


def _forward(x: jax.Array, kernel: jax.Array, strides: Strides, pads: Padding) -> jax.Array:
  kh, kw, cin, cout = kernel.shape
  ho = _out_size(x.shape[1], kh, strides[0], pads[0])
  wo = _out_size(x.shape[2], kw, strides[1], pads[1])
  if kh == kw == 1:
    xs = _tap(_pad_hw(x, pads), 0, 0, (ho, wo), strides)
    return _matmul_last(xs, kernel.reshape(cin, cout), x.dtype)
  if _winograd_pays(x, kernel, strides, pads):
    return _winograd_3x3(x, kernel)
  if _im2col_pays(kernel.shape, ho, wo, transposed=False):
    xp = _pad_hw(x, pads)
    cols = jnp.concatenate([_tap(xp, i, j, (ho, wo), strides)
                            for i in range(kh) for j in range(kw)], axis=-1)
    return _matmul_last(cols, kernel.reshape(kh * kw * cin, cout), x.dtype)
  return _conv_in_pieces(x, kernel, strides, pads)


def _im2col_pays(kernel_shape: tuple[int, ...], ho: int, wo: int, *, transposed: bool) -> bool:
  """Whether an im2col matrix product (or, `transposed`, col2im for the input gradient) beats
  YNNPACK's convolution for an output map of ho x wo pixels.

  YNNPACK is slow when the kernel overhangs a small map. Forward, on 2 cores, batch 25, under the
  kept-memory glibc setting of host_memory (jaxlib 0.10.2 / 0.11.2): 3x3 4096->1024 on 2x2 maps
  6.6 / 5.7 s against 22-24 ms as im2col; 3x3 1024->1024 on 4x4 maps 30 / 95 ms against 19-20 ms,
  on 8x8 maps 92 / 208 ms against 71-85 ms; 5x5 stride 2 512->512 onto 4x4 maps 26 / 48 ms against
  14 ms. Beyond 576 pixel-taps it no longer paid (5x5 stride 2 256->512 onto 8x8: 33 / 30 ms
  against 28 / 31 ms), nor with fewer channels (3x3 256->256 on 8x8, width 16: 5.6-5.9 ms against
  6.2-7.2 ms). k x 1 kernels alone were a tie (5x1 1024->512 on 8x8: 23 ms against 21-37 ms), but
  in the width-64 network, where the decoder's d4 and d5 global convolutions have such layers on
  4x4-8x8 maps, im2col made inference 1.5% faster under both jaxlib versions (A/B, alternating,
  median of 7: 1.903 -> 1.876 s and 1.783 -> 1.756 s) and training no slower (8.75 -> 8.67 s,
  where the stride-1 input gradient, a forward convolution of the same map, takes it too; they
  get no col2im). The input gradient's col2im gained on every 2-D kernel
  up to 8x8 maps (VJP 5x5 stride 2 256->512: 86 / 98 -> 57 / 62 ms; 3x3 256->256 on 4x4: 5.3 /
  7.0 -> 4.5 / 3.6 ms).
  """
  kh, kw, cin = kernel_shape[:3]
  if ho * wo <= _IM2COL_MAX_PIXELS:
    return True
  if kh == 1 or kw == 1:
    return (not transposed and cin >= _IM2COL_MIN_CHANNELS
            and ho * wo <= _IM2COL_KX1_MAX_PIXELS)
  if transposed:
    return ho * wo <= _COL2IM_MAX_PIXELS
  return cin >= _IM2COL_MIN_CHANNELS and ho * wo * kh * kw <= _IM2COL_MAX_PIXEL_TAPS


def _winograd_pays(x: jax.Array, kernel: jax.Array, strides: Strides, pads: Padding) -> bool:
  """Whether Winograd F(2x2, 3x3) beats YNNPACK's convolution: 3x3, stride 1, padding 1, float32,
  even sides, wide layers on mid-sized maps.

  On 2 cores, batch 25, kept-memory glibc setting (jaxlib 0.10.2 and 0.11.2): 3x3 256->256 on
  32x32 maps 72-73 ms as a convolution, 54 ms as F(2x2, 3x3); 512->512 on 16x16 maps 73-77 ms
  against 54-58 ms. Elsewhere it lost or depended on the jaxlib version: 128->128 on 64x64 maps
  67-69 ms against 77-81 ms; on 128x128 maps 381 against 308 ms under 0.10.2 but 280 against
  390 ms under 0.11.2 (and in the width-64 network under 0.10.2, inference 1.86 -> 1.92 s,
  training 8.3 -> 8.6 s per iteration); 32->32 (width 16) 1.4-2.2x slower; 8x8 maps take im2col
  (_im2col_pays).
  """
  _, h, w, cin = x.shape
  lo, hi = _WINOGRAD_PIXELS
  return (kernel.shape[:2] == (3, 3) and strides == (1, 1) and pads == ((1, 1), (1, 1))
          and x.dtype == jnp.float32 and kernel.dtype == jnp.float32 and h % 2 == 0
          and w % 2 == 0 and cin >= _WINOGRAD_MIN_CHANNELS and lo <= h * w <= hi)


# Winograd F(2x2, 3x3) (Lavin and Gray 2016): input tile transform B^T, kernel transform G,
# output transform A^T, each applied along rows and columns.
_WINOGRAD_BT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
_WINOGRAD_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
_WINOGRAD_AT = ((1, 1, 1, 0), (0, 1, -1, -1))


def _combine(matrix: Sequence[Sequence[float]], parts: Sequence[jax.Array]) -> list[jax.Array]:
  """[sum_j matrix[i][j] * parts[j] for each row i], skipping zero coefficients."""
  rows = []
  for coefficients in matrix:
    terms = [p if c == 1 else -p if c == -1 else c * p
             for c, p in zip(coefficients, parts) if c != 0]
    rows.append(sum(terms[1:], terms[0]))
  return rows


def _winograd_3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """conv(x, kernel), 3x3, stride 1, padding 1, even sides, as Winograd F(2x2, 3x3): 2x2 output
  tiles from 4x4 input tiles, 16 matrix products of (tiles, cin) @ (cin, cout) instead of 36."""
  b, h, w, cin = x.shape
  th, tw = h // 2, w // 2
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  rows = [xp[:, i:i + 2 * th:2] for i in range(4)]  # row i of every tile: (b, th, w + 2, cin)
  tiles = []
  for r in _combine(_WINOGRAD_BT, rows):
    tiles += _combine(_WINOGRAD_BT, [r[:, :, j:j + 2 * tw:2] for j in range(4)])
  v = jnp.stack(tiles)  # (16, b, th, tw, cin); the batch axis kept apart for batch sharding
  g = jnp.asarray(_WINOGRAD_G, kernel.dtype)
  u = jnp.einsum("ai,ijcd,bj->abcd", g, kernel, g).reshape(16, cin, -1)
  m = lax.dot_general(v, u, (((4,), (1,)), ((0,), (0,))))  # (16, b, th, tw, cout)
  m = [m[4 * i:4 * i + 4] for i in range(4)]
  y = [_combine(_WINOGRAD_AT, list(r)) for r in _combine(_WINOGRAD_AT, m)]  # [row][col]
  y = jnp.stack([jnp.stack(r) for r in y])  # (2, 2, b, th, tw, cout)
  return y.transpose(2, 3, 0, 4, 1, 5).reshape(b, h, w, -1)


def _input_grad(g: jax.Array, kernel: jax.Array, x_shape: tuple[int, ...], strides: Strides,
                pads: Padding) -> jax.Array:
  """d(sum(g * conv(x, kernel))) / dx, with only stride-1 convolutions or matrix products."""
  kh, kw, cin, cout = kernel.shape
  _, h, w, _ = x_shape
  b, ho, wo, _ = g.shape
  (sh, sw), ((pt, pb), (pl, pr)) = strides, pads
  if kh == kw == 1:
    # Each output pixel came from one input pixel: one matrix product, then place and crop.
    t = _matmul_last(g, kernel.reshape(cin, cout).T, g.dtype)
    zero = jnp.zeros((), g.dtype)
    return lax.pad(t, zero, ((0, 0, 0), (-pt, h + pt - (ho - 1) * sh - 1, sh - 1),
                             (-pl, w + pl - (wo - 1) * sw - 1, sw - 1), (0, 0, 0)))
  if _im2col_pays(kernel.shape, ho, wo, transposed=True):
    # Small maps (the bottleneck): the transposed im2col product, then each tap's share added at
    # its place (col2im). Any other form pays for the padding that the kernel overhangs.
    cols = _matmul_last(g, kernel.reshape(kh * kw * cin, cout).T, jnp.float32)
    cols = cols.reshape(b, ho, wo, kh, kw, cin)
    zero = jnp.zeros((), jnp.float32)
    span_h, span_w = (ho - 1) * sh + 1, (wo - 1) * sw + 1
    return sum(lax.pad(cols[:, :, :, i, j], zero,
                       ((0, 0, 0), (i - pt, h + pt - i - span_h, sh - 1),
                        (j - pl, w + pl - j - span_w, sw - 1), (0, 0, 0)))
               for i in range(kh) for j in range(kw))
  flipped = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)  # (kh, kw, cout, cin)
  if strides == (1, 1):
    return _forward(g, flipped, (1, 1), ((kh - 1 - pt, kh - 1 - pb), (kw - 1 - pl, kw - 1 - pr)))
  # Sub-pixel form. In padded coordinates, input row u = sh*q + r receives g[q - m] * k[sh*m + r]
  # for m = 0..m1-1 (k zero-extended to sh*m1 rows): for each phase r a stride-1 "full"
  # correlation of g with the flipped sub-kernel. All phases share g, so one convolution with
  # sh*sw*cin output channels computes them; a reshape interleaves them.
  m1, m2 = -(-kh // sh), -(-kw // sw)
  q1, q2 = -(-(h + pt + pb) // sh), -(-(w + pl + pr) // sw)
  ext = jnp.pad(kernel, ((0, m1 * sh - kh), (0, m2 * sw - kw), (0, 0), (0, 0)))
  ext = ext.reshape(m1, sh, m2, sw, cin, cout)[::-1, :, ::-1]  # flip the sub-kernel taps m
  phase_kernel = ext.transpose(0, 2, 5, 1, 3, 4).reshape(m1, m2, cout, sh * sw * cin)
  y = _forward(g, phase_kernel, (1, 1), ((m1 - 1, q1 - ho), (m2 - 1, q2 - wo)))
  y = y.reshape(b, q1, q2, sh, sw, cin).transpose(0, 1, 3, 2, 4, 5)
  y = y.reshape(b, q1 * sh, q2 * sw, cin)
  return y[:, pt:pt + h, pl:pl + w, :]


def _use_tap_kernel_grad(kernel_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> bool:
  """Whether the per-tap kernel gradient measured faster than XLA's for this shape (2 cores).

  The per-tap products are (cin, rows) @ (rows, cout). With few channels they are memory bound
  and XLA's direct kernel gradient is as fast or faster (ndf=8 layers, the 1-channel output
  conv); XLA's slows down 2-5x once its operands outgrow the caches (large maps, batch 25).
  """
  kh, kw, cin, cout = kernel_shape
  b, ho, wo, _ = out_shape
  if kh == kw == 1:
    return True  # one matrix product; XLA's version is 1.5-5x slower
  if (ho, wo) == (1, 1):
    return True  # the 1x1 bottleneck: one small product per tap, ~1.5x faster
  if min(cin, cout) < 16:
    return False
  if ho * wo >= _KERNEL_GRAD_LARGE_MAP:
    return True  # 128x128 maps: XLA's is 1.2-2.5x slower
  # k x 1 kernels: XLA's is 1.3-2.3x slower, except narrow outputs on a small batch (batch 16 at
  # ndf=8: cout 16 on 32x32 and 64x64 maps), where it is up to 2x faster.
  return kw == 1 and (cout >= 32 or b * ho * wo > _KERNEL_GRAD_NARROW_ROWS)


def _kernel_grad(x: jax.Array, g: jax.Array, kernel_shape: tuple[int, ...], strides: Strides,
                 pads: Padding) -> jax.Array:
  """d(sum(g * conv(x, kernel))) / dkernel, shape `kernel_shape` (float32 on the per-tap path)."""
  b, ho, wo, _ = g.shape
  if not _use_tap_kernel_grad(kernel_shape, g.shape):
    zeros = jnp.zeros(kernel_shape, x.dtype)
    _, vjp = jax.vjp(lambda k: _conv_in_pieces(x, k, strides, pads), zeros)
    return vjp(g)[0]
  kh, kw, cin, _ = kernel_shape
  sh = strides[0]
  xp = _pad_hw(x, pads)
  # Loop over bands of output rows (and the input rows they read), the whole batch at a time, of
  # about _KERNEL_GRAD_CHUNK_ROWS output pixels, so that each tap's slice stays in cache. Slicing
  # rows, never the batch, keeps a batch-sharded (data-parallel) jit free of gathers.
  band = max(d for d in range(1, ho + 1)
             if ho % d == 0 and (b * d * wo <= _KERNEL_GRAD_CHUNK_ROWS or d == 1))
  if band == ho:
    return _tap_kernel_grad(xp, g, kernel_shape, strides)
  band_in = (band - 1) * sh + kh  # input rows that one band of output rows reads

  def body(n: jax.Array, acc: jax.Array) -> jax.Array:
    xc = lax.dynamic_slice_in_dim(xp, n * band * sh, band_in, axis=1)
    gc = lax.dynamic_slice_in_dim(g, n * band, band, axis=1)
    return acc + _tap_kernel_grad(xc, gc, kernel_shape, strides)

  return lax.fori_loop(0, ho // band, body, jnp.zeros(kernel_shape, jnp.float32))


def _tap_kernel_grad(xp: jax.Array, g: jax.Array, kernel_shape: tuple[int, ...],
                     strides: Strides) -> jax.Array:
  """Kernel gradient from the padded input: one (cin, rows) @ (rows, cout) product per tap."""
  kh, kw, cin, cout = kernel_shape
  _, ho, wo, _ = g.shape
  g2 = g.reshape(-1, cout)
  contract_rows = (((0,), (0,)), ((), ()))
  taps = [lax.dot_general(_tap(xp, i, j, (ho, wo), strides).reshape(-1, cin), g2, contract_rows,
                          preferred_element_type=jnp.float32)
          for i in range(kh) for j in range(kw)]
  return jnp.stack(taps).reshape(kernel_shape)
