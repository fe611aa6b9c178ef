"""Building blocks shared by the segmentor and the critic (NHWC layout)."""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from segan_jax import conv as conv_ops

Dtype = Any
Activation = Callable[[jax.Array], jax.Array]


def leaky_relu(x: jax.Array) -> jax.Array:
  """LeakyReLU with the paper's slope 0.2."""
  return nn.leaky_relu(x, negative_slope=0.2)


def torch_padding(kernel_size: Sequence[int], strides: Sequence[int]) -> tuple[tuple[int, int], ...]:
  """Symmetric padding of the authors' PyTorch layers: (k-1)//2, or k//2-1 for even k with stride 2."""
  pads = []
  for k, s in zip(kernel_size, strides):
    p = (k - 1) // 2 if k % 2 == 1 else k // 2 - (1 if s == 2 else 0)
    pads.append((p, p))
  return tuple(pads)


class Conv(nn.Module):
  """A 2-D convolution with PyTorch-style symmetric padding and a selectable backward pass."""
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  use_bias: bool = False
  dtype: Dtype = jnp.float32
  impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (*self.kernel_size, x.shape[-1], self.features), jnp.float32)
    x = x.astype(self.dtype)
    kernel = kernel.astype(self.dtype)
    padding = torch_padding(self.kernel_size, self.strides)
    y = conv_ops.conv2d(x, kernel, strides=self.strides, padding=padding, impl=self.impl)
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
      y = y + bias.astype(self.dtype)
    return y


class ConvBNAct(nn.Module):
  """Convolution (no bias) -> BatchNorm -> activation; without `batchnorm`, conv -> activation."""
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  activation: Activation = nn.relu
  dtype: Dtype = jnp.float32
  conv_impl: str = "auto"
  batchnorm: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = Conv(self.features, self.kernel_size, self.strides, dtype=self.dtype, impl=self.conv_impl,
             name="conv")(x)
    if self.batchnorm:
      x = batch_norm(train, self.dtype, name="bn")(x)
    return self.activation(x)


def batch_norm(train: bool, dtype: Dtype, name: str | None = None) -> nn.BatchNorm:
  """BatchNorm with PyTorch's defaults (momentum 0.1 there is 0.9 here, eps 1e-5), float32 statistics."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      param_dtype=jnp.float32, name=name)


class ResidualBlock(nn.Module):
  """x + (1x1 c->2c, 3x3 2c->2c, 1x1 2c->c), each conv followed by BN and the activation.

  batchnorm=False leaves the BN out (conv, activation), as the authors' forward pass does: their
  blocks build BatchNorm layers and never call them.
  """
  activation: Activation = nn.relu
  dtype: Dtype = jnp.float32
  conv_impl: str = "auto"
  batchnorm: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c = x.shape[-1]
    y = x
    for i, (features, size) in enumerate(((2 * c, 1), (2 * c, 3), (c, 1))):
      y = ConvBNAct(features, (size, size), activation=self.activation, dtype=self.dtype,
                    conv_impl=self.conv_impl, batchnorm=self.batchnorm, name=f"conv{i}")(y, train)
    return x.astype(y.dtype) + y


class GlobalConvBlock(nn.Module):
  """Large-kernel global convolution (Peng et al. 2017): (k x 1 then 1 x k) + (1 x k then k x 1).

  With strides s, each path downsamples rows in its k x 1 conv and columns in its 1 x k conv.
  With upsample=True the block computes itself on upsample2x_bilinear(x) without forming it: a
  conv along one axis commutes with a resize along the other, and a conv of a map upsampled along
  its own axis is a conv of the map itself in two output phases (conv_upsampled_along). The same
  values, in 0.64-0.78 of the FLOPs of the convs on the upsampled map.
  """
  features: int
  k: int
  strides: tuple[int, int] = (1, 1)
  dtype: Dtype = jnp.float32
  conv_impl: str = "auto"
  upsample: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    sh, sw = self.strides
    if self.upsample:
      if (sh, sw) != (1, 1):
        raise ValueError(f"GlobalConvBlock: upsample=True needs strides (1, 1), got {self.strides}.")
      conv = lambda axis, name: UpsampledConv(self.features, self.k, axis, self.dtype,
                                              self.conv_impl, name=name)
      left = conv(2, "left_1xk")(conv(1, "left_kx1")(x))
      right = conv(1, "right_kx1")(conv(2, "right_1xk")(x))
      return left + right
    conv = lambda size, strides, name: Conv(self.features, size, strides, dtype=self.dtype,
                                            impl=self.conv_impl, name=name)
    left = conv((self.k, 1), (sh, 1), "left_kx1")(x)
    left = conv((1, self.k), (1, sw), "left_1xk")(left)
    right = conv((1, self.k), (1, sw), "right_1xk")(x)
    right = conv((self.k, 1), (sh, 1), "right_kx1")(right)
    return left + right


class UpsampledConv(nn.Module):
  """Conv (k taps along `axis`, 1 across, no bias) of x upsampled x2 along `axis`: the same
  parameter as Conv((k, 1) or (1, k)), computed by conv_upsampled_along."""
  features: int
  k: int
  axis: int
  dtype: Dtype = jnp.float32
  impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    size = (self.k, 1) if self.axis == 1 else (1, self.k)
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (*size, x.shape[-1], self.features), jnp.float32)
    return conv_upsampled_along(x.astype(self.dtype), kernel, self.axis, self.impl)


def _phase_taps(k: int) -> tuple[np.ndarray, int, int]:
  """C[r, t, d - dmin]: the weight of x[i + d] in tap t of output 2i + r of a k-tap conv (padding
  (k - 1) // 2) of x bilinearly upsampled x2, with x taken as zero outside its range."""
  p = (k - 1) // 2
  entries = []
  for r in (0, 1):
    for t in range(k):
      j = r + t - p  # the tap's upsampled sample, relative to 2i
      lo = j // 2
      pairs = ((lo - 1, 0.25), (lo, 0.75)) if j % 2 == 0 else ((lo, 0.75), (lo + 1, 0.25))
      entries += [(r, t, d, c) for d, c in pairs]
  dmin, dmax = min(e[2] for e in entries), max(e[2] for e in entries)
  taps = np.zeros((2, k, dmax - dmin + 1), np.float32)
  for r, t, d, c in entries:
    taps[r, t, d - dmin] += c
  return taps, dmin, dmax


def conv_upsampled_along(x: jax.Array, kernel: jax.Array, axis: int,
                         impl: str = "auto") -> jax.Array:
  """conv(upsample2x_bilinear_along(x, axis), kernel) without the upsampled map.

  `kernel` is (k, 1, cin, cout) for axis 1 (rows) or (1, k, cin, cout) for axis 2 (columns), k
  odd, zero padding (k - 1) // 2 on that axis, stride 1. Output 2i + r is a conv of x itself with
  a kernel derived from `kernel` (in its dtype, then cast to x's), so both phases are one conv
  with 2 * cout channels, interleaved by a reshape. The upsampled map clamps at its edges where
  zero padding would not: the difference is +x[0]/4 at upsampled sample 0 and -x[0]/4 at -1 (the
  same at the far end), corrected on the first and last (k + 1) // 2 outputs.
  """
  if axis not in (1, 2):
    raise ValueError(f"conv_upsampled_along: axis must be 1 (rows) or 2 (columns), got {axis}.")
  k = kernel.shape[axis - 1]
  if kernel.shape[2 - axis] != 1 or k % 2 == 0:
    raise ValueError(f"conv_upsampled_along: expected an odd k x 1 (axis 1) or 1 x k (axis 2) "
                     f"kernel, got {kernel.shape[:2]} for axis {axis}.")
  p = (k - 1) // 2
  w = kernel.reshape(k, *kernel.shape[2:])  # (k, cin, cout)
  cin, cout = w.shape[1:]
  n = x.shape[axis]
  taps, dmin, dmax = _phase_taps(k)
  phased = jnp.einsum("rtd,tio->dior", jnp.asarray(taps, w.dtype), w).reshape(-1, cin, 2 * cout)
  phased = (phased[:, None] if axis == 1 else phased[None]).astype(x.dtype)
  pads = ((-dmin, dmax), (0, 0)) if axis == 1 else ((0, 0), (-dmin, dmax))
  y = conv_ops.conv2d(x, phased, padding=pads, impl=impl)
  y = jnp.moveaxis(y.reshape(*y.shape[:-1], cout, 2), -1, axis + 1)
  out_shape = list(x.shape[:-1]) + [cout]
  out_shape[axis] = 2 * n
  y = y.reshape(out_shape)

  zero = jnp.zeros_like(w[:1])
  wz = jnp.concatenate([zero, w, zero])  # wz[t + 1] = w[t]
  m = np.arange(p + 1)
  first = 0.25 * (wz[p - m + 1] - wz[p - m])  # outputs 0..p, from x[0]
  last = 0.25 * (wz[p + m + 1] - wz[p + m + 2])  # outputs 2n-1..2n-1-p, from x[n-1]
  rows = min(p + 1, 2 * n)
  edge = lambda i, d: jnp.einsum("n...c,mcd->nm...d", lax.index_in_dim(x, i, axis, keepdims=False),
                                 d.astype(x.dtype))[:, :rows]
  c_first, c_last = edge(0, first), edge(n - 1, last)[:, ::-1]
  if axis == 2:
    c_first, c_last = jnp.moveaxis(c_first, 1, 2), jnp.moveaxis(c_last, 1, 2)
  widths = [(0, 0)] * 4
  widths[axis] = (0, 2 * n - rows)
  y = y + jnp.pad(c_first, widths)
  widths[axis] = (2 * n - rows, 0)
  return y + jnp.pad(c_last, widths)


def upsample2x_bilinear_along(x: jax.Array, axis: int) -> jax.Array:
  """Bilinear x2 upsampling along one axis (half-pixel centres, edge clamped): shifted averages."""
  n = x.shape[axis]
  first = lax.slice_in_dim(x, 0, 1, axis=axis)
  last = lax.slice_in_dim(x, n - 1, n, axis=axis)
  prev = jnp.concatenate([first, lax.slice_in_dim(x, 0, n - 1, axis=axis)], axis=axis)
  nxt = jnp.concatenate([lax.slice_in_dim(x, 1, n, axis=axis), last], axis=axis)
  even = 0.75 * x + 0.25 * prev
  odd = 0.75 * x + 0.25 * nxt
  out = jnp.stack([even, odd], axis=axis + 1)
  shape = list(x.shape)
  shape[axis] = 2 * n
  return out.reshape(shape)


def upsample2x_bilinear(x: jax.Array) -> jax.Array:
  """Bilinear x2 upsampling of NHWC maps (half-pixel centres, edge clamped), by shifted averages.

  Equals jax.image.resize(..., 'bilinear') for a factor of 2, at a fraction of its cost on CPU.
  """
  return upsample2x_bilinear_along(upsample2x_bilinear_along(x, 1), 2)
