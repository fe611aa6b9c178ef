"""Throughput (images/s) of the tf.data training pipeline, on synthetic data and the real folder.

Measures segan_jax.data.tf_pipeline.train_dataset as training consumes it (per-process batches of
numpy arrays, paper augmentation: random 128x128 crop of 180x135, flips, colour jitter, ImageNet
normalisation) after the decoded, resized pairs are cached in memory, which is what
segan_jax.train.load_data does once at start-up; that one-time load (decode + checks + resize) is
timed separately. Rows: full paper augmentation, and without colour jitter (geometry only).

Usage (2 CPU cores; --threads caps tf.data's intra/inter-op pools, 0 = TF's default):
  python experiments/pipeline_benchmark.py --real_dir=/data/isic2017 --batches=40
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

import tensorflow as tf  # noqa: E402

from segan_jax.configs import default  # noqa: E402
from segan_jax.data import arrays, sources, tf_pipeline  # noqa: E402
from segan_jax.data.throughput import images_per_second  # noqa: E402


def throughput(train: arrays.TrainArrays, config, batches: int, warmup: int) -> float:
  """Images per second drawn from the training iterator, after `warmup` batches."""
  rate, batch = images_per_second(tf_pipeline.train_iterator(train, config), batches,
                                 warmup)
  assert batch["image"].shape == (config.train.batch_size, config.data.image_size,
                                  config.data.image_size, 3)
  return rate


def measure(name: str, config, args) -> None:
  t0 = time.perf_counter()
  train_examples, val_examples = sources.load_splits(config)
  train = arrays.prepare_train(train_examples, config.data.resize_height, config.data.resize_width)
  load_s = time.perf_counter() - t0
  print(f"{name}: {len(train)} training pairs ({len(val_examples)} validation) loaded, checked "
        f"and resized in {load_s:.1f}s ({len(train_examples) + len(val_examples)} pairs, "
        f"{(len(train_examples) + len(val_examples)) / load_s:.0f} pairs/s)", flush=True)
  for label, jitter in (("paper augmentation", True), ("no colour jitter", False)):
    c = config.copy_and_resolve_references()
    if not jitter:
      c.data.brightness = c.data.contrast = c.data.saturation = c.data.hue = 0.0
    rate = throughput(train, c, args.batches, args.warmup)
    print(f"  {label:20s} batch {c.train.batch_size}: {rate:7.0f} images/s", flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--real_dir", default=os.environ.get("SEGAN_ISIC2017_DIR", ""),
                      help="Folder of real pairs, e.g. the ISIC 2017 training pairs in the "
                           "official layout (default: $SEGAN_ISIC2017_DIR; skipped when absent).")
  parser.add_argument("--synthetic_size", type=int, default=500)
  parser.add_argument("--batch_size", type=int, default=25)
  parser.add_argument("--batches", type=int, default=40)
  parser.add_argument("--warmup", type=int, default=5)
  parser.add_argument("--threads", type=int, default=0)
  args = parser.parse_args()
  if args.threads:
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  print(f"TF {tf.__version__}, {len(os.sched_getaffinity(0))} CPU cores available, "
        f"load average {os.getloadavg()[0]:.1f}", flush=True)

  config = default.get_config()
  config.train.batch_size = args.batch_size
  config.data.train_size = args.synthetic_size
  measure(f"synthetic ({args.synthetic_size})", config, args)

  if args.real_dir and os.path.isdir(args.real_dir):
    config = default.get_config()
    config.train.batch_size = args.batch_size
    config.data.source = "folder"
    config.data.dir = args.real_dir
    measure(f"real folder {args.real_dir}", config, args)
  else:
    print(f"real data: {args.real_dir or '(no --real_dir)'} not found, skipped")


if __name__ == "__main__":
  main()
