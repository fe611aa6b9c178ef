"""Does XLA's CPU backend use this CPU's bfloat16 instructions? One matrix product and one 3x3
convolution, float32 against bfloat16, in XLA and (where installed) in PyTorch.

Why: PyTorch's oneDNN convolutions run about twice as fast in bfloat16 on CPUs with AVX512-BF16,
while segan_jax's bfloat16 training is no faster than its float32 one. This separates XLA's matrix
products (bfloat16 operands, float32 accumulation: `preferred_element_type`) from its
convolutions, and times the convolution written as matrix products: im2col (one product over the
9 taps), rows (3 products over the 3 kernel rows, columns gathered), taps (9 products).

Each figure is the median of --repeats calls after a warm-up, in ms and GFLOP/s; rel_err is the
largest deviation from the float32 convolution relative to its largest magnitude.

Usage (2 CPU cores):
  python experiments/bf16_matmul_benchmark.py                       # 3x3 128->128 at 64x64
  python experiments/bf16_matmul_benchmark.py --side=128 --batch=25 --cin=128 --cout=128
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

F32, BF16 = jnp.float32, jnp.bfloat16


def median_ms(fn: Callable, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append((time.perf_counter() - start) * 1e3)
  return statistics.median(times)


def conv3x3(x: jax.Array, k: jax.Array) -> jax.Array:
  return lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)),
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _dot(a: jax.Array, b: jax.Array) -> jax.Array:
  return lax.dot_general(a, b, (((a.ndim - 1,), (0,)), ((), ())), preferred_element_type=F32)


def conv3x3_im2col(x: jax.Array, k: jax.Array) -> jax.Array:
  """One (pixels, 9 cin) @ (9 cin, cout) product."""
  _, h, w, cin = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  cols = jnp.concatenate([xp[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], -1)
  return _dot(cols, k.reshape(9 * cin, -1))


def conv3x3_rows(x: jax.Array, k: jax.Array) -> jax.Array:
  """Columns gathered once, then one (pixels, 3 cin) @ (3 cin, cout) product per kernel row."""
  _, h, w, cin = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  cols = jnp.concatenate([xp[:, :, j:j + w] for j in range(3)], -1)
  return sum(_dot(cols[:, i:i + h], k[i].reshape(3 * cin, -1)) for i in range(3))


def conv3x3_taps(x: jax.Array, k: jax.Array) -> jax.Array:
  """One (pixels, cin) @ (cin, cout) product per kernel tap."""
  _, h, w, cin = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return sum(_dot(xp[:, i:i + h, j:j + w], k[i, j]) for i in range(3) for j in range(3))


def run_jax(args: argparse.Namespace) -> list[tuple[str, float, float, float]]:
  """(name, ms, GFLOP/s, rel_err) for XLA's product and convolution forms."""
  rng = np.random.default_rng(0)
  b, s, cin, cout = args.batch, args.side, args.cin, args.cout
  a = rng.standard_normal((b * s * s, 9 * cin), np.float32)
  m = rng.standard_normal((9 * cin, cout), np.float32)
  x = rng.standard_normal((b, s, s, cin), np.float32)
  k = (rng.standard_normal((3, 3, cin, cout)) / np.sqrt(9 * cin)).astype(np.float32)
  gflop = 2 * b * s * s * 9 * cin * cout / 1e9
  rows = []
  plain = jax.jit(lambda p, q: p @ q)
  for name, fn, dt in (("matmul float32", plain, F32),
                       ("matmul bfloat16 -> bfloat16", plain, BF16),
                       ("matmul bfloat16 -> float32", jax.jit(_dot), BF16)):
    ms = median_ms(fn, jnp.asarray(a, dt), jnp.asarray(m, dt), repeats=args.repeats)
    rows.append((name, ms, gflop / ms * 1e3, float("nan")))
  ref = np.asarray(jax.jit(conv3x3)(x, k))
  scale = np.abs(ref).max()
  forms = (("conv float32", conv3x3, F32), ("conv bfloat16", conv3x3, BF16),
           ("im2col bfloat16", conv3x3_im2col, BF16), ("rows bfloat16", conv3x3_rows, BF16),
           ("taps bfloat16", conv3x3_taps, BF16))
  for name, fn, dt in forms:
    jitted = jax.jit(fn)
    xs, ks = jnp.asarray(x, dt), jnp.asarray(k, dt)
    ms = median_ms(jitted, xs, ks, repeats=args.repeats)
    err = np.abs(np.asarray(jitted(xs, ks), np.float32) - ref).max() / scale
    rows.append((name, ms, gflop / ms * 1e3, float(err)))
  return rows


def run_torch(args: argparse.Namespace) -> list[tuple[str, float, float, float]]:
  """The same product and convolution in PyTorch (its threads set to --threads), or []."""
  try:
    import torch
  except ImportError:
    return []
  torch.set_num_threads(args.threads)
  b, s, cin, cout = args.batch, args.side, args.cin, args.cout
  gflop = 2 * b * s * s * 9 * cin * cout / 1e9
  a, m = torch.randn(b * s * s, 9 * cin), torch.randn(9 * cin, cout)
  x, k = torch.randn(b, cin, s, s), torch.randn(cout, cin, 3, 3)
  conv = lambda p, q: torch.nn.functional.conv2d(p, q, padding=1)
  rows = []
  for name, fn, ops in (("torch matmul float32", torch.matmul, (a, m)),
                        ("torch matmul bfloat16", torch.matmul, (a.bfloat16(), m.bfloat16())),
                        ("torch conv float32", conv, (x, k)),
                        ("torch conv bfloat16", conv, (x.bfloat16(), k.bfloat16()))):
    fn(*ops)
    times = []
    with torch.no_grad():
      for _ in range(args.repeats):
        start = time.perf_counter()
        fn(*ops)
        times.append((time.perf_counter() - start) * 1e3)
    ms = statistics.median(times)
    rows.append((name, ms, gflop / ms * 1e3, float("nan")))
  return rows


def main(argv: list[str] | None = None) -> list[tuple[str, float, float, float]]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=25)
  parser.add_argument("--side", type=int, default=64, help="map height and width")
  parser.add_argument("--cin", type=int, default=128)
  parser.add_argument("--cout", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--threads", type=int, default=2, help="PyTorch's intra-op threads")
  parser.add_argument("--notorch", action="store_true", help="skip PyTorch even if installed")
  args = parser.parse_args(argv)
  for flag in ("batch", "side", "cin", "cout", "repeats", "threads"):
    if getattr(args, flag) < 1:
      parser.error(f"--{flag} must be at least 1, got {getattr(args, flag)}")
  jax.config.update("jax_cpu_enable_async_dispatch", False)
  print(f"jax {jax.__version__} on {jax.default_backend()}: batch {args.batch}, "
        f"{args.side}x{args.side}, 3x3 {args.cin}->{args.cout} (the product: the im2col shape), "
        f"median of {args.repeats}")
  rows = run_jax(args) + ([] if args.notorch else run_torch(args))
  for name, ms, rate, err in rows:
    tail = "" if np.isnan(err) else f"  rel_err {err:.1e}"
    print(f"  {name:<30} {ms:9.1f} ms {rate:7.0f} GFLOP/s{tail}", flush=True)
  return rows


if __name__ == "__main__":
  main()
