"""Ablation driver: SegAN's ideas measured on the real ISIC 2017 training pairs.

  # train and score one row (every seed), or all rows; each run is resumable
  python experiments/ablation.py --data_dir=/data/isic2017 --out=runs/ablation \
      --rows=segan_paper --seeds=0,1
  # the ensemble of the segan_paper seeds, then the table
  python experiments/ablation.py --out=runs/ablation --ensemble=segan_paper --seeds=0,1,2
  python experiments/ablation.py --out=runs/ablation --table
  # paired per-image differences against the paper's SegAN, with bootstrap intervals
  python experiments/ablation.py --out=runs/ablation --compare=segan_paper,bce_only,dice_only
  # the same from the raw results kept in the repository, without training
  python experiments/ablation.py --out=runs/ablation \
      --results='experiments/results/*/reference_budget' --compare=segan_paper,authors_settings
  # what ensembling the seeds adds over its members, paired per image
  python experiments/ablation.py --out=runs/ablation --ensemble_gain=segan_paper
  # Jaccard of rows by the lesion's share of the image (masks read from --data_dir)
  python experiments/ablation.py --data_dir=/data/isic2017 \
      --results='experiments/results/*/reference_budget' --by_lesion_size=segan_paper,dice_only
  # rows ending in _post score another row's runs with post-processed masks (no training of
  # their own): train segan_paper first, then
  python experiments/ablation.py --data_dir=/data/isic2017 --out=runs/ablation \
      --rows=segan_paper_post --seeds=0,1

Protocol (CPU-feasible; every row the same): config default.py on data.source=folder; the
held-out ids are the seeded 10% hold-out of segan_jax.data.folder (data.seed 0), listed in
experiments/isic2017_heldout_ids.txt (--val_ids) and never trained on; validation on them every
--eval_every steps only draws the curves;
the last checkpoint of each run is scored at the run's final k and threshold 0.4 (nothing is
selected on the held-out ids), by the ISIC 2017 protocol at each image's original resolution,
with and without test-time flips. Each run writes OUT/<row>_s<seed>/eval/validation/summary.json.
"""

import argparse
import glob
import json
import os
import re
import subprocess
import sys
from typing import NamedTuple

import numpy as np

from segan_jax.configs import default, isic2017, isic2017_authors, isic2017_plus
from segan_jax.graceful_stop import EXIT_STOPPED
from segan_jax.workdir import flatten_config


class Row(NamedTuple):
  """One ablation row: a title, its config overrides (on top of the protocol's), the flags its
  runs are scored with, and the row whose runs it scores instead of training its own (None)."""
  title: str
  overrides: tuple[str, ...] = ()
  evaluate_flags: tuple[str, ...] = ()
  scores_runs_of: str | None = None


# Fields of the recipe configs that are the protocol's, not the recipe's: each row runs at the
# protocol's width, length, batch size, k schedule length, data and threshold.
PROTOCOL_FIELDS = ("model.width", "train.batch_size", "train.num_steps", "train.num_epochs",
                   "train.log_every", "train.eval_every", "train.checkpoint_every", "data.source",
                   "data.dir", "eval.threshold", "schedule.k_decay_epochs")


def recipe_overrides(recipe) -> tuple[str, ...]:
  """--config overrides that turn default.py, on which every row runs, into a recipe config's
  recipe (`recipe`: a config module such as configs/isic2017_authors.py): every field in which
  that config differs from default.py, protocol fields left out."""
  base = flatten_config(default.get_config().to_dict())
  fields = flatten_config(recipe.get_config().to_dict())
  changed = sorted(k for k in fields if k not in PROTOCOL_FIELDS and base.get(k) != fields[k])
  text = lambda v: "(" + ",".join(str(x) for x in v) + ")" if isinstance(v, (tuple, list)) else v
  return tuple(f"--config.{k}={text(fields[k])}" for k in changed)


# The settings the authors' code differs in from the paper's recipe, apart from the network,
# the schedule of the rate and the whole-image view.
AUTHORS_SETTINGS = ("--config.loss.dice_weight=1.0", "--config.loss.layer_weights=(1,1,2,2,2,2,4)",
                    "--config.loss.feature_reduction=concatenated",
                    "--config.optim.learning_rate=0.0002", "--config.optim.b1=0.5",
                    "--config.optim.schedule=constant", "--config.data.brightness=0.0",
                    "--config.data.contrast=0.0", "--config.data.saturation=0.0",
                    "--config.data.hue=0.0")

# isic2017_plus's recipe as overrides, shared by its row and the rows that take its critic away.
PLUS_RECIPE = recipe_overrides(isic2017_plus)


def plus_with(*settings: str) -> tuple[str, ...]:
  """isic2017_plus's overrides with each `field=value` setting replacing that field's, or added."""
  overrides = list(PLUS_RECIPE)
  for setting in settings:
    field = f"--config.{setting.split('=', 1)[0]}="
    at = next((i for i, o in enumerate(overrides) if o.startswith(field)), None)
    if at is None:
      overrides.append(f"--config.{setting}")
    else:
      overrides[at] = f"--config.{setting}"
  return tuple(overrides)


# isic2017_plus with the whole-image view three times in four, a cross-entropy term beside Dice
# and the paper's linear decay of the rate: the three changes that each scored a little higher.
PLUS_VIEW_BCE_LINEAR = plus_with("data.whole_image_prob=0.75", "optim.schedule=linear",
                                 "loss.bce_weight=1.0")

ROWS = {
    "segan_paper": Row("SegAN as in the paper's text (multi-scale L1, adaptive logistic, clip "
                       "0.05; crops only)"),
    "segan_authors": Row("SegAN as in the authors' code (+ Dice, weighted concatenated features)",
                         ("--config.loss.dice_weight=1.0",
                          "--config.loss.layer_weights=(1,1,2,2,2,2,4)",
                          "--config.loss.feature_reduction=concatenated")),
    "dice_only": Row("Segmentor alone, soft Dice (no critic)",
                     ("--config.loss.adversarial_weight=0.0", "--config.loss.dice_weight=1.0")),
    "bce_only": Row("Segmentor alone, binary cross-entropy (no critic)",
                    ("--config.loss.adversarial_weight=0.0", "--config.loss.bce_weight=1.0")),
    "sigmoid": Row("SegAN with a plain sigmoid (k fixed at 1)", ("--config.schedule.k_decay=1.0",)),
    "critic_gc": Row("SegAN with global convolutions in the critic",
                     ("--config.model.critic_global_conv=True",)),
    # Each remaining difference between the paper's recipe and the authors' code, on its own.
    "segan_authors_dice": Row(
        "SegAN as in the authors' code, with their exact Dice (squared sums, no smoothing)",
        ("--config.loss.dice_weight=1.0", "--config.loss.dice_form=authors",
         "--config.loss.layer_weights=(1,1,2,2,2,2,4)",
         "--config.loss.feature_reduction=concatenated")),
    "no_residual_bn": Row("SegAN without BatchNorm in the residual blocks (as the authors' code)",
                          ("--config.model.residual_batchnorm=False",)),
    "authors_optim": Row("SegAN with the authors' Adam (2e-4, b1 0.5, halved after epoch 0 and "
                         "every 25 epochs)",
                         ("--config.optim.learning_rate=0.0002", "--config.optim.b1=0.5",
                          "--config.optim.schedule=step_authors",
                          "--config.optim.end_learning_rate=1e-08")),
    "no_jitter": Row("SegAN without colour jitter (as the authors' code)",
                     ("--config.data.brightness=0.0", "--config.data.contrast=0.0",
                      "--config.data.saturation=0.0", "--config.data.hue=0.0")),
    "whole_image": Row("SegAN with the whole image resized instead of a crop half the time "
                       "(as the authors' code): configs/isic2017.py at the protocol's width, "
                       "length and batch", recipe_overrides(isic2017)),
    # configs/isic2017.py with its critic constrained otherwise, then with the critic removed.
    "isic2017_spectral_norm": Row("configs/isic2017.py with a spectrally normalised critic "
                                  "instead of clipped kernels",
                                  (*recipe_overrides(isic2017),
                                   "--config.train.critic_constraint=spectral_norm")),
    "isic2017_dice_only": Row("configs/isic2017.py without the critic: the segmentor alone, soft "
                              "Dice", (*recipe_overrides(isic2017),
                                       "--config.loss.adversarial_weight=0.0",
                                       "--config.loss.dice_weight=1.0")),
    "authors_recipe": Row("The authors' recipe (configs/isic2017_authors.py at the protocol's "
                          "width, length and batch)", recipe_overrides(isic2017_authors)),
    # isic2017_authors with Flax's initialisation in place of the authors'; then its remaining
    # departures from the authors' code, removed one at a time.
    "authors_recipe_lecun": Row("The authors' recipe with Flax's initialisation (LeCun-normal "
                                "kernels, BatchNorm scales 1) instead of theirs",
                                (*(o for o in recipe_overrides(isic2017_authors)
                                   if not o.startswith("--config.model.init=")),
                                 "--config.model.init=lecun")),
    "authors_recipe_reset": Row("The authors' recipe with both Adams re-created (moments reset) "
                                "at each decay of the rate, as their train.py",
                                (*recipe_overrides(isic2017_authors),
                                 "--config.optim.reset_at_decay=True")),
    # The authors' loss, optimizer and colour settings (constant rate), then with their view.
    "authors_settings": Row(
        "The authors' loss (+ Dice, weighted concatenated features), Adam 2e-4 b1 0.5 constant, "
        "no colour jitter; crops only; S's moving average (0.99) tracked",
        AUTHORS_SETTINGS + ("--config.train.ema_decay=0.99",)),
    "authors_settings_view": Row(
        "authors_settings with the whole image resized instead of a crop half the time",
        AUTHORS_SETTINGS + ("--config.train.ema_decay=0.99", "--config.data.whole_image_prob=0.5")),
    "isic2017_plus": Row("configs/isic2017_plus.py (the paper's recipe and what the ablation "
                         "shows helps) at the protocol's width, length and batch", PLUS_RECIPE),
    # isic2017_plus's recipe with its critic removed: the segmentor alone, with the same optimiser,
    # views, moving average and post-processing, trained by Dice or by cross-entropy.
    "plus_dice_only": Row("isic2017_plus without the critic: the segmentor alone, soft Dice",
                          PLUS_RECIPE + ("--config.loss.adversarial_weight=0.0",)),
    "plus_bce_only": Row("isic2017_plus without the critic: the segmentor alone, binary "
                         "cross-entropy",
                         plus_with("loss.adversarial_weight=0.0", "loss.dice_weight=0.0",
                                   "loss.bce_weight=1.0")),
    # isic2017_plus with one more change each: a critic constraint beyond clipping, the
    # authors' exact Dice term, the paper's colour jitter kept, the whole-image view more often,
    # a cross-entropy term beside Dice, transposed views beside the flips.
    "plus_spectral_norm": Row("isic2017_plus with a spectrally normalised critic instead of "
                              "clipped kernels",
                              PLUS_RECIPE + ("--config.train.critic_constraint=spectral_norm",)),
    "plus_authors_dice": Row("isic2017_plus with the authors' exact Dice (squared sums, no "
                             "smoothing)", PLUS_RECIPE + ("--config.loss.dice_form=authors",)),
    "plus_jitter": Row("isic2017_plus with the paper's colour jitter (brightness, contrast, "
                       "saturation 0.2, hue 0.02)",
                       tuple(o for o in PLUS_RECIPE if not any(
                           f"data.{j}=" in o for j in ("brightness", "contrast", "saturation",
                                                        "hue")))),
    "plus_whole_075": Row("isic2017_plus with the whole-image view three times in four instead of "
                          "half the time", plus_with("data.whole_image_prob=0.75")),
    "plus_bce_dice": Row("isic2017_plus with a binary cross-entropy term beside the soft Dice "
                         "term", PLUS_RECIPE + ("--config.loss.bce_weight=1.0",)),
    # The critic beside a pixel loss that does not measure overlap (plus_bce_only with the critic
    # kept), then the critic's multi-scale L1 as S's only loss: the paper's objective under
    # isic2017_plus's optimiser, views and moving average.
    "plus_bce_critic": Row("isic2017_plus with binary cross-entropy in place of the soft Dice term "
                           "beside the critic", plus_with("loss.dice_weight=0.0",
                                                          "loss.bce_weight=1.0")),
    "plus_critic_only": Row("isic2017_plus without the soft Dice term: the critic's multi-scale "
                            "L1 as S's only loss, as the paper's objective",
                            plus_with("loss.dice_weight=0.0")),
    "plus_linear": Row("isic2017_plus with the paper's linear decay of the rate to 0 over the "
                       "run instead of a constant rate", plus_with("optim.schedule=linear")),
    # isic2017_plus with the three changes that each scored a little higher at once, then the
    # same recipe without the critic (its segmentor alone by Dice and cross-entropy).
    "plus_view_bce_linear": Row("isic2017_plus with the whole-image view three times in four, a "
                                "cross-entropy term beside Dice and the rate decayed linearly to 0",
                                PLUS_VIEW_BCE_LINEAR),
    "plus_view_bce_linear_no_critic": Row("plus_view_bce_linear without the critic: the "
                                          "segmentor alone, soft Dice and cross-entropy",
                                          PLUS_VIEW_BCE_LINEAR
                                          + ("--config.loss.adversarial_weight=0.0",)),
    "plus_adversarial_3": Row("isic2017_plus with the critic's multi-scale L1 term weighted 3 "
                              "instead of 1 beside the soft Dice term",
                              plus_with("loss.adversarial_weight=3.0")),
    "plus_critic_steps_5": Row("isic2017_plus with five critic updates per segmentor update "
                               "(WGAN's n_critic) instead of one",
                               plus_with("train.critic_steps=5")),
    "plus_rot90": Row("isic2017_plus with transposed views half the time (all eight right-angle "
                      "rotations and reflections)", PLUS_RECIPE + ("--config.data.rot90=True",)),
    # Scarce labels: isic2017_plus and its segmentor alone trained on a seeded ninth of the
    # training pairs (data.train_limit; the same 200 for every seed, the held-out ids unchanged).
    # Run with --k_decay_epochs=250 so that k stays at 1 for the 1000 steps (125 epochs of 8
    # steps), as the full-data rows' 25 epochs of 72 steps keep it.
    "plus_200": Row("isic2017_plus trained on 200 of the 1800 training pairs",
                    plus_with("data.train_limit=200")),
    "plus_dice_only_200": Row("isic2017_plus without the critic (the segmentor alone, soft Dice) "
                              "trained on 200 of the 1800 training pairs",
                              plus_with("data.train_limit=200", "loss.adversarial_weight=0.0")),
    # Cheap improvements.
    "ema": Row("SegAN scored with the moving average of S's weights (decay 0.99)",
               ("--config.train.ema_decay=0.99",)),
    "spectral_norm": Row("SegAN with a spectrally normalised critic instead of clipped kernels",
                         ("--config.train.critic_constraint=spectral_norm",)),
    "segan_paper_post": Row("SegAN as in the paper, masks post-processed (largest region, holes "
                            "filled)", evaluate_flags=("--postprocess",),
                            scores_runs_of="segan_paper"),
    "authors_recipe_post": Row("The authors' recipe, masks post-processed (largest region, "
                               "holes filled)", evaluate_flags=("--postprocess",),
                               scores_runs_of="authors_recipe"),
}
METRICS = ("jaccard", "dice", "accuracy", "thresholded_jaccard")
# The 200 held-out ids of every run (segan_jax.data.folder's seeded 10% hold-out, data.seed 0, of
# the 2000 ISIC 2017 training pairs), committed so that the protocol can be checked.
HELDOUT_IDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "isic2017_heldout_ids.txt")


def run_name(row: str, seed: int) -> str:
  return f"{row}_s{seed}"


def train_and_score(args, row: str, seed: int) -> None:
  """Trains the row's run (resumable) and scores it into OUT/<row>_s<seed>/eval/validation; a row
  that scores another row's runs trains (or resumes) that row's run instead."""
  spec = ROWS[row]
  trained = spec.scores_runs_of or row
  workdir = os.path.join(args.out, run_name(trained, seed))
  common = [f"--config.data.source=folder", f"--config.data.dir={args.data_dir}",
            f"--config.data.val_ids_file={args.val_ids}",
            f"--config.model.width={args.width}", f"--config.train.num_steps={args.steps}",
            f"--config.train.batch_size={args.batch_size}", f"--config.train.seed={seed}",
            f"--config.train.eval_every={args.eval_every or args.steps}",
            f"--config.train.checkpoint_every={max(args.steps // 4, 1)}",
            f"--config.schedule.k_decay_epochs={args.k_decay_epochs}"]
  try:
    subprocess.run([sys.executable, "-m", "segan_jax.main", f"--workdir={workdir}", *common,
                    *ROWS[trained].overrides], check=True)
  except subprocess.CalledProcessError as e:
    if e.returncode != EXIT_STOPPED:
      raise
    print(f"{workdir}: training was stopped (SIGTERM) and saved the step it reached; rerun the "
          "same command to resume it.", file=sys.stderr)
    sys.exit(EXIT_STOPPED)
  output = os.path.join(args.out, run_name(row, seed), "eval", "validation")
  subprocess.run([sys.executable, "-m", "segan_jax.evaluate", f"--workdir={workdir}",
                  "--split=validation", "--tta", "--nouse_selection", "--threshold=0.4",
                  f"--output={output}", *spec.evaluate_flags], check=True)


def score_ensemble(args, row: str, seeds: list[int]) -> None:
  spec = ROWS[row]
  trained = spec.scores_runs_of or row
  workdirs = [f"--workdir={os.path.join(args.out, run_name(trained, s))}" for s in seeds]
  subprocess.run([sys.executable, "-m", "segan_jax.evaluate", *workdirs, "--split=validation",
                  "--tta", "--nouse_selection", "--threshold=0.4",
                  f"--output={os.path.join(args.out, f'{row}_ensemble', 'eval')}",
                  *spec.evaluate_flags], check=True)


def _variants(path: str) -> dict[str, dict[str, float]]:
  with open(path) as f:
    summary = json.load(f)
  return {name: v["summary"] for name, v in summary["variants"].items()}


_RUN_NAME = re.compile(r"(?P<row>.+)_s\d+")


def _scored_runs(args, row: str, filename: str) -> list[str]:
  """<filename> of every scored seed of the row: OUT/<row>_s<seed>/eval/validation/ as runs write
  it, then RESULTS/<row>_s<seed>/ for each --results folder of kept raw results (a seed found in
  an earlier folder is not read again). A folder given in place of a row is one scored run: a run
  folder (read under eval/validation/) or a kept <row>_s<seed>/ folder of raw results; one that
  holds no <filename> is an error."""
  if row not in ROWS and os.path.isdir(row):
    for inner in (("eval", "validation"), ()):
      if os.path.exists(path := os.path.join(row, *inner, filename)):
        return [path]
    raise SystemExit(f"{row}: no {filename} in it or in its eval/validation/; score the run "
                     "first (segan_jax.evaluate)")
  folders = [(args.out, ("eval", "validation"))]
  folders += [(d, ()) for d in args.results]
  found: dict[str, str] = {}
  for folder, inner in folders:
    if not os.path.isdir(folder):
      continue
    for name in sorted(os.listdir(folder)):
      match = _RUN_NAME.fullmatch(name)
      path = os.path.join(folder, name, *inner, filename)
      if match and match["row"] == row and name not in found and os.path.exists(path):
        found[name] = path
  return [found[name] for name in sorted(found)]


def _ensemble_file(args, row: str, filename: str) -> str | None:
  """<filename> of the row's scored ensemble: OUT/<row>_ensemble/eval/ as --ensemble writes it,
  else the first --results folder's kept <row>_ensemble/; None where there is none."""
  candidates = [os.path.join(args.out, f"{row}_ensemble", "eval", filename)]
  candidates += [os.path.join(d, f"{row}_ensemble", filename) for d in args.results]
  return next((p for p in candidates if os.path.exists(p)), None)


def table(args) -> str:
  """Markdown: mean (and min-max over seeds) of each metric, without and with test-time flips."""
  lines = ["| row | seeds | TTA | Jaccard | Dice | accuracy | thresholded Jaccard |",
           "|---|---|---|---|---|---|---|"]
  for row, spec in ROWS.items():
    title = spec.title
    found = _scored_runs(args, row, "summary.json")
    if not found:
      continue
    for variant, tta in (("model", "no"), ("model+tta", "flips")):
      values = {m: [100 * _variants(p)[variant][m] for p in found] for m in METRICS}
      cells = [f"{np.mean(v):.1f}" + (f" ({min(v):.1f}-{max(v):.1f})" if len(v) > 1 else "")
               for v in values.values()]
      lines.append(f"| {title} | {len(found)} | {tta} | " + " | ".join(cells) + " |")
    ensemble = _ensemble_file(args, row, "summary.json")
    if ensemble:
      variants = _variants(ensemble)
      for variant, tta in (("ensemble", "no"), ("ensemble+tta", "flips")):
        cells = [f"{100 * variants[variant][m]:.1f}" for m in METRICS]
        lines.append(f"| {title}: ensemble of the seeds | - | {tta} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _read_per_image(path: str) -> dict[str, dict[str, float]]:
  """A per_image_all_variants.csv as {variant: {image id: Jaccard}}."""
  import csv
  values: dict[str, dict[str, float]] = {}
  with open(path) as f:
    for r in csv.DictReader(f):
      values.setdefault(r["variant"], {})[r["id"]] = float(r["jaccard"])
  return values


def _per_image_jaccard(args, row: str, variant: str) -> tuple[dict[str, float], int]:
  """Each held-out image's Jaccard, averaged over the row's seeds; and the number of seeds."""
  paths = _scored_runs(args, row, "per_image_all_variants.csv")
  if not paths:
    searched = ", ".join([args.out, *args.results])
    raise SystemExit(f"no scored runs of row {row!r} in {searched}")
  values: dict[str, list[float]] = {}
  for path in paths:
    for i, jaccard in _read_per_image(path).get(variant, {}).items():
      values.setdefault(i, []).append(jaccard)
  return {i: float(np.mean(v)) for i, v in values.items()}, len(paths)


def _paired(a: dict[str, float], b: dict[str, float], b_name: str,
            draws: int) -> tuple[int, str]:
  """b - a over the images both hold: their number, and the mean difference in Jaccard points
  with a 95% bootstrap interval over images (whether a gap is larger than the choice of
  images)."""
  ids = sorted(set(a) & set(b))
  diff = np.array([b[i] - a[i] for i in ids])
  rng = np.random.default_rng(0)
  boot = diff[rng.integers(0, len(diff), (draws, len(diff)))].mean(axis=1)
  lo, hi = np.percentile(boot, [2.5, 97.5])
  return len(ids), (f"Jaccard {100 * diff.mean():+.2f} points, 95% bootstrap interval "
                    f"[{100 * lo:+.2f}, {100 * hi:+.2f}]; {b_name} better on "
                    f"{int((diff > 0).sum())} images, worse on {int((diff < 0).sum())}")


def compare(args, row_a: str, row_b: str, variant: str = "model", draws: int = 10000) -> str:
  """Paired difference of mean Jaccard (b - a) over the held-out images, seed-averaged per
  image."""
  a, na = _per_image_jaccard(args, row_a, variant)
  b, nb = _per_image_jaccard(args, row_b, variant)
  count, paired = _paired(a, b, row_b, draws)
  return f"{row_b} ({nb} seeds) - {row_a} ({na} seeds), {variant}, {count} images: {paired}"


def tta_gain(args, row: str, draws: int = 10000) -> str:
  """What test-time flips add to the row's own runs: the paired difference of each image's
  Jaccard with and without them (seed-averaged per image)."""
  plain, seeds = _per_image_jaccard(args, row, "model")
  flipped, _ = _per_image_jaccard(args, row, "model+tta")
  count, paired = _paired(plain, flipped, "flips", draws)
  return f"{row} ({seeds} seeds), flips - no flips, {count} images: {paired}"


def ensemble_gain(args, row: str, draws: int = 10000) -> list[str]:
  """What ensembling adds: each image's Jaccard of the row's scored ensemble against the mean of
  its own members' on that image (the same runs, scored in the same evaluation), without and
  with test-time flips."""
  path = _ensemble_file(args, row, "per_image_all_variants.csv")
  if path is None:
    raise SystemExit(f"no scored ensemble of row {row!r} in {', '.join([args.out, *args.results])}"
                     f"; score one with --ensemble={row} --seeds=...")
  values = _read_per_image(path)
  lines = []
  for suffix in ("", "+tta"):
    members = [v for name, v in values.items()
               if re.fullmatch(r"member_\d+" + re.escape(suffix), name)]
    if "ensemble" + suffix not in values or not members:
      continue
    mean = {i: float(np.mean([m[i] for m in members])) for i in members[0]}
    count, paired = _paired(mean, values["ensemble" + suffix], "the ensemble", draws)
    variant = "model+tta" if suffix else "model"
    lines.append(f"{row} ensemble of {len(members)} - its members' mean, {variant}, {count} "
                 f"images: {paired}")
  if not lines:
    raise SystemExit(f"{path}: no ensemble and member_<i> variants in it")
  return lines


# Bins of the lesion's share of the image (ground truth, original resolution): small, medium,
# large; large lesions scored worst on official images.
LESION_BINS = (0.0, 0.1, 0.3, 1.0)


def lesion_fractions(data_dir: str, ids) -> dict[str, float]:
  """Each id's share of its image that the ground-truth lesion covers, from its mask at original
  resolution, read as the scorer reads ground truth."""
  from segan_jax import metrics
  from segan_jax.data import folder
  pairs = {p.id: p for split in folder.scan(data_dir).values() for p in split}
  missing = sorted(set(ids) - set(pairs))
  if missing:
    raise SystemExit(f"{data_dir}: no ground-truth mask for {len(missing)} scored ids, e.g. "
                     f"{missing[:3]}; --data_dir must name the folder the runs were scored on")
  fractions = {}
  for i in ids:
    if pairs[i].mask is None:
      raise SystemExit(f"{pairs[i].image}: no ground-truth mask beside it in {data_dir}")
    mask, _, _ = folder.decode_mask(pairs[i].mask)
    fractions[i] = float(metrics.binarize_truth(mask).mean())
  return fractions


def by_lesion_size(args, rows: list[str], variant: str = "model") -> str:
  """Markdown: each row's Jaccard (seed-averaged per image) by the lesion's share of the image,
  in the LESION_BINS, on the images every row scored."""
  scores = {row: _per_image_jaccard(args, row, variant) for row in rows}
  ids = sorted(set.intersection(*(set(j) for j, _ in scores.values())))
  fraction = lesion_fractions(args.data_dir, ids)
  bins = list(zip(LESION_BINS[:-1], LESION_BINS[1:]))
  members = [[i for i in ids if lo <= fraction[i] < hi or (hi == 1.0 and fraction[i] == 1.0)]
             for lo, hi in bins]
  head = " | ".join(f"{100 * lo:.0f}-{100 * hi:.0f}% ({len(m)} images)"
                    for (lo, hi), m in zip(bins, members))
  lines = [f"Jaccard by the lesion's share of the image ({variant}, {len(ids)} images)", "",
           f"| row | seeds | all | {head} |", "|---|---|---|" + "---|" * len(bins)]
  for row, (jaccard, seeds) in scores.items():
    cells = [f"{100 * np.mean([jaccard[i] for i in m]):.1f}" if m else "-" for m in members]
    lines.append(f"| {row} | {seeds} | {100 * np.mean([jaccard[i] for i in ids]):.1f} | "
                 + " | ".join(cells) + " |")
  return "\n".join(lines)


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
  parser.add_argument("--results", default="",
                      help="comma-separated folders (or glob patterns) of kept raw results "
                           "(<row>_s<seed>/summary.json and per_image_all_variants.csv, as in "
                           "experiments/results/*/reference_budget, and <row>_ensemble/ for "
                           "an ensemble) that --table, --compare and the gains read besides "
                           "--out")
  parser.add_argument("--table", action="store_true")
  parser.add_argument("--compare", default="",
                      help="ROW_A,ROW_B[,...]: paired per-image Jaccard differences of each later "
                           "row against ROW_A, with bootstrap intervals (no flips, and flips); a "
                           "folder in place of a row is one scored run (a run folder, or a kept "
                           "<row>_s<seed>/ folder), e.g. the same seed trained for longer")
  parser.add_argument("--tta_gain", default="",
                      help="ROW,ROW,...: paired per-image Jaccard of each row's runs with "
                           "test-time flips against the same runs without them")
  parser.add_argument("--ensemble_gain", default="",
                      help="ROW,ROW,...: paired per-image Jaccard of each row's scored ensemble "
                           "(--ensemble) against the mean of its members, without and with flips")
  parser.add_argument("--by_lesion_size", default="",
                      help="ROW,ROW,...: each row's Jaccard by the lesion's share of the image "
                           "(small, medium, large lesions; needs --data_dir for the masks)")
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
  if (rows or args.by_lesion_size) and not args.data_dir:
    parser.error("--data_dir (or SEGAN_ISIC2017_DIR) must name the folder of real ISIC 2017 pairs")
  args.data_dir = os.path.abspath(args.data_dir) if args.data_dir else ""
  args.val_ids = os.path.abspath(args.val_ids)
  matches = {p: [d for d in sorted(glob.glob(p)) if os.path.isdir(d)]
             for p in args.results.split(",") if p}
  missing = [p for p, folders in matches.items() if not folders]
  if missing:
    parser.error(f"--results: no folder matches {missing}")
  args.results = [d for folders in matches.values() for d in folders]
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
  for row in [r for r in args.tta_gain.split(",") if r]:
    print(tta_gain(args, row))
  for row in [r for r in args.ensemble_gain.split(",") if r]:
    print("\n".join(ensemble_gain(args, row)))
  if args.by_lesion_size:
    print(by_lesion_size(args, [r for r in args.by_lesion_size.split(",") if r]))


if __name__ == "__main__":
  main()
