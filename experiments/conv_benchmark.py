"""Forward and forward+backward time of segan_jax.conv.conv2d: impl='xla' against impl='cpu'.

Why: on XLA's CPU backend the gradients JAX derives from lax.conv_general_dilated are several times
slower than the forward pass (kernel gradient of k x 1 kernels and large maps; input gradient of
every strided convolution). impl='cpu' (what 'auto' picks on CPU) computes the same values from
stride-1 forward convolutions and per-tap matrix products; this script measures both on SegAN's
convolution shapes.

Each row is one convolution at batch --batch (default 25, the paper's), NHWC, jitted:
  fwd: y = conv(x, k);  f+b: y and the VJP of a random cotangent w.r.t. both x and k.
The two impls are timed interleaved (xla, cpu, cpu, xla, ...) after a warm-up call, and each
figure is the median of --repeats calls (3 for rows over 20 GFLOP), in milliseconds. Other
processes sharing the cores make single figures noisy: compare the speedup columns, and rerun
where a row is close to 1.

Usage (2 CPU cores):
  python experiments/conv_benchmark.py                      # the curated table, ndf 16 and 64
  python experiments/conv_benchmark.py --ndf=16 --repeats=7
  python experiments/conv_benchmark.py --all_layers --ndf=8 --batch=16  # all convs, S and C
  python experiments/conv_benchmark.py --ndf=16 --variants=cpu,xla,xla-noynn,cpu-noynn
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from segan_jax import conv as conv_ops  # noqa: E402

HEAVY_GFLOP, HEAVY_REPEATS = 20.0, 3  # rows above 20 GFLOP (forward) are timed 3 times at most


def pad(k: int, s: int) -> tuple[int, int]:
  """The networks' symmetric padding (segan_jax.layers.torch_padding) for one dimension."""
  p = (k - 1) // 2 if k % 2 == 1 else k // 2 - (1 if s == 2 else 0)
  return (p, p)


def layer(name: str, hw: int | tuple[int, int], cin: int, cout: int, kernel: tuple[int, int],
          strides: tuple[int, int] = (1, 1)) -> dict:
  h, w = (hw, hw) if isinstance(hw, int) else hw
  padding = (pad(kernel[0], strides[0]), pad(kernel[1], strides[1]))
  return dict(name=name, hw=(h, w), cin=cin, cout=cout, kernel=kernel, strides=strides,
              padding=padding)


def curated(ndf: int) -> list[dict]:
  """A few representative SegAN convolutions at width ndf (input 128x128)."""
  w = ndf
  if ndf >= 64:  # the paper's width: the heaviest layers only, and the bottleneck
    return [
        layer("d8_res 3x3", 128, 2 * w, 2 * w, (3, 3)),
        layer("e2 5x5 s2", 64, w, 2 * w, (5, 5), (2, 2)),
        layer("d7_gcn 9x1", 64, 4 * w, w, (9, 1)),
        layer("d7_gcn 1x9", 64, w, w, (1, 9)),
        layer("e5_res 3x3 @4", 4, 16 * w, 16 * w, (3, 3)),
        layer("e7 3x3 s2 2->1", 2, 16 * w, 32 * w, (3, 3), (2, 2)),
    ]
  return [
      layer("e1/c1 7x7 s2", 128, 3, w, (7, 7), (2, 2)),
      layer("e1_res 3x3", 64, 2 * w, 2 * w, (3, 3)),
      layer("d8_res 3x3", 128, 2 * w, 2 * w, (3, 3)),
      layer("d8_res 1x1", 128, w, 2 * w, (1, 1)),
      layer("e2 5x5 s2", 64, w, 2 * w, (5, 5), (2, 2)),
      layer("c3 4x4 s2", 32, 2 * w, 4 * w, (4, 4), (2, 2)),
      layer("d8_gcn 11x1", 128, 2 * w, w, (11, 1)),
      layer("d8_gcn 1x11", 128, w, w, (1, 11)),
      layer("d7_gcn 9x1", 64, 4 * w, w, (9, 1)),
      layer("d7_gcn 1x9", 64, 4 * w, w, (1, 9)),
      layer("c1_gcn 11x1 s21", 128, 3, w, (11, 1), (2, 1)),
      layer("out 5x5 ->1", 128, w, 1, (5, 5)),
      layer("e7 3x3 s2 2->1", 2, 16 * w, 32 * w, (3, 3), (2, 2)),
      layer("d2 3x3 @2", 2, 64 * w, 16 * w, (3, 3)),
  ]


def network_layers(ndf: int, batch: int, global_critic: bool) -> list[dict]:
  """Every distinct convolution of the Segmentor and the Critic, with its number of uses."""
  from segan_jax import models  # imported here: only this mode needs flax

  seen = collections.Counter()
  real = conv_ops.conv2d

  def record(x, kernel, *, strides=(1, 1), padding=((0, 0), (0, 0)), impl="auto"):
    seen[(x.shape[1:3], kernel.shape, tuple(strides), tuple(map(tuple, padding)))] += 1
    return real(x, kernel, strides=strides, padding=padding, impl=impl)

  conv_ops.conv2d = record
  try:
    image = jnp.zeros((batch, 128, 128, 3))
    critic = models.Critic(width=ndf, global_conv=global_critic)
    for module in (models.Segmentor(width=ndf), critic):
      jax.eval_shape(lambda m=module: m.init(jax.random.PRNGKey(0), image, train=True))
  finally:
    conv_ops.conv2d = real
  rows = []
  for (hw, (kh, kw, cin, cout), strides, padding), count in seen.items():
    rows.append(dict(name=f"{kh}x{kw} s{strides[0]}{strides[1]} x{count}", hw=hw, cin=cin,
                     cout=cout, kernel=(kh, kw), strides=strides, padding=padding, count=count))
  return rows


def gflop(spec: dict, batch: int) -> float:
  (h, w), (kh, kw), (sh, sw) = spec["hw"], spec["kernel"], spec["strides"]
  ho = (h + sum(spec["padding"][0]) - kh) // sh + 1
  wo = (w + sum(spec["padding"][1]) - kw) // sw + 1
  return 2 * batch * ho * wo * kh * kw * spec["cin"] * spec["cout"] / 1e9


# XLA's CPU backend hands convolutions and matrix products to YNNPACK by default; an empty value
# of this (experimental) option clears that list, so XLA's own kernels run them instead.
WITHOUT_YNNPACK = {"xla_cpu_experimental_ynn_fusion_type": ""}
VARIANTS = {  # name: (conv2d impl, jax.jit compiler_options)
    "xla": ("xla", None), "cpu": ("cpu", None),
    "xla-noynn": ("xla", WITHOUT_YNNPACK), "cpu-noynn": ("cpu", WITHOUT_YNNPACK),
}


def time_layer(spec: dict, batch: int, dtype: jnp.dtype, repeats: int,
               variants: list[str]) -> dict[str, float]:
  """Median milliseconds of fwd and f+b for each variant, timed interleaved."""
  rng = np.random.default_rng(0)
  h, w = spec["hw"]
  x = jnp.asarray(rng.standard_normal((batch, h, w, spec["cin"]), np.float32), dtype)
  k = jnp.asarray(rng.standard_normal((*spec["kernel"], spec["cin"], spec["cout"]), np.float32)
                  / np.sqrt(np.prod(spec["kernel"]) * spec["cin"]), dtype)
  conv = lambda impl: (lambda a, b: conv_ops.conv2d(a, b, strides=spec["strides"],
                                                    padding=spec["padding"], impl=impl))
  y_shape = jax.eval_shape(conv("xla"), x, k).shape
  cot = jnp.asarray(rng.standard_normal(y_shape, np.float32), dtype)

  def fwd_bwd(impl):
    def run(a, b, c):
      y, vjp = jax.vjp(conv(impl), a, b)
      return (y, *vjp(c))
    return run

  fns = {}
  for name in variants:
    impl, options = VARIANTS[name]
    fns[f"fwd_{name}"] = (jax.jit(conv(impl), compiler_options=options), (x, k))
    fns[f"fb_{name}"] = (jax.jit(fwd_bwd(impl), compiler_options=options), (x, k, cot))
  times = {key: [] for key in fns}
  for key, (fn, args) in fns.items():
    jax.block_until_ready(fn(*args))  # compile and warm up
  for r in range(repeats):
    order = variants if r % 2 == 0 else variants[::-1]  # alternate which variant goes first
    for kind in ("fwd", "fb"):
      for name in order:
        fn, args = fns[f"{kind}_{name}"]
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times[f"{kind}_{name}"].append((time.perf_counter() - start) * 1e3)
  return {key: statistics.median(v) for key, v in times.items()}


def run_table(title: str, specs: list[dict], batch: int, dtype: jnp.dtype, repeats: int,
              variants: list[str]) -> None:
  """One row per layer: ms of each variant, and the first variant's time over each other's."""
  print(f"\n{title}")
  base, others = variants[0], variants[1:]

  def cells(kind, t):
    row = [f"{t[f'{kind}_{v}']:9.1f}" for v in variants]
    row += [f"{t[f'{kind}_{base}'] / t[f'{kind}_{v}']:5.2f}" for v in others]
    return " ".join(row)

  names = " ".join(f"{v[:9]:>9}" for v in variants) + " " + " ".join(
      f"{'x' + v[:4]:>5}" for v in others)
  header = (f"{'layer':<20} {'in HxW':>8} {'cin->cout':>11} {'GFLOP':>7} | fwd: {names} | "
            f"f+b: {names}")
  print(header)
  print("-" * len(header))
  totals = collections.Counter()
  for spec in specs:
    heavy = gflop(spec, batch) > HEAVY_GFLOP
    t = time_layer(spec, batch, dtype, min(repeats, HEAVY_REPEATS) if heavy else repeats,
                   variants)
    count = spec.get("count", 1)
    for key, v in t.items():
      totals[key] += count * v
    h, w = spec["hw"]
    size, channels = f"{h}x{w}", f"{spec['cin']}->{spec['cout']}"
    print(f"{spec['name']:<20} {size:>8} {channels:>11} {gflop(spec, batch):7.2f} | "
          f"     {cells('fwd', t)} |      {cells('fb', t)}", flush=True)
  weighted = " (each layer x its number of uses)" if any("count" in s for s in specs) else ""
  print(f"{'total' + weighted:<50} |      {cells('fwd', totals)} |      {cells('fb', totals)}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--ndf", default="16,64", help="comma-separated network widths")
  parser.add_argument("--batch", type=int, default=25)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--all_layers", action="store_true",
                      help="every distinct convolution of the Segmentor and the Critic")
  parser.add_argument("--global_critic", action="store_true",
                      help="with --all_layers: the critic with global convolution blocks")
  parser.add_argument("--only", default="", help="keep rows whose name contains this")
  parser.add_argument("--variants", default="xla,cpu",
                      help=f"comma-separated, from {list(VARIANTS)}; '-noynn' compiles with "
                           "XLA's YNNPACK fusions off; ratios are the first variant's time over "
                           "each other's")
  args = parser.parse_args()
  variants = [v for v in args.variants.split(",") if v]
  unknown = [v for v in variants if v not in VARIANTS]
  if unknown or len(variants) < 2:
    parser.error(f"--variants needs at least two of {list(VARIANTS)}; got {args.variants!r}")
  dtype = jnp.dtype(args.dtype)
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, {jax.device_count()} device(s), "
        f"batch {args.batch}, {args.dtype}, median of {args.repeats} (ms)")
  for ndf in (int(v) for v in args.ndf.split(",")):
    if args.all_layers:
      specs = network_layers(ndf, args.batch, args.global_critic)
      title = f"ndf={ndf}: all convolutions of Segmentor + Critic" + (
          " (global-conv critic)" if args.global_critic else "")
    else:
      specs, title = curated(ndf), f"ndf={ndf}"
    specs = [s for s in specs if args.only in s["name"]]
    run_table(title, specs, args.batch, dtype, args.repeats, variants)


if __name__ == "__main__":
  main()
