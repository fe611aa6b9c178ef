"""Loading trained runs, batched prediction with padding, ensembles and test-time flips."""

import json
import os

import jax
import numpy as np
import pytest
from eval_fixtures import BATCH

from segan_jax import inference
from segan_jax.activations import adaptive_logistic
from segan_jax.data import sources
from segan_jax.data.arrays import prepare_eval


@pytest.fixture(scope="module")
def model(trained_run):
  return inference.load_model(trained_run)


@pytest.fixture(scope="module")
def val_images(model):
  _, val = sources.load_splits(model.config)
  return prepare_eval(val, model.image_size).images


def test_load_model_defaults_to_latest_checkpoint_and_its_facts(trained_run, model):
  assert inference.available_steps(trained_run) == [2, 4]
  assert model.step == 4
  assert model.sources == {"step": "latest checkpoint", "k": "checkpoint",
                           "threshold": "checkpoint"}
  extras = model.checkpoint_extras
  assert model.k == pytest.approx(extras["k"]) and model.threshold == extras["threshold"] == 0.4
  assert extras["steps_per_epoch"] == 4
  # k decays every epoch (4 steps) here: step 4's checkpoint holds the k of its last update (step
  # 3, epoch 0), not the schedule's k at step 4 (epoch 1), which no update has used.
  assert extras["k"] == pytest.approx(1.0) and model.k == pytest.approx(1.0)
  assert int(model.config.model.width) == 2 and model.image_size == 128


@pytest.mark.parametrize("k, threshold", [(None, float("nan")), (None, 2.0), (None, 0.0),
                                          (None, -1.0), (0.0, None), (float("inf"), None),
                                          (float("nan"), None), (-1.0, None)])
def test_unusable_k_or_threshold_overrides_are_refused(trained_run, k, threshold):
  with pytest.raises(inference.RunError, match=r"--k > 0|--threshold in \(0, 1\)"):
    inference.load_model(trained_run, k=k, threshold=threshold)


def test_load_model_chosen_step_and_overrides(trained_run):
  m = inference.load_model(trained_run, step=2, k=0.3, threshold=0.6)
  assert (m.step, m.k, m.threshold) == (2, 0.3, 0.6)
  assert set(m.sources.values()) == {"argument"}
  with pytest.raises(inference.RunError, match=r"available steps: \[2, 4\]"):
    inference.load_model(trained_run, step=3)


def test_load_model_errors_name_the_problem(tmp_path):
  with pytest.raises(inference.RunError, match="config.json does not exist"):
    inference.load_model(str(tmp_path))
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(inference.RunError, match="no checkpoints"):
    inference.load_model(str(tmp_path))


def test_selection_file_is_used_by_default_and_can_be_ignored(run_copy):
  inference.write_selection(run_copy, {"step": 2, "k": 0.5, "threshold": 0.3})
  m = inference.load_model(run_copy)
  assert (m.step, m.k, m.threshold) == (2, 0.5, 0.3)
  assert set(m.sources.values()) == {"selection.json"}
  m = inference.load_model(run_copy, use_selection=False)
  assert m.step == 4 and m.sources["k"] == "checkpoint"
  m = inference.load_model(run_copy, threshold=0.7)
  assert (m.threshold, m.sources["threshold"], m.sources["k"]) == (0.7, "argument",
                                                                  "selection.json")


def test_padding_does_not_change_results(model, val_images):
  predictor = inference.Predictor([model], BATCH)
  probs = predictor.probabilities(val_images)  # 5 images: a full batch and a padded one
  assert probs.shape == (5, 128, 128, 1) and probs.dtype == np.float32
  assert 0.0 <= probs.min() and probs.max() <= 1.0
  alone = predictor.probabilities(val_images[2:3])  # padded with 3 blank images
  np.testing.assert_allclose(alone[0], probs[2], atol=1e-6)


def test_probabilities_are_sigmoid_of_logits_over_k(model, val_images):
  predictor = inference.Predictor([model], BATCH)
  logits = predictor.logit_views(val_images[:2])[0]
  assert logits.shape == (1, 2, 128, 128, 1)
  expected = np.asarray(adaptive_logistic(logits[0], model.k))
  np.testing.assert_allclose(predictor.probabilities(val_images[:2]), expected, atol=1e-6)
  np.testing.assert_allclose(inference.combine([logits], [0.3]),
                             np.asarray(adaptive_logistic(logits[0], 0.3)), atol=1e-6)


def test_ensemble_of_one_run_twice_equals_the_run(model, val_images):
  single = inference.Predictor([model], BATCH).probabilities(val_images)
  double = inference.Predictor([model, model], BATCH).probabilities(val_images)
  np.testing.assert_array_equal(double, single)


def test_ensemble_averages_members_with_their_own_k():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(2, 1, 3, 4, 4, 1)).astype(np.float32)
  got = inference.combine([a, b], [0.5, 2.0])
  expected = (np.asarray(jax.nn.sigmoid(a[0] / 0.5)) + np.asarray(jax.nn.sigmoid(b[0] / 2.0))) / 2
  np.testing.assert_allclose(got, expected, atol=1e-6)


class _ChannelZero:
  """A stand-in segmentor whose 'logits' are the first input channel: flips must round-trip."""

  def apply(self, variables, x, train):
    del variables, train
    return x[..., :1]


def test_tta_views_are_flipped_back():
  x = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype(np.float32)
  views = np.asarray(inference.forward_views(_ChannelZero(), {}, x, "flips"))
  assert views.shape == (4, 2, 8, 8, 1)
  for view in views:
    np.testing.assert_array_equal(view, x[..., :1])


def test_tta_is_flip_equivariant_and_includes_the_plain_view(model, val_images):
  images = val_images[:BATCH]
  plain = inference.Predictor([model], BATCH).probabilities(images)
  tta = inference.Predictor([model], BATCH, tta="flips")
  views = tta.logit_views(images)[0]
  assert views.shape == (4, BATCH, 128, 128, 1)
  np.testing.assert_allclose(inference.combine([views[:1]], [model.k]), plain, atol=1e-5)
  probs = inference.combine([views], [model.k])
  assert probs.shape == plain.shape and 0.0 <= probs.min() and probs.max() <= 1.0
  for axis in (1, 2):  # flipping the input flips the TTA output
    flipped = tta.probabilities(np.flip(images, axis=axis).copy())
    np.testing.assert_allclose(flipped, np.flip(probs, axis=axis), atol=1e-5)


def test_predictor_rejects_wrong_shapes(model):
  with pytest.raises(ValueError, match=r"\(M, 128, 128, 3\)"):
    inference.Predictor([model], BATCH).probabilities(np.zeros((1, 64, 64, 3), np.uint8))
  with pytest.raises(ValueError, match="Unknown TTA mode"):
    inference.Predictor([model], BATCH, tta="rot90")


def test_config_of_an_older_run_gets_defaults(trained_run, tmp_path):
  config = json.load(open(os.path.join(trained_run, "config.json")))
  del config["eval"]["num_panels"]
  run = tmp_path / "old"
  run.mkdir()
  (run / "config.json").write_text(json.dumps(config))
  loaded = inference.load_config(str(run))
  assert loaded.eval.num_panels == 4 and loaded.model.width == 2
