"""Writes tests/fixtures/authors_reference.npz: the SegAN authors' own PyTorch networks on fixed
inputs, for tests/test_authors_reference.py (which needs neither torch nor the authors' code).

Why: segan_jax re-implements the authors' NetS and NetC; the test maps their weights into
segan_jax's Segmentor and Critic and compares every layer's output. Their code (MIT) is not part of
this repository: this script imports `net.py` from a local copy of their repository at run time
(experiments/authors_code.py applies the three fixes it needs on a current CPU PyTorch as text
substitutions before executing it), and saves only numbers: weights, inputs and outputs.

The fixes: integer padding `(k - 1) // 2` (their `/ 2` is a float on Python 3); the forward passes
run without their `torch.cuda.FloatTensor` test (CPU); `.reshape` where NetC.forward flattens
non-contiguous maps with `.view`. Their `F.upsample(..., mode='bilinear')` behaved as
`align_corners=True` in the PyTorch of 2017 and as `align_corners=False` now: the script runs
both, naming the first `ac` (their 2017 networks) and the second `hp` (half-pixel centres).

What is saved (NCHW, float32 unless noted; width ndf = --ndf, batch 2, 128x128x3):
  x                   the input images (float16 values, stored exactly as float16)
  prob, mask          a probability map (float16 values) and a binary mask (uint8), (2, 1, 128, 128)
  S/<name>, C/<name>  every entry of NetS's and NetC's state_dict (C: those its forward uses;
                      C_unused lists the others); BatchNorm affine parameters and running
                      statistics drawn at random so that their mapping is tested
  S_parameters, C_parameters  names of the torch parameters (the rest are buffers)
  S_eval_ac/<block>   NetS in eval mode, 2017 upsampling: every top-level block's output, image 0
  S_eval_hp/deconvblock9  NetS in eval mode, current upsampling: the logits of image 0
  S_train_ac/deconvblock9  NetS in train mode (batch statistics), 2017 upsampling: image 0
  S_train_stats/<name>  NetS's running statistics after that pass
  C_train_fake/<block>, C_train_real/<block>  NetC in train mode on x * prob, then on x * mask
                      (the authors' two passes of one critic step): each block's output
  C_train_{fake,real}/output_every_<n>  every n-th element of NetC's flattened output, both images
  C_train_stats/<name>  NetC's running statistics after both passes
  C_loss              their critic loss on the two passes, mean |NetC(x*prob) - NetC(x*mask)|
  C_eval/<block>      NetC in eval mode on x * prob, image 0

Usage (needs torch; a few seconds):
  python experiments/authors_reference_fixture.py --authors_dir=PATH_TO/segan_authors
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from authors_code import load_authors_net  # noqa: E402  (experiments/authors_code.py)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_AUTHORS_DIR = REPO.parent / "shared" / "reference" / "segan_authors"
DEFAULT_OUTPUT = REPO / "tests" / "fixtures" / "authors_reference.npz"
OUTPUT_EVERY = 97  # stride of the flattened critic output's saved samples


def randomise_batch_norm(model: torch.nn.Module, run: Callable[[], torch.Tensor],
                         generator: torch.Generator) -> None:
  """Random BatchNorm affine parameters, and running statistics near those of `run()`'s batch.

  Identity-like values would not show a mis-mapped scale, bias, mean or variance; statistics far
  from the activations' would make eval-mode maps grow layer after layer (`run` should see a
  larger batch than the fixture's 2 images, whose variance on the 1x1 bottleneck is unreliable).
  """
  norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  for m in norms:
    m.momentum = 1.0  # the next training-mode pass stores its batch statistics
  model.train()
  with torch.no_grad():
    run()
  for m in norms:
    c = m.num_features
    m.momentum = 0.1
    with torch.no_grad():
      m.weight.copy_(1.0 + 0.3 * torch.randn(c, generator=generator))
      m.bias.copy_(0.3 * torch.randn(c, generator=generator))
      std = m.running_var.sqrt()
      m.running_mean.add_(0.3 * std * torch.randn(c, generator=generator))
      m.running_var.mul_(0.5 + torch.rand(c, generator=generator))
      m.num_batches_tracked.zero_()


def block_outputs(model: torch.nn.Module, run: Callable[[], torch.Tensor],
                  image: slice | None = None) -> tuple[dict[str, np.ndarray], torch.Tensor]:
  """Runs `run()`: each top-level child's output (of images `image`, default all) and the result."""
  outputs, handles = {}, []
  for name, child in model.named_children():
    def hook(_, __, out, name=name):
      outputs[name] = out.detach().clone()
    handles.append(child.register_forward_hook(hook))
  with torch.no_grad():
    result = run()
  for h in handles:
    h.remove()
  sel = slice(None) if image is None else image
  blocks = {name: out[sel].numpy().astype(np.float32) for name, out in outputs.items()}
  return blocks, result


def state(model: torch.nn.Module, prefix: str,
          names: set[str] | None = None) -> dict[str, np.ndarray]:
  """The state_dict's entries (those in `names`, default all) as float32, keys prefixed."""
  return {f"{prefix}/{k}": v.detach().numpy().astype(np.float32)
          for k, v in model.state_dict().items()
          if not k.endswith("num_batches_tracked") and (names is None or k in names)}


def running_stats(model: torch.nn.Module, prefix: str) -> dict[str, np.ndarray]:
  """The BatchNorm running means and variances, keys prefixed."""
  return {f"{prefix}/{k}": v.numpy().astype(np.float32) for k, v in model.state_dict().items()
          if k.endswith(("running_mean", "running_var"))}


def build(authors_dir: Path, ndf: int, seed: int) -> dict[str, np.ndarray]:
  """Every array of the fixture (see the module docstring)."""
  torch.manual_seed(seed)
  net_ac = load_authors_net(authors_dir, ndf, align_corners=True)
  net_hp = load_authors_net(authors_dir, ndf, align_corners=False)
  generator = torch.Generator().manual_seed(seed + 1)
  seg, critic = net_ac.NetS(1), net_ac.NetC(1)  # their initialisation, seeded
  x = torch.randn(2, 3, 128, 128, generator=generator).half().float()
  prob = torch.sigmoid(2 * torch.randn(2, 1, 128, 128, generator=generator)).half().float()
  mask = (torch.rand(2, 1, 128, 128, generator=generator) > 0.5).float()
  calibration = torch.randn(16, 3, 128, 128, generator=generator)
  randomise_batch_norm(seg, lambda: seg(calibration), generator)
  randomise_batch_norm(critic, lambda: critic(calibration * torch.rand(16, 1, 128, 128,
                                                                        generator=generator)),
                       generator)

  out = {"x": x.numpy().astype(np.float16), "prob": prob.numpy().astype(np.float16),
         "mask": mask.numpy().astype(np.uint8), "ndf": np.int32(ndf),
         "torch_version": np.str_(torch.__version__)}
  out.update(state(seg, "S"))
  out["S_parameters"] = np.array([n for n, _ in seg.named_parameters()])
  out["C_parameters"] = np.array([n for n, _ in critic.named_parameters()])
  used = {k for k in critic.state_dict() if k.split(".")[0] in
          {f"convblock{i}" for i in range(1, 7)}}
  out.update(state(critic, "C", used))
  out["C_unused"] = np.array([k for k in critic.state_dict()
                              if k not in used and not k.endswith("num_batches_tracked")])
  first = slice(0, 1)

  seg.eval()
  blocks, _ = block_outputs(seg, lambda: seg(x), first)
  out.update({f"S_eval_ac/{k}": v for k, v in blocks.items()})
  seg_hp = net_hp.NetS(1)
  seg_hp.load_state_dict(seg.state_dict())
  seg_hp.eval()
  with torch.no_grad():
    out["S_eval_hp/deconvblock9"] = seg_hp(x)[first].numpy()
  seg.train()
  with torch.no_grad():
    out["S_train_ac/deconvblock9"] = seg(x)[first].numpy()
  out.update(running_stats(seg, "S_train_stats"))

  critic.eval()
  blocks, _ = block_outputs(critic, lambda: critic(x * prob), first)
  out.update({f"C_eval/{k}": v for k, v in blocks.items()})
  critic.train()
  results = {}
  for name, m in (("fake", prob), ("real", mask)):
    blocks, results[name] = block_outputs(critic, lambda m=m: critic(x * m))
    out.update({f"C_train_{name}/{k}": v for k, v in blocks.items()})
    out[f"C_train_{name}/output_every_{OUTPUT_EVERY}"] = results[name][:, ::OUTPUT_EVERY].numpy()
  out.update(running_stats(critic, "C_train_stats"))
  out["C_loss"] = np.float32(torch.mean(torch.abs(results["fake"] - results["real"])).item())
  return out


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--authors_dir", type=Path, default=DEFAULT_AUTHORS_DIR,
                      help="a checkout of the authors' SegAN repository (the directory holding "
                           "their net.py); default: shared/reference/segan_authors beside this "
                           "repository")
  parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
  parser.add_argument("--ndf", type=int, default=2, help="network width (their ndf)")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  torch.set_num_threads(1)
  warnings.filterwarnings("ignore", message=".*upsample.*is deprecated")
  arrays = build(args.authors_dir, args.ndf, args.seed)
  args.output.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(args.output, **arrays)
  print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.2f} MB, {len(arrays)} arrays)")


if __name__ == "__main__":
  main()
