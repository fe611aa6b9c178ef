"""Splits a folder of ISIC 2017 training pairs into train/ and test/ folders of symlinks.

  python experiments/isic_holdout_split.py --data=/data/isic2017 --out=/tmp/isic_split \
      [--test_size=200] [--seed=2017]

Writes OUT/{train,test}/{images,masks}/ (the generic folder layout of segan_jax.data.folder:
images/<id>.jpg, masks/<id>_segmentation.png, linked, not copied) and OUT/test_ids.txt. Train on
OUT with --config.data.source=folder --config.data.dir=OUT (the validation split is then the
seeded hold-out of config.data.val_fraction of train/), select with `segan_jax.evaluate --search`
on validation, and report `segan_jax.evaluate --split=test`: the test ids play no part in
training or selection.
"""

import argparse
import os
import random


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", required=True, help="folder with ISIC-2017_Training_Data/ and "
                      "ISIC-2017_Training_Part1_GroundTruth/")
  parser.add_argument("--out", required=True, help="output folder (created; must not exist)")
  parser.add_argument("--test_size", type=int, default=200)
  parser.add_argument("--seed", type=int, default=2017)
  args = parser.parse_args()

  data = os.path.abspath(args.data)
  images = os.path.join(data, "ISIC-2017_Training_Data")
  masks = os.path.join(data, "ISIC-2017_Training_Part1_GroundTruth")
  ids = sorted(f[:-4] for f in os.listdir(images) if f.endswith(".jpg"))
  if not 0 < args.test_size < len(ids):
    raise SystemExit(f"--test_size must be between 1 and {len(ids) - 1}.")
  test = set(random.Random(args.seed).sample(ids, args.test_size))
  os.makedirs(args.out)
  for split in ("train", "test"):
    for sub in ("images", "masks"):
      os.makedirs(os.path.join(args.out, split, sub))
  for image_id in ids:
    split = "test" if image_id in test else "train"
    os.symlink(os.path.join(images, f"{image_id}.jpg"),
               os.path.join(args.out, split, "images", f"{image_id}.jpg"))
    name = f"{image_id}_segmentation.png"
    os.symlink(os.path.join(masks, name), os.path.join(args.out, split, "masks", name))
  with open(os.path.join(args.out, "test_ids.txt"), "w") as f:
    f.write("".join(f"{i}\n" for i in sorted(test)))
  print(f"{len(ids) - len(test)} training and {len(test)} test pairs linked under {args.out}.")


if __name__ == "__main__":
  main()
