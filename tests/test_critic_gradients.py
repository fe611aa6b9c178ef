"""experiments/critic_gradients.py on a tiny run trained with the critic and a Dice term."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

import experiment_scripts


@pytest.fixture(scope="module")
def script():
  return experiment_scripts.load("critic_gradients")


@pytest.fixture(scope="module")
def dice_run(tmp_path_factory):
  from segan_jax import train
  from segan_jax.configs import tiny
  config = tiny.get_config()
  config.loss.dice_weight = 1.0
  config.train.num_steps = 2
  config.train.checkpoint_every = 1
  config.train.eval_every = 2
  workdir = str(tmp_path_factory.mktemp("critic_gradients") / "run")
  train.train_and_evaluate(config, workdir)
  return workdir


def test_rows_per_checkpoint_with_norms_share_and_cosine(script, dice_run, tmp_path, capsys):
  output = str(tmp_path / "rows.json")
  script.main([f"--workdir={dice_run}", "--batches=1", f"--output={output}"])
  with open(output) as f:
    rows = json.load(f)
  assert [r["step"] for r in rows] == [1, 2]
  for row in rows:
    assert set(row) == {"step", "batches", "adversarial_loss", "dice_loss",
                        "adversarial_loss_grad_norm", "dice_loss_grad_norm", "critic_to_others",
                        "cosine"}
    assert row["adversarial_loss_grad_norm"] > 0 and row["dice_loss_grad_norm"] > 0
    # One batch: the share is the ratio of the two norms (Dice is the only other term).
    assert row["critic_to_others"] == pytest.approx(
        row["adversarial_loss_grad_norm"] / row["dice_loss_grad_norm"], rel=1e-5)
    assert -1.0 <= row["cosine"] <= 1.0 and 0 < row["dice_loss"] < 1
  printed = capsys.readouterr().out
  assert printed.startswith("| step | adversarial_loss | dice_loss | adversarial_loss_grad_norm | "
                            "dice_loss_grad_norm | critic_to_others | cosine |")
  assert printed.count("\n") == 4


def test_each_term_is_weighted_as_the_objective_weights_it(script, dice_run):
  from segan_jax import checkpoints, train
  from segan_jax.inference import load_config
  config = load_config(dice_run)
  arrays, _ = train.load_data(config)
  cfg = train.build_step_config(config, len(arrays) // config.train.batch_size)
  manager = checkpoints.make_manager(dice_run)
  segmentor, critic, _, _ = checkpoints.restore(manager, *train.abstract_states(config, cfg))
  manager.close()
  batch = next(train.train_iterator(config, arrays, 2))
  base = jax.device_get(script.term_gradients(cfg, segmentor, critic, batch))
  heavier = jax.device_get(script.term_gradients(
      dataclasses.replace(cfg, adversarial_weight=3.0), segmentor, critic, batch))
  np.testing.assert_allclose(heavier["adversarial_loss_grad_norm"],
                             3 * base["adversarial_loss_grad_norm"], rtol=1e-5)
  np.testing.assert_allclose(heavier["dice_loss_grad_norm"], base["dice_loss_grad_norm"],
                             rtol=1e-6)
  np.testing.assert_allclose(heavier["cosine"], base["cosine"], rtol=1e-4, atol=1e-6)
  # With a cross-entropy term the critic is compared with the sum of Dice's and its gradients.
  both = jax.device_get(script.term_gradients(
      dataclasses.replace(cfg, bce_weight=1.0), segmentor, critic, batch))
  assert both["bce_loss_grad_norm"] > 0
  assert both["critic_to_others"] != pytest.approx(base["critic_to_others"], rel=1e-3)


def test_runs_without_two_terms_are_refused(script, dice_run, tmp_path, capsys):
  with open(os.path.join(dice_run, "config.json")) as f:
    config = json.load(f)
  for change, message in (({"adversarial_weight": 0.0}, "trained without the critic"),
                          ({"dice_weight": 0.0}, "by the critic's term alone")):
    other = tmp_path / message.split()[-1]
    other.mkdir()
    changed = json.loads(json.dumps(config))
    changed["loss"].update(change)
    (other / "config.json").write_text(json.dumps(changed))
    with pytest.raises(SystemExit) as exit_info:
      script.main([f"--workdir={other}"])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
  with pytest.raises(SystemExit) as exit_info:
    script.main([f"--workdir={tmp_path / 'missing'}"])
  assert exit_info.value.code == 2 and "is not a folder" in capsys.readouterr().err
