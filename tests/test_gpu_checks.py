"""experiments/gpu_checks.sh's training and scoring stages as a dry run on CPU: a small folder of
pairs, width 4, 8 steps, no benchmarks."""

import json
import os
import subprocess
import sys
import tarfile

import isic_fixtures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_dry_run_trains_and_scores_isic2017_plus(tmp_path):
  data = str(tmp_path / "data")
  ids = isic_fixtures.write_generic(data, 12)
  val_ids = tmp_path / "val_ids.txt"
  val_ids.write_text("\n".join(ids[:3]) + "\n")
  env = dict(os.environ, OUT=str(tmp_path / "out"), WORK=str(tmp_path / "work"), DATA=data,
             VAL_IDS=str(val_ids), BENCH_SPECS="", TRAIN_WIDTH="4", TRAIN_BATCH="4",
             MAX_STEPS="8", BUDGET_S="900", PYTHON=sys.executable)
  result = subprocess.run(["bash", "experiments/gpu_checks.sh"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
  log = result.stdout + result.stderr
  assert result.returncode == 0, log[-3000:]
  assert "training isic2017_plus" in log and ": 8 steps" in log, log[-3000:]
  assert "training: exit 0" in log and "evaluate: exit 0" in log, log[-3000:]
  config = json.load(open(tmp_path / "work" / "isic2017_plus_w4" / "config.json"))
  assert (config["train"]["num_steps"], config["train"]["num_epochs"]) == (8, 0)
  assert config["model"]["width"] == 4 and config["eval"]["postprocess"]
  with tarfile.open(tmp_path / "out" / "gpu_results.tar.gz") as tar:
    names = tar.getnames()
  assert any(n.endswith("evaluate.log") for n in names), names
  assert not any("checkpoints" in n for n in names), names


def test_full_run_continues_in_the_next_call_which_scores_it(tmp_path):
  """FULL=1 split over calls: a first call that trains (bfloat16, not scored), a second that
  finds the run's checkpoint, has nothing left to train and scores it."""
  data = str(tmp_path / "data")
  ids = isic_fixtures.write_generic(data, 12)
  val_ids = tmp_path / "val_ids.txt"
  val_ids.write_text("\n".join(ids[:3]) + "\n")
  env = dict(os.environ, WORK=str(tmp_path / "work"), DATA=data, VAL_IDS=str(val_ids),
             BENCH_SPECS="", TRAIN_WIDTH="4", TRAIN_BATCH="4", BUDGET_S="900", FULL="1",
             FULL_EVAL_EVERY="2", TRAIN_DTYPE="bfloat16", PYTHON=sys.executable,
             TRAIN_FLAGS="--config.train.num_epochs=2")  # 9 training pairs: 4 steps
  logs = []
  for call, score in enumerate(("0", "1")):
    result = subprocess.run(["bash", "experiments/gpu_checks.sh"], cwd=REPO,
                            env=dict(env, SCORE=score, OUT=str(tmp_path / f"out{call}")),
                            capture_output=True, text=True, timeout=900)
    logs.append(result.stdout + result.stderr)
    assert result.returncode == 0, logs[-1][-3000:]
  assert "from step 0" in logs[0] and "training: exit 0" in logs[0], logs[0][-3000:]
  assert "evaluate: exit" not in logs[0], logs[0][-3000:]
  assert "from step 4" in logs[1] and "evaluate: exit 0" in logs[1], logs[1][-3000:]
  run = tmp_path / "work" / "isic2017_plus_w4"
  config = json.load(open(run / "config.json"))
  assert config["dtype"] == "bfloat16" and config["train"]["num_epochs"] == 2
  assert "nothing to train" in open(tmp_path / "work" / "train.log").read()
