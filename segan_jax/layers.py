"""Building blocks shared by the segmentor and the critic (NHWC layout)."""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
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
    if self.impl == "xla":
      y = lax.conv_general_dilated(x, kernel, self.strides, padding,
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
    else:
      y = conv_ops.conv2d(x, kernel, strides=self.strides, padding=padding, impl=self.impl)
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
      y = y + bias.astype(self.dtype)
    return y


class ConvBNAct(nn.Module):
  """Convolution (no bias) -> BatchNorm -> activation."""
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  activation: Activation = nn.relu
  dtype: Dtype = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = Conv(self.features, self.kernel_size, self.strides, dtype=self.dtype, impl=self.conv_impl,
             name="conv")(x)
    x = batch_norm(train, self.dtype, name="bn")(x)
    return self.activation(x)


def batch_norm(train: bool, dtype: Dtype, name: str | None = None) -> nn.BatchNorm:
  """BatchNorm with PyTorch's defaults (momentum 0.1 there is 0.9 here, eps 1e-5), float32 statistics."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      param_dtype=jnp.float32, name=name)


class ResidualBlock(nn.Module):
  """x + (1x1 c->2c, 3x3 2c->2c, 1x1 2c->c), each conv followed by BN and the activation."""
  activation: Activation = nn.relu
  dtype: Dtype = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c = x.shape[-1]
    y = x
    for i, (features, size) in enumerate(((2 * c, 1), (2 * c, 3), (c, 1))):
      y = ConvBNAct(features, (size, size), activation=self.activation, dtype=self.dtype,
                    conv_impl=self.conv_impl, name=f"conv{i}")(y, train)
    return x.astype(y.dtype) + y


class GlobalConvBlock(nn.Module):
  """Large-kernel global convolution (Peng et al. 2017): (k x 1 then 1 x k) + (1 x k then k x 1).

  With strides s, each path downsamples rows in its k x 1 conv and columns in its 1 x k conv.
  With upsample=True the block computes itself on upsample2x_bilinear(x), but upsamples the
  columns of the k x 1 path's input only after its k x 1 conv (and the rows of the 1 x k path's
  after its 1 x k conv): a conv along one axis commutes with a resize along the other, so the
  result is the same while each path's first conv runs on half the pixels.
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
    conv = lambda size, strides, name: Conv(self.features, size, strides, dtype=self.dtype,
                                            impl=self.conv_impl, name=name)
    up_rows, up_cols = ((lambda y: upsample2x_bilinear_along(y, 1),
                         lambda y: upsample2x_bilinear_along(y, 2)) if self.upsample
                        else (lambda y: y, lambda y: y))
    left = conv((self.k, 1), (sh, 1), "left_kx1")(up_rows(x))
    left = conv((1, self.k), (1, sw), "left_1xk")(up_cols(left))
    right = conv((1, self.k), (1, sw), "right_1xk")(up_cols(x))
    right = conv((self.k, 1), (sh, 1), "right_kx1")(up_rows(right))
    return left + right


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
