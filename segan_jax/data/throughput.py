"""Timing of the training stream: the input-pipeline figure of the benchmarks."""

import time
from collections.abc import Callable

import jax


def images_per_second(batch: Callable[[int], dict], batches: int,
                      warmup: int) -> tuple[float, dict]:
  """Images/s of batch(step) over `batches` consecutive steps after `warmup` untimed ones, and the
  last batch. The clock stops when the last batch is ready: device batches are computed
  asynchronously, one after another, as the training loop draws them."""
  for step in range(warmup):
    jax.block_until_ready(batch(step))
  start = time.perf_counter()
  for step in range(warmup, warmup + batches):
    out = batch(step)
  jax.block_until_ready(out)
  elapsed = time.perf_counter() - start
  return batches * out["image"].shape[0] / elapsed, out
