"""The Colab notebook runs end-to-end on CPU with its TINY setting (executed with nbclient)."""

import json
import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "experiments", "colab_tpu.ipynb")


def test_colab_notebook_runs_tiny_on_cpu(tmp_path):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  params = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
  assert len(params) == 1
  workdir = str(tmp_path / "nb_run")
  params[0].source += f"\nTINY = True\nWORKDIR = {workdir!r}\n"
  client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                   resources={"metadata": {"path": REPO}})
  client.execute()
  outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                    for o in c.get("outputs", []))
  assert "segan_jax importable: True" in outputs
  metrics = json.load(open(os.path.join(workdir, "metrics.json")))
  assert metrics["step"] == 2
  assert os.listdir(os.path.join(workdir, "panels"))
  assert "Jaccard" in outputs  # the evaluation table was printed
