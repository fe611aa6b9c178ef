"""Ablation driver: SegAN's ideas measured on the real ISIC 2017 training pairs.

  # train and score one row (every seed), or all rows; each run is resumable
  python experiments/ablation.py --data_dir=/data/isic2017 --out=runs/ablation \
      --rows=segan_paper --seeds=0,1
  # the ensemble of the segan_paper seeds, then the table
  python experiments/ablation.py --out=runs/ablation --ensemble=segan_paper --seeds=0,1,2
  python experiments/ablation.py --out=runs/ablation --table
  # paired per-image differences against the paper's SegAN, with bootstrap intervals
  python experiments/ablation.py --out=runs/ablation --compare=segan_paper,bce_only,dice_only

Protocol (CPU-feasible; every row the same): config default.py on data.source=folder; the
held-out ids are the seeded 10% hold-out of segan_jax.data.folder (data.seed 0), listed in
experiments/isic2017_heldout_ids.txt (--val_ids) and never trained on; validation on them every
--eval_every steps only draws the curves;
the last checkpoint of each run is scored at the run's final k and threshold 0.4 (nothing is
selected on the held-out ids), by the ISIC 2017 protocol at each image's original resolution,
with and without test-time flips. Each run writes OUT/<row>_s<seed>/eval/validation/summary.json.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

ROWS = {
    "segan_paper": ("SegAN as in the paper (multi-scale L1, adaptive logistic, clip 0.05)", []),
    "segan_authors": ("SegAN as in the authors' code (+ Dice, weighted concatenated features)",
                      ["--config.loss.dice_weight=1.0",
                       "--config.loss.layer_weights=(1,1,2,2,2,2,4)",
                       "--config.loss.feature_reduction=concatenated"]),
    "dice_only": ("Segmentor alone, soft Dice (no critic)",
                  ["--config.loss.adversarial_weight=0.0", "--config.loss.dice_weight=1.0"]),
    "bce_only": ("Segmentor alone, binary cross-entropy (no critic)",
                 ["--config.loss.adversarial_weight=0.0", "--config.loss.bce_weight=1.0"]),
    "sigmoid": ("SegAN with a plain sigmoid (k fixed at 1)", ["--config.schedule.k_decay=1.0"]),
    "critic_gc": ("SegAN with global convolutions in the critic",
                  ["--config.model.critic_global_conv=True"]),
}
METRICS = ("jaccard", "dice", "accuracy", "thresholded_jaccard")
# The 200 held-out ids of every run (segan_jax.data.folder's seeded 10% hold-out, data.seed 0, of
# the 2000 ISIC 2017 training pairs), committed so that the protocol can be checked.
HELDOUT_IDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "isic2017_heldout_ids.txt")


def run_name(row: str, seed: int) -> str:
  return f"{row}_s{seed}"


def train_and_score(args, row: str, seed: int) -> None:
  workdir = os.path.join(args.out, run_name(row, seed))
  common = [f"--config.data.source=folder", f"--config.data.dir={args.data_dir}",
            f"--config.data.val_ids_file={args.val_ids}",
            f"--config.model.width={args.width}", f"--config.train.num_steps={args.steps}",
            f"--config.train.batch_size={args.batch_size}", f"--config.train.seed={seed}",
            f"--config.train.eval_every={args.eval_every or args.steps}",
            f"--config.train.checkpoint_every={max(args.steps // 4, 1)}",
            f"--config.schedule.k_decay_epochs={args.k_decay_epochs}"]
  subprocess.run([sys.executable, "-m", "segan_jax.main", f"--workdir={workdir}", *common,
                  *ROWS[row][1]], check=True)
  subprocess.run([sys.executable, "-m", "segan_jax.evaluate", f"--workdir={workdir}",
                  "--split=validation", "--tta", "--nouse_selection", "--threshold=0.4"],
                 check=True)


def score_ensemble(args, row: str, seeds: list[int]) -> None:
  workdirs = [f"--workdir={os.path.join(args.out, run_name(row, s))}" for s in seeds]
  subprocess.run([sys.executable, "-m", "segan_jax.evaluate", *workdirs, "--split=validation",
                  "--tta", "--nouse_selection", "--threshold=0.4",
                  f"--output={os.path.join(args.out, f'{row}_ensemble', 'eval')}"], check=True)


def _variants(path: str) -> dict[str, dict[str, float]]:
  with open(path) as f:
    summary = json.load(f)
  return {name: v["summary"] for name, v in summary["variants"].items()}


def _scored_runs(out: str, row: str, filename: str) -> list[str]:
  """OUT/<row>_s<seed>/eval/validation/<filename> of every seed of the row that was scored."""
  runs = sorted(d for d in os.listdir(out) if d.startswith(row + "_s"))
  paths = [os.path.join(out, d, "eval", "validation", filename) for d in runs]
  return [p for p in paths if os.path.exists(p)]


def table(args) -> str:
  """Markdown: mean (and min-max over seeds) of each metric, without and with test-time flips."""
  lines = ["| row | seeds | TTA | Jaccard | Dice | accuracy | thresholded Jaccard |",
           "|---|---|---|---|---|---|---|"]
  for row, (title, _) in ROWS.items():
    found = _scored_runs(args.out, row, "summary.json")
    if not found:
      continue
    for variant, tta in (("model", "no"), ("model+tta", "flips")):
      values = {m: [100 * _variants(p)[variant][m] for p in found] for m in METRICS}
      cells = [f"{np.mean(v):.1f}" + (f" ({min(v):.1f}-{max(v):.1f})" if len(v) > 1 else "")
               for v in values.values()]
      lines.append(f"| {title} | {len(found)} | {tta} | " + " | ".join(cells) + " |")
    ensemble = os.path.join(args.out, f"{row}_ensemble", "eval", "summary.json")
    if os.path.exists(ensemble):
      variants = _variants(ensemble)
      for variant, tta in (("ensemble", "no"), ("ensemble+tta", "flips")):
        cells = [f"{100 * variants[variant][m]:.1f}" for m in METRICS]
        lines.append(f"| {title}: ensemble of the seeds | - | {tta} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _per_image_jaccard(args, row: str, variant: str) -> tuple[dict[str, float], int]:
  """Each held-out image's Jaccard, averaged over the row's seeds; and the number of seeds."""
  import csv
  paths = _scored_runs(args.out, row, "per_image_all_variants.csv")
  if not paths:
    raise SystemExit(f"no scored runs of row {row!r} in {args.out}")
  values: dict[str, list[float]] = {}
  for path in paths:
    with open(path) as f:
      for r in csv.DictReader(f):
        if r["variant"] == variant:
          values.setdefault(r["id"], []).append(float(r["jaccard"]))
  return {i: float(np.mean(v)) for i, v in values.items()}, len(paths)


def compare(args, row_a: str, row_b: str, variant: str = "model", draws: int = 10000) -> str:
  """Paired difference of mean Jaccard (b - a) over the held-out images, seed-averaged per image,
  with a 95% bootstrap interval over images: whether a gap is larger than the choice of images."""
  a, na = _per_image_jaccard(args, row_a, variant)
  b, nb = _per_image_jaccard(args, row_b, variant)
  ids = sorted(set(a) & set(b))
  diff = np.array([b[i] - a[i] for i in ids])
  rng = np.random.default_rng(0)
  boot = diff[rng.integers(0, len(diff), (draws, len(diff)))].mean(axis=1)
  lo, hi = np.percentile(boot, [2.5, 97.5])
  return (f"{row_b} ({nb} seeds) - {row_a} ({na} seeds), {variant}, {len(ids)} images: "
          f"Jaccard {100 * diff.mean():+.2f} points, 95% bootstrap interval "
          f"[{100 * lo:+.2f}, {100 * hi:+.2f}]; {row_b} better on {int((diff > 0).sum())} images, "
          f"worse on {int((diff < 0).sum())}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default=os.environ.get("SEGAN_ISIC2017_DIR", ""),
                      help="folder of the real ISIC 2017 training pairs in the official layout "
                           "(default: $SEGAN_ISIC2017_DIR); needed to train rows")
  parser.add_argument("--out", default="runs/ablation")
  parser.add_argument("--rows", default="", help=f"comma-separated, from {list(ROWS)}, or 'all'")
  parser.add_argument("--seeds", default="0")
  parser.add_argument("--ensemble", default="", help="a row whose seeds to ensemble")
  parser.add_argument("--val_ids", default=HELDOUT_IDS,
                      help="held-out ids file: read if it exists, else the seeded hold-out "
                           "(data.seed 0, 10%%) is written there")
  parser.add_argument("--table", action="store_true")
  parser.add_argument("--compare", default="",
                      help="ROW_A,ROW_B[,...]: paired per-image Jaccard differences of each later "
                           "row against ROW_A, with bootstrap intervals (no flips, and flips)")
  parser.add_argument("--width", type=int, default=8)
  parser.add_argument("--steps", type=int, default=600)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--k_decay_epochs", type=int, default=1)
  parser.add_argument("--eval_every", type=int, default=100,
                      help="steps between validations on the held-out ids (curves only: nothing "
                           "is selected on them; 0 = once, at the end)")
  args = parser.parse_args()
  seeds = [int(s) for s in args.seeds.split(",") if s]
  rows = list(ROWS) if args.rows == "all" else [r for r in args.rows.split(",") if r]
  unknown = [r for r in rows + ([args.ensemble] if args.ensemble else []) if r not in ROWS]
  if unknown:
    parser.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
  if rows and not args.data_dir:
    parser.error("--data_dir (or SEGAN_ISIC2017_DIR) must name the folder of real ISIC 2017 pairs")
  args.data_dir = os.path.abspath(args.data_dir) if args.data_dir else ""
  args.val_ids = os.path.abspath(args.val_ids)
  for row in rows:
    for seed in seeds:
      train_and_score(args, row, seed)
  if args.ensemble:
    score_ensemble(args, args.ensemble, seeds)
  if args.table:
    print(table(args))
  if args.compare:
    base, *others = [r for r in args.compare.split(",") if r]
    for other in others:
      for variant in ("model", "model+tta"):
        print(compare(args, base, other, variant))


if __name__ == "__main__":
  main()
