"""The SegAN authors' PyTorch code (YuanXue1993/SegAN, commit aa892a6, MIT), imported at run time
from a local copy of their repository; none of it is part of segan_jax.

`load_authors_net` reads their `net.py`, applies the three fixes it needs on a current CPU PyTorch
as text substitutions (integer padding `(k - 1) // 2`; no `torch.cuda.FloatTensor` test in the
forward passes; `.reshape` where NetC.forward flattens non-contiguous maps) and the upsampling
convention (`align_corners`), and executes it as a module. `AuthorsSegAN` runs one iteration of
their `train.py` with their NetS and NetC, for timing next to segan_jax
(`python -m segan_jax.benchmark --torch --authors_dir=...`). Used by
experiments/authors_reference_fixture.py and segan_jax/benchmark.py (loaded from the checkout).
"""

from __future__ import annotations

import types
import warnings
from pathlib import Path

import torch

# (old text, new text, occurrences in net.py): the fixes, then the 2017 upsampling convention.
FIXES = (
    ("- 1) / 2", "- 1) // 2", 2),
    ("isinstance(input.data, torch.cuda.FloatTensor) and self.ngpu is 1", "True", 2),
    (".view(batchsize,-1)", ".reshape(batchsize,-1)", 7),
)
UPSAMPLE = ("mode='bilinear')", "mode='bilinear', align_corners={})", 7)


def load_authors_net(authors_dir: Path, ndf: int, align_corners: bool) -> types.ModuleType:
  """The authors' net.py, fixed for a current CPU PyTorch, as a module with width ndf.

  Raises FileNotFoundError where authors_dir has no net.py, RuntimeError where net.py is not the
  expected commit's (a fix does not apply as counted).
  """
  path = Path(authors_dir) / "net.py"
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found: --authors_dir must name a checkout of the authors' "
                            "SegAN repository (YuanXue1993/SegAN), the folder holding their net.py.")
  source = path.read_text()
  upsample_old, upsample_new, upsample_count = UPSAMPLE
  fixes = (*FIXES, (upsample_old, upsample_new.format(align_corners), upsample_count))
  for old, new, count in fixes:
    found = source.count(old)
    if found != count:
      raise RuntimeError(f"net.py: expected {count} occurrences of {old!r}, found {found}; "
                         "is this the authors' commit aa892a6?")
    source = source.replace(old, new)
  module = types.ModuleType(f"segan_authors_net_ac{int(align_corners)}")
  exec(compile(source, str(path), "exec"), module.__dict__)
  module.ndf = ndf  # read by NetS and NetC when they are built
  return module


def authors_dice_loss(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
  """Their train.py's dice_loss: 1 - mean over the batch of 2 sum(p y) / (sum p^2 + sum y^2)."""
  num = (probs * target).sum(dim=(2, 3))
  den = (probs * probs).sum(dim=(2, 3)) + (target * target).sum(dim=(2, 3))
  return 1 - (2 * num / den).sum() / num.size(0)


class AuthorsSegAN:
  """NetS and NetC of their net.py with Adam, trained as one iteration of their train.py's loop.

  The iteration, in their order: C's step (NetS forward, its output detached; NetC on the image
  masked by the probabilities and by the ground truth; loss -mean|fake - real|; Adam; NetC's
  parameters clamped to +-clip), then S's step (NetS forward, NetC on both masked images, loss
  mean|fake - real| + their Dice loss; Adam). Their masking writes image channel d times the map
  into a clone, channel by channel; here it is the same product, broadcast. Inference is NetS in
  eval mode, then the sigmoid.
  """

  def __init__(self, net: types.ModuleType, lr: float = 2e-4, b1: float = 0.5, b2: float = 0.999,
               clip: float = 0.05, device: str | torch.device = "cpu", seed: int = 666):
    torch.manual_seed(seed)
    self.device = torch.device(device)
    self.segmentor = net.NetS(ngpu=1).to(self.device)
    self.critic = net.NetC(ngpu=1).to(self.device)
    self.opt_s = torch.optim.Adam(self.segmentor.parameters(), lr=lr, betas=(b1, b2))
    self.opt_c = torch.optim.Adam(self.critic.parameters(), lr=lr, betas=(b1, b2))
    self.clip = clip

  def train_step(self, images: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """One iteration of their train.py on NCHW images and (B, 1, H, W) float masks."""
    s, c = self.segmentor, self.critic
    s.train()
    c.zero_grad()
    probs = torch.sigmoid(s(images)).detach()
    loss_c = -torch.mean(torch.abs(c(images * probs) - c(images * masks)))
    loss_c.backward()
    self.opt_c.step()
    for p in c.parameters():
      p.data.clamp_(-self.clip, self.clip)
    s.zero_grad()
    probs = torch.sigmoid(s(images))
    loss_s = torch.mean(torch.abs(c(images * probs) - c(images * masks)))
    (loss_s + authors_dice_loss(probs, masks)).backward()
    self.opt_s.step()
    return {"critic_loss": loss_c.detach(), "segmentor_loss": loss_s.detach()}

  @torch.inference_mode()
  def predict_probs(self, images: torch.Tensor) -> torch.Tensor:
    self.segmentor.eval()
    return torch.sigmoid(self.segmentor(images))


def authors_segan(authors_dir: Path, width: int, **kwargs) -> AuthorsSegAN:
  """AuthorsSegAN at width ndf = width, with today's upsampling convention (align_corners=False,
  the same work as their 2017 default)."""
  warnings.filterwarnings("ignore", message=".*upsample.*deprecated")
  return AuthorsSegAN(load_authors_net(authors_dir, width, align_corners=False), **kwargs)

