"""The SegAN authors' own training loop on the ISIC pairs of a folder, scored by segan_jax's scorer
on held-out ids: the calibration point for configs/isic2017_authors.py.

Trains with their code, imported at run time from a checkout of YuanXue1993/SegAN (commit
aa892a6; nothing of it is part of segan_jax): their NetS and NetC (net.py, fixed for a current CPU
PyTorch by experiments/authors_code.py), their training Dataset (LoadData.py: resize to 180x135,
random flips, then half the time the whole image resized to 128x128, else a random 128x128 crop;
no colour jitter) and their iteration (train.py: C's step with parameters clamped to +-0.05, then
S's step on mean |C(fake) - C(real)| plus their Dice loss). As in their train.py, Adam (2e-4,
beta1 0.5) is re-created at half the rate after each epoch whose index is a multiple of 25 (the
first after epoch 0). Two departures, both flags: training stops after --steps iterations (their
loop runs 10000 epochs and keeps the checkpoint of best test-set Jaccard; here nothing is selected
on the held-out ids), and the data loader runs in the main process.

Their Dataset reads the official folder layout, so the training pairs (every pair of --data_dir
whose id is not in --val_ids) are linked into OUT/data/ first. The held-out images go through
their test-time view (Dataset_val: the whole image resized to 128x128, ImageNet normalisation),
S in eval mode, then the sigmoid; the maps are scored by segan_jax (segan_jax.evaluate.score: the
ISIC 2017 protocol at each image's original resolution) at --threshold, without and with
test-time flips, into OUT/eval/validation/{summary.json, per_image_all_variants.csv}, the layout
of experiments/ablation.py's runs, so that `ablation.py --compare=authors_code,authors_recipe`
pairs them (name OUT as <runs>/authors_code_s<seed>).

Needs torch and torchvision next to segan_jax (their LoadData.py imports torchvision):

  python -m venv /tmp/authorsvenv && /tmp/authorsvenv/bin/pip install torch==2.14.1 \
      torchvision==0.29.1 && /tmp/authorsvenv/bin/pip install -e .
  /tmp/authorsvenv/bin/python experiments/authors_training.py --authors_dir=<SegAN checkout> \
      --data_dir=/data/isic2017 --out=runs/ref/authors_code_s0 --seed=0 --width=16 \
      --batch_size=25 --steps=1000
"""

from __future__ import annotations

import argparse
import collections
import collections.abc
import importlib
import os
import random
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
HELDOUT_IDS = HERE / "isic2017_heldout_ids.txt"
IMAGES, MASKS = "ISIC-2017_Training_Data", "ISIC-2017_Training_Part1_GroundTruth"
# Their Dataset_val reads these folder names (the official Test_v2 layout).
VAL_IMAGES, VAL_MASKS = "ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth"


def link_pairs(data_dir: Path, ids: list[str], root: Path, images: str, masks: str) -> None:
  """Symlinks each id's image and mask of data_dir's official layout into root/images, root/masks."""
  for folder in (images, masks):
    (root / folder).mkdir(parents=True, exist_ok=True)
  for image_id in ids:
    for folder, src_folder, name in (
        (images, IMAGES, f"{image_id}.jpg"),
        (masks, MASKS, f"{image_id}_segmentation.png")):
      src = data_dir / src_folder / name
      if not src.is_file():
        raise SystemExit(f"{src} not found: --data_dir must hold the official ISIC 2017 layout "
                         f"({IMAGES}/, {MASKS}/)")
      dst = root / folder / name
      if not dst.is_symlink():
        dst.symlink_to(src)


def split_ids(data_dir: Path, val_ids_file: Path) -> tuple[list[str], list[str]]:
  """(training ids, held-out ids) of data_dir: every pair not held out trains."""
  folder = data_dir / IMAGES
  if not folder.is_dir():
    raise SystemExit(f"{folder} not found: --data_dir must hold the official ISIC 2017 layout")
  all_ids = sorted(p.stem for p in folder.glob("*.jpg"))
  from segan_jax.data.folder import read_ids
  held = read_ids(str(val_ids_file))
  if not held:
    raise SystemExit(f"{val_ids_file}: no ids")
  missing = sorted(set(held) - set(all_ids))
  if missing:
    raise SystemExit(f"{val_ids_file}: {len(missing)} ids are not in {folder} (e.g. {missing[0]})")
  held_set = set(held)
  return [i for i in all_ids if i not in held_set], sorted(held)


def import_authors_loader(authors_dir: Path):
  """Their LoadData module. transform.py checks sizes against `collections.Iterable`, which
  Python 3.10 removed: it is pointed at collections.abc.Iterable first."""
  if not (authors_dir / "LoadData.py").is_file():
    raise SystemExit(f"{authors_dir}/LoadData.py not found: --authors_dir must name a checkout of "
                     "the authors' SegAN repository")
  if not hasattr(collections, "Iterable"):
    collections.Iterable = collections.abc.Iterable
  sys.path.insert(0, str(authors_dir))
  try:
    return importlib.import_module("LoadData")
  finally:
    sys.path.pop(0)


def train(args, segan, loader_module, root: Path, log) -> None:
  """Their train.py's loop for args.steps iterations; Adam re-created at each decay."""
  import torch
  dataset = loader_module.Dataset(str(root))
  if len(dataset) == 0:
    raise SystemExit(f"no training pairs under {root}")
  dataloader = loader_module.loader(dataset, args.batch_size, num_workers=0)
  lr, step, epoch = args.lr, 0, 0
  start = time.time()
  while step < args.steps:
    for images, labels in dataloader:
      stats = segan.train_step(images, labels.type(torch.FloatTensor))
      step += 1
      if step % args.log_every == 0 or step == args.steps:
        log(f"step {step}: critic loss {float(stats['critic_loss']):.4f}, segmentor L1 "
            f"{float(stats['segmentor_loss']):.4f}, lr {lr:g}, {time.time() - start:.0f} s")
      if step >= args.steps:
        return
    if epoch % args.decay_epochs == 0:
      lr = max(lr * args.decay, 1e-8)
      segan.opt_s = torch.optim.Adam(segan.segmentor.parameters(), lr=lr, betas=(args.beta1, 0.999))
      segan.opt_c = torch.optim.Adam(segan.critic.parameters(), lr=lr, betas=(args.beta1, 0.999))
    epoch += 1


def heldout_probabilities(segan, loader_module, root: Path, ids: list[str]) -> dict:
  """{variant: (M, 128, 128, 1) probabilities in the order of ids}: their test-time view, S in
  eval mode; 'model' the image as is, 'model+tta' the mean over the four flips."""
  import torch
  dataset = loader_module.Dataset_val(str(root))
  names = [Path(p).stem for p in dataset.input_paths]
  if names != ids:
    raise SystemExit("the linked held-out images do not match --val_ids")
  plain, flipped = [], []
  for index in range(len(dataset)):
    image = dataset[index][0].unsqueeze(0)
    views = [image, image.flip(2), image.flip(3), image.flip(2).flip(3)]
    probs = segan.predict_probs(torch.cat(views, 0))
    back = [probs[0], probs[1].flip(1), probs[2].flip(2), probs[3].flip(1).flip(2)]
    plain.append(back[0][0].numpy())
    flipped.append(torch.stack(back).mean(0)[0].numpy())
  return {"model": np.stack(plain)[..., None], "model+tta": np.stack(flipped)[..., None]}


def score(args, variants: dict, ids: list[str], out: Path, log) -> dict:
  """Scores each variant with segan_jax's scorer at the original resolution; writes the files
  experiments/ablation.py reads."""
  from segan_jax.configs import isic2017
  from segan_jax.evaluate import load_eval_set, score as score_probs, write_csv, write_json
  config = isic2017.get_config()
  config.data.source = "folder"
  config.data.dir = str(args.data_dir)
  config.data.val_ids_file = str(args.val_ids)
  eval_set = load_eval_set(config, "validation", 128)
  order = [ids.index(i) for i in eval_set.ids]
  summary = {"split": "validation", "threshold": args.threshold,
             "data": {"source": "folder", "dir": str(args.data_dir),
                      "num_images": len(eval_set)},
             "protocol": ("ISIC 2017 Part 1: maps resized bilinearly to each image's original "
                          "size, binarised at the threshold, metrics per image then averaged over "
                          "images"),
             "trained_by": "the authors' train.py loop (experiments/authors_training.py)",
             "training": {k: (str(v) if isinstance(v, Path) else v)
                          for k, v in vars(args).items() if k != "authors_dir"},
             "variants": {}}
  rows = []
  for name, probs in variants.items():
    acc = score_probs(probs[order], eval_set, args.threshold)
    s = acc.summary()
    summary["variants"][name] = {"summary": s, "threshold": args.threshold,
                                 "tta": name.endswith("+tta")}
    rows.extend({"variant": name, **row} for row in acc.rows())
    log(f"{name}: Jaccard {s['jaccard']:.4f}, Dice {s['dice']:.4f}, accuracy "
        f"{s['accuracy']:.4f}, thresholded Jaccard {s['thresholded_jaccard']:.4f}")
  target = out / "eval" / "validation"
  target.mkdir(parents=True, exist_ok=True)
  write_json(str(target / "summary.json"), summary)
  write_csv(str(target / "per_image_all_variants.csv"), rows)
  return summary


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--authors_dir", type=Path, required=True,
                      help="checkout of YuanXue1993/SegAN (their net.py, train.py, LoadData.py)")
  parser.add_argument("--data_dir", type=Path, required=True,
                      help="ISIC 2017 pairs in the official layout (Training_Data, Part1_GroundTruth)")
  parser.add_argument("--val_ids", type=Path, default=HELDOUT_IDS,
                      help="held-out ids: never trained on, scored at the end")
  parser.add_argument("--out", type=Path, required=True)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--width", type=int, default=64, help="their ndf (64 in their code)")
  parser.add_argument("--batch_size", type=int, default=36)
  parser.add_argument("--steps", type=int, default=1000)
  parser.add_argument("--lr", type=float, default=2e-4)
  parser.add_argument("--beta1", type=float, default=0.5)
  parser.add_argument("--decay", type=float, default=0.5)
  parser.add_argument("--decay_epochs", type=int, default=25)
  parser.add_argument("--align_corners", action=argparse.BooleanOptionalAction, default=True,
                      help="upsampling as PyTorch 0.3 did it (their code's; default), or today's")
  parser.add_argument("--threshold", type=float, default=0.4)
  parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
  parser.add_argument("--log_every", type=int, default=50)
  args = parser.parse_args()
  args.data_dir, args.val_ids = args.data_dir.resolve(), args.val_ids.resolve()
  args.out.mkdir(parents=True, exist_ok=True)
  logfile = open(args.out / "log.txt", "a")

  def log(message: str) -> None:
    print(message, flush=True)
    logfile.write(message + "\n")
    logfile.flush()

  import torch
  sys.path.insert(0, str(HERE))
  from authors_code import AuthorsSegAN, load_authors_net
  warnings.filterwarnings("ignore", message=".*upsample.*deprecated")
  if args.threads:
    torch.set_num_threads(args.threads)
  random.seed(args.seed)
  np.random.seed(args.seed)
  train_ids, held_ids = split_ids(args.data_dir, args.val_ids)
  root = args.out / "data"
  link_pairs(args.data_dir, train_ids, root, IMAGES, MASKS)
  link_pairs(args.data_dir, held_ids, root, VAL_IMAGES, VAL_MASKS)
  log(f"{len(train_ids)} training pairs, {len(held_ids)} held out; width {args.width}, batch "
      f"{args.batch_size}, {args.steps} iterations, seed {args.seed}")
  loader_module = import_authors_loader(args.authors_dir.resolve())
  net = load_authors_net(args.authors_dir, args.width, align_corners=args.align_corners)
  segan = AuthorsSegAN(net, lr=args.lr, b1=args.beta1, seed=args.seed)
  checkpoint = args.out / f"NetS_step_{args.steps}.pth"
  if checkpoint.exists():
    segan.segmentor.load_state_dict(torch.load(checkpoint))
    log(f"loaded {checkpoint}")
  else:
    train(args, segan, loader_module, root, log)
    torch.save(segan.segmentor.state_dict(), str(checkpoint) + ".tmp")
    os.replace(str(checkpoint) + ".tmp", checkpoint)
  variants = heldout_probabilities(segan, loader_module, root, held_ids)
  score(args, variants, held_ids, args.out, log)


if __name__ == "__main__":
  main()
