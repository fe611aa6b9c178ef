"""Scores trained runs by the ISIC 2017 Part 1 protocol; selects checkpoint, k and threshold.

  python -m segan_jax.evaluate --workdir=RUN [--workdir=RUN2 ...] [--split=validation] [--tta]
      [--data_source=folder --data_dir=DIR] [--search] [--output=DIR] [--postprocess]
  python -m segan_jax.evaluate --model=NAME_OR_PATH --data_dir=DIR --split=test --output=DIR
      (a pretrained model: segan_jax.pretrained; --list_models lists the shipped ones)

Protocol (segan_jax.metrics): each probability map is resized back to its image's ORIGINAL size,
binarised at the threshold, and scored per image (accuracy, sensitivity, specificity, Jaccard,
Dice, thresholded Jaccard); each metric is averaged over images. Mean Jaccard ranks.

Every evaluation reports each variant it can form, so the gain of each idea is visible: each run
alone, each run with test-time flips (--tta), the ensemble (several --workdir: the mean of the runs'
probability maps) and the ensemble with flips. The most complete variant is the "primary" one: its
per-image scores go to per_image.csv and its worst images to worst_cases.png.

Several classes (model.num_classes N > 1, index masks): each image's maps become one index mask
(the most probable class above the threshold, metrics.label_prediction) and each class is scored
against its own truth. summary.json, per_image.csv and the table give the mean over classes under
the plain names (jaccard, dice, ...) and each class's figures as jaccard_class1, ..., with the
pooled Jaccard per class (metrics module docstring); --search maximises the mean over classes;
worst_cases.png and examples.png colour the true and predicted classes on the photo.

--search (validation split only) grid-searches, per run, the checkpoint, the final k and the
threshold by mean validation Jaccard and stores the choice in RUN/selection.json; evaluate, predict
and export use it by default afterwards (--nouse_selection ignores it).
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from segan_jax import (cli, compilation_cache, host_memory, inference, metrics, overlays,
                       postprocess as post, validation)
from segan_jax.data import arrays as data_arrays
from segan_jax.errors import UserError

SPLITS = ("validation", "test", "train", "all")
DEFAULT_K_GRID = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
DEFAULT_THRESHOLD_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
PAPER_K, PAPER_THRESHOLD = 0.3, 0.4  # tie-breakers of the search (Xue et al. picked these)


class EvaluationError(UserError, ValueError):
  """The requested evaluation cannot be done (no masks, search outside validation, ...)."""


# ---------------------------------------------------------------------------------------------
# Data.

def apply_data_overrides(config, data_source: str | None = None, data_dir: str | None = None):
  """A copy of the run's config with config.data.source / config.data.dir replaced where given."""
  config = config.copy_and_resolve_references()
  if data_source:
    config.data.source = data_source
  if data_dir:
    config.data.dir = data_dir
  return config


def load_examples(config, split: str, image_size: int) -> list[data_arrays.Example]:
  """The examples of `split`, masks at the original resolution, as the run's config selects them.

  validation: the run's own validation split (the official one, or the same seeded hold-out as in
  training): the only split for model selection. test: the data's test split (folder source: a
  `test/` folder or the official Test_v2 layout). train: the training examples (synthetic) or
  every pair of the training split (folder, tfds; held-out validation ids included). all: every
  pair of every split with masks (folder, tfds): e.g. to score a separate folder of held-out pairs.
  For tfds, test is the built dataset's test split (the official Test_v2 with its ground truth).
  """
  from segan_jax.data import sources
  if split not in SPLITS:
    raise EvaluationError(f"Unknown split {split!r}; choose one of {SPLITS}.")
  hook = getattr(sources, "load_split", None)  # a per-split loader, where sources has one
  if hook is not None:
    return list(hook(config, split))
  source = config.data.source
  if split == "validation":  # the training pairs are neither decoded nor held in memory
    return list(sources.load_validation(config))
  if source == "synthetic":
    if split == "train":
      return list(sources.load_splits(config)[0])
    raise EvaluationError("The synthetic source has only train and validation splits.")
  if source == "folder":
    from segan_jax.data import folder
    options = folder.Options.from_config(config.data, config.model.num_classes)
    splits = folder.scan(config.data.dir, options)
    names = sorted(splits) if split == "all" else [split]
    missing = [n for n in names if n not in splits]
    if missing:
      raise EvaluationError(f"{config.data.dir} has no {missing[0]} split (found "
                            f"{sorted(splits)}); --split=all scores every pair of the folder.")
    examples = []
    for name in names:
      decoded = folder.decode(splits[name], options, (image_size, image_size),
                              what=f"the {name} split of {config.data.dir}")
      examples.extend(d.example() for d in decoded if split != "all" or d.mask is not None)
    return examples
  if source == "tfds":
    if int(config.model.num_classes) != 1:
      raise EvaluationError("data.source='tfds' holds one class (ISIC lesion masks); the run has "
                            f"model.num_classes={config.model.num_classes}.")
    try:
      from segan_jax.data import isic2017_tfds
    except ImportError as e:
      raise EvaluationError("data.source='tfds' needs TensorFlow and tensorflow-datasets "
                            f"({e}): pip install 'segan_jax[tfds]', or score the pairs in place "
                            "with --data_source=folder --data_dir=<folder>.") from e
    return isic2017_tfds.load_split(config.data, split, image_size)
  raise EvaluationError(f"Unknown data.source {source!r}.")


def load_eval_set(config, split: str, image_size: int) -> data_arrays.EvalSet:
  """The split at the network's input size, with original-size masks; errors if any mask lacks."""
  examples = load_examples(config, split, image_size)
  if not examples:
    raise EvaluationError(f"The {split} split of data.source={config.data.source!r} is empty.")
  missing = [ex.id for ex in examples if ex.mask is None]
  if missing:
    raise EvaluationError(
        f"{len(missing)} of {len(examples)} {split} images have no ground-truth mask (e.g. "
        f"{missing[0]}); they cannot be scored. Use `python -m segan_jax.predict` for them.")
  return data_arrays.prepare_eval(examples, image_size)


# ---------------------------------------------------------------------------------------------
# Scoring.

def score(probs: np.ndarray, eval_set: data_arrays.EvalSet, threshold: float,
          postprocess: bool = False) -> metrics.ScoreAccumulator:
  """ISIC scores of (M, S, S, N) probabilities at each image's original size (N > 1: each class
  of the predicted index mask, and their mean; metrics.score_classes); with `postprocess`, of
  each thresholded mask's largest component with its holes filled."""
  return validation.score_eval_set(probs, eval_set, threshold,
                                   postprocess=post.postprocess_mask if postprocess else None)


def jaccard_by_threshold(probs: np.ndarray, eval_set: data_arrays.EvalSet,
                         thresholds: Sequence[float], postprocess: bool = False) -> np.ndarray:
  """Mean Jaccard over images for each threshold, by the ISIC protocol, resizing each map once.

  Each map is resized to its mask's original size once (metrics.resize_probability) and counted
  against every threshold (`prob > t`, compared as metrics.binarize_prediction compares; with
  `postprocess`, the mask post-processed first). Same convention as segan_jax.metrics: Jaccard
  is 1 when prediction and truth are both empty.
  """
  totals = np.zeros(len(thresholds), np.float64)
  if probs.shape[-1] > 1:  # several classes: the mean over classes of each image's Jaccard
    for prob, mask in zip(probs, eval_set.masks):
      totals += metrics.mean_class_jaccard_by_threshold(prob, mask, thresholds)
    return totals / max(len(eval_set), 1)
  for prob, mask in zip(probs, eval_set.masks):
    truth = metrics.binarize_truth(mask)
    full = metrics.resize_probability(prob[..., 0], truth.shape)
    inside = full[truth]
    positives = inside.size
    for j, t in enumerate(thresholds):
      if postprocess:
        pred = post.postprocess_mask(full > float(t))
        tp = np.count_nonzero(pred[truth])
        fp = np.count_nonzero(pred) - tp
      else:
        tp = np.count_nonzero(inside > float(t))
        fp = np.count_nonzero(full > float(t)) - tp
      union = positives + fp  # tp + fp + fn
      totals[j] += tp / union if union else 1.0
  return totals / max(len(eval_set), 1)


def _variant_probs(models, logits, tta: str) -> dict[str, dict[str, Any]]:
  """Every variant the runs and views allow: each run, each run with flips, ensemble (+ flips)."""
  variants: dict[str, dict[str, Any]] = {}
  single = len(models) == 1
  ks = [m.k for m in models]
  names = ["model"] if single else [f"member_{i}" for i in range(len(models))]
  modes = [False, True] if tta != "none" else [False]
  for use_tta in modes:
    suffix = "+tta" if use_tta else ""
    pick = (lambda v: v) if use_tta else (lambda v: v[:1])  # view 0 is the identity
    for name, model, views in zip(names, models, logits):
      variants[name + suffix] = {
          "probs": inference.combine([pick(views)], [model.k]), "threshold": model.threshold,
          "members": [os.path.abspath(model.workdir)], "tta": use_tta}
    if not single:
      variants["ensemble" + suffix] = {
          "probs": inference.combine([pick(v) for v in logits], ks),
          "threshold": float(np.mean([m.threshold for m in models])),
          "members": [os.path.abspath(m.workdir) for m in models], "tta": use_tta}
  return variants


# ---------------------------------------------------------------------------------------------
# Model selection.

def search_run(workdir: str, eval_set: data_arrays.EvalSet, k_grid: Sequence[float],
               threshold_grid: Sequence[float], steps: str | Sequence[int] = "all",
               tta: str = "none", batch_size: int = 16, log=print,
               postprocess: bool = False, use_ema: bool = True) -> dict[str, Any]:
  """Grid search of (checkpoint step, k, threshold) by mean Jaccard on `eval_set` (validation),
  of the post-processed masks with `postprocess`.

  Returns the selection (chosen step, k, threshold and every grid point's Jaccard). Ties go to the
  later checkpoint, then to the k and threshold closest to the paper's (0.3, 0.4).
  """
  if not k_grid or not threshold_grid:
    raise EvaluationError("The k and threshold grids must not be empty.")
  if any(not k > 0 for k in k_grid) or any(not 0 <= t < 1 for t in threshold_grid):
    raise EvaluationError("Grid values must have k > 0 and 0 <= threshold < 1.")
  available = inference.available_steps(workdir)
  if steps == "all":
    chosen_steps = available
  elif steps == "latest":
    chosen_steps = available[-1:]
  else:
    chosen_steps = [int(s) for s in steps]
    unknown = sorted(set(chosen_steps) - set(available))
    if unknown:
      raise EvaluationError(f"{workdir} has no checkpoints at steps {unknown}; it has {available}.")
  results = []
  skipped = []
  for step in chosen_steps:
    try:
      model = inference.load_model(workdir, step=step, use_selection=False, use_ema=use_ema)
    except inference.RunError as e:  # a damaged checkpoint: search the others
      skipped.append(step)
      log(f"  {workdir} step {step}: skipped, {e}")
      continue
    logits = inference.Predictor([model], batch_size, tta).logit_views(eval_set.images)
    for k in k_grid:
      probs = inference.combine(logits, [k])
      for t, jac in zip(threshold_grid, jaccard_by_threshold(probs, eval_set, threshold_grid,
                                                             postprocess)):
        results.append({"step": int(step), "k": float(k), "threshold": float(t),
                        "jaccard": float(jac)})
    best_here = max(r["jaccard"] for r in results if r["step"] == step)
    log(f"  {workdir} step {step}: best validation Jaccard {best_here:.4f}")
  if not results:
    raise EvaluationError(f"No checkpoint of {workdir} could be loaded (steps {skipped}).")
  best = min(results, key=lambda r: (-round(r["jaccard"], 12), -r["step"],
                                     abs(r["k"] - PAPER_K), abs(r["threshold"] - PAPER_THRESHOLD)))
  return {"step": best["step"], "k": best["k"], "threshold": best["threshold"],
          "validation_jaccard": best["jaccard"], "tta": tta, "postprocess": postprocess,
          "num_images": len(eval_set),
          "grid": {"steps": [int(s) for s in chosen_steps], "k": [float(k) for k in k_grid],
                   "threshold": [float(t) for t in threshold_grid]},
          "results": results,
          "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


# ---------------------------------------------------------------------------------------------
# Evaluation.

def evaluate(workdirs: Sequence[str], split: str = "validation", tta: str | None = None,
             data_source: str | None = None, data_dir: str | None = None,
             output: str | None = None, search: bool = False,
             k_grid: Sequence[float] = DEFAULT_K_GRID,
             threshold_grid: Sequence[float] = DEFAULT_THRESHOLD_GRID,
             search_steps: str | Sequence[int] = "all", step: int | None = None,
             k: float | None = None, threshold: float | None = None, use_selection: bool = True,
             batch_size: int = 16, num_worst: int = 6, num_examples: int = 8,
             log=print, postprocess: bool | None = None,
             use_ema: bool = True,
             models: Sequence[inference.LoadedModel] | None = None) -> dict[str, Any]:
  """Scores runs (one, or several as an ensemble) on a split; writes and returns the summary.

  With `postprocess`, every thresholded mask is reduced to its largest connected component with
  its holes filled (segan_jax.postprocess) at the original resolution before it is scored or
  drawn, and --search selects on the post-processed masks; None takes the first run's
  config.eval.postprocess, as `tta` None takes its config.eval.tta: by default a run is scored as
  `segan-evaluate` scores it. `use_ema=False` scores the raw weights of runs that also keep a
  moving average (train.ema_decay > 0).
  `models`: already loaded models (a pretrained model: segan_jax.pretrained.load_model) scored
  instead of `workdirs` (then empty); they carry no data to score and no run folder, so the data
  (`data_dir`, where data_source is not "synthetic"; data_source defaults to "folder") and
  `output` must be given, and there is nothing to `search`.
  """
  workdirs = list(workdirs)
  if models is not None:
    if not models:
      raise EvaluationError("No model to score.")
    check_pretrained_options(workdirs, search, data_source, data_dir, output)
    data_source = data_source or "folder"
  elif not workdirs:
    raise EvaluationError("Give at least one --workdir.")
  if search and split != "validation":
    raise EvaluationError("--search selects on validation data only; use --split=validation. "
                          "Score other splits afterwards with the stored selection.")
  if search and (step is not None or k is not None or threshold is not None):
    raise EvaluationError("--search chooses the step, k and threshold; do not also set them.")
  first_config = (models[0].config if models is not None
                  else inference.load_config(workdirs[0]))
  tta = inference.tta_mode(tta, first_config)
  inference.view_transforms(tta)
  if postprocess is None:
    postprocess = bool(first_config.eval.postprocess)
  if postprocess and int(first_config.model.num_classes) > 1:
    raise EvaluationError("--postprocess keeps one lesion's largest component; "
                          f"{models[0].workdir if models else workdirs[0]} segments "
                          "model.num_classes="
                          f"{first_config.model.num_classes} classes. Leave --postprocess out.")
  config = apply_data_overrides(first_config, data_source, data_dir)
  eval_set = load_eval_set(config, split, int(config.data.image_size))
  log(f"Scoring {len(eval_set)} images of the {split} split of data.source={config.data.source!r}"
      f"{' (' + config.data.dir + ')' if config.data.dir else ''}.")

  selections = {}
  if search:
    for workdir in workdirs:
      log(f"Searching checkpoint x k x threshold for {workdir} on {len(eval_set)} validation "
          f"images ({len(k_grid)} k x {len(threshold_grid)} thresholds)...")
      selection = search_run(workdir, eval_set, k_grid, threshold_grid, search_steps, tta,
                             batch_size, log, postprocess, use_ema)
      selection["data"] = {"source": config.data.source, "dir": config.data.dir,
                           "split": split}
      path = inference.write_selection(workdir, selection)
      selections[workdir] = {key: selection[key] for key in
                             ("step", "k", "threshold", "validation_jaccard")}
      log(f"  chose step {selection['step']}, k={selection['k']:g}, "
          f"threshold={selection['threshold']:g} (validation Jaccard "
          f"{selection['validation_jaccard']:.4f}); stored in {path}")

  if models is None:
    models = inference.load_models(workdirs, step, k, threshold, use_selection or search,
                                   use_ema=use_ema)
  models = list(models)
  if models[0].image_size != int(config.data.image_size):
    raise EvaluationError("The runs' data.image_size differs from the first run's config.")
  predictor = inference.Predictor(models, batch_size, tta)
  logits = predictor.logit_views(eval_set.images)
  variants = _variant_probs(models, logits, tta)
  primary = list(variants)[-1]

  scored = {}
  for name, variant in variants.items():
    acc = score(variant["probs"], eval_set, variant["threshold"], postprocess)
    scored[name] = acc
    variant["summary"] = acc.summary()

  output = output or default_output(workdirs, split)
  os.makedirs(output, exist_ok=True)
  result = {
      "split": split,
      "data": {"source": config.data.source, "dir": config.data.dir,
               "num_images": len(eval_set)},
      "protocol": ("ISIC 2017 Part 1: maps resized bilinearly to each image's original size, "
                   "binarised at the threshold, metrics per image then averaged over images"),
      # Validation figures are optimistic once anything was chosen on them.
      "selection_split_warning": split == "validation" and any(
          "selection.json" in m.sources.values() for m in models),
      "models": [m.describe() for m in models],
      "tta": tta,
      "postprocess": postprocess,
      "num_classes": models[0].num_classes,
      "primary": primary,
      "variants": {name: {"summary": v["summary"], "threshold": v["threshold"],
                          "tta": v["tta"], "members": v["members"]}
                   for name, v in variants.items()},
      "gains": _gains(variants),
      "search": selections or None,
  }
  write_json(os.path.join(output, "summary.json"), result)
  write_csv(os.path.join(output, "per_image.csv"), scored[primary].rows())
  if len(variants) > 1:
    write_csv(os.path.join(output, "per_image_all_variants.csv"),
               [{"variant": name, **row} for name, acc in scored.items() for row in acc.rows()])
  worst = write_worst_cases(os.path.join(output, "worst_cases.png"), eval_set,
                            variants[primary]["probs"], scored[primary].rows(),
                            variants[primary]["threshold"], num_worst, postprocess)
  result["worst"] = worst
  examples = write_examples(os.path.join(output, "examples.png"), eval_set,
                            variants[primary]["probs"], scored[primary].rows(),
                            variants[primary]["threshold"], num_examples, postprocess)
  result["examples"] = examples
  result["output"] = os.path.abspath(output)
  log(format_table(result))
  worst_text = ", ".join(f"{w['id']} {w['jaccard']:.3f}" for w in worst)
  log(f"Wrote {output}/summary.json, per_image.csv, worst_cases.png (worst: {worst_text})"
      f"{' and examples.png' if examples else ''}.")
  return result


def check_pretrained_options(workdirs: Sequence[str], search: bool, data_source: str | None,
                             data_dir: str | None, output: str | None) -> None:
  """What scoring a pretrained (already loaded) model needs: no runs beside it, no search, the
  data to score and an output folder; EvaluationError naming the missing flag otherwise."""
  if workdirs:
    raise EvaluationError("give --workdir (trained runs) or --model (a pretrained model), not "
                          "both.")
  if search:
    raise EvaluationError("--search chooses a run's checkpoint, k and threshold on its "
                          "validation data; a pretrained model has nothing to choose. Leave "
                          "--search out (--k and --threshold override the model's).")
  if not data_dir and (data_source or "folder") != "synthetic":
    raise EvaluationError("a pretrained model carries no data to score: pass --data_dir=DIR (a "
                          "folder of images and <id>_segmentation.png masks; a built TFDS data "
                          "set with --data_source=tfds).")
  if not output:
    raise EvaluationError("pass --output=DIR: a pretrained model has no run folder to write its "
                          "scores into.")


def default_output(workdirs: Sequence[str], split: str) -> str:
  name = split if len(workdirs) == 1 else f"{split}_ensemble_{len(workdirs)}"
  return os.path.join(workdirs[0], "eval", name)


def _gains(variants: dict[str, dict[str, Any]]) -> dict[str, float]:
  """Jaccard gains of test-time flips and of ensembling, where both sides were scored."""
  jac = {name: v["summary"]["jaccard"] for name, v in variants.items()}
  gains = {}
  members = [n for n in jac if n.startswith("member_") and not n.endswith("+tta")]
  if "model+tta" in jac:
    gains["tta_jaccard"] = jac["model+tta"] - jac["model"]
  if "ensemble" in jac:
    gains["ensemble_vs_mean_member_jaccard"] = jac["ensemble"] - float(
        np.mean([jac[m] for m in members]))
    gains["ensemble_vs_best_member_jaccard"] = jac["ensemble"] - max(jac[m] for m in members)
  if "ensemble+tta" in jac:
    gains["tta_on_ensemble_jaccard"] = jac["ensemble+tta"] - jac["ensemble"]
  return gains


def write_worst_cases(path: str, eval_set: data_arrays.EvalSet, probs: np.ndarray,
                      rows: list[dict], threshold: float, num: int,
                      postprocess: bool = False) -> list[dict]:
  """Overlay panel of the `num` images of lowest Jaccard (ties by id); returns their rows."""
  if num <= 0 or not rows:
    return []
  worst = sorted(rows, key=lambda r: (r["jaccard"], r["id"]))[:num]
  return _write_overlay_panel(path, eval_set, probs, worst, threshold, postprocess=postprocess)


def spread_by_rank(rows: list[dict], num: int) -> list[dict]:
  """`num` rows evenly spaced over the ranking by Jaccard, best first: a representative sample."""
  ranked = sorted(rows, key=lambda r: (-r["jaccard"], r["id"]))
  if num <= 0 or not ranked:
    return []
  picks = np.unique(np.round(np.linspace(0, len(ranked) - 1, min(num, len(ranked)))).astype(int))
  return [ranked[i] for i in picks]


def write_examples(path: str, eval_set: data_arrays.EvalSet, probs: np.ndarray,
                   rows: list[dict], threshold: float, num: int,
                   postprocess: bool = False) -> list[dict]:
  """Overlay panel of `num` images spread from the best to the worst Jaccard; returns their rows."""
  return _write_overlay_panel(path, eval_set, probs, spread_by_rank(rows, num), threshold,
                              columns=2, postprocess=postprocess)


def _write_overlay_panel(path: str, eval_set: data_arrays.EvalSet, probs: np.ndarray,
                         chosen: list[dict], threshold: float, columns: int = 1,
                         postprocess: bool = False) -> list[dict]:
  if not chosen:
    return []
  if probs.shape[-1] > 1:
    return _write_class_panel(path, eval_set, probs, chosen, threshold, columns)
  images, truths, maps, captions = [], [], [], []
  height = _PANEL_HEIGHT
  for row, i, (h, w), (dh, dw), image in _panel_rows(eval_set, chosen):
    images.append(image)
    truths.append(data_arrays.resize_mask(eval_set.masks[i], dh, dw) > 127)
    if postprocess:  # the scored mask (post-processed at the original size), drawn as 0/1
      full = metrics.resize_probability(probs[i, ..., 0], (h, w))
      scored_mask = post.postprocess_mask(metrics.binarize_prediction(full, threshold))
      scored_map = metrics.resize_probability(scored_mask.astype(np.float32), (dh, dw))
      maps.append(np.where(scored_map >= 0.5, 1.0, 0.0).astype(np.float32))
    else:
      maps.append(metrics.resize_probability(probs[i, ..., 0], (dh, dw)))
    captions.append(f"{row['id']}  Jaccard {row['jaccard']:.3f}  Dice {row['dice']:.3f}")
  overlays.save_png(path, overlays.worst_case_panel(images, truths, maps, threshold, captions,
                                                    height, columns))
  return [{"id": r["id"], "jaccard": r["jaccard"], "dice": r["dice"]} for r in chosen]


_PANEL_HEIGHT = 192  # pixels of each panel row


def _panel_rows(eval_set: data_arrays.EvalSet, chosen: list[dict]):
  """(row, index, original (h, w), panel (h, w), photo at panel size) for each chosen row."""
  index = {image_id: i for i, image_id in enumerate(eval_set.ids)}
  for row in chosen:
    i = index[row["id"]]
    h, w = eval_set.original_sizes[i]
    dh, dw = _PANEL_HEIGHT, max(1, int(round(w * _PANEL_HEIGHT / h)))
    yield row, i, (h, w), (dh, dw), data_arrays.resize_image(eval_set.images[i], dh, dw)


def _write_class_panel(path: str, eval_set: data_arrays.EvalSet, probs: np.ndarray,
                       chosen: list[dict], threshold: float, columns: int) -> list[dict]:
  """Several classes: rows of [true classes | predicted index mask] on the photo, coloured by
  class (overlays.class_panel), the prediction made at the original size as it is scored."""
  n = probs.shape[-1]
  images, truths, labels, captions = [], [], [], []
  height = _PANEL_HEIGHT
  for row, i, (h, w), (dh, dw), image in _panel_rows(eval_set, chosen):
    images.append(image)
    truths.append(data_arrays.resize_mask(eval_set.masks[i], dh, dw))
    full = metrics.label_prediction(metrics.resize_probabilities(probs[i], (h, w)), threshold)
    labels.append(data_arrays.resize_mask(full, dh, dw))
    per_class = " ".join(f"{row[metrics.class_key('jaccard', c)]:.2f}" for c in range(1, n + 1))
    captions.append(f"{row['id']}  Jaccard {row['jaccard']:.3f} ({per_class})")
  overlays.save_png(path, overlays.class_panel(images, truths, labels, n, captions, height,
                                               columns))
  return [{"id": r["id"], "jaccard": r["jaccard"], "dice": r["dice"]} for r in chosen]


def format_table(result: dict[str, Any]) -> str:
  """A plain-text table: one row per variant, a column per metric (in %)."""
  cols = [("jaccard", "Jaccard"), ("dice", "Dice"), ("accuracy", "Acc"),
          ("sensitivity", "Sens"), ("specificity", "Spec"),
          ("thresholded_jaccard", "Jac>=.65")]
  name_w = max(12, *(len(n) for n in result["variants"]))
  lines = [f"ISIC 2017 Part 1 scores (%, at original resolution) on {result['data']['num_images']} "
           f"images of the {result['split']} split:",
           f"{'variant':<{name_w}} {'thr':>5} " + " ".join(f"{c[1]:>8}" for c in cols)]
  for name, v in result["variants"].items():
    s = v["summary"]
    mark = " *" if name == result["primary"] else ""
    lines.append(f"{name:<{name_w}} {v['threshold']:>5.2f} "
                 + " ".join(f"{100 * s[c[0]]:>8.2f}" for c in cols) + mark)
  num_classes = int(result.get("num_classes", 1))
  if num_classes > 1:
    s = result["variants"][result["primary"]]["summary"]
    lines.append(f"Several classes: the rows above are means over the {num_classes} classes; per "
                 f"class ({result['primary']}), with the pooled Jaccard over all images:")
    for c in range(1, num_classes + 1):
      lines.append(f"{'class ' + str(c):<{name_w}} {'':>5} "
                   + " ".join(f"{100 * s[metrics.class_key(col, c)]:>8.2f}" for col, _ in cols)
                   + f"  pooled Jaccard {100 * s[metrics.class_key('pooled_jaccard', c)]:.2f}"
                   f", in {s[metrics.class_key('images_with', c)]} images")
  for name, gain in result["gains"].items():
    lines.append(f"gain {name}: {100 * gain:+.2f} points")
  if result.get("selection_split_warning"):
    lines.append("note: k/threshold/checkpoint were selected on this validation split, so these "
                 "validation figures are optimistic; report a held-out split.")
  return "\n".join(lines)


def write_json(path: str, payload: dict[str, Any]) -> None:
  """Writes `payload` as sorted, indented JSON, atomically (numpy scalars as numbers)."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(payload, f, indent=2, sort_keys=True, default=_json_default)
  os.replace(tmp, path)


def _json_default(value):
  if isinstance(value, (np.floating, np.integer)):
    return value.item()
  raise TypeError(f"not JSON serialisable: {type(value)}")


def write_csv(path: str, rows: list[dict]) -> None:
  """Writes `rows` as CSV headed by the first row's keys, atomically; floats in full precision."""
  if not rows:
    return
  fields = list(rows[0])
  tmp = path + ".tmp"
  with open(tmp, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    for row in rows:
      writer.writerow({k: repr(float(v)) if isinstance(v, float) else v for k, v in row.items()})
  os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Command line.

def _define_flags():
  from absl import flags
  flags.DEFINE_multi_string("workdir", None, "Training run(s); several form an ensemble. Or "
                            "--model.")
  flags.DEFINE_enum("split", "validation", list(SPLITS), "Split of the run's data to score.")
  flags.DEFINE_string("data_source", None, "Override config.data.source (synthetic|folder|tfds).")
  flags.DEFINE_string("data_dir", None, "Override config.data.dir.")
  flags.DEFINE_bool("tta", None, "Also score with test-time flips (4 views averaged); the flipped "
                    "views' score is then the primary one. Default: the run's config.eval.tta.")
  flags.DEFINE_bool("search", False, "Grid-search checkpoint, k and threshold on validation "
                    "Jaccard; store the choice in each RUN/selection.json.")
  flags.DEFINE_list("k_grid", [str(k) for k in DEFAULT_K_GRID], "k values searched.")
  flags.DEFINE_list("threshold_grid", [str(t) for t in DEFAULT_THRESHOLD_GRID],
                    "Thresholds searched.")
  flags.DEFINE_string("search_steps", "all", "Checkpoints searched: all, latest, or a list.")
  flags.DEFINE_integer("step", None, "Checkpoint step to score (single run).")
  flags.DEFINE_float("k", None, "Override k.")
  flags.DEFINE_float("threshold", None, "Override the threshold.")
  flags.DEFINE_bool("use_selection", True, "Use RUN/selection.json where present.")
  flags.DEFINE_bool("use_ema", True, "Score the moving average of S's weights where the run keeps "
                    "one (train.ema_decay > 0); --nouse_ema scores the raw weights.")
  flags.DEFINE_bool("postprocess", None, "Score each mask's largest connected component with its "
                    "holes filled (at the original size; --search selects on them too). Default: the "
                    "run's config.eval.postprocess.")
  flags.DEFINE_integer("batch_size", 16, "Images per forward pass.")
  flags.DEFINE_integer("num_worst", 6, "Worst images drawn in worst_cases.png.")
  flags.DEFINE_integer("num_examples", 8, "Images drawn in examples.png, spread evenly over the "
                       "ranking by Jaccard from best to worst (0: no examples.png).")
  flags.DEFINE_string("output", None, "Output folder (default RUN/eval/SPLIT[_ensemble_N]).")
  host_memory.define_flags()
  flags.DEFINE_string("jax_cache_dir", compilation_cache.DEFAULT_DIR,
                      "Persistent XLA compilation cache ('' disables it).")
  from segan_jax.pretrained import tool_flags
  tool_flags.define_flags()


def main(argv):
  from absl import flags
  from segan_jax.pretrained import tool_flags
  FLAGS = flags.FLAGS
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])} (flags take the form "
                    "--name=value)")
  if tool_flags.list_models_if_asked():
    return
  pretrained_name = tool_flags.pretrained_model_name()
  if pretrained_name is not None:  # the data and output checks come before any loading
    check_pretrained_options([], FLAGS.search, FLAGS.data_source, FLAGS.data_dir, FLAGS.output)
  steps = FLAGS.search_steps
  if steps not in ("all", "latest"):
    try:
      steps = [int(s) for s in steps.split(",") if s]
    except ValueError as e:
      raise UserError(f"--search_steps must be all, latest or a list of steps (got "
                      f"{FLAGS.search_steps!r}).") from e
  try:
    k_grid = [float(k) for k in FLAGS.k_grid]
    threshold_grid = [float(t) for t in FLAGS.threshold_grid]
  except ValueError as e:
    raise UserError(f"--k_grid and --threshold_grid take numbers: {e}.") from e
  if FLAGS.batch_size < 1:
    raise UserError(f"--batch_size must be >= 1 (got {FLAGS.batch_size}).")
  host_memory.configure(FLAGS.huge_pages, FLAGS.keep_freed_memory)
  import jax  # noqa: F401 - after configure, which may restart the process
  compilation_cache.enable(FLAGS.jax_cache_dir, 1.0)
  models = None
  if pretrained_name is not None:
    models = tool_flags.load_models(lambda: [], FLAGS.k, FLAGS.threshold)
  evaluate(FLAGS.workdir or [], split=FLAGS.split, tta=inference.tta_from_flag(FLAGS.tta),
           data_source=FLAGS.data_source, data_dir=FLAGS.data_dir, output=FLAGS.output,
           search=FLAGS.search, k_grid=k_grid, threshold_grid=threshold_grid,
           search_steps=steps, step=FLAGS.step, k=FLAGS.k, threshold=FLAGS.threshold,
           use_selection=FLAGS.use_selection, batch_size=FLAGS.batch_size,
           num_worst=FLAGS.num_worst, num_examples=FLAGS.num_examples,
           postprocess=FLAGS.postprocess, use_ema=FLAGS.use_ema, models=models)


def run() -> None:
  """The command line (`python -m segan_jax.evaluate`, the `segan-evaluate` console script)."""
  _define_flags()
  cli.run(main, __name__, __doc__)


if __name__ == "__main__":
  run()
