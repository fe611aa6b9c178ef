"""End-to-end: `python -m segan_jax.main` on a tiny config writes everything, resumes, and a run
killed, or stopped by SIGTERM, resumed from its checkpoint ends bit-for-bit where an uninterrupted
run ends."""

import glob
import json
import os
import re
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from segan_jax import checkpoints, train
from segan_jax.configs import tiny

TINY = os.path.join(os.path.dirname(train.__file__), "configs", "tiny.py")


def _main(workdir, *overrides):
  cmd = [sys.executable, "-m", "segan_jax.main", f"--workdir={workdir}", f"--config={TINY}",
         f"--jax_cache_dir={jax.config.jax_compilation_cache_dir or ''}", *overrides]
  return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def test_main_writes_outputs_then_resumes(tmp_path):
  workdir = str(tmp_path / "run")
  first = _main(workdir, "--config.train.num_steps=4", "--config.train.checkpoint_every=2",
                "--config.train.eval_every=2")
  assert first.returncode == 0, first.stderr[-3000:]
  assert "step 4/4" in first.stderr and "steps/s" in first.stderr and "ETA" in first.stderr
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  assert glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
  assert os.path.exists(os.path.join(workdir, "panels", "step_0000004.png"))
  metrics = json.load(open(os.path.join(workdir, "metrics.json")))
  # metrics.json holds the step-4 validation the console printed and the checkpoint stored.
  logged = re.search(r"validation at step 4: jaccard=([0-9.]+) dice=([0-9.]+)", first.stderr)
  assert metrics["step"] == 4 and logged, first.stderr[-3000:]
  assert metrics["val"]["jaccard"] == pytest.approx(float(logged.group(1)), abs=5e-5)
  assert metrics["val"]["dice"] == pytest.approx(float(logged.group(2)), abs=5e-5)
  assert metrics["val"]["dice"] >= metrics["val"]["jaccard"]  # per image, Dice >= Jaccard
  assert json.load(open(os.path.join(workdir, "checkpoints", "4", "extra", "metadata")))[
      "val"] == metrics["val"]
  assert "Finished saving" not in first.stderr  # orbax's file-by-file logging is kept quiet

  second = _main(workdir, "--config.train.num_steps=6", "--config.train.checkpoint_every=2",
                 "--config.train.eval_every=2")
  assert second.returncode == 0, second.stderr[-3000:]
  assert "Resumed from" in second.stderr and "at step 4" in second.stderr
  assert "step 6/6" in second.stderr and "step 2/6" not in second.stderr
  assert json.load(open(os.path.join(workdir, "metrics.json")))["step"] == 6


def test_main_rejects_bad_config_values(tmp_path):
  bad = _main(str(tmp_path / "bad"), "--config.model.width=-3")
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1].startswith("error: config.model.width")
  unknown = _main(str(tmp_path / "bad2"), "--config.model.widht=3")
  assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
  assert 'Did you mean "width"' in unknown.stderr.strip().splitlines()[-1]
  assert not os.path.exists(str(tmp_path / "bad")) or not os.listdir(str(tmp_path / "bad"))


class _Killed(Exception):
  pass


def test_resume_after_kill_is_bit_for_bit(tmp_path, monkeypatch):
  config = tiny.get_config()
  config.train.num_steps = 6
  config.train.checkpoint_every = 3
  config.train.eval_every = 100
  train.train_and_evaluate(config, str(tmp_path / "straight"))

  real_save = checkpoints.save

  def save_then_die(manager, step, *args, **kwargs):
    real_save(manager, step, *args, **kwargs)
    if step == 3:
      raise _Killed()

  monkeypatch.setattr(checkpoints, "save", save_then_die)
  with pytest.raises(_Killed):
    train.train_and_evaluate(config, str(tmp_path / "killed"))
  monkeypatch.setattr(checkpoints, "save", real_save)
  train.train_and_evaluate(config, str(tmp_path / "killed"))

  # SIGTERM during step 2 (no checkpoint due before step 3): saved at 2, then resumed from there.
  real_global_batch = train.sharding.global_batch
  calls = []

  def batch_then_sigterm(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
      os.kill(os.getpid(), signal.SIGTERM)
    return real_global_batch(*args, **kwargs)

  monkeypatch.setattr(train.sharding, "global_batch", batch_then_sigterm)
  stopped = train.train_and_evaluate(config, str(tmp_path / "stopped"))
  monkeypatch.setattr(train.sharding, "global_batch", real_global_batch)
  assert stopped["stopped_by"] == "SIGTERM" and stopped["step"] == 2
  assert os.listdir(os.path.join(str(tmp_path / "stopped"), "checkpoints")) == ["2"]
  assert not os.path.exists(os.path.join(str(tmp_path / "stopped"), "metrics.json"))
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again
  assert train.train_and_evaluate(config, str(tmp_path / "stopped"))["step"] == 6

  def final_states(workdir):
    cfg = train.build_step_config(config, steps_per_epoch=4)
    seg, critic = train.create_states(config, cfg)
    manager = checkpoints.make_manager(workdir, 3)
    seg, critic, _, step = checkpoints.restore(manager, seg, critic)
    assert step == 6
    return seg, critic

  for resumed in ("killed", "stopped"):
    for a, b in zip(final_states(str(tmp_path / "straight")),
                    final_states(str(tmp_path / resumed))):
      jax.tree.map(np.testing.assert_array_equal,
                   jax.device_get((a.params, a.batch_stats, a.opt_state)),
                   jax.device_get((b.params, b.batch_stats, b.opt_state)))


def test_sigterm_saves_and_exits_143(tmp_path):
  workdir = str(tmp_path / "run")
  cmd = [sys.executable, "-m", "segan_jax.main", f"--workdir={workdir}", f"--config={TINY}",
         f"--jax_cache_dir={jax.config.jax_compilation_cache_dir or ''}",
         "--config.train.num_steps=100000", "--config.train.log_every=1"]
  proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
  lines = []
  try:
    for line in proc.stderr:
      lines.append(line)
      if "step 2/100000" in line:
        proc.send_signal(signal.SIGTERM)
        break
    rest = proc.communicate(timeout=300)[1]
  finally:
    proc.kill()
  log = "".join(lines) + rest
  assert proc.returncode == 143, log[-3000:]
  assert "SIGTERM received: stopped at step" in log and "Traceback" not in log
  saved = os.listdir(os.path.join(workdir, "checkpoints"))
  assert len(saved) == 1 and 2 <= int(saved[0]) < 100000
