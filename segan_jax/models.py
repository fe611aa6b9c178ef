"""SegAN's segmentor S and critic C (docs/architecture.md), as Flax Linen modules in NHWC."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from segan_jax.conv import cpu_pieces, in_batch_pieces
from segan_jax.layers import (Conv, ConvBNAct, GlobalConvBlock, ResidualBlock, batch_norm,
                              leaky_relu, upsample2x_bilinear)

Dtype = Any
MIN_SIDE = 128  # seven stride-2 layers bring the segmentor's bottleneck to 1x1.


def check_spatial_size(shape: tuple[int, ...]) -> None:
  """Raises ValueError unless the image sides are positive multiples of 128."""
  if len(shape) != 4:
    raise ValueError(f"Expected NHWC images, got an array of shape {shape}.")
  h, w = shape[1], shape[2]
  if h % MIN_SIDE or w % MIN_SIDE or h == 0 or w == 0:
    raise ValueError(f"SegAN needs image sides that are multiples of {MIN_SIDE} (its bottleneck is "
                     f"1x1 at 128x128); got {h}x{w}. Set data.image_size accordingly.")


class Segmentor(nn.Module):
  """The fully convolutional encoder-decoder S; returns N logit maps at input resolution.

  residual_batchnorm=False leaves BatchNorm out of every residual block, as the authors' forward
  pass does (they build it and never call it); the default applies it, as the paper describes.
  """
  width: int = 64
  num_classes: int = 1
  dtype: Dtype = jnp.float32
  conv_impl: str = "auto"
  residual_batchnorm: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    check_spatial_size(x.shape)
    w, dt, impl = self.width, self.dtype, self.conv_impl
    down = lambda f, k, name: ConvBNAct(f, (k, k), (2, 2), leaky_relu, dt, impl, name=name)
    res = lambda act, name: ResidualBlock(act, dt, impl, self.residual_batchnorm, name=name)

    # Encoder.
    e1 = leaky_relu(Conv(w, (7, 7), (2, 2), use_bias=True, dtype=dt, impl=impl, name="e1_conv")(x))
    e1 = res(leaky_relu, "e1_res")(e1, train)
    e2 = res(leaky_relu, "e2_res")(down(2 * w, 5, "e2_conv")(e1, train), train)
    e3 = res(leaky_relu, "e3_res")(down(4 * w, 5, "e3_conv")(e2, train), train)
    e4 = res(leaky_relu, "e4_res")(down(8 * w, 5, "e4_conv")(e3, train), train)
    e5 = res(leaky_relu, "e5_res")(down(8 * w, 5, "e5_conv")(e4, train), train)
    e6 = down(16 * w, 4, "e6_conv")(e5, train)
    e6 = e6 + ConvBNAct(16 * w, (1, 1), activation=leaky_relu, dtype=dt, conv_impl=impl,
                        name="e6_side")(e6, train)
    e7 = down(32 * w, 3, "e7_conv")(e6, train)
    e8 = ConvBNAct(8 * w, (1, 1), activation=leaky_relu, dtype=dt, conv_impl=impl,
                   name="e8_conv")(e7, train)

    # Decoder: each stage concatenates the encoder map of its resolution, then upsamples x2
    # (from d4 on, inside the next stage's global convolution, which does it more cheaply).
    cbr = lambda f, k, name: ConvBNAct(f, (k, k), activation=nn.relu, dtype=dt, conv_impl=impl,
                                       name=name)
    concat = lambda y, skip: jnp.concatenate([y, skip.astype(y.dtype)], axis=-1)
    up = lambda y, skip: upsample2x_bilinear(concat(y, skip))
    d1 = up(cbr(32 * w, 1, "d1_conv")(e8, train), e7)
    d2 = cbr(16 * w, 3, "d2_conv")(d1, train)
    d2 = up(d2 + cbr(16 * w, 1, "d2_side")(d2, train), e6)
    y = concat(res(nn.relu, "d3_res")(cbr(8 * w, 3, "d3_conv")(d2, train), train), e5)
    stages = ((8 * w, 7, e4, "d4"), (4 * w, 7, e3, "d5"), (2 * w, 9, e2, "d6"), (w, 9, e1, "d7"))
    for features, k, skip, name in stages:
      y = concat(self._global_stage(y, features, k, train, name), skip)
    y = self._global_stage(y, w, 11, train, "d8")
    logits = Conv(self.num_classes, (5, 5), use_bias=True, dtype=dt, impl=impl, name="out_conv")(y)
    return logits.astype(jnp.float32)

  def _global_stage(self, x: jax.Array, features: int, k: int, train: bool, name: str) -> jax.Array:
    """x upsampled x2, global conv k, BN, ReLU, then a residual block (decoder stages d4-d8)."""
    y = GlobalConvBlock(features, k, dtype=self.dtype, conv_impl=self.conv_impl, upsample=True,
                        name=f"{name}_gcn")(x)
    y = nn.relu(batch_norm(train, self.dtype, name=f"{name}_bn")(y))
    return ResidualBlock(nn.relu, self.dtype, self.conv_impl, self.residual_batchnorm,
                         name=f"{name}_res")(y, train)


# Critic layers: (features in ndf units, kernel, global-conv kernel used when global_conv=True).
CRITIC_LAYERS = ((1, 7, 11), (2, 5, 9), (4, 4, 9), (8, 4, 7), (8, 4, 7), (8, 3, None))


class Critic(nn.Module):
  """The multi-scale critic C: returns [masked input, c1, ..., c6] for the multi-scale L1 loss.

  With `global_conv`, c1-c5 use strided global convolution blocks (kernels 11, 9, 9, 7, 7: the
  segmentor's decoder reversed, without residual blocks) instead of plain square kernels.

  With `spectral_norm`, every convolution kernel is divided by its largest singular value
  (flax.linen.SpectralNorm: the kernel as a (kh * kw * c_in, c_out) matrix), estimated by
  `spectral_norm_iterations` power iterations per pass from a stored vector u. Five bring the
  estimate within 1% in the first few steps for matrix-vector products that cost nothing next to
  the convolutions (SN-GAN's single iteration per step needs hundreds of steps at the start). u
  and the estimate sigma live in the `batch_stats` collection under `c{i}_sn`, so they travel
  with the critic's state and its checkpoints. The iterated u is stored when
  `update_spectral_norm` (default: `train`) is true; with it false each pass iterates from the
  stored u again, so two passes can share one normalisation.
  """
  width: int = 64
  global_conv: bool = False
  dtype: Dtype = jnp.float32
  conv_impl: str = "auto"
  spectral_norm: bool = False
  spectral_norm_iterations: int = 5

  @nn.compact
  def __call__(self, masked: jax.Array, train: bool = True,
               update_spectral_norm: bool | None = None) -> list[jax.Array]:
    check_spatial_size(masked.shape)
    update = train if update_spectral_norm is None else update_spectral_norm
    normalized = lambda layer, name, x: (
        nn.SpectralNorm(layer, n_steps=self.spectral_norm_iterations, name=name)(
            x, update_stats=update) if self.spectral_norm
        else layer(x))
    features = [masked.astype(jnp.float32)]
    y = masked
    for i, (units, k, gk) in enumerate(CRITIC_LAYERS, start=1):
      f = units * self.width
      first = i == 1
      if self.global_conv and gk is not None:
        y = normalized(GlobalConvBlock(f, gk, (2, 2), self.dtype, self.conv_impl,
                                       name=f"c{i}_gcn"), f"c{i}_sn", y)
        if first:
          y = y + self.param(f"c{i}_bias", nn.initializers.zeros, (f,), jnp.float32).astype(y.dtype)
      else:
        y = normalized(Conv(f, (k, k), (2, 2), use_bias=first, dtype=self.dtype,
                            impl=self.conv_impl, name=f"c{i}_conv"), f"c{i}_sn", y)
      if not first:
        y = batch_norm(train, self.dtype, name=f"c{i}_bn")(y)
      y = leaky_relu(y)
      features.append(y.astype(jnp.float32))
    return features


def mask_images(images: jax.Array, maps: jax.Array) -> jax.Array:
  """Multiplies images (B,H,W,3) by each of N label maps (B,H,W,N): returns (B*N,H,W,3).

  The N masked copies of an image are the critic's batch, so multi-class segmentation is one pass;
  copy b*N + c is image b masked by map c, for predicted and true maps alike, so the critic
  compares each class with its own ground truth. Raises ValueError unless maps has the images'
  batch and spatial shape (broadcasting would pair the wrong maps and images).
  """
  b, h, w, c = images.shape
  if maps.ndim != 4 or maps.shape[:3] != (b, h, w):
    raise ValueError(f"mask_images needs label maps (B, H, W, N) matching the images {images.shape}"
                     f"; got {maps.shape}.")
  n = maps.shape[-1]
  masked = images[:, None] * jnp.moveaxis(maps, -1, 1)[..., None].astype(images.dtype)
  return masked.reshape(b * n, h, w, c)


def inference_chunks(batch: int) -> int:
  """Pieces that inference splits a batch into (conv.cpu_pieces: up to 4 on XLA's single-device
  CPU backend before jaxlib 0.11, 1 elsewhere). On 2 cores under jaxlib 0.10.2 a width-16 forward
  pass of 25 images took 392 ms as one batch and 254 ms as 4 independent pieces (width 64: 3.29 s
  and 2.58 s); under 0.11.2, 242 and 243 ms. With running BatchNorm statistics the pieces give
  the same logits as the whole batch.
  """
  return cpu_pieces(batch, 4)


def segment_inference(segmentor: nn.Module, variables: dict[str, Any], images: jax.Array,
                      chunks: int | None = None) -> jax.Array:
  """S's logits in inference mode, the batch computed in `chunks` independent pieces
  (None: inference_chunks)."""
  n = inference_chunks(images.shape[0]) if chunks is None else chunks
  return in_batch_pieces(lambda x: segmentor.apply(variables, x, train=False), images,
                         min(n, images.shape[0]))
