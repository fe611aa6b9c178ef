"""Recipe options end to end: the authors' and the plus recipe configs, S's moving average and the
spectrally normalised critic through training, checkpoints and inference, and their config checks.
Two short runs cover them all, each option in a run whose other options it does not interact
with."""

import glob
import json
import os

import jax
import numpy as np
import pytest

from segan_jax import checkpoints, evaluate, inference, summaries, train
from segan_jax.config_validation import ConfigError, validate_config
from segan_jax.configs import isic2017, isic2017_authors, isic2017_plus
from segan_jax.train_state import EMATrainState, TrainState
from segan_jax.workdir import flatten_config


def _tiny(config):
  """`config` at the tiny config's width and data size, trained for 2 steps."""
  config.model.width = 2
  config.data.source = "synthetic"
  config.data.train_size, config.data.val_size = 8, 2
  config.train.batch_size = 4
  config.train.num_steps, config.train.num_epochs = 2, 0
  config.train.log_every = config.train.eval_every = config.train.checkpoint_every = 2
  config.eval.batch_size, config.eval.num_panels = 2, 0
  return config


def _train(config, root):
  workdir = str(root / "run")
  return config, workdir, train.train_and_evaluate(config, workdir)


@pytest.fixture(scope="module")
def authors_run(tmp_path_factory):
  """The authors' recipe trained for 2 steps, with the spectrally normalised critic in place of
  clipping: the constraint is independent of the recipe, so one run checks both."""
  config = _tiny(isic2017_authors.get_config())
  config.train.critic_constraint = "spectral_norm"
  return _train(config, tmp_path_factory.mktemp("authors"))


@pytest.fixture(scope="module")
def plus_run(tmp_path_factory):
  """isic2017_plus (S's moving average among its changes) trained for 2 steps."""
  return _train(_tiny(isic2017_plus.get_config()), tmp_path_factory.mktemp("plus"))


def _logged(workdir, step):
  """The scalars a run logged at `step` (its TensorBoard event files), by tag."""
  from tensorboard.compat.proto import event_pb2
  scalars = {}
  for path in glob.glob(os.path.join(workdir, "events.out.tfevents.*")):
    with open(path, "rb") as f:
      for _, payload in summaries._records(f.read()):
        event = event_pb2.Event.FromString(payload)
        if event.step == step:
          scalars.update({v.tag: v.simple_value for v in event.summary.value
                          if v.HasField("simple_value")})
  return scalars


def _assert_trained(run, terms, learning_rate):
  """The run made its 2 steps with finite critic loss and terms of S's objective (`terms`) at the
  recipe's learning rate, and its model maps the validation images to probabilities (an all-NaN
  map would still score a finite Jaccard of 0); returns that model."""
  config, workdir, result = run
  assert result["step"] == 2
  logged = _logged(workdir, 2)
  assert {"critic_loss", *terms} <= set(logged), sorted(logged)
  assert all(np.isfinite(logged[name]) for name in ("critic_loss", *terms))
  assert logged["segmentor_lr"] == pytest.approx(learning_rate)
  assert logged["critic_lr"] == pytest.approx(learning_rate)
  assert set(result["val"]) >= {"jaccard", "dice"} and "val_jaccard" in logged
  model = inference.load_model(workdir)
  images = evaluate.load_eval_set(config, "validation", model.image_size).images
  probs = inference.Predictor([model], 2).probabilities(images)
  assert probs.shape == (2, 128, 128, 1)
  assert np.all(np.isfinite(probs)) and probs.min() >= 0.0 and probs.max() <= 1.0
  return model


def test_authors_recipe_config_validates_and_trains_two_steps(tmp_path, authors_run):
  config = isic2017_authors.get_config()
  config.data.dir = str(tmp_path)  # the data folder is the user's to name
  validate_config(config)
  paper = isic2017.get_config()
  # What the authors' code does (docs/architecture.md, "Paper vs the authors' code").
  assert (config.train.batch_size, config.optim.learning_rate, config.optim.b1) == (36, 2e-4, 0.5)
  assert (config.optim.schedule, config.optim.decay_epochs, config.optim.decay_factor) == (
      "step_authors", 25, 0.5)
  assert (config.loss.dice_weight, config.loss.dice_form) == (1.0, "authors")
  assert config.loss.feature_reduction == "concatenated"
  assert tuple(config.loss.layer_weights) == (1, 1, 2, 2, 2, 2, 4)
  assert not config.model.residual_batchnorm and config.schedule.k_decay == 1.0
  assert config.model.init == "authors"  # net.py's He-normal kernels, BatchNorm scales N(1, .02)
  assert config.data.brightness == config.data.contrast == config.data.saturation == 0.0
  assert config.data.hue == 0.0 and config.data.whole_image_prob == 0.5
  assert config.train.num_epochs == paper.train.num_epochs  # only the recipe differs
  # Both terms of the authors' objective were trained, at the first rate (step_authors decays
  # after the first epoch: at step 2 here).
  _assert_trained(authors_run, ("adversarial_loss", "dice_loss"), 2e-4)


def test_plus_config_is_the_paper_recipe_with_its_measured_changes_and_trains(tmp_path, plus_run):
  config = isic2017_plus.get_config()
  config.data.dir = str(tmp_path)
  validate_config(config)
  plus = flatten_config(config.to_dict())
  paper = flatten_config(isic2017.get_config().to_dict())
  paper["data.dir"] = str(tmp_path)
  changed = {k: plus[k] for k in plus if plus[k] != paper.get(k)}
  assert changed == {
      "loss.dice_weight": 1.0, "loss.feature_reduction": "concatenated",
      "loss.layer_weights": (1, 1, 2, 2, 2, 2, 4), "optim.learning_rate": 2e-4,
      "optim.b1": 0.5, "optim.schedule": "constant", "data.brightness": 0.0,
      "data.contrast": 0.0, "data.saturation": 0.0, "data.hue": 0.0,
      "train.ema_decay": 0.99, "eval.postprocess": True, "eval.tta": True}
  # SegAN's critic and schedule stay: adversarial term, adaptive logistic, clipping, width, length.
  assert config.loss.adversarial_weight == 1.0 and config.schedule.k_decay == paper["schedule.k_decay"]
  assert _assert_trained(plus_run, ("adversarial_loss", "dice_loss"), 2e-4).weights == "ema"


def test_moving_average_is_checkpointed_and_used_for_inference(tmp_path, plus_run):
  config, workdir, _ = plus_run
  cfg = train.build_step_config(config, steps_per_epoch=2)
  seg, _, _, step = checkpoints.restore(checkpoints.make_manager(workdir),
                                        *train.abstract_states(config, cfg))
  assert step == 2 and isinstance(seg, EMATrainState)

  averaged = inference.load_model(workdir)
  raw = inference.load_model(workdir, use_ema=False)
  assert (averaged.weights, raw.weights) == ("ema", "raw")
  assert averaged.describe()["weights"] == "ema"
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, averaged.variables),
               jax.tree.map(np.asarray, seg.ema))
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, raw.variables["params"]),
               jax.tree.map(np.asarray, seg.params))
  images = np.random.default_rng(0).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
  p_avg = inference.Predictor([averaged], 2).probabilities(images)
  p_raw = inference.Predictor([raw], 2).probabilities(images)
  assert np.all(np.isfinite(p_avg)) and np.all(np.isfinite(p_raw))
  assert not np.allclose(p_avg, p_raw, atol=1e-5)
  # evaluate scores the average by default and the raw weights with use_ema=False (--nouse_ema).
  scored = {use: evaluate.evaluate([workdir], output=str(tmp_path / f"eval_{use}"), use_ema=use,
                                   tta="none", postprocess=False, batch_size=2, num_worst=0,
                                   num_examples=0, log=lambda *_: None)
            for use in (True, False)}
  assert [scored[u]["models"][0]["weights"] for u in (True, False)] == ["ema", "raw"]


def test_spectral_norm_vectors_are_checkpointed_as_trained(authors_run):
  config, workdir, _ = authors_run
  cfg = train.build_step_config(config, steps_per_epoch=2)
  seg0, critic0 = train.create_states(config, cfg)
  _, critic, _, step = checkpoints.restore(checkpoints.make_manager(workdir), seg0, critic0)
  assert step == 2
  # The critic's power-iteration vectors were saved as trained, not re-initialised.
  u = lambda c: np.asarray(c.batch_stats["c4_sn"]["c4_conv/kernel/u"])
  assert u(critic).shape == u(critic0).shape and not np.allclose(u(critic), u(critic0))


def test_a_run_without_the_moving_average_keeps_its_plain_structure(authors_run):
  """A run without the average (trained before it existed, or with ema_decay 0) keeps its
  structure: a plain TrainState, no `ema` in the checkpoint; it loads with its raw weights."""
  _, workdir, _ = authors_run
  old = inference.load_model(workdir)
  assert old.weights == "raw" and inference.load_model(workdir, use_ema=True).weights == "raw"
  with open(os.path.join(workdir, "checkpoints", str(old.step), "segmentor",
                         "_METADATA")) as f:
    assert not any("ema" in key for key in json.load(f)["tree_metadata"])
  plain_config = inference.load_config(workdir)
  assert plain_config.train.ema_decay == 0.0
  plain_seg, _ = train.abstract_states(plain_config, train.build_step_config(plain_config, 1))
  assert type(plain_seg) is TrainState


@pytest.mark.parametrize("field, value", [
    ("loss.dice_form", "squared"), ("train.critic_constraint", "gradient_penalty"),
    ("train.ema_decay", 1.0), ("train.ema_decay", -0.1), ("optim.schedule", "step_author")])
def test_invalid_option_values_name_the_field(field, value):
  config = _tiny(isic2017_authors.get_config())
  section, name = field.split(".")
  config[section][name] = value
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
    validate_config(config)
