"""train.init_from: S starts from a trained run's inference variables (C fresh), refused where the
shapes differ."""

import jax
import numpy as np
import pytest

from segan_jax import inference, train
from segan_jax.config_validation import ConfigError
from segan_jax.configs import tiny


def _tiny(**train_fields):
  config = tiny.get_config()
  config.data.val_size = 5
  for name, value in train_fields.items():
    setattr(config.train, name, value)
  return config


def _max_gap(a, b) -> float:
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_a_run_starts_from_another_runs_segmentor(trained_run, tmp_path):
  source = inference.load_model(trained_run)
  config = _tiny(init_from=trained_run)
  cfg = train.build_step_config(config, steps_per_epoch=4)
  fresh_seg, fresh_critic = train.create_states(config, cfg)
  started = train.start_from(fresh_seg, train.init_variables(trained_run, config))
  assert _max_gap(started.params, source.variables["params"]) == 0.0
  assert _max_gap(started.batch_stats, source.variables["batch_stats"]) == 0.0
  assert _max_gap(fresh_seg.params, source.variables["params"]) > 1e-3  # the test can fail

  # One training step later S is still the source's, moved by one update; C is the fresh one.
  config.train.num_steps = config.train.eval_every = config.train.checkpoint_every = 1
  train.train_and_evaluate(config, str(tmp_path / "tuned"))
  tuned = inference.load_model(str(tmp_path / "tuned"), use_ema=False)
  step_size = 10 * float(config.optim.learning_rate)
  assert _max_gap(tuned.variables["params"], source.variables["params"]) < step_size
  assert _max_gap(fresh_seg.params, tuned.variables["params"]) > 1e-3
  del fresh_critic


def test_init_from_is_refused_for_another_shape_or_an_unknown_source(trained_run, tmp_path):
  config = _tiny(init_from=trained_run)
  config.model.width = 4
  with pytest.raises(ConfigError, match=r"init_from=.*model\.width 2 there, 4 here"):
    train.init_variables(trained_run, config)
  with pytest.raises(ConfigError, match=r"config\.train\.init_from='no_such_model'"):
    train.init_variables("no_such_model", _tiny())
  with pytest.raises(ConfigError, match="init_from"):
    train.init_variables(str(tmp_path), _tiny())  # a folder without checkpoints
