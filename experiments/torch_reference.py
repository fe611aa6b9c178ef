"""An equivalent SegAN in PyTorch (NCHW), used only by the benchmark's `--torch` comparison.

Built from the same architecture table (docs/architecture.md) as segan_jax.models: the same layer
widths, kernels, strides, symmetric PyTorch-style padding, BatchNorm (momentum 0.1 = Flax's 0.9,
eps 1e-5), LeakyReLU 0.2 / ReLU, residual blocks, global convolution blocks, bilinear x2
upsampling (half-pixel centres, edge clamped: `align_corners=False`) and concatenations, and the
same training iteration as segan_jax.steps.train_step: a critic step (S's output detached, two
critic passes, multi-scale L1, Adam, critic parameters clamped to +-0.05) then a segmentor step
(Adam, the critic fixed). Module names follow the Flax modules' names, so `load_flax_variables`
can copy a segan_jax model's weights into it (the tests compare the two forward passes).

Requires `torch` (optional extra `[bench]`). It lives in the repository's experiments/ folder, not
in the installed package: `python -m segan_jax.benchmark --torch` loads it from the checkout
(segan_jax.benchmark.torch_reference), as do experiments/step_profile.py and the tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# (features in ndf units, kernel, global-conv kernel) of the critic's layers c1..c6, as
# segan_jax.models.CRITIC_LAYERS.
CRITIC_LAYERS = ((1, 7, 11), (2, 5, 9), (4, 4, 9), (8, 4, 7), (8, 4, 7), (8, 3, None))


def _pad(k: int, s: int) -> int:
  """segan_jax.layers.torch_padding for one axis: (k-1)//2, or k//2-1 for even k with stride 2."""
  return (k - 1) // 2 if k % 2 == 1 else k // 2 - (1 if s == 2 else 0)


def conv(cin: int, cout: int, kernel: tuple[int, int], stride: tuple[int, int] = (1, 1),
         bias: bool = False) -> nn.Conv2d:
  return nn.Conv2d(cin, cout, kernel, stride,
                   padding=(_pad(kernel[0], stride[0]), _pad(kernel[1], stride[1])), bias=bias)


def leaky_relu(x: torch.Tensor) -> torch.Tensor:
  return F.leaky_relu(x, 0.2)


def batch_norm(c: int) -> nn.BatchNorm2d:
  return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
  return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class ConvBNAct(nn.Module):
  def __init__(self, cin: int, cout: int, k: int, stride: int = 1,
               activation: Callable = F.relu, batchnorm: bool = True):
    super().__init__()
    self.conv = conv(cin, cout, (k, k), (stride, stride))
    self.bn = batch_norm(cout) if batchnorm else nn.Identity()
    self.activation = activation

  def forward(self, x):
    return self.activation(self.bn(self.conv(x)))


class ResidualBlock(nn.Module):
  """x + (1x1 c->2c, 3x3 2c->2c, 1x1 2c->c), each followed by BN (unless batchnorm=False, as the
  authors' forward pass) and the activation."""

  def __init__(self, c: int, activation: Callable, batchnorm: bool = True):
    super().__init__()
    self.conv0 = ConvBNAct(c, 2 * c, 1, activation=activation, batchnorm=batchnorm)
    self.conv1 = ConvBNAct(2 * c, 2 * c, 3, activation=activation, batchnorm=batchnorm)
    self.conv2 = ConvBNAct(2 * c, c, 1, activation=activation, batchnorm=batchnorm)

  def forward(self, x):
    return x + self.conv2(self.conv1(self.conv0(x)))


class GlobalConvBlock(nn.Module):
  """(k x 1 then 1 x k) + (1 x k then k x 1); with strides, kx1 strides rows and 1xk columns."""

  def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
    super().__init__()
    self.left_kx1 = conv(cin, cout, (k, 1), (stride, 1))
    self.left_1xk = conv(cout, cout, (1, k), (1, stride))
    self.right_1xk = conv(cin, cout, (1, k), (1, stride))
    self.right_kx1 = conv(cout, cout, (k, 1), (stride, 1))

  def forward(self, x):
    return self.left_1xk(self.left_kx1(x)) + self.right_kx1(self.right_1xk(x))


class GlobalStage(nn.Module):
  """Decoder stages d4-d8: global conv k, BN, ReLU, then a residual block."""

  def __init__(self, cin: int, cout: int, k: int, residual_batchnorm: bool = True):
    super().__init__()
    self.gcn = GlobalConvBlock(cin, cout, k)
    self.bn = batch_norm(cout)
    self.res = ResidualBlock(cout, F.relu, residual_batchnorm)

  def forward(self, x):
    return self.res(F.relu(self.bn(self.gcn(x))))


class Segmentor(nn.Module):
  """S: NCHW images (B, 3, H, W) -> logits (B, N, H, W); residual_batchnorm as
  segan_jax's model.residual_batchnorm."""

  def __init__(self, width: int = 64, num_classes: int = 1, residual_batchnorm: bool = True):
    super().__init__()
    w = width
    lrelu = leaky_relu
    res = lambda c, act: ResidualBlock(c, act, residual_batchnorm)
    self.e1_conv = conv(3, w, (7, 7), (2, 2), bias=True)
    self.e1_res = res(w, lrelu)
    self.e2_conv, self.e2_res = ConvBNAct(w, 2 * w, 5, 2, lrelu), res(2 * w, lrelu)
    self.e3_conv, self.e3_res = ConvBNAct(2 * w, 4 * w, 5, 2, lrelu), res(4 * w, lrelu)
    self.e4_conv, self.e4_res = ConvBNAct(4 * w, 8 * w, 5, 2, lrelu), res(8 * w, lrelu)
    self.e5_conv, self.e5_res = ConvBNAct(8 * w, 8 * w, 5, 2, lrelu), res(8 * w, lrelu)
    self.e6_conv = ConvBNAct(8 * w, 16 * w, 4, 2, lrelu)
    self.e6_side = ConvBNAct(16 * w, 16 * w, 1, activation=lrelu)
    self.e7_conv = ConvBNAct(16 * w, 32 * w, 3, 2, lrelu)
    self.e8_conv = ConvBNAct(32 * w, 8 * w, 1, activation=lrelu)
    self.d1_conv = ConvBNAct(8 * w, 32 * w, 1)
    self.d2_conv = ConvBNAct(64 * w, 16 * w, 3)
    self.d2_side = ConvBNAct(16 * w, 16 * w, 1)
    self.d3_conv = ConvBNAct(32 * w, 8 * w, 3)
    self.d3_res = res(8 * w, F.relu)
    # (in channels, out channels, kernel) of d4..d8; each input is the previous output + its skip.
    self.d4 = GlobalStage(16 * w, 8 * w, 7, residual_batchnorm)
    self.d5 = GlobalStage(16 * w, 4 * w, 7, residual_batchnorm)
    self.d6 = GlobalStage(8 * w, 2 * w, 9, residual_batchnorm)
    self.d7 = GlobalStage(4 * w, w, 9, residual_batchnorm)
    self.d8 = GlobalStage(2 * w, w, 11, residual_batchnorm)
    self.out_conv = conv(w, num_classes, (5, 5), bias=True)

  def forward(self, x):
    e1 = self.e1_res(leaky_relu(self.e1_conv(x)))
    e2 = self.e2_res(self.e2_conv(e1))
    e3 = self.e3_res(self.e3_conv(e2))
    e4 = self.e4_res(self.e4_conv(e3))
    e5 = self.e5_res(self.e5_conv(e4))
    e6 = self.e6_conv(e5)
    e6 = e6 + self.e6_side(e6)
    e7 = self.e7_conv(e6)
    e8 = self.e8_conv(e7)
    up = lambda y, skip: upsample2x(torch.cat([y, skip], dim=1))
    d1 = up(self.d1_conv(e8), e7)
    d2 = self.d2_conv(d1)
    d2 = up(d2 + self.d2_side(d2), e6)
    y = up(self.d3_res(self.d3_conv(d2)), e5)
    for stage, skip in ((self.d4, e4), (self.d5, e3), (self.d6, e2), (self.d7, e1)):
      y = up(stage(y), skip)
    return self.out_conv(self.d8(y)).float()


class Critic(nn.Module):
  """C: masked NCHW images -> [masked input, c1, ..., c6] (float32)."""

  def __init__(self, width: int = 64, global_conv: bool = False):
    super().__init__()
    self.global_conv = global_conv
    cin = 3
    for i, (units, k, gk) in enumerate(CRITIC_LAYERS, start=1):
      f = units * width
      if global_conv and gk is not None:
        setattr(self, f"c{i}_gcn", GlobalConvBlock(cin, f, gk, 2))
        if i == 1:
          self.c1_bias = nn.Parameter(torch.zeros(f))
      else:
        setattr(self, f"c{i}_conv", conv(cin, f, (k, k), (2, 2), bias=i == 1))
      if i > 1:
        setattr(self, f"c{i}_bn", batch_norm(f))
      cin = f

  def forward(self, masked):
    features = [masked.float()]
    y = masked
    for i, (_, _, gk) in enumerate(CRITIC_LAYERS, start=1):
      if self.global_conv and gk is not None:
        y = getattr(self, f"c{i}_gcn")(y)
        if i == 1:
          y = y + self.c1_bias.to(y.dtype)[None, :, None, None]
      else:
        y = getattr(self, f"c{i}_conv")(y)
      if i > 1:
        y = getattr(self, f"c{i}_bn")(y)
      y = leaky_relu(y)
      features.append(y.float())
    return features


def mask_images(images: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
  """images (B,3,H,W) times each of N maps (B,N,H,W): (B*N,3,H,W), as segan_jax.models.mask_images."""
  b, c, h, w = images.shape
  n = maps.shape[1]
  return (images[:, None] * maps[:, :, None].to(images.dtype)).reshape(b * n, c, h, w)


def count_kernel_weights(model: nn.Module) -> int:
  """Number of convolution-kernel weights (biases and BatchNorm parameters excluded)."""
  return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))


def multiscale_l1(fake: Sequence[torch.Tensor], real: Sequence[torch.Tensor],
                  weights: Sequence[float] | None = None,
                  reduction: str = "per_layer") -> torch.Tensor:
  """segan_jax.losses.multiscale_l1."""
  weights = (1.0,) * len(fake) if weights is None else weights
  diffs = [(a.float() - b.float()).abs() for a, b in zip(fake, real)]
  if reduction == "per_layer":
    return sum(w * d.mean() for w, d in zip(weights, diffs)) / len(diffs)
  total = sum(d.numel() for d in diffs)
  return sum(w * d.sum() for w, d in zip(weights, diffs)) / total


def soft_dice_loss(probs: torch.Tensor, targets: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
  probs, targets = probs.float(), targets.float()
  inter = (probs * targets).sum(dim=(2, 3))
  denom = probs.sum(dim=(2, 3)) + targets.sum(dim=(2, 3))
  return 1.0 - ((2.0 * inter + eps) / (denom + eps)).mean()


def bce_with_logits(logits: torch.Tensor, targets: torch.Tensor, k: float) -> torch.Tensor:
  return F.binary_cross_entropy_with_logits(logits.float() / k, targets.float())


class SegAN:
  """Both players, their Adam optimizers and segan_jax.steps.train_step's iteration in PyTorch.

  `bf16=True` runs the forward passes under CPU (or CUDA) autocast to bfloat16, with the losses
  in float32, which mirrors segan_jax's `dtype=bfloat16` (float32 parameters and statistics).
  On CUDA, cuDNN's autotuner is switched on (torch.backends.cudnn.benchmark), as a PyTorch user
  training at fixed shapes would; float32 convolutions use TF32 there, as JAX's default does.
  """

  def __init__(self, width: int = 64, num_classes: int = 1, critic_global_conv: bool = False,
               lr: float = 2e-4, b1: float = 0.9, b2: float = 0.999, critic_clip: float = 0.05,
               k: float = 1.0, adversarial_weight: float = 1.0, dice_weight: float = 0.0,
               bce_weight: float = 0.0, layer_weights: Sequence[float] | None = None,
               feature_reduction: str = "per_layer", bf16: bool = False,
               device: str | torch.device = "cpu", seed: int = 0,
               residual_batchnorm: bool = True):
    torch.manual_seed(seed)
    self.device = torch.device(device)
    if self.device.type == "cuda":
      # cuDNN's autotuner: the setting a PyTorch user would train with (fixed input shapes).
      torch.backends.cudnn.benchmark = True
    self.segmentor = Segmentor(width, num_classes, residual_batchnorm).to(self.device)
    self.critic = Critic(width, critic_global_conv).to(self.device)
    self.opt_s = torch.optim.Adam(self.segmentor.parameters(), lr=lr, betas=(b1, b2), eps=1e-8)
    self.opt_c = torch.optim.Adam(self.critic.parameters(), lr=lr, betas=(b1, b2), eps=1e-8)
    self.critic_clip, self.k = critic_clip, k
    self.adversarial_weight, self.dice_weight, self.bce_weight = (adversarial_weight, dice_weight,
                                                                  bce_weight)
    self.layer_weights, self.feature_reduction = layer_weights, feature_reduction
    self.bf16 = bf16

  def _autocast(self):
    if not self.bf16:
      return contextlib.nullcontext()
    return torch.autocast(self.device.type, dtype=torch.bfloat16)

  def _loss(self, fake, real):
    return multiscale_l1(fake, real, self.layer_weights, self.feature_reduction)

  def critic_step(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """C maximises L(S, C) with S fixed (its output detached), then its parameters are clamped."""
    s, c = self.segmentor, self.critic
    s.train()
    c.train()
    with torch.no_grad(), self._autocast():
      probs = torch.sigmoid(s(images) / self.k)
    c.requires_grad_(True)
    self.opt_c.zero_grad(set_to_none=True)
    with self._autocast():
      fake = c(mask_images(images, probs))
      real = c(mask_images(images, masks))
    loss = self._loss(fake, real)
    (-loss).backward()
    self.opt_c.step()
    with torch.no_grad():
      for p in c.parameters():
        p.clamp_(-self.critic_clip, self.critic_clip)
    return loss.detach()

  def segmentor_step(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """S minimises L(S, C) (plus the optional Dice/BCE terms) with C fixed."""
    s, c = self.segmentor, self.critic
    s.train()
    c.train()
    c.requires_grad_(False)  # only S's gradients, as jax.grad with respect to S's parameters
    self.opt_s.zero_grad(set_to_none=True)
    total = torch.zeros((), device=self.device)
    with self._autocast():
      if self.adversarial_weight:
        with torch.no_grad():
          real = c(mask_images(images, masks))
      logits = s(images)
      probs = torch.sigmoid(logits.float() / self.k)
      if self.adversarial_weight:
        fake = c(mask_images(images, probs))
    if self.adversarial_weight:
      total = total + self.adversarial_weight * self._loss(fake, real)
    if self.dice_weight:
      total = total + self.dice_weight * soft_dice_loss(probs, masks)
    if self.bce_weight:
      total = total + self.bce_weight * bce_with_logits(logits, masks, self.k)
    total.backward()
    self.opt_s.step()
    c.requires_grad_(True)
    return total.detach()

  def train_step(self, images: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
    """One SegAN iteration: a critic step, then a segmentor step against the updated critic."""
    out = {}
    if self.adversarial_weight:
      out["critic_loss"] = self.critic_step(images, masks)
    out["segmentor_loss"] = self.segmentor_step(images, masks)
    return out

  @torch.inference_mode()
  def predict_probs(self, images: torch.Tensor) -> torch.Tensor:
    """S's probability maps in inference mode (running BatchNorm statistics)."""
    self.segmentor.eval()
    with torch.inference_mode(), self._autocast():
      logits = self.segmentor(images)
    return torch.sigmoid(logits.float() / self.k)


def to_nchw(x: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
  """An NHWC numpy array as a contiguous NCHW float32 tensor."""
  return torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(x, np.float32), -1, 1))
                          ).to(device)


def load_flax_variables(model: nn.Module, params: Any, batch_stats: Any = None) -> None:
  """Copies a segan_jax model's Flax variables into the equally named modules of `model`.

  Flax kernels (kh, kw, cin, cout) become PyTorch weights (cout, cin, kh, kw); BatchNorm
  scale/bias/mean/var become weight/bias/running_mean/running_var.
  """
  names = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
           "var": "running_var"}

  def copy(tree, prefix):
    for key, value in tree.items():
      if isinstance(value, dict) or hasattr(value, "items"):
        copy(value, prefix + (key,))
        continue
      path = prefix + (key,)
      module = model
      for part in path[:-1]:
        module = getattr(module, part)
      value = np.array(value, np.float32)  # a writable copy
      if key == "kernel":
        value = value.transpose(3, 2, 0, 1)
      attr = names.get(key, key) if len(path) > 1 else key
      target = getattr(module, attr)
      if tuple(target.shape) != value.shape:
        raise ValueError(f"{'/'.join(path)}: shape {value.shape} does not fit {tuple(target.shape)}")
      with torch.no_grad():
        target.copy_(torch.from_numpy(np.ascontiguousarray(value)))

  copy(_jax_to_torch_paths(params), ())
  if batch_stats:
    copy(_jax_to_torch_paths(batch_stats), ())


def _jax_to_torch_paths(tree: Any) -> dict:
  """Renames the Flax global-stage submodules (d4_gcn, d4_bn, d4_res) to GlobalStage's (d4.gcn...)."""
  out: dict = {}
  for key, value in dict(tree).items():
    stage, _, rest = key.partition("_")
    if stage in ("d4", "d5", "d6", "d7", "d8") and rest in ("gcn", "bn", "res"):
      out.setdefault(stage, {})[rest] = value
    else:
      out[key] = value
  return out
