"""Nothing a user made is lost: divergence, two runs in one workdir, changed configs, damaged or
non-finite checkpoints, rotation, TensorBoard resumes. Faults are injected for real."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segan_jax import checkpoints, summaries, train
from segan_jax import workdir as run_dir
from segan_jax.config_validation import ConfigError, validate_config
from segan_jax.configs import tiny

TINY = os.path.join(os.path.dirname(train.__file__), "configs", "tiny.py")


def _config(**train_fields):
  config = tiny.get_config()
  config.train.num_steps = 4
  config.train.checkpoint_every = 2
  config.train.eval_every = 100
  config.train.log_every = 1
  for key, value in train_fields.items():
    setattr(config.train, key, value)
  return config


def _steps(workdir):
  return sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())


def _restore(config, workdir, step=None):
  cfg = train.build_step_config(config, steps_per_epoch=4)
  seg, critic = train.create_states(config, cfg)
  manager = checkpoints.make_manager(workdir)
  try:
    return checkpoints.restore(manager, seg, critic, step)
  finally:
    manager.close()


def _main(workdir, *overrides, timeout=900):
  cmd = [sys.executable, "-m", "segan_jax.main", f"--workdir={workdir}", f"--config={TINY}",
         f"--jax_cache_dir={jax.config.jax_compilation_cache_dir or ''}", *overrides]
  return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
  """A tiny run with checkpoints at steps 2 and 4 (copied by the tests that change it)."""
  workdir = str(tmp_path_factory.mktemp("good") / "run")
  train.train_and_evaluate(_config(), workdir)
  return workdir


@pytest.fixture
def run(good_run, tmp_path):
  return shutil.copytree(good_run, str(tmp_path / "run"))


# ---------------------------------------------------------------------------------------------
# Config values.

@pytest.mark.parametrize("field, value", [
    ("optim.learning_rate", float("inf")), ("optim.learning_rate", float("nan")),
    ("loss.dice_weight", float("inf")), ("loss.adversarial_weight", float("nan")),
    ("schedule.k_init", float("inf")), ("train.critic_clip", float("inf")),
    ("loss.layer_weights", (1, 1, 1, 1, 1, 1, float("inf"))), ("train.num_steps", 0)])
def test_config_rejects_non_finite_and_empty_runs(field, value):
  config = tiny.get_config()
  section, name = field.split(".")
  config[section][name] = value
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
    validate_config(config)


# ---------------------------------------------------------------------------------------------
# Divergence.

def test_divergence_stops_and_keeps_the_good_checkpoints(run):
  before = {s: _restore(_config(), run, s) for s in (2, 4)}
  config = _config(num_steps=8)
  config.optim.learning_rate = 1e30
  with pytest.raises(train.TrainingDiverged, match=r"diverged at step [5-8].*last good "
                     r"checkpoint is step 4"):
    train.train_and_evaluate(config, run, allow_config_change=True)
  assert _steps(run) == [2, 4]
  for step, (seg, critic, _, _) in before.items():
    seg2, critic2, _, restored_step = _restore(_config(), run, step)
    assert restored_step == step
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(seg.params),
                 jax.device_get(seg2.params))
  # The rerun asked for a change, so config.json now says so; the old one is kept.
  assert json.load(open(os.path.join(run, "config.json")))["optim"]["learning_rate"] == 1e30
  assert glob.glob(os.path.join(run, run_dir.HISTORY_DIR, "config_until_step4_*.json"))


def test_a_fresh_diverging_run_saves_nothing(tmp_path):
  config = _config()
  config.optim.learning_rate = 1e30
  with pytest.raises(train.TrainingDiverged, match="nothing was saved"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert _steps(str(tmp_path / "run")) == []


def test_save_refuses_a_non_finite_state(run):
  config = _config()
  seg, critic, _, _ = _restore(config, run)
  poisoned = seg.replace(params=jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.nan),
                                             seg.params))
  manager = checkpoints.make_manager(run)
  with pytest.raises(checkpoints.CheckpointError, match=r"segmentor\.params"):
    checkpoints.save(manager, 6, poisoned, critic, keep=1)
  manager.close()
  assert _steps(run) == [2, 4]


# ---------------------------------------------------------------------------------------------
# Damaged checkpoints.

def _damage(run, step, how):
  root = os.path.join(run, "checkpoints", str(step), "segmentor")
  data = sorted(p for p in glob.glob(os.path.join(root, "**", "*"), recursive=True)
                if os.path.isfile(p) and os.sep + "d" + os.sep in p)
  assert data, os.listdir(root)
  if how == "deleted":
    for p in data:
      os.remove(p)
  elif how == "truncated":
    for p in data:
      with open(p, "r+b") as f:
        f.truncate(os.path.getsize(p) // 2)
  elif how == "half-deleted":  # what a kill in the middle of a recursive delete leaves
    shutil.rmtree(os.path.join(run, "checkpoints", str(step), "critic"))
  else:
    raise ValueError(how)


@pytest.mark.parametrize("how", ["deleted", "truncated", "half-deleted"])
def test_restore_falls_back_to_the_newest_intact_checkpoint(run, how, caplog):
  _damage(run, 4, how)
  seg, critic, _, step = _restore(_config(), run)
  assert step == 2
  assert _steps(run) == [2]
  moved = glob.glob(os.path.join(run, checkpoints.CORRUPT_DIR, "4-*"))
  assert len(moved) == 1  # kept for inspection, out of the way of the next save at step 4
  assert any("checkpoints/4 is unreadable" in r.getMessage() for r in caplog.records)


def test_a_non_finite_checkpoint_is_not_restored(run):
  """A checkpoint whose bytes decode to NaN (flipped bits) is treated as damaged."""
  config = _config()
  seg, critic, _, _ = _restore(config, run)
  mu = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan) if x.ndim else x, critic.opt_state)
  manager = checkpoints.make_manager(run)
  # Written straight through orbax: checkpoints.save itself would refuse.
  import orbax.checkpoint as ocp
  manager.save(6, args=ocp.args.Composite(
      segmentor=ocp.args.StandardSave(seg), critic=ocp.args.StandardSave(critic.replace(
          opt_state=mu)), extra=ocp.args.JsonSave({})), force=True)
  manager.wait_until_finished()
  manager.close()
  assert _restore(config, run)[3] == 4
  assert glob.glob(os.path.join(run, checkpoints.CORRUPT_DIR, "6-*"))


def test_every_checkpoint_damaged_is_one_clear_error(run):
  for step in (2, 4):
    _damage(run, step, "deleted")
  with pytest.raises(checkpoints.CheckpointError, match="None of the 2 checkpoints"):
    _restore(_config(), run)
  assert _steps(run) == [2, 4]  # nothing is moved when there is nothing to fall back to


def test_training_resumes_past_a_damaged_checkpoint(run):
  _damage(run, 4, "truncated")
  result = train.train_and_evaluate(_config(num_steps=6), run)
  assert result["step"] == 6 and _steps(run) == [2, 4, 6]


def test_a_resumed_run_restores_into_shapes_without_initialising(run, monkeypatch):
  """Resuming computes no initial states (only their shapes, traced) and restores every leaf
  from the checkpoint, replicated over the mesh; a fresh run initialises them."""
  computed = []
  real = train.create_states

  def spy(config, cfg):
    states = real(config, cfg)
    computed.append(not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(states)))
    return states

  monkeypatch.setattr(train, "create_states", spy)
  mesh = train.sharding.make_mesh()
  config = _config()
  manager = checkpoints.make_manager(run)
  try:
    seg, critic, _, step = checkpoints.restore(
        manager, *train.abstract_states(config, train.build_step_config(config, 4), mesh))
  finally:
    manager.close()
  assert step == 4 and computed == [False]
  expected_seg, expected_critic, _, _ = _restore(config, run)  # into concrete states
  for got, want in ((seg, expected_seg), (critic, expected_critic)):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
      assert a.dtype == b.dtype and np.array_equal(a, b)
      assert a.sharding.is_equivalent_to(train.sharding.replicated(mesh), a.ndim)
  computed.clear()

  assert train.train_and_evaluate(_config(num_steps=6), run)["step"] == 6
  assert computed == [False]  # traced for the shapes only
  computed.clear()
  train.train_and_evaluate(_config(num_steps=2), str(run) + "_fresh")
  assert computed == [True]


# ---------------------------------------------------------------------------------------------
# Rotation.

def test_rotation_keeps_the_selected_step_and_never_leaves_half_steps(run):
  config = _config()
  seg, critic, _, _ = _restore(config, run)
  with open(os.path.join(run, checkpoints.SELECTION_FILE), "w") as f:
    json.dump({"step": 2, "k": 0.5, "threshold": 0.4}, f)
  manager = checkpoints.make_manager(run)
  for step in (6, 8, 10):
    checkpoints.save(manager, step, seg, critic, keep=2)
  manager.close()
  assert _steps(run) == [2, 8, 10]  # newest two, and the step evaluate --search chose
  # A rotation killed half-way leaves its renamed step in the trash, not among the checkpoints:
  trash = os.path.join(run, ".deleting_checkpoints", "6-123")
  os.makedirs(os.path.join(trash, "segmentor"))
  checkpoints.make_manager(run).close()
  assert not os.path.exists(trash)


def test_a_kill_during_rotation_leaves_whole_checkpoints(run):
  """Kill -9 a process while it rotates: every step left in checkpoints/ restores."""
  code = f"""
import os, shutil, sys, time
from segan_jax import checkpoints, train
sys.path.insert(0, {os.path.dirname(__file__)!r})
from test_reliability import _config, _restore
seg, critic, _, _ = _restore(_config(), {run!r})
manager = checkpoints.make_manager({run!r})
real_rmtree = shutil.rmtree
def slow_rmtree(path, *a, **k):
  if "deleting" in str(path) and os.path.isdir(path) and os.listdir(path):
    print("DELETING", flush=True)
    time.sleep(60)
  real_rmtree(path, *a, **k)
shutil.rmtree = slow_rmtree
checkpoints.save(manager, 6, seg, critic, keep=1)
"""
  proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == "DELETING"
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    proc.wait(timeout=60)
  assert _steps(run) == [6]
  assert _restore(_config(), run)[3] == 6


# ---------------------------------------------------------------------------------------------
# One run per workdir; config.json describes the checkpoints.

def test_two_runs_in_one_workdir_and_a_killed_run_leaves_no_stale_lock(run):
  first = subprocess.Popen(
      [sys.executable, "-m", "segan_jax.main", f"--workdir={run}", f"--config={TINY}",
       "--config.train.num_steps=100000", "--config.train.checkpoint_every=2",
       "--config.train.eval_every=100000", "--config.train.log_every=1",
       f"--jax_cache_dir={jax.config.jax_compilation_cache_dir or ''}"],
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 300
    while True:  # until the first run holds the lock
      try:
        with run_dir.WorkdirLock(run):
          pass
      except run_dir.WorkdirBusyError:
        break
      assert first.poll() is None, first.stderr.read()[-3000:]
      assert time.time() < deadline
      time.sleep(0.2)
    metrics_before = open(os.path.join(run, "metrics.json")).read()
    second = _main(run, "--config.train.seed=7")
    assert second.returncode == 2
    assert "is in use by another training run" in second.stderr
    assert f"pid {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    assert open(os.path.join(run, "metrics.json")).read() == metrics_before
    assert json.load(open(os.path.join(run, "config.json")))["train"]["seed"] == 0
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
  with run_dir.WorkdirLock(run):  # the kernel released the killed run's lock
    pass
  assert _restore(_config(), run) is not None  # its checkpoints stay usable


def test_a_changed_config_is_refused_and_config_json_left_alone(run):
  original = open(os.path.join(run, "config.json")).read()
  for field, value in (("seed", 7), ("batch_size", 2)):
    config = _config(**{field: value})
    with pytest.raises(run_dir.ConfigChangedError, match=f"train.{field}"):
      train.train_and_evaluate(config, run)
    assert open(os.path.join(run, "config.json")).read() == original
  wider = _config()
  wider.model.width = 4
  with pytest.raises(run_dir.ConfigChangedError, match="model.width: 2 -> 4"):
    train.train_and_evaluate(wider, run)
  # Even when the change is allowed, a model the checkpoints do not fit leaves config.json alone.
  with pytest.raises(checkpoints.CheckpointError, match="None of the 2 checkpoints"):
    train.train_and_evaluate(wider, run, allow_config_change=True)
  assert open(os.path.join(run, "config.json")).read() == original
  assert _steps(run) == [2, 4]
  # Run length and bookkeeping may change without asking.
  longer = _config(num_steps=6, checkpoint_every=3, log_every=2)
  assert train.train_and_evaluate(longer, run)["step"] == 6


def test_user_errors_are_one_line_with_exit_status_2(run, tmp_path):
  cases = [
      (["--config.model.widht=3"], "widht"),
      (["--config.model.width=-3"], "config.model.width"),
      (["--config.optim.learning_rate=inf"], "config.optim.learning_rate"),
      (["--config.train.num_steps=0"], "config.train.num_steps"),
      (["--config.train.batch_size=64"], "config.train.batch_size=64 is larger"),
      (["--config.data.source=folder", f"--config.data.dir={tmp_path}"], str(tmp_path)),
      (["--config.train.seed=3"], "trained with another config"),
  ]
  for overrides, needle in cases:
    workdir = run if "seed" in overrides[0] else str(tmp_path / "fresh")
    result = _main(workdir, *overrides)
    lines = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
    assert result.returncode == 2, (overrides, result.stderr[-2000:])
    assert len(lines) == 1 and needle in lines[0], (overrides, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, (overrides, result.stderr[-2000:])
  assert not os.path.exists(os.path.join(str(tmp_path / "fresh"), "config.json"))


def test_divergence_on_the_command_line(tmp_path):
  result = _main(str(tmp_path / "run"), "--config.optim.learning_rate=1e30",
                 "--config.train.log_every=1")
  assert result.returncode == 2, result.stderr[-2000:]
  lines = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
  assert len(lines) == 1 and "Training diverged at step" in lines[0]
  assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------
# TensorBoard.

def _event_steps(workdir, tag="critic_loss"):
  from tensorboard.backend.event_processing import event_accumulator
  steps = []
  for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      for _, payload in summaries._records(f.read()):
        from tensorboard.compat.proto import event_pb2
        event = event_pb2.Event.FromString(payload)
        if any(v.tag == tag for v in event.summary.value):
          steps.append(event.step)
  del event_accumulator
  return sorted(steps)


def test_a_resumed_run_logs_each_step_once(tmp_path):
  """A run killed after its last checkpoint logged steps 5-6; the resumed run logs them again."""
  workdir = str(tmp_path / "run")
  config = _config(num_steps=6, checkpoint_every=4)
  real_save = checkpoints.save

  class Killed(Exception):
    pass

  def save_then_die_later(manager, step, *args, **kwargs):
    real_save(manager, step, *args, **kwargs)
    if step == 6:
      raise Killed()

  # Simulate the kill: the checkpoint at 6 is lost, the events up to 6 are on disk.
  checkpoints.save = save_then_die_later
  try:
    with pytest.raises(Killed):
      train.train_and_evaluate(config, workdir)
  finally:
    checkpoints.save = real_save
  shutil.rmtree(os.path.join(workdir, "checkpoints", "6"))
  assert _event_steps(workdir) == [1, 2, 3, 4, 5, 6]
  train.train_and_evaluate(config, workdir)
  assert _event_steps(workdir) == [1, 2, 3, 4, 5, 6]


def test_search_skips_a_damaged_checkpoint_and_inference_names_it(run_copy):
  from eval_fixtures import BATCH
  from segan_jax import evaluate, inference
  _damage(run_copy, 4, "truncated")
  with pytest.raises(inference.RunError, match=r"checkpoints/4 .*--step"):
    inference.load_model(run_copy)
  logged = []
  result = evaluate.evaluate([run_copy], search=True, k_grid=[0.5], threshold_grid=[0.4],
                             batch_size=BATCH, log=logged.append)
  assert any("step 4: skipped" in line for line in logged)
  assert result["search"][run_copy]["step"] == 2
  assert inference.load_model(run_copy).step == 2  # the stored selection


def test_a_non_finite_moving_average_is_caught(run):
  from segan_jax.train_state import with_ema
  seg, critic, _, _ = _restore(_config(), run)
  averaged = with_ema(seg)
  assert checkpoints.nonfinite_parts(segmentor=averaged, critic=critic) == []
  poisoned = averaged.replace(ema=jax.tree.map(lambda x: jnp.full_like(x, jnp.inf), averaged.ema))
  assert checkpoints.nonfinite_parts(segmentor=poisoned, critic=critic) == ["segmentor.ema"]
