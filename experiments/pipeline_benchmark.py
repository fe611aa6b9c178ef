"""Throughput (images/s) of the training input stream, on synthetic data and the real folder.

Measures segan_jax/data/pipeline.py as training consumes it, on both placements ('device': the
uint8 arrays on the default device, each batch augmented there; 'host': on the host CPU, numpy
out), after the decoded, resized pairs are held in memory, which is what segan_jax.train.load_data
does once at start-up; that one-time load (decode + checks + resize) is timed separately. Rows:
the default augmentation (random 128x128 crop of 180x135, flips, colour jitter, ImageNet
normalisation), with the authors' whole-image view half of the time, and geometry only.

Usage (runs from a checkout; the training step's own rate is in `python -m segan_jax.benchmark`):
  python experiments/pipeline_benchmark.py --real_dir=/data/isic2017 --batches=40
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

import jax  # noqa: E402

from segan_jax import sharding  # noqa: E402
from segan_jax.configs import default  # noqa: E402
from segan_jax.data import arrays, pipeline, sources  # noqa: E402
from segan_jax.data.throughput import images_per_second  # noqa: E402

VARIANTS = (("default augmentation", {}),
            ("+ whole-image view p=0.5", {"whole_image_prob": 0.5}),
            ("no colour jitter", {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0,
                                  "hue": 0.0}))


def throughput(train: arrays.TrainArrays, config, loader: str, batches: int,
               warmup: int) -> tuple[float, float]:
  """(images/s, start-up seconds: arrays placed and the first batch compiled) of one placement."""
  stream = pipeline.Stream.from_config(config, len(train))
  t0 = time.perf_counter()
  source = (pipeline.DeviceStream(train, stream, sharding.make_mesh()) if loader == "device"
            else pipeline.HostStream(train, stream))
  jax.block_until_ready(source.batch(0))
  startup = time.perf_counter() - t0
  rate, batch = images_per_second(source.batch, batches, warmup)
  assert batch["image"].shape == (config.train.batch_size, config.data.image_size,
                                  config.data.image_size, 3)
  return rate, startup


def measure(name: str, config, args) -> None:
  t0 = time.perf_counter()
  train_examples, val_examples = sources.load_splits(config)
  train = arrays.prepare_train(train_examples, config.data.resize_height, config.data.resize_width)
  load_s = time.perf_counter() - t0
  print(f"{name}: {len(train)} training pairs ({len(val_examples)} validation) loaded, checked "
        f"and resized in {load_s:.1f}s ({len(train_examples) + len(val_examples)} pairs, "
        f"{(len(train_examples) + len(val_examples)) / load_s:.0f} pairs/s)", flush=True)
  for label, changes in VARIANTS:
    c = config.copy_and_resolve_references()
    c.data.update(changes)
    for loader in pipeline.LOADERS:
      rate, startup = throughput(train, c, loader, args.batches, args.warmup)
      print(f"  {label:26s} {loader:6s} batch {c.train.batch_size}: {rate:7.0f} images/s "
            f"(start-up {startup:.1f}s)", flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--real_dir", default=os.environ.get("SEGAN_ISIC2017_DIR", ""),
                      help="Folder of real pairs, e.g. the ISIC 2017 training pairs in the "
                           "official layout (default: $SEGAN_ISIC2017_DIR; skipped when absent).")
  parser.add_argument("--synthetic_size", type=int, default=500)
  parser.add_argument("--batch_size", type=int, default=25)
  parser.add_argument("--batches", type=int, default=40)
  parser.add_argument("--warmup", type=int, default=5)
  args = parser.parse_args()
  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, "
        f"{len(os.sched_getaffinity(0))} CPU cores available, load average "
        f"{os.getloadavg()[0]:.1f}", flush=True)

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
