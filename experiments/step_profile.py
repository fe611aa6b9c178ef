"""Where a SegAN training iteration spends its time on this backend, piece by piece.

  python experiments/step_profile.py --width=16 --batch=25 --torch     # pieces, vs PyTorch
  python experiments/step_profile.py --width=16 --batch=25 --profile   # + XLA ops of S's step

Pieces, each jitted on its own: S's forward (training mode), S's forward + backward, C's forward
(one masked pass), C's forward + backward, the critic step and the segmentor step of
segan_jax.steps. With --torch the same pieces of experiments/torch_reference.py run in the same
process, alternating with segan_jax's, on the same batch and threads (as segan_jax.benchmark).
With --profile the segmentor step is traced with jax.profiler and its XLA operations are summed
by kind (CPU time, summed over threads): convolutions and matrix products against the rest.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install


def _pieces(config, batch):
  import jax
  import jax.numpy as jnp

  from segan_jax import steps, train

  cfg = train.build_step_config(config, 40)
  seg, critic = train.create_states(config, cfg)
  images, masks = batch["image"], batch["mask"]

  def s_fwd(params):
    return steps.segment(cfg, seg, images, True, params)

  def s_fwd_bwd(params):
    def loss(p):
      logits, stats = steps.segment(cfg, seg, images, True, p)
      return jnp.mean(logits ** 2), stats
    return jax.grad(loss, has_aux=True)(params)

  def c_fwd(params):
    return steps.critic_features(cfg, critic, images, masks, params)

  def c_fwd_bwd(params):
    def loss(p):
      features, stats = steps.critic_features(cfg, critic, images, masks, p)
      return sum(jnp.mean(f ** 2) for f in features), stats
    return jax.grad(loss, has_aux=True)(params)

  return {
      "S forward (training mode)": (jax.jit(s_fwd), (seg.params,)),
      "S forward + backward": (jax.jit(s_fwd_bwd), (seg.params,)),
      "C forward (one pass)": (jax.jit(c_fwd), (critic.params,)),
      "C forward + backward": (jax.jit(c_fwd_bwd), (critic.params,)),
      "critic step": (jax.jit(lambda c, s: steps.critic_step(c, s, batch, cfg)), (critic, seg)),
      "segmentor step": (jax.jit(lambda s, c: steps.segmentor_step(s, c, batch, cfg)),
                         (seg, critic)),
  }


def _torch_pieces(config, local):
  import torch

  from segan_jax.benchmark import _to_torch, _torch_model, torch_reference

  model, _ = _torch_model(config, use_cuda=False)
  images, masks = _to_torch(local["image"], "cpu"), _to_torch(local["mask"], "cpu")
  s, c = model.segmentor.train(), model.critic.train()

  def s_fwd():
    with torch.no_grad():
      s(images)

  def s_fwd_bwd():
    s.zero_grad()
    (s(images) ** 2).mean().backward()

  def c_fwd():
    with torch.no_grad():
      c(torch_reference().mask_images(images, masks))

  def c_fwd_bwd():
    c.zero_grad()
    sum((f ** 2).mean() for f in c(torch_reference().mask_images(images, masks))).backward()

  return {"S forward (training mode)": s_fwd, "S forward + backward": s_fwd_bwd,
          "C forward (one pass)": c_fwd, "C forward + backward": c_fwd_bwd,
          "critic step": lambda: model.critic_step(images, masks),
          "segmentor step": lambda: model.segmentor_step(images, masks)}


def _op_kind(name: str) -> str:
  base = re.sub(r"\.\d+$", "", name)
  if base.startswith("ynn_fusion") or base.startswith("xnn_fusion"):
    return "convolution / matmul (YNNPACK/XNNPACK)"
  if base.startswith(("conv", "convolution")):
    return "convolution (XLA)"
  if "dot" in base:
    return "matmul (XLA dot)"
  if any(k in base for k in ("slice", "pad", "transpose", "concatenate", "copy")):
    return "data movement (slice, pad, transpose, concatenate, copy)"
  if base in ("while", "call", "conditional"):
    return "control flow"
  return "elementwise / reductions (BatchNorm, activations, losses, Adam)"


def profile_ops(fn, args, iterations: int = 2) -> collections.Counter:
  """CPU milliseconds per call of fn's XLA operations, summed by kind over the worker threads."""
  import jax
  from jax.profiler import ProfileData

  with tempfile.TemporaryDirectory() as logdir:
    with jax.profiler.trace(logdir):
      for _ in range(iterations):
        jax.block_until_ready(fn(*args))
    path = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0]
    data = ProfileData.from_file(path)
  kinds = collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      if not line.name.startswith("tf_XLAEigen"):  # XLA's CPU worker threads
        continue
      for event in line.events:
        if "Execute" not in event.name and "Await" not in event.name:
          kinds[_op_kind(event.name)] += event.duration_ns / 1e6 / iterations
  return kinds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--width", type=int, default=16)
  parser.add_argument("--batch", type=int, default=25)
  parser.add_argument("--repeats", type=int, default=4)
  parser.add_argument("--threads", type=int, default=0, help="PyTorch threads (0: all cores)")
  parser.add_argument("--torch", action="store_true")
  parser.add_argument("--profile", action="store_true")
  args = parser.parse_args()
  os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see RESULTS.md, "Caveats"

  import jax

  from segan_jax import sharding
  from segan_jax.benchmark import _synthetic_batch
  from segan_jax.configs import default

  config = default.get_config()
  config.model.width, config.train.batch_size = args.width, args.batch
  local = _synthetic_batch(args.batch, config.data.image_size, config.model.num_classes)
  batch = sharding.global_batch(local, sharding.make_mesh(jax.devices()[:1]))
  pieces = _pieces(config, batch)
  torch_pieces = {}
  if args.torch:
    import torch
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    torch_pieces = _torch_pieces(config, local)
  print(f"width {args.width}, batch {args.batch}, 128x128, float32, jax {jax.__version__} "
        f"({jax.default_backend()}), median of {args.repeats}, load average "
        f"{os.getloadavg()[0]:.1f}")
  print(f"{'piece':<28} {'segan_jax ms':>13} {'PyTorch ms':>11} {'ratio':>6}")
  for name, (fn, fargs) in pieces.items():
    jax.block_until_ready(fn(*fargs))  # compile
    timers = {"jax": lambda: jax.block_until_ready(fn(*fargs))}
    if name in torch_pieces:
      timers["torch"] = torch_pieces[name]
      torch_pieces[name]()  # warm up
    times = {k: [] for k in timers}
    for _ in range(args.repeats):
      for key, timer in timers.items():
        start = time.perf_counter()
        timer()
        times[key].append((time.perf_counter() - start) * 1e3)
    ms = {k: statistics.median(v) for k, v in times.items()}
    torch_ms = f"{ms['torch']:11.0f}" if "torch" in ms else f"{'':>11}"
    ratio = f"{ms['torch'] / ms['jax']:5.2f}x" if "torch" in ms else ""
    print(f"{name:<28} {ms['jax']:13.0f} {torch_ms} {ratio:>6}", flush=True)
  if args.torch:
    print("ratio: PyTorch time / segan_jax time (above 1: segan_jax faster)")
  if args.profile:
    fn, fargs = pieces["segmentor step"]
    kinds = profile_ops(fn, fargs)
    total = sum(kinds.values())
    print(f"\nXLA operations of the segmentor step, CPU ms per step summed over threads "
          f"(total {total:.0f}):")
    for kind, value in kinds.most_common():
      print(f"  {value:8.0f}  {100 * value / total:5.1f}%  {kind}")


if __name__ == "__main__":
  main()
