"""Ablation driver: SegAN's ideas measured on the real ISIC 2017 training pairs.

  # train and score one row (every seed), or all rows; each run is resumable
  python experiments/ablation.py --data_dir=/data/isic2017 --out=runs/ablation \
      --rows=segan_paper --seeds=0,1
  # the ensemble of the segan_paper seeds, then the table
  python experiments/ablation.py --out=runs/ablation --ensemble=segan_paper --seeds=0,1,2
  python experiments/ablation.py --out=runs/ablation --table
  # differences against the paper's SegAN, with intervals over seeds and images together
  python experiments/ablation.py --out=runs/ablation --compare=segan_paper,bce_only,dice_only
  # the same from the raw results kept in the repository, without training
  python experiments/ablation.py --out=runs/ablation \
      --results='experiments/results/*/reference_budget' --compare=segan_paper,authors_settings
  # what ensembling the seeds adds over its members, paired per image
  python experiments/ablation.py --out=runs/ablation --ensemble_gain=segan_paper
  # the same runs scored two ways (S's moving average against its raw weights), paired by seed
  python experiments/ablation.py --results='experiments/results/*/reference_budget' \
      --compare=ema_raw,ema --same_runs
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

Comparisons (--compare, --tta_gain, --ensemble_gain) give the difference of mean Jaccard with a
95% percentile interval of a hierarchical bootstrap: each of 10000 draws (fixed RNG seed)
resamples each row's runs with replacement and the images with replacement, one image draw for
both rows, so that the interval holds the seed-to-seed spread of training as well as the choice
of images. Each also prints the per-seed means of both rows and a test over the runs' means;
with two seeds a row the exact tests cannot reach p < 1/3, so they only show when seeds cannot
decide. Where a row has one run, the interval covers images only.
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


_RUN_NAME = re.compile(r"(?P<row>.+)_s(?P<seed>\d+)")


def _scored_runs(args, row: str, filename: str) -> list[str]:
  """<filename> of every scored seed of the row: OUT/<row>_s<seed>/eval/validation/ as runs write
  it, then RESULTS/<row>_s<seed>/ for each --results folder of kept raw results (a seed found in
  an earlier folder is not read again). A folder given in place of a row is one scored run: a run
  folder (read under eval/validation/) or a kept <row>_s<seed>/ folder of raw results; one that
  holds no <filename> is an error; a glob pattern of such folders is one run each."""
  if row not in ROWS and glob.has_magic(row):
    folders = [d for d in sorted(glob.glob(row)) if os.path.isdir(d)]
    if not folders:
      raise SystemExit(f"{row}: no folder matches")
    return [p for d in folders for p in _scored_runs(args, d, filename)]
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


def _run_key(path: str) -> str:
  """The run a scored file belongs to: its seed (`s<seed>`) where its folder is named
  <row>_s<seed>, else that folder's name."""
  folder = os.path.dirname(path)
  if folder.endswith(os.path.join("eval", "validation")):
    folder = os.path.dirname(os.path.dirname(folder))
  name = os.path.basename(os.path.normpath(folder))
  match = _RUN_NAME.fullmatch(name)
  return f"s{match['seed']}" if match else name


def _run_scores(args, row: str, variant: str) -> dict[str, dict[str, float]]:
  """Each scored run of the row, by its seed (by its path where two share a seed):
  {image id: Jaccard} of the variant."""
  paths = _scored_runs(args, row, "per_image_all_variants.csv")
  if not paths:
    searched = ", ".join([args.out, *args.results])
    raise SystemExit(f"no scored runs of row {row!r} in {searched}")
  runs: dict[str, dict[str, float]] = {}
  for path in paths:
    key = _run_key(path)
    runs[path if key in runs else key] = _read_per_image(path).get(variant, {})
  natural = lambda key: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]
  return {key: runs[key] for key in sorted(runs, key=natural)}


def _score_matrix(runs: dict[str, dict[str, float]], ids: list[str]) -> np.ndarray:
  """The runs' Jaccards on the given images, as a runs x images array."""
  return np.array([[run[i] for i in ids] for run in runs.values()])


def _image_weights(rng: np.random.Generator, images: int, draws: int) -> np.ndarray:
  """Each draw's resampling of the images with replacement, as weights summing to 1
  (draws x images)."""
  return rng.multinomial(images, np.full(images, 1.0 / images), size=draws) / images


def _resampled_means(scores: np.ndarray, weights: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
  """Each draw's mean of `scores` (runs x images) over the runs drawn with replacement, each
  run's images weighted by the draw's `weights`."""
  per_run = weights @ scores.T
  runs = rng.integers(0, scores.shape[0], per_run.shape)
  return np.take_along_axis(per_run, runs, axis=1).mean(axis=1)


def hierarchical_bootstrap(a: np.ndarray, b: np.ndarray, draws: int = 10000,
                           seed: int = 0) -> np.ndarray:
  """Draws of mean(b) - mean(a) for two rows' independent runs (runs x images, the same images
  in the same columns): each draw resamples each row's runs and the images with replacement,
  one image draw for both rows so that the images stay paired."""
  rng = np.random.default_rng(seed)
  weights = _image_weights(rng, a.shape[1], draws)
  return _resampled_means(b, weights, rng) - _resampled_means(a, weights, rng)


def paired_runs_bootstrap(diff: np.ndarray, draws: int = 10000, seed: int = 0) -> np.ndarray:
  """Draws of mean(diff), each run's per-image difference between two scorings of the same run
  (runs x images): each draw resamples the runs and the images with replacement."""
  rng = np.random.default_rng(seed)
  return _resampled_means(diff, _image_weights(rng, diff.shape[1], draws), rng)


def permutation_p(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
  """Exact two-sided permutation test of mean(b) - mean(a) over the runs' means (every split
  of the pooled runs into the two rows' sizes): its p-value, and the least p those sizes allow
  (2 and 2 runs: 1/3; 3 and 3: 1/10)."""
  import itertools
  import math
  pooled, k = np.concatenate([a, b]), len(b)
  observed = abs(b.mean() - a.mean())
  stats = np.array([abs(pooled[list(s)].mean() - np.delete(pooled, list(s)).mean())
                    for s in itertools.combinations(range(len(pooled)), k)])
  least = (2 if len(a) == len(b) else 1) / math.comb(len(pooled), k)
  return float(np.mean(stats >= observed - 1e-12)), least


def sign_flip_p(diff: np.ndarray) -> tuple[float, float]:
  """Exact two-sided sign-flip test of the mean of per-run differences (each run scored two
  ways): its p-value, and the least p that many runs allow (2 runs: 1/2; 3: 1/4)."""
  import itertools
  signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(diff))))
  stats = np.abs((signs * diff).mean(axis=1))
  return float(np.mean(stats >= abs(diff.mean()) - 1e-12)), 2 / len(signs)


def _t_p(a: np.ndarray, b: np.ndarray | None = None) -> float:
  """Welch's t-test p-value of two rows' run means (b given), or a one-sample t-test of per-run
  differences (a alone); nan where a side has fewer than 2 runs or no spread."""
  import warnings
  from scipy import stats
  samples = [a] if b is None else [a, b]
  if min(map(len, samples)) < 2 or all(np.ptp(x) < 1e-12 for x in samples):
    return float("nan")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    if b is None:
      return float(stats.ttest_1samp(a, 0.0).pvalue)
    return float(stats.ttest_ind(b, a, equal_var=False).pvalue)


def _p_text(p: float) -> str:
  return "n/a" if np.isnan(p) else f"{p:.2f}"


def _seed_means(scores: np.ndarray) -> str:
  return " ".join(f"{100 * m:.2f}" for m in scores.mean(axis=1))


def _interval_scope(a: np.ndarray, b: np.ndarray, names: tuple[str, str],
                    same_runs: bool) -> str:
  """What the bootstrap resampled: seeds and images, or images alone where there is one run."""
  if same_runs:
    return "seeds and images" if len(a) > 1 else "images only (one run)"
  if min(len(a), len(b)) > 1:
    return "seeds and images"
  if max(len(a), len(b)) == 1:
    return "images only (one run per row)"
  return f"images and {names[1] if len(b) > 1 else names[0]}'s seeds (one run of the other)"


def _run_test(a: np.ndarray, b: np.ndarray, same_runs: bool) -> str:
  """A test over the runs' means (runs x images each): Welch's t and an exact permutation
  test for independent runs, a t-test and an exact sign-flip test for runs scored two ways."""
  if same_runs:
    diff = (b - a).mean(axis=1)
    if len(diff) < 2:
      return "one run: the interval covers images only, no test over runs"
    p, least = sign_flip_p(diff)
    return (f"over runs, paired: t p = {_p_text(_t_p(diff))}, exact sign-flip p = {p:.2f} "
            f"(the least possible with {len(diff)} runs: {least:.2f})")
  if len(a) + len(b) < 3:
    return "one run per row: the interval covers images only, no test over runs"
  means_a, means_b = a.mean(axis=1), b.mean(axis=1)
  p, least = permutation_p(means_a, means_b)
  return (f"over runs: Welch t p = {_p_text(_t_p(means_a, means_b))}, exact permutation p = "
          f"{p:.2f} (the least possible with {len(a)} and {len(b)} runs: {least:.2f})")


def paired_report(a: np.ndarray, b: np.ndarray, names: tuple[str, str], same_runs: bool = False,
                  draws: int = 10000) -> str:
  """b - a in Jaccard points (runs x images each; with `same_runs`, row i of each is one run
  scored two ways, and b may be one row shared by every run): the mean, the hierarchical
  bootstrap's 95% percentile interval, the images each side wins; then each side's per-seed
  means and a test over runs."""
  image_diff = b.mean(axis=0) - a.mean(axis=0)
  boot = paired_runs_bootstrap(b - a, draws) if same_runs else hierarchical_bootstrap(a, b, draws)
  lo, hi = np.percentile(boot, [2.5, 97.5])
  return (f"Jaccard {100 * image_diff.mean():+.2f} points, 95% interval over "
          f"{_interval_scope(a, b, names, same_runs)} [{100 * lo:+.2f}, {100 * hi:+.2f}]; "
          f"{names[1]} better on {int((image_diff > 1e-9).sum())} images, worse on "
          f"{int((image_diff < -1e-9).sum())}\n  per seed: {names[0]} {_seed_means(a)} | "
          f"{names[1]} {_seed_means(b)}; {_run_test(a, b, same_runs)}")


def _common_ids(*runs: dict[str, float]) -> list[str]:
  """The images every run scored."""
  return sorted(set.intersection(*(set(r) for r in runs)))


def compare(args, row_a: str, row_b: str, variant: str = "model", draws: int = 10000,
            same_runs: bool = False) -> str:
  """b - a in mean Jaccard over the held-out images every run scored, with the hierarchical
  bootstrap's interval (seeds and images), per-seed means and a test over runs. With
  `same_runs` the rows are the same runs scored two ways, paired by seed."""
  a, b = _run_scores(args, row_a, variant), _run_scores(args, row_b, variant)
  if same_runs:
    seeds = sorted(set(a) & set(b))
    if not seeds:
      raise SystemExit(f"--same_runs: {row_a} and {row_b} share no seed")
    a, b = {s: a[s] for s in seeds}, {s: b[s] for s in seeds}
  ids = _common_ids(*a.values(), *b.values())
  report = paired_report(_score_matrix(a, ids), _score_matrix(b, ids), (row_a, row_b),
                         same_runs, draws)
  pairing = ", the same runs" if same_runs else ""
  return (f"{row_b} ({len(b)} seeds) - {row_a} ({len(a)} seeds){pairing}, {variant}, "
          f"{len(ids)} images: {report}")


def tta_gain(args, row: str, draws: int = 10000) -> str:
  """What test-time flips add to the row's own runs: each run scored with them against the same
  run without them, runs and images resampled together."""
  plain, flipped = _run_scores(args, row, "model"), _run_scores(args, row, "model+tta")
  ids = _common_ids(*plain.values(), *flipped.values())
  report = paired_report(_score_matrix(plain, ids), _score_matrix(flipped, ids),
                         ("no flips", "flips"), True, draws)
  return f"{row} ({len(plain)} seeds), flips - no flips, {len(ids)} images: {report}"


def ensemble_gain(args, row: str, draws: int = 10000) -> list[str]:
  """What ensembling adds: the row's scored ensemble against each of its own members (the same
  runs, scored in the same evaluation), members and images resampled together, without and
  with test-time flips."""
  path = _ensemble_file(args, row, "per_image_all_variants.csv")
  if path is None:
    raise SystemExit(f"no scored ensemble of row {row!r} in {', '.join([args.out, *args.results])}"
                     f"; score one with --ensemble={row} --seeds=...")
  values = _read_per_image(path)
  lines = []
  for suffix in ("", "+tta"):
    members = {name: v for name, v in values.items()
               if re.fullmatch(r"member_\d+" + re.escape(suffix), name)}
    if "ensemble" + suffix not in values or not members:
      continue
    ensemble = values["ensemble" + suffix]
    ids = _common_ids(ensemble, *members.values())
    report = paired_report(_score_matrix(members, ids), _score_matrix({"e": ensemble}, ids),
                           ("members", "the ensemble"), True, draws)
    variant = "model+tta" if suffix else "model"
    lines.append(f"{row} ensemble of {len(members)} - its members' mean, {variant}, {len(ids)} "
                 f"images: {report}")
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
                      help="ROW_A,ROW_B[,...]: the Jaccard difference of each later row against "
                           "ROW_A over the images (no flips, and flips), with a 95%% interval of "
                           "a bootstrap that resamples seeds and images together, each row's "
                           "per-seed means and a test over the runs' means (Welch's t and an "
                           "exact permutation test, which cannot go below p = 1/3 with 2 runs "
                           "against 2, nor below 0.10 with 3 against 3: there it says only that "
                           "the seeds cannot decide); a folder in place of a row is one scored "
                           "run (a run folder, or a kept <row>_s<seed>/ folder), e.g. the same "
                           "seed trained for longer, and a glob pattern of such folders one run "
                           "each (quote it); a row of one run adds no seeds to the interval")
  parser.add_argument("--same_runs", action="store_true",
                      help="--compare's rows are the same runs scored two ways (e.g. with and "
                           "without post-processing or S's moving average): pair them by seed "
                           "and resample the pairs")
  parser.add_argument("--tta_gain", default="",
                      help="ROW,ROW,...: each row's runs with test-time flips against the same "
                           "runs without them, runs and images resampled together (an exact "
                           "sign-flip test over runs cannot go below p = 1/2 with 2 runs, 1/4 "
                           "with 3)")
  parser.add_argument("--ensemble_gain", default="",
                      help="ROW,ROW,...: each row's scored ensemble (--ensemble) against its "
                           "members, members and images resampled together, without and with "
                           "flips")
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
        print(compare(args, base, other, variant, same_runs=args.same_runs))
  for row in [r for r in args.tta_gain.split(",") if r]:
    print(tta_gain(args, row))
  for row in [r for r in args.ensemble_gain.split(",") if r]:
    print("\n".join(ensemble_gain(args, row)))
  if args.by_lesion_size:
    print(by_lesion_size(args, [r for r in args.by_lesion_size.split(",") if r]))


if __name__ == "__main__":
  main()
