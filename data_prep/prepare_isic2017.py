r"""Builds the `isic2017` TFDS dataset from the official zips or any folder of image/mask pairs.

  # From the six official zips (or their extracted folders) in ~/isic2017_zips:
  python data_prep/prepare_isic2017.py --manual_dir=~/isic2017_zips --data_dir=~/tensorflow_datasets

  # From a folder of pairs (ISIC layout, or images/ + masks/), e.g. the training pairs alone:
  python data_prep/prepare_isic2017.py --manual_dir=/data/isic2017 --data_dir=/tmp/tfds

  # Download the zips from the official URLs (needs internet), then build:
  python data_prep/prepare_isic2017.py --download --data_dir=~/tensorflow_datasets

  # Check a folder (every pair decoded and checked) without writing anything:
  python data_prep/prepare_isic2017.py --manual_dir=/data/pairs --check_only

Then train with --config.data.source=tfds --config.data.dir=<data_dir>. Bad input stops the build
before anything is written, with the file named (see segan_jax/data/folder.py for each case and
the options that relax them). --write_val_ids writes the seeded hold-out of the training ids that
training uses when the data has no validation split (same --val_fraction and --seed as
config.data.val_fraction and config.data.seed), for reuse via config.data.val_ids_file.
"""

import os
import shutil
import sys

from absl import app, flags, logging

_SOURCE = flags.DEFINE_string(
    "manual_dir", None, "Folder holding the official zips, their extracted folders, or image/mask "
    "pairs (ISIC layout or images/ + masks/): what config.data.manual_dir names in training.")
flags.DEFINE_alias("source", "manual_dir")
_DOWNLOAD = flags.DEFINE_bool("download", False, "Download the six official zips instead of "
                              "reading --manual_dir.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir to write to (TFDS's default, "
                                "~/tensorflow_datasets, when unset).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Rebuild even if the dataset already exists.")
_CHECK_ONLY = flags.DEFINE_bool("check_only", False, "Scan and decode every pair of --manual_dir, "
                                "report, and write nothing.")
_MASK_SUFFIX = flags.DEFINE_string("mask_suffix", "_segmentation",
                                   "images/ + masks/ layout: masks/<stem><suffix>.png or <stem>.png.")
_ON_BAD = flags.DEFINE_enum("on_bad_pairs", "error", ["error", "skip"],
                            "What a bad pair does: stop with an error, or be left out (logged).")
_SIZE_CHECK = flags.DEFINE_enum("size_check", "auto", ["auto", "aspect", "equal", "any"],
                                "Mask size against image size (see segan_jax/data/folder.py).")
_NONBINARY = flags.DEFINE_enum("nonbinary_masks", "binarize", ["binarize", "error"],
                               "Non-binary masks: threshold at > 127, or an error.")
_WORKERS = flags.DEFINE_integer("workers", 0, "Decoding threads (0: one per CPU core).")
_WRITE_VAL_IDS = flags.DEFINE_string("write_val_ids", None, "Write the held-out validation ids "
                                     "of the training split to this file.")
_VAL_FRACTION = flags.DEFINE_float("val_fraction", 0.1, "Hold-out fraction for --write_val_ids.")
_SEED = flags.DEFINE_integer("seed", 0, "Hold-out seed for --write_val_ids.")


def _options(folder):
  return folder.Options(mask_suffix=_MASK_SUFFIX.value, on_bad_pairs=_ON_BAD.value,
                        size_check=_SIZE_CHECK.value, nonbinary_masks=_NONBINARY.value,
                        workers=_WORKERS.value)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if bool(_SOURCE.value) == _DOWNLOAD.value:
    raise app.UsageError("Give exactly one of --manual_dir=<folder> and --download.")
  from segan_jax.data import folder

  source = os.path.expanduser(_SOURCE.value) if _SOURCE.value else ""
  if _CHECK_ONLY.value:
    if not source:
      raise app.UsageError("--check_only needs --manual_dir.")
    try:
      splits = folder.scan(source, _options(folder))
      for name, pairs in splits.items():
        n = sum(1 for _ in folder.decode(pairs, _options(folder), what=f"the {name} split"))
        print(f"{name}: {n} usable pairs")
    except folder.DataError as e:
      sys.exit(f"error: {e}")
    return

  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise app.UsageError(f"Building the TFDS dataset needs TensorFlow and tensorflow-datasets "
                         f"({e}): pip install -e '.[tfds]' (--check_only needs neither).")
  from segan_jax.data import isic2017_tfds

  tfds.display_progress_bar(True)
  data_dir = os.path.expanduser(_DATA_DIR.value) if _DATA_DIR.value else None
  builder = isic2017_tfds.Isic2017(
      data_dir=data_dir, mask_suffix=_MASK_SUFFIX.value, on_bad_pairs=_ON_BAD.value,
      size_check=_SIZE_CHECK.value, nonbinary_masks=_NONBINARY.value, workers=_WORKERS.value)
  if builder.is_prepared() and _OVERWRITE.value:
    logging.info("Removing %s.", builder.data_dir)
    shutil.rmtree(builder.data_dir)
    builder = isic2017_tfds.Isic2017(
        data_dir=data_dir, mask_suffix=_MASK_SUFFIX.value, on_bad_pairs=_ON_BAD.value,
        size_check=_SIZE_CHECK.value, nonbinary_masks=_NONBINARY.value, workers=_WORKERS.value)
  elif builder.is_prepared():
    print(f"{builder.data_dir} already exists (--overwrite rebuilds it).")
  try:
    isic2017_tfds.prepare(builder, source)
  except folder.DataError as e:
    sys.exit(f"error: {e}")
  splits = {name: info.num_examples for name, info in builder.info.splits.items()}
  print(f"isic2017 in {builder.data_dir}: {splits}")
  if _WRITE_VAL_IDS.value:
    ids = [r["id"] for r in isic2017_tfds.records(builder, "train", fields=("id",))]
    held = folder.holdout_ids(ids, _VAL_FRACTION.value, _SEED.value)
    folder.write_ids(_WRITE_VAL_IDS.value, held, f"held-out validation ids: fraction "
                     f"{_VAL_FRACTION.value}, seed {_SEED.value}, {len(held)} of {len(ids)}")
    print(f"{len(held)} held-out ids written to {_WRITE_VAL_IDS.value}")
  print(f"Train with: python -m segan_jax.main --workdir=runs/isic2017 "
        f"--config=segan_jax/configs/isic2017.py --config.data.source=tfds"
        f"{' --config.data.dir=' + data_dir if data_dir else ''}")


if __name__ == "__main__":
  app.run(main)
