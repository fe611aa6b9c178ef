"""experiments/ablation.py's table and paired comparison, on hand-made per-image scores."""

import argparse
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import experiment_scripts


@pytest.fixture(scope="module")
def ablation():
  return experiment_scripts.load("ablation")


def _write_scores(folder, variants):
  """A scoring as evaluate writes it: per-image CSV and summary.json of each named variant
  (image Jaccards) without flips and, 0.01 higher on every image, with them ("+tta")."""
  os.makedirs(folder)
  shifts = (("", 0.0), ("+tta", 0.01))
  with open(os.path.join(folder, "per_image_all_variants.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["variant", "id", "jaccard"])
    for name, jaccards in variants.items():
      for suffix, shift in shifts:
        for i, j in enumerate(jaccards):
          writer.writerow([name + suffix, f"img{i}", j + shift])
  summary = {name + suffix: {"jaccard": sum(j) / len(j) + shift, "dice": 0.5, "accuracy": 0.9,
                             "thresholded_jaccard": 0.4}
             for name, j in variants.items() for suffix, shift in shifts}
  with open(os.path.join(folder, "summary.json"), "w") as f:
    json.dump({"variants": {k: {"summary": v} for k, v in summary.items()}}, f)


def _write_run(out, name, jaccards):
  """A scored run as evaluate writes it under <run>/eval/validation: model and model+tta."""
  _write_scores(os.path.join(out, name, "eval", "validation"), {"model": jaccards})


def _interval(line):
  """The (low, high) of the 95% interval a comparison line prints, in Jaccard points."""
  import re
  low, high = re.search(r"interval over [^[]*\[([+-][\d.]+), ([+-][\d.]+)\]", line).groups()
  return float(low), float(high)


def test_paired_difference_averages_seeds_per_image(ablation, tmp_path):
  out = str(tmp_path)
  _write_run(out, "segan_paper_s0", [0.5, 0.6, 0.7, 0.8])
  _write_run(out, "bce_only_s0", [0.6, 0.7, 0.8, 0.9])
  _write_run(out, "bce_only_s1", [0.6, 0.7, 0.8, 0.7])  # seed mean per image: .6 .7 .8 .8
  args = argparse.Namespace(out=out, results=[])
  line = ablation.compare(args, "segan_paper", "bce_only")
  # differences +.1 +.1 +.1 0: mean +7.5 points; the seeds' draws keep every bootstrap mean in
  # [-10, 10] (seed 1 alone is 10 points below seed 0 on img3)
  assert "bce_only (2 seeds) - segan_paper (1 seeds)" in line and "+7.50 points" in line
  assert "better on 3 images, worse on 0" in line
  assert "interval over images and bce_only's seeds (one run of the other)" in line
  assert "per seed: segan_paper 65.00 | bce_only 75.00 70.00;" in line
  lo, hi = _interval(line)
  assert -10.0 <= lo <= 7.5 <= hi <= 10.0
  table = ablation.table(args)
  assert "| Segmentor alone, binary cross-entropy (no critic) | 2 | no | 72.5 (70.0-75.0) |" in table
  with pytest.raises(SystemExit, match="no scored runs of row 'dice_only'"):
    ablation.compare(args, "segan_paper", "dice_only")


def test_kept_raw_results_are_read_besides_the_runs(ablation, tmp_path, monkeypatch, capsys):
  """--results folders hold <row>_s<seed>/ without eval/validation; a seed already under --out is
  not counted twice, and a longer row name sharing the prefix is not taken for the row."""
  out, kept = str(tmp_path / "runs"), str(tmp_path / "kept")
  _write_run(out, "segan_paper_s0", [0.5, 0.6, 0.7, 0.8])
  _write_run(kept, "segan_paper_s0", [0.0, 0.0, 0.0, 0.0])   # shadowed by the run under --out
  _write_run(kept, "bce_only_s1", [0.6, 0.7, 0.8, 0.9])
  _write_run(kept, "bce_only_long_s0", [0.0, 0.0, 0.0, 0.0])
  for name in ("segan_paper_s0", "bce_only_s1", "bce_only_long_s0"):
    inner = os.path.join(kept, name, "eval", "validation")
    for f in os.listdir(inner):
      os.rename(os.path.join(inner, f), os.path.join(kept, name, f))
  args = argparse.Namespace(out=out, results=[kept])
  line = ablation.compare(args, "segan_paper", "bce_only")
  assert "bce_only (1 seeds) - segan_paper (1 seeds)" in line and "+10.00 points" in line
  # only the kept results: --out need not exist
  args = argparse.Namespace(out=str(tmp_path / "none"), results=[kept])
  table = ablation.table(args)
  assert "| Segmentor alone, binary cross-entropy (no critic) | 1 | no | 75.0 |" in table
  with pytest.raises(SystemExit, match="no scored runs of row 'dice_only' in .*none, .*kept"):
    ablation.compare(args, "segan_paper", "dice_only")
  # the command line expands glob patterns (kept alone: segan_paper is the shadowed zeros) and
  # refuses a pattern that matches no folder
  monkeypatch.setattr(sys, "argv", ["ablation.py", f"--out={tmp_path / 'none'}",
                                    f"--results={tmp_path / 'ke*'}",
                                    "--compare=segan_paper,bce_only"])
  ablation.main()
  line = "bce_only (1 seeds) - segan_paper (1 seeds), model, 4 images: Jaccard +75.00"
  assert line in capsys.readouterr().out
  monkeypatch.setattr(sys, "argv", ["ablation.py", f"--results={tmp_path / 'gone*'}", "--table"])
  with pytest.raises(SystemExit):
    ablation.main()
  assert "--results: no folder matches" in capsys.readouterr().err


def test_compare_takes_single_run_folders(ablation, tmp_path):
  """A folder in place of a row is one scored run, a run folder or a kept one: the same seed
  trained for longer against itself."""
  runs, kept = str(tmp_path / "runs"), str(tmp_path / "kept")
  _write_run(runs, "isic2017_plus_s0", [0.6, 0.7, 0.8, 0.9])
  _write_run(kept, "isic2017_plus_s0", [0.5, 0.6, 0.7, 0.8])
  _write_run(kept, "isic2017_plus_s1", [0.0, 0.0, 0.0, 0.0])
  inner = os.path.join(kept, "isic2017_plus_s0", "eval", "validation")
  for f in os.listdir(inner):
    os.rename(os.path.join(inner, f), os.path.join(kept, "isic2017_plus_s0", f))
  args = argparse.Namespace(out=str(tmp_path / "none"), results=[])
  short, long = os.path.join(kept, "isic2017_plus_s0"), os.path.join(runs, "isic2017_plus_s0")
  line = ablation.compare(args, short, long)
  assert f"{long} (1 seeds) - {short} (1 seeds), model, 4 images: Jaccard +10.00 points" in line
  unscored = tmp_path / "unscored"
  unscored.mkdir()
  with pytest.raises(SystemExit, match="unscored: no per_image_all_variants.csv"):
    ablation.compare(args, short, str(unscored))
  # a glob pattern of folders: one run each (the kept seeds 0 and 1, 65 and 0 points)
  line = ablation.compare(args, long, os.path.join(kept, "isic2017_plus_s*"))
  assert "isic2017_plus_s* (2 seeds) - " in line and "Jaccard -42.50 points" in line
  assert f"per seed: {long} 75.00 | {os.path.join(kept, 'isic2017_plus_s*')} 65.00 0.00;" in line
  with pytest.raises(SystemExit, match="no folder matches"):
    ablation.compare(args, long, os.path.join(kept, "gone_s*"))


def _apply(config, overrides):
  """--config.a.b=value overrides applied as the command line would (values parsed as literals,
  else kept as strings)."""
  import ast
  for override in overrides:
    path, value = override[len("--config."):].split("=", 1)
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass
    *sections, name = path.split(".")
    node = config
    for section in sections:
      node = node[section]
    assert name in node, f"{override}: no such config field"
    node[name] = value
  return config


def test_recipe_rows_are_their_configs_on_default(ablation):
  """Rows that stand for a config carry exactly its recipe fields: isic2017 is the paper's
  crop-only row plus the whole-image view, isic2017_plus keeps the view itself."""
  from segan_jax.configs import isic2017
  assert ablation.ROWS["whole_image"].overrides == ("--config.data.whole_image_prob=0.5",)
  assert ablation.recipe_overrides(isic2017) == ablation.ROWS["whole_image"].overrides
  assert ablation.ROWS["segan_paper"].overrides == ()
  assert "--config.data.whole_image_prob=0.5" in ablation.ROWS["isic2017_plus"].overrides
  jitter = ("brightness", "contrast", "saturation", "hue")
  plus_without_jitter = tuple(o for o in ablation.ROWS["isic2017_plus"].overrides
                              if not any(f"data.{j}=" in o for j in jitter))
  assert ablation.ROWS["plus_jitter"].overrides == plus_without_jitter  # isic2017's jitter
  assert len(plus_without_jitter) == len(ablation.ROWS["isic2017_plus"].overrides) - 4
  assert set(ablation.ROWS["isic2017_plus"].overrides) ^ set(
      ablation.ROWS["plus_whole_075"].overrides) == {"--config.data.whole_image_prob=0.5",
                                                     "--config.data.whole_image_prob=0.75"}
  for row in ("isic2017_spectral_norm", "isic2017_dice_only"):  # isic2017 plus one change
    assert ablation.ROWS[row].overrides[:1] == ablation.ROWS["whole_image"].overrides, row
  assert not any("k_decay_epochs" in o for row in ablation.ROWS.values() for o in row.overrides)


def test_every_row_names_valid_config_fields(ablation):
  from segan_jax.config_validation import validate_config
  from segan_jax.configs import default
  for row, spec in ablation.ROWS.items():
    validate_config(_apply(default.get_config(), spec.overrides))
    if spec.scores_runs_of is not None:
      trained = ablation.ROWS[spec.scores_runs_of]
      assert not spec.overrides and trained.scores_runs_of is None, row
  for option in ("dice_form=authors", "residual_batchnorm=False", "schedule=step_authors",
                 "whole_image_prob=0.5", "ema_decay=", "critic_constraint=spectral_norm",
                 "model.init=authors", "reset_at_decay=True", "rot90=True"):
    assert any(option in o for spec in ablation.ROWS.values() for o in spec.overrides), option
  assert any("--postprocess" in spec.evaluate_flags for spec in ablation.ROWS.values())


@pytest.mark.parametrize("row, module", [("authors_recipe", "isic2017_authors"),
                                         ("isic2017_plus", "isic2017_plus")])
def test_recipe_rows_are_their_configs_but_for_the_protocol(ablation, row, module):
  import importlib
  from segan_jax.configs import isic2017
  recipe = importlib.import_module(f"segan_jax.configs.{module}")
  overrides = ablation.ROWS[row].overrides
  assert overrides == ablation.recipe_overrides(recipe)
  config = _apply(isic2017.get_config(), overrides)
  target = recipe.get_config()
  for field in ablation.PROTOCOL_FIELDS:  # the protocol's, set by its common arguments
    section, name = field.split(".")
    config[section][name] = target[section][name]
  assert json.loads(config.to_json()) == json.loads(target.to_json())
  if module == "isic2017_authors":
    assert "--config.loss.dice_form=authors" in overrides
    assert "--config.model.init=authors" in overrides


def test_lecun_row_is_the_authors_recipe_with_flax_initialisation(ablation):
  from segan_jax.configs import default
  authors = _apply(default.get_config(), ablation.ROWS["authors_recipe"].overrides)
  lecun = _apply(default.get_config(), ablation.ROWS["authors_recipe_lecun"].overrides)
  assert (authors.model.init, lecun.model.init) == ("authors", "lecun")
  lecun.model.init = "authors"
  assert json.loads(lecun.to_json()) == json.loads(authors.to_json())


def test_post_processed_row_scores_the_trained_rows_runs(ablation, tmp_path, monkeypatch):
  commands = []
  monkeypatch.setattr(ablation.subprocess, "run", lambda cmd, check: commands.append(cmd))
  args = argparse.Namespace(out=str(tmp_path), data_dir="/data", val_ids="ids.txt", width=8,
                            steps=600, batch_size=16, eval_every=100, k_decay_epochs=1)
  ablation.train_and_score(args, "segan_paper_post", 0)
  train, score = commands
  trained = os.path.join(str(tmp_path), "segan_paper_s0")
  assert f"--workdir={trained}" in train and "segan_jax.main" in train
  assert f"--workdir={trained}" in score and "--postprocess" in score
  assert f"--output={os.path.join(str(tmp_path), 'segan_paper_post_s0', 'eval', 'validation')}" \
      in score
  commands.clear()
  ablation.train_and_score(args, "spectral_norm", 1)
  train, score = commands
  assert "--config.train.critic_constraint=spectral_norm" in train
  assert "--postprocess" not in score
  assert f"--workdir={os.path.join(str(tmp_path), 'spectral_norm_s1')}" in score


@pytest.mark.parametrize("row, changes", [
    ("plus_dice_only", {"loss.adversarial_weight": 0.0}),
    ("plus_bce_only", {"loss.adversarial_weight": 0.0, "loss.dice_weight": 0.0,
                       "loss.bce_weight": 1.0}),
    ("plus_spectral_norm", {"train.critic_constraint": "spectral_norm"}),
    ("plus_authors_dice", {"loss.dice_form": "authors"}),
    ("plus_bce_dice", {"loss.bce_weight": 1.0}),
    ("plus_bce_critic", {"loss.dice_weight": 0.0, "loss.bce_weight": 1.0}),
    ("plus_critic_only", {"loss.dice_weight": 0.0}),
    ("plus_linear", {"optim.schedule": "linear"}),
    ("plus_adversarial_3", {"loss.adversarial_weight": 3.0}),
    ("plus_critic_steps_5", {"train.critic_steps": 5}),
    ("plus_200", {"data.train_limit": 200}),
    ("plus_dice_only_200", {"data.train_limit": 200, "loss.adversarial_weight": 0.0}),
    ("plus_view_bce_linear", {"data.whole_image_prob": 0.75, "loss.bce_weight": 1.0,
                              "optim.schedule": "linear"}),
    ("plus_view_bce_linear_no_critic", {"data.whole_image_prob": 0.75, "loss.bce_weight": 1.0,
                                        "optim.schedule": "linear",
                                        "loss.adversarial_weight": 0.0})])
def test_plus_rows_are_isic2017_plus_but_for_their_change(ablation, row, changes):
  from segan_jax.configs import isic2017, isic2017_plus
  from segan_jax.workdir import flatten_config
  config = _apply(isic2017.get_config(), ablation.ROWS[row].overrides)
  plus = flatten_config(isic2017_plus.get_config().to_dict())
  changed = {k: v for k, v in flatten_config(config.to_dict()).items()
             if k not in ablation.PROTOCOL_FIELDS and plus[k] != v}
  assert changed == changes


def test_a_stopped_training_run_exits_143_with_how_to_resume(ablation, tmp_path, monkeypatch,
                                                              capsys):
  """segan_jax.main stopped by SIGTERM (exit 143, its step saved): no traceback, the same status,
  and the scoring is not attempted on an unfinished run."""
  commands = []

  def stopped(cmd, check):
    commands.append(cmd)
    raise subprocess.CalledProcessError(143, cmd)

  monkeypatch.setattr(ablation.subprocess, "run", stopped)
  args = argparse.Namespace(out=str(tmp_path), data_dir="/data", val_ids="ids.txt", width=8,
                            steps=600, batch_size=16, eval_every=100, k_decay_epochs=1)
  with pytest.raises(SystemExit) as exit_info:
    ablation.train_and_score(args, "segan_paper", 0)
  assert exit_info.value.code == 143 and len(commands) == 1
  assert "rerun the same command to resume" in capsys.readouterr().err
  def failed(cmd, check):
    raise subprocess.CalledProcessError(1, cmd)

  monkeypatch.setattr(ablation.subprocess, "run", failed)
  with pytest.raises(subprocess.CalledProcessError):
    ablation.train_and_score(args, "segan_paper", 0)


def test_jaccard_by_lesion_size_bins_each_image_by_its_mask(ablation, tmp_path):
  """Images fall in the small/medium/large bins by the share of their mask above 127; each bin's
  Jaccard is the mean over its images of the seed-averaged scores; a missing mask is an error."""
  from PIL import Image
  data = tmp_path / "data"
  (data / "images").mkdir(parents=True)
  (data / "masks").mkdir()
  for i, share in enumerate([0.05, 0.2, 0.25, 0.5]):
    mask = np.zeros((20, 40), np.uint8)
    mask.reshape(-1)[:int(share * mask.size)] = 255
    mask.reshape(-1)[-3:] = 100  # not lesion for the scorer
    Image.fromarray(mask).save(data / "masks" / f"img{i}_segmentation.png")
    Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(data / "images" / f"img{i}.jpg")
  out = str(tmp_path / "runs")
  _write_run(out, "segan_paper_s0", [0.5, 0.6, 0.7, 0.8])
  _write_run(out, "dice_only_s0", [0.9, 0.8, 0.6, 0.2])
  _write_run(out, "dice_only_s1", [0.7, 0.8, 0.8, 0.4])
  args = argparse.Namespace(out=out, results=[], data_dir=str(data))
  assert ablation.lesion_fractions(str(data), ["img0", "img3"]) == {"img0": 0.05, "img3": 0.5}
  ones = np.zeros((20, 40), np.uint8)
  ones[:, :10] = 1  # a 0/1 mask, read as the scorer reads it: a quarter lesion
  Image.fromarray(ones).save(data / "masks" / "img4_segmentation.png")
  Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(data / "images" / "img4.jpg")
  assert ablation.lesion_fractions(str(data), ["img4"]) == {"img4": 0.25}
  lines = ablation.by_lesion_size(args, ["segan_paper", "dice_only"]).splitlines()
  assert "| row | seeds | all | 0-10% (1 images) | 10-30% (2 images) | 30-100% (1 images) |" in lines
  assert "| segan_paper | 1 | 65.0 | 50.0 | 65.0 | 80.0 |" in lines
  assert "| dice_only | 2 | 65.0 | 80.0 | 75.0 | 30.0 |" in lines
  os.remove(data / "masks" / "img3_segmentation.png")
  os.remove(data / "images" / "img3.jpg")
  with pytest.raises(SystemExit, match="no ground-truth mask for 1 scored ids"):
    ablation.by_lesion_size(args, ["segan_paper"])


def test_tta_gain_pairs_each_run_with_its_own_flips(ablation, tmp_path, monkeypatch, capsys):
  out = str(tmp_path)
  _write_run(out, "isic2017_plus_s0", [0.5, 0.6, 0.7, 0.8])  # the flips add 0.01 to each image
  _write_run(out, "isic2017_plus_s1", [0.1, 0.2, 0.3, 0.4])
  _write_run(out, "plus_dice_only_s0", [0.5, 0.6, 0.7, 0.8])
  line = ablation.tta_gain(argparse.Namespace(out=out, results=[]), "isic2017_plus")
  # the seeds differ by 40 points, but each run is paired with its own flips
  assert line.startswith("isic2017_plus (2 seeds), flips - no flips, 4 images: Jaccard +1.00 "
                         "points, 95% interval over seeds and images [+1.00, +1.00]; flips better "
                         "on 4")
  assert "per seed: no flips 65.00 25.00 | flips 66.00 26.00; over runs, paired:" in line
  assert "exact sign-flip p = 0.50 (the least possible with 2 runs: 0.50)" in line
  monkeypatch.setattr(sys, "argv", ["ablation.py", f"--out={out}",
                                    "--tta_gain=isic2017_plus,plus_dice_only"])
  ablation.main()
  printed = [p for p in capsys.readouterr().out.splitlines() if not p.startswith(" ")]
  assert [p.split(" (")[0] for p in printed] == ["isic2017_plus", "plus_dice_only"]


def _write_ensemble(folder, members, ensemble):
  """A scored ensemble as evaluate writes it: each member's and the ensemble's variants."""
  _write_scores(folder, {f"member_{i}": j for i, j in enumerate(members)} | {"ensemble": ensemble})


def test_ensemble_gain_pairs_the_ensemble_with_its_members_mean(ablation, tmp_path, monkeypatch,
                                                                 capsys):
  """Against the mean of its own members per image; a kept <row>_ensemble/ folder is read where
  --out has none, and the table lists it."""
  out, kept = str(tmp_path / "runs"), str(tmp_path / "kept")
  # members' mean per image .5 .6 .7 .8; the ensemble +.1 on two images, -.05 on one
  _write_ensemble(os.path.join(kept, "isic2017_plus_ensemble"),
                  [[0.4, 0.5, 0.7, 0.9], [0.6, 0.7, 0.7, 0.7]], [0.6, 0.7, 0.65, 0.8])
  _write_run(out, "isic2017_plus_s0", [0.4, 0.5, 0.7, 0.9])
  args = argparse.Namespace(out=out, results=[kept])
  plain, flipped = ablation.ensemble_gain(args, "isic2017_plus")
  assert plain.startswith("isic2017_plus ensemble of 2 - its members' mean, model, 4 images: "
                          "Jaccard +3.75 points")
  assert "the ensemble better on 2 images, worse on 1" in plain
  # against each member: +6.25 and +1.25 points; the members resampled with the images
  assert "per seed: members 62.50 67.50 | the ensemble 68.75;" in plain
  lo, hi = _interval(plain)
  assert lo < 0.75 and hi > 6.0
  assert flipped.startswith("isic2017_plus ensemble of 2 - its members' mean, model+tta, 4 "
                            "images: Jaccard +3.75 points")
  assert "| isic2017_plus: ensemble of the seeds | - | no | 68.8 |" in "\n".join(
      line.replace(ablation.ROWS["isic2017_plus"].title, "isic2017_plus")
      for line in ablation.table(args).splitlines())
  monkeypatch.setattr(sys, "argv", ["ablation.py", f"--out={out}", f"--results={kept}",
                                    "--ensemble_gain=isic2017_plus"])
  ablation.main()
  assert len(capsys.readouterr().out.splitlines()) == 4
  with pytest.raises(SystemExit, match="no scored ensemble of row 'plus_dice_only'"):
    ablation.ensemble_gain(args, "plus_dice_only")


def _rows_with_seed_spread(spread, gap, images=200):
  """Two rows' runs x images Jaccards: row a's two runs `spread` apart, row b `gap` above a's
  mean with the same spread, plus per-image noise."""
  rng = np.random.default_rng(1)
  base = rng.uniform(0.5, 0.9, images)
  offsets = np.array([[-spread / 2], [spread / 2]])
  a = base + offsets + rng.normal(0, 0.01, (2, images))
  b = base + gap + offsets + rng.normal(0, 0.01, (2, images))
  return a, b


def test_hierarchical_interval_holds_the_seeds_spread(ablation):
  """Runs of one row 10 points apart, rows 1 point apart: the image-only interval (each row's
  runs averaged first) excludes 0, the interval over seeds and images is wider and includes it."""
  a, b = _rows_with_seed_spread(spread=0.10, gap=0.01)
  both = np.percentile(ablation.hierarchical_bootstrap(a, b), [2.5, 97.5])
  images = np.percentile(ablation.hierarchical_bootstrap(a.mean(0, keepdims=True),
                                                         b.mean(0, keepdims=True)), [2.5, 97.5])
  assert images[0] > 0 and both[0] < 0 < both[1]
  assert both[1] - both[0] > 5 * (images[1] - images[0])


def test_hierarchical_interval_with_identical_seeds_is_the_image_interval(ablation):
  a, b = _rows_with_seed_spread(spread=0.0, gap=0.01)
  a[1], b[1] = a[0], b[0]
  both = ablation.hierarchical_bootstrap(a, b, draws=2000)
  images = ablation.hierarchical_bootstrap(a[:1], b[:1], draws=2000)
  np.testing.assert_allclose(both, images)
  np.testing.assert_allclose(ablation.paired_runs_bootstrap(b - a, draws=2000), images)


def test_run_level_tests_say_when_two_seeds_cannot_decide(ablation):
  """However far apart, 2 runs against 2 cannot give an exact p below 1/3, 3 against 3 below
  1/10; a sign-flip over 2 paired runs not below 1/2."""
  p, least = ablation.permutation_p(np.array([0.70, 0.71]), np.array([0.80, 0.81]))
  assert (round(p, 4), round(least, 4)) == (0.3333, 0.3333)
  p, least = ablation.permutation_p(np.array([0.70, 0.71, 0.72]), np.array([0.80, 0.81, 0.82]))
  assert (round(p, 4), round(least, 4)) == (0.1, 0.1)
  p, _ = ablation.permutation_p(np.array([0.70, 0.80, 0.75]), np.array([0.71, 0.79, 0.76]))
  assert p == 1.0
  assert ablation.sign_flip_p(np.array([0.01, 0.02])) == (0.5, 0.5)
  assert ablation.sign_flip_p(np.array([0.01, -0.02, 0.005]))[0] == 1.0
  assert ablation._t_p(np.array([0.7, 0.71]), np.array([0.8, 0.81])) < 0.05
  assert np.isnan(ablation._t_p(np.array([0.7]), np.array([0.8, 0.81])))


def test_compare_prints_per_seed_means_and_a_test_over_runs(ablation, tmp_path, monkeypatch,
                                                            capsys):
  """Seeds 0 and 1 of each row 20 points apart, the rows 5 apart: the interval includes 0 and
  the seeds' means are printed; --same_runs pairs the runs by seed (each 5 points up on every
  image), which fixes the difference."""
  out = str(tmp_path)
  base = [0.5, 0.6, 0.7, 0.8]
  _write_run(out, "ema_raw_s0", base)
  _write_run(out, "ema_raw_s1", [j - 0.2 for j in base])
  _write_run(out, "ema_s0", [j + 0.05 for j in base])
  _write_run(out, "ema_s1", [j - 0.15 for j in base])
  args = argparse.Namespace(out=out, results=[])
  line = ablation.compare(args, "ema_raw", "ema")
  assert line.startswith("ema (2 seeds) - ema_raw (2 seeds), model, 4 images: Jaccard +5.00 "
                         "points, 95% interval over seeds and images [")
  lo, hi = _interval(line)
  assert lo < 0 < 5 < hi
  assert "per seed: ema_raw 65.00 45.00 | ema 70.00 50.00; over runs: Welch t p = " in line
  assert "exact permutation p = 0.67 (the least possible with 2 and 2 runs: 0.33)" in line
  paired = ablation.compare(args, "ema_raw", "ema", same_runs=True)
  assert paired.startswith("ema (2 seeds) - ema_raw (2 seeds), the same runs, model, 4 images: "
                           "Jaccard +5.00 points, 95% interval over seeds and images "
                           "[+5.00, +5.00]; ema better on 4 images, worse on 0")
  assert "exact sign-flip p = 0.50 (the least possible with 2 runs: 0.50)" in paired
  _write_run(out, "bce_only_s3", base)
  with pytest.raises(SystemExit, match="share no seed"):
    ablation.compare(args, "ema", "bce_only", same_runs=True)
  single = ablation.compare(args, os.path.join(out, "ema_s0"), os.path.join(out, "ema_raw_s0"))
  assert "95% interval over images only (one run per row) [-5.00, -5.00]" in single
  assert "one run per row: the interval covers images only, no test over runs" in single
  monkeypatch.setattr(sys, "argv", ["ablation.py", f"--out={out}", "--compare=ema_raw,ema",
                                    "--same_runs"])
  ablation.main()
  printed = capsys.readouterr().out.splitlines()
  assert len(printed) == 4 and "the same runs, model+tta" in printed[2]
  assert printed[1].startswith("  per seed: ema_raw 65.00 45.00 | ema 70.00 50.00;")
