"""Timing of a batch iterator: the input-pipeline figure of the benchmarks."""

import time
from collections.abc import Iterator


def images_per_second(it: Iterator[dict], batches: int, warmup: int) -> tuple[float, dict]:
  """Images/s drawn from `it` over `batches` batches after `warmup` untimed ones; and the last batch."""
  for _ in range(warmup):
    next(it)
  start = time.perf_counter()
  for _ in range(batches):
    batch = next(it)
  elapsed = time.perf_counter() - start
  return batches * batch["image"].shape[0] / elapsed, batch
