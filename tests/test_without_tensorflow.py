"""Training and prediction where TensorFlow (and clu) cannot be imported: the base install, without
the [tfds] extra (slim GPU images, serving installs)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
from PIL import Image

BLOCK = ("import sys; sys.modules['tensorflow'] = None; sys.modules['tensorflow_datasets'] = None; "
         "sys.modules['clu'] = None\n")

TRAIN = BLOCK + textwrap.dedent("""
    import glob
    from absl import logging
    logging.set_verbosity("info")
    from segan_jax import train
    from segan_jax.configs import tiny
    config = tiny.get_config()
    config.train.num_steps = 2
    config.train.checkpoint_every = 2
    config.train.eval_every = 2
    result = train.train_and_evaluate(config, sys.argv[1])
    assert not [m for m in sys.modules if m.startswith(("tensorflow", "clu"))
                and sys.modules[m] is not None]
    assert glob.glob(sys.argv[1] + "/events.out.tfevents.*"), "no TensorBoard events"
    print("TRAINED", result["step"])
""")

PREDICT = BLOCK + textwrap.dedent("""
    import runpy
    sys.argv = ["predict", f"--workdir={sys.argv[1]}", f"--input={sys.argv[2]}",
                f"--output={sys.argv[3]}", "--noprogress"]
    runpy.run_module("segan_jax.predict", run_name="__main__")
""")


def _python(code, *args):
  return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                        timeout=900, env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_train_and_predict_without_tensorflow(tmp_path):
  workdir = str(tmp_path / "run")
  trained = _python(TRAIN, workdir)
  assert trained.returncode == 0, trained.stderr[-4000:]
  assert "TRAINED 2" in trained.stdout

  photos = tmp_path / "photos"
  photos.mkdir()
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), np.uint8)).save(
      photos / "lesion1.jpg")
  out = tmp_path / "masks"
  predicted = _python(PREDICT, workdir, str(photos), str(out))
  assert predicted.returncode == 0, predicted.stderr[-4000:]
  mask = Image.open(out / "lesion1_segmentation.png")
  assert mask.size == (120, 90)
  assert set(np.unique(np.asarray(mask))) <= {0, 255}


TFDS = BLOCK + textwrap.dedent("""
    from segan_jax import train
    from segan_jax.configs import tiny
    from segan_jax.errors import UserError
    config = tiny.get_config()
    config.data.source = "tfds"
    try:
      train.load_data(config)
    except UserError as e:
      print("ERROR", e)
""")


def test_tfds_source_without_tensorflow_says_what_to_install():
  out = _python(TFDS)
  assert out.returncode == 0, out.stderr[-4000:]
  assert "ERROR config.data.source='tfds' needs TensorFlow" in out.stdout
  assert "pip install 'segan_jax[tfds]'" in out.stdout


EXPORT = BLOCK + textwrap.dedent("""
    from segan_jax import export
    try:
      export.export([], sys.argv[1])
    except export.ExportError as e:
      print("ERROR", e)
""")


def test_export_without_tensorflow_says_what_to_install(tmp_path):
  out = _python(EXPORT, str(tmp_path / "saved_model"))
  assert out.returncode == 0, out.stderr[-4000:]
  assert "ERROR The SavedModel export needs TensorFlow" in out.stdout
  assert "pip install 'segan_jax[tfds]'" in out.stdout
