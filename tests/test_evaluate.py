"""Evaluation by the ISIC protocol: files, consistency with segan_jax.metrics, search, ensembles."""

import csv
import json
import os
import subprocess
import sys

import isic_fixtures as fx
import jax
import numpy as np
import pytest
from eval_fixtures import BATCH, switch_on_eval_option
from PIL import Image

from segan_jax import evaluate, inference, metrics, predict
from segan_jax.configs import tiny
from segan_jax.data import folder, sources


def _read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def _isic_scores_by_hand(prob, mask, threshold):
  """ISIC 2017's per-image metrics of a probability map against its 0/255 mask, written out from
  the protocol: the map resized bilinearly to the mask's size and thresholded; zero denominators
  score 1 (ISIC's freebies); thresholded Jaccard keeps a Jaccard of at least 0.65."""
  height, width = mask.shape[:2]
  resized = np.asarray(Image.fromarray(np.asarray(prob, np.float32)).resize(
      (width, height), Image.BILINEAR))
  pred, truth = resized > threshold, np.asarray(mask).reshape(height, width) > 127
  tp, fp = int(np.sum(pred & truth)), int(np.sum(pred & ~truth))
  fn, tn = int(np.sum(~pred & truth)), int(np.sum(~pred & ~truth))
  union = tp + fp + fn
  jaccard = tp / union if union else 1.0
  return {"accuracy": (tp + tn) / (tp + fp + fn + tn),
          "sensitivity": tp / (tp + fn) if tp + fn else 1.0,
          "specificity": tn / (tn + fp) if tn + fp else 1.0,
          "jaccard": jaccard, "dice": 2 * tp / (2 * tp + fp + fn) if union else 1.0,
          "thresholded_jaccard": jaccard if jaccard >= 0.65 else 0.0}


@pytest.fixture(scope="module")
def single(trained_run, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("eval_single"))
  return evaluate.evaluate([trained_run], output=out, batch_size=BATCH, log=lambda *_: None)


def test_outputs_match_the_protocol_recomputed_by_hand_at_original_resolution(trained_run, single):
  out = single["output"]
  summary = json.load(open(os.path.join(out, "summary.json")))
  assert summary["primary"] == "model" and list(summary["variants"]) == ["model"]
  rows = _read_csv(os.path.join(out, "per_image.csv"))
  assert list(rows[0]) == ["id", *metrics.METRIC_NAMES] and len(rows) == 5
  assert os.path.exists(os.path.join(out, "worst_cases.png"))

  # Recompute every row independently of evaluate and segan_jax.metrics, from the protocol: the
  # training run's own validation pairs, each network-size map resized bilinearly (PIL, float) to
  # its mask's original size and thresholded, the truth `> 127`, ISIC's metrics per image.
  model = inference.load_model(trained_run)
  val = sources.load_splits(model.config)[1]
  assert [row["id"] for row in rows] == [e.id for e in val]
  assert any(e.mask.shape != (128, 128) for e in val)  # the originals are not the network size
  images = np.stack([np.asarray(Image.fromarray(e.image).resize((128, 128), Image.BILINEAR))
                     for e in val])
  probs = inference.Predictor([model], BATCH).probabilities(images)
  expected = [_isic_scores_by_hand(p[..., 0], e.mask, model.threshold)
              for p, e in zip(probs, val)]
  for row, exp in zip(rows, expected):
    for name in metrics.METRIC_NAMES:
      assert float(row[name]) == pytest.approx(exp[name], abs=1e-12), (row["id"], name)
  for name in metrics.METRIC_NAMES:
    assert summary["variants"]["model"]["summary"][name] == pytest.approx(
        np.mean([e[name] for e in expected]), abs=1e-12), name


def test_examples_spread_over_the_ranking_best_first(single):
  rows = [{"id": f"i{n}", "jaccard": j, "dice": j} for n, j in
          enumerate([0.5, 0.9, 0.1, 0.7, 0.3, 0.8, 0.2])]
  picked = evaluate.spread_by_rank(rows, 3)
  assert [r["jaccard"] for r in picked] == [0.9, 0.5, 0.1]  # best, median, worst
  assert len(evaluate.spread_by_rank(rows, 20)) == 7 and evaluate.spread_by_rank(rows, 0) == []
  # The run's examples.png: all 5 validation images (fewer than the default 8), in 2 columns.
  assert [e["id"] for e in single["examples"]] == [
      r["id"] for r in sorted(_read_csv(os.path.join(single["output"], "per_image.csv")),
                              key=lambda r: (-float(r["jaccard"]), r["id"]))]
  width, height = Image.open(os.path.join(single["output"], "examples.png")).size
  worst_width, _ = Image.open(os.path.join(single["output"], "worst_cases.png")).size
  assert width > 1.5 * worst_width and height > 192


def test_single_model_score_equals_training_validation(trained_run, single):
  trained = json.load(open(os.path.join(trained_run, "metrics.json")))["val"]
  scored = single["variants"]["model"]["summary"]
  for name in metrics.METRIC_NAMES:
    assert scored[name] == pytest.approx(trained[name], abs=1e-6)


def test_fast_threshold_grid_matches_the_metrics_module(trained_run):
  model = inference.load_model(trained_run)
  eval_set = evaluate.load_eval_set(model.config, "validation", model.image_size)
  probs = inference.Predictor([model], BATCH).probabilities(eval_set.images)
  thresholds = (0.9, 0.2, 0.4, 0.5)
  fast = evaluate.jaccard_by_threshold(probs, eval_set, thresholds)
  for t, value in zip(thresholds, fast):
    assert value == pytest.approx(evaluate.score(probs, eval_set, t).summary()["jaccard"],
                                  abs=1e-12)
  # Edge cases: everything below every threshold (empty prediction) and ISIC's both-empty = 1.
  empty = evaluate.jaccard_by_threshold(np.zeros_like(probs), eval_set, (0.5,))
  assert empty[0] == pytest.approx(evaluate.score(np.zeros_like(probs), eval_set, 0.5)
                                   .summary()["jaccard"])
  blank = eval_set.__class__(ids=["a"], images=eval_set.images[:1],
                             masks=[np.zeros((37, 53), np.uint8)], original_sizes=[(37, 53)])
  assert evaluate.jaccard_by_threshold(np.zeros((1, 128, 128, 1), np.float32), blank,
                                       (0.5,))[0] == 1.0


def test_search_picks_grid_values_persists_them_and_they_are_used(run_copy):
  result = evaluate.evaluate([run_copy], search=True, k_grid=(0.3, 0.9),
                             threshold_grid=(0.3, 0.4, 0.5), batch_size=BATCH,
                             log=lambda *_: None)
  selection = json.load(open(os.path.join(run_copy, "selection.json")))
  assert selection["step"] in (2, 4) and selection["k"] in (0.3, 0.9)
  assert selection["threshold"] in (0.3, 0.4, 0.5)
  assert len(selection["results"]) == 2 * 2 * 3
  assert selection["validation_jaccard"] == max(r["jaccard"] for r in selection["results"])
  assert selection["data"]["split"] == "validation"
  # Evaluate used the selection, and its full-protocol Jaccard equals the search's.
  (described,) = result["models"]
  assert (described["step"], described["k"], described["threshold"]) == (
      selection["step"], selection["k"], selection["threshold"])
  assert result["variants"]["model"]["summary"]["jaccard"] == pytest.approx(
      selection["validation_jaccard"], abs=1e-9)
  assert result["selection_split_warning"]
  # Later runs use it by default.
  model = inference.load_model(run_copy)
  assert model.sources == {"step": "selection.json", "k": "selection.json",
                           "threshold": "selection.json"}


def test_search_refuses_other_splits(trained_run):
  with pytest.raises(evaluate.EvaluationError, match="validation data only"):
    evaluate.evaluate([trained_run], split="train", search=True)


def test_ensemble_and_tta_are_reported_separately(trained_run, tmp_path):
  result = evaluate.evaluate([trained_run, trained_run], tta="flips", output=str(tmp_path),
                             batch_size=BATCH, log=lambda *_: None)
  variants = result["variants"]
  assert list(variants) == ["member_0", "member_1", "ensemble", "member_0+tta", "member_1+tta",
                            "ensemble+tta"]
  assert result["primary"] == "ensemble+tta"
  assert variants["ensemble"]["summary"] == variants["member_0"]["summary"]
  assert variants["ensemble+tta"]["summary"] == variants["member_0+tta"]["summary"]
  assert result["gains"]["ensemble_vs_mean_member_jaccard"] == 0.0
  assert result["gains"]["tta_on_ensemble_jaccard"] == pytest.approx(
      variants["ensemble+tta"]["summary"]["jaccard"] - variants["ensemble"]["summary"]["jaccard"])
  rows = _read_csv(tmp_path / "per_image_all_variants.csv")
  assert len(rows) == 6 * 5 and rows[0]["variant"] == "member_0"
  table = evaluate.format_table(result)
  assert "ensemble+tta" in table and "gain tta_on_ensemble_jaccard" in table


def test_cli_prints_table_and_writes_files(trained_run, tmp_path):
  out = tmp_path / "cli"
  cmd = [sys.executable, "-m", "segan_jax.evaluate", f"--workdir={trained_run}", f"--output={out}",
         f"--batch_size={BATCH}", "--num_worst=2",
         f"--jax_cache_dir={jax.config.jax_compilation_cache_dir or ''}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Jaccard" in proc.stdout and "model" in proc.stdout
  assert {"summary.json", "per_image.csv", "worst_cases.png", "examples.png"} <= set(
      os.listdir(out))
  bad = subprocess.run(cmd[:4] + ["--split=test", "--search"], capture_output=True, text=True,
                       timeout=600)
  assert bad.returncode == 2 and "validation data only" in bad.stderr


def test_folder_of_held_out_pairs_is_scored_at_original_size(trained_run, tmp_path):
  rng = np.random.default_rng(7)
  sizes = {"p1": (90, 120), "p2": (61, 47)}
  masks = {}
  for name, (h, w) in sizes.items():
    masks[name] = np.where(rng.random((h, w)) > 0.5, 255, 0).astype(np.uint8)
    for sub, array, suffix in (("images", rng.integers(0, 256, (h, w, 3), dtype=np.uint8), ".png"),
                               ("masks", masks[name], "_segmentation.png")):
      os.makedirs(tmp_path / "data" / sub, exist_ok=True)
      Image.fromarray(array).save(tmp_path / "data" / sub / f"{name}{suffix}")
  result = evaluate.evaluate([trained_run], split="all", data_source="folder",
                             data_dir=str(tmp_path / "data"), output=str(tmp_path / "out"),
                             batch_size=BATCH, log=lambda *_: None)
  assert result["data"]["num_images"] == 2 and result["data"]["source"] == "folder"
  rows = {r["id"]: r for r in _read_csv(tmp_path / "out" / "per_image.csv")}
  assert sorted(rows) == ["p1", "p2"]

  # By hand: the model's maps at the network's size, scored against the masks as written (their
  # original sizes), and against the masks resized to the network's size instead.
  model = inference.load_model(trained_run)
  side = model.image_size
  config = evaluate.apply_data_overrides(model.config, "folder", str(tmp_path / "data"))
  eval_set = evaluate.load_eval_set(config, "all", side)
  probs = inference.Predictor([model], BATCH).probabilities(eval_set.images)[..., 0]
  assert probs.shape[1:] == (side, side) and all(sizes[i] != (side, side) for i in sizes)
  by_hand = {}
  for image_id, prob in zip(eval_set.ids, probs):
    original = metrics.score_prediction(prob, masks[image_id], model.threshold)
    at_network_size = metrics.score_prediction(
        prob, np.asarray(Image.fromarray(masks[image_id]).resize((side, side), Image.NEAREST)),
        model.threshold)
    for name in metrics.METRIC_NAMES:
      assert float(rows[image_id][name]) == pytest.approx(original[name], abs=1e-12), name
    assert any(abs(original[n] - at_network_size[n]) > 1e-4 for n in metrics.METRIC_NAMES)
    by_hand[image_id] = original
  summary = result["variants"]["model"]["summary"]
  for name, value in metrics.summarize(list(by_hand.values())).items():
    assert summary[name] == pytest.approx(value, abs=1e-12), name
  with pytest.raises(evaluate.EvaluationError, match="no test split"):
    evaluate.evaluate([trained_run], split="test", data_source="folder",
                      data_dir=str(tmp_path / "data"), log=lambda *_: None)


def test_validation_split_of_a_folder_decodes_only_the_held_out_pairs(trained_run, tmp_path):
  """--split=validation scores the run's hold-out of a folder without decoding its training
  pairs: with every training-only image unreadable, the scores are the same as before."""
  data_dir = str(tmp_path / "data")
  ids = fx.write_generic(data_dir, 20)  # the run's data.val_fraction 0.1 holds out 2
  quiet = dict(split="validation", data_source="folder", data_dir=data_dir, tta="none",
               postprocess=False, batch_size=BATCH, num_worst=0, num_examples=0,
               log=lambda *_: None)
  before = evaluate.evaluate([trained_run], output=str(tmp_path / "before"), **quiet)
  held = [r["id"] for r in _read_csv(tmp_path / "before" / "per_image.csv")]
  assert before["data"]["num_images"] == len(held) == 2 and set(held) < set(ids)
  config = evaluate.apply_data_overrides(inference.load_config(trained_run), "folder", data_dir)
  for pair in folder.scan(data_dir)["train"]:
    if pair.id not in held:
      fx.truncate_pixels(pair.image.path)
  with pytest.raises(folder.DataError, match="unreadable"):
    evaluate.load_examples(config, "train", 128)
  after = evaluate.evaluate([trained_run], output=str(tmp_path / "after"), **quiet)
  assert _read_csv(tmp_path / "after" / "per_image.csv") == _read_csv(
      tmp_path / "before" / "per_image.csv")
  assert after["variants"] == before["variants"]


@pytest.mark.parametrize("num_classes", [1, 3])
def test_synthetic_validation_examples_are_the_training_validation_split(num_classes):
  config = tiny.get_config()
  config.model.num_classes = num_classes
  expected = sources.load_splits(config)[1]
  examples = evaluate.load_examples(config, "validation", 128)
  assert [e.id for e in examples] == [e.id for e in expected] and len(examples) >= 2
  for got, want in zip(examples, expected):
    np.testing.assert_array_equal(got.image, want.image)
    np.testing.assert_array_equal(got.mask, want.mask)


def test_config_eval_tta_is_the_default_of_evaluate_and_predict(run_copy, tmp_path):
  """A run whose config sets eval.tta is scored and predicted over the flipped views unless the
  caller says otherwise, from Python as from the command lines (the library's default is the
  run's config); the default config scores the plain view alone."""
  quiet = dict(batch_size=BATCH, num_worst=0, num_examples=0, log=lambda *_: None)
  plain = evaluate.evaluate([run_copy], output=str(tmp_path / "plain"), **quiet)
  assert plain["tta"] == "none" and list(plain["variants"]) == ["model"]
  switch_on_eval_option(run_copy, "tta")
  by_config = evaluate.evaluate([run_copy], output=str(tmp_path / "a"), **quiet)
  assert by_config["tta"] == "flips" and by_config["primary"] == "model+tta"
  assert inference.Predictor(inference.load_models([run_copy]), BATCH).tta == "flips"
  overridden = evaluate.evaluate([run_copy], output=str(tmp_path / "b"), tta="none", **quiet)
  assert overridden["tta"] == "none" and overridden["primary"] == "model"

  images = tmp_path / "images"
  images.mkdir()
  rng = np.random.default_rng(3)
  for i in range(2):
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(images / f"x{i}.png")
  models = inference.load_models([run_copy])
  reports = {tta: predict.predict_files(models, [str(images)], str(tmp_path / f"p_{tta}"),
                                        batch_size=BATCH, progress=False, log=lambda *_: None,
                                        save_probabilities=True,
                                        **({} if tta is None else {"tta": tta}))
             for tta in (None, "none")}
  assert reports[None]["tta"] == "flips" and reports["none"]["tta"] == "none"
  flipped = np.asarray(Image.open(tmp_path / "p_None" / "x0_probability.png"))
  unflipped = np.asarray(Image.open(tmp_path / "p_none" / "x0_probability.png"))
  assert not np.array_equal(flipped, unflipped)


def test_tta_flag_leaves_the_default_to_the_run(trained_run):
  config = inference.load_config(trained_run)
  assert inference.tta_from_flag(None) is None
  assert inference.tta_mode(None, config) == "none"
  config.eval.tta = True
  assert inference.tta_mode(None, config) == "flips"
  assert inference.tta_mode(inference.tta_from_flag(False), config) == "none"
  assert inference.tta_mode(inference.tta_from_flag(True), config) == "flips"
