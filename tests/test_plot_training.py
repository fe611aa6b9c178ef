"""experiments/plot_training.py: curves read back from a run's TensorBoard events, PNG written."""

import json
import os

import numpy as np
import pytest

import experiment_scripts

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def plot_training():
  return experiment_scripts.load("plot_training")


def test_reads_losses_and_validation_as_written_by_the_run(plot_training, trained_run):
  curves = plot_training.read_scalars(trained_run)
  assert {"critic_loss", "adversarial_loss", "val_jaccard", "k"} <= set(curves)
  steps, values = curves["val_jaccard"]
  assert list(steps) == [2, 4]  # eval_every=2 in the fixture
  final = json.load(open(os.path.join(trained_run, "metrics.json")))["val"]["jaccard"]
  assert values[-1] == pytest.approx(final, abs=1e-6)
  steps, values = curves["critic_loss"]
  assert steps[-1] == 4 and np.all(np.isfinite(values))


def test_writes_a_png_and_rejects_a_folder_without_events(plot_training, trained_run, tmp_path):
  out = plot_training.plot_runs([trained_run, trained_run], str(tmp_path / "curves.png"), "t")
  from PIL import Image
  width, height = Image.open(out).size
  assert width > 1000 and height > 300
  with pytest.raises(plot_training.CurveError, match="no TensorBoard event files"):
    plot_training.plot_runs([str(tmp_path)], str(tmp_path / "x.png"))
