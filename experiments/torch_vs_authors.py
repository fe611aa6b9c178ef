"""Why the project's PyTorch rebuild (experiments/torch_reference.py) trains slower than the
authors' own code: both timed in one process, alternating, with the rebuild also run without
BatchNorm in its residual blocks (the authors build those BatchNorm layers and never call them),
and one iteration of each profiled by operator kind (torch.profiler, self CPU time).

  python experiments/torch_vs_authors.py --authors_dir=../shared/reference/segan_authors \
      --width=16 --batch=25 --steps=5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as segan_jax.benchmark runs PyTorch
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

import authors_code  # noqa: E402
import torch_reference  # noqa: E402

# Operator kinds of the profile: (label, substrings of aten operator names).
KINDS = (("convolution", ("convolution", "conv2d")), ("batch norm", ("batch_norm",)),
         ("upsampling", ("upsample",)))


def op_kinds(run) -> dict[str, float]:
  """Self CPU seconds of one call of run(), summed by operator kind (KINDS, then the rest)."""
  with profile(activities=[ProfilerActivity.CPU]) as prof:
    run()
  totals = {label: 0.0 for label, _ in KINDS} | {"other": 0.0}
  for event in prof.key_averages():
    label = next((k for k, names in KINDS if any(n in event.key for n in names)), "other")
    totals[label] += event.self_cpu_time_total / 1e6
  return totals


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--authors_dir", type=Path, required=True)
  parser.add_argument("--width", type=int, default=16)
  parser.add_argument("--batch", type=int, default=25)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  warnings.filterwarnings("ignore", message=".*upsample.*deprecated")
  rng = np.random.default_rng(0)
  images = torch_reference.to_nchw(rng.standard_normal((args.batch, 128, 128, 3)))
  masks = torch_reference.to_nchw(rng.uniform(size=(args.batch, 128, 128, 1)) < 0.4)
  models = {
      "rebuild": torch_reference.SegAN(width=args.width),
      "rebuild, no residual BN": torch_reference.SegAN(width=args.width,
                                                       residual_batchnorm=False),
      "authors' code": authors_code.authors_segan(args.authors_dir, args.width),
  }
  times: dict[str, list[float]] = {name: [] for name in models}
  names = list(models)
  for i in range(args.warmup + args.steps):
    for name in names if i % 2 == 0 else names[::-1]:
      start = time.perf_counter()
      models[name].train_step(images, masks)
      if i >= args.warmup:
        times[name].append(time.perf_counter() - start)
  print(f"torch {torch.__version__}, {args.threads} threads, width {args.width}, batch "
        f"{args.batch}, median of {args.steps} alternating iterations, load average "
        f"{os.getloadavg()[0]:.1f}")
  print(f"  {'':26s}{'s/iteration':>16s}  profile of one iteration, self CPU s: "
        + ", ".join(label for label, _ in KINDS) + ", other")
  for name, model in models.items():
    kinds = op_kinds(lambda m=model: m.train_step(images, masks))
    print(f"  {name:26s}{statistics.median(times[name]):8.3f} ({min(times[name]):.2f}-"
          f"{max(times[name]):.2f})  " + "  ".join(f"{v:6.3f}" for v in kinds.values()))


if __name__ == "__main__":
  main()
