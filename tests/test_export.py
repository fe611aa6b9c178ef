"""The exported SavedModel, loaded with plain TensorFlow, reproduces the JAX probabilities."""

import importlib.util
import json
import os

import numpy as np
import pytest
from eval_fixtures import BATCH

from segan_jax import export, inference
from segan_jax.data.arrays import normalize

TOLERANCE = 1e-5  # absolute, on probabilities in [0, 1] (measured: about 5e-7)


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                    reason="SavedModel export needs TensorFlow (the [tfds] extra)")
def test_saved_model_matches_jax(trained_run, tmp_path):
  import tensorflow as tf

  model = inference.load_model(trained_run)
  out = str(tmp_path / "saved_model")
  meta = export.export([model], out)
  assert json.load(open(os.path.join(out, "segan_export.json")))["k"] == [model.k] == meta["k"]

  loaded = tf.saved_model.load(out)  # plain TensorFlow: no segan_jax code involved
  assert set(loaded.signatures) == {"serving_default", "predict_normalized", "segment_image"}
  assert float(loaded.threshold.numpy()) == pytest.approx(model.threshold)
  images = np.random.default_rng(0).integers(0, 256, (3, 128, 128, 3), dtype=np.uint8)
  expected = inference.Predictor([model], BATCH).probabilities(images)

  served = loaded.signatures["serving_default"](images=tf.constant(images))
  probs = served["probabilities"].numpy()
  assert probs.shape == (3, 128, 128, 1) and probs.dtype == np.float32
  np.testing.assert_allclose(probs, expected, atol=TOLERANCE)
  masks = served["masks"].numpy()
  clear = np.abs(expected - model.threshold) > TOLERANCE
  np.testing.assert_array_equal(masks[clear], np.where(expected > model.threshold, 255, 0)[clear])

  normalized = loaded.signatures["predict_normalized"](images=tf.constant(normalize(images)))
  np.testing.assert_allclose(normalized["probabilities"].numpy(), expected, atol=TOLERANCE)

  one = loaded.signatures["segment_image"](image=tf.constant(images[0, :75, :101]))
  assert one["probabilities"].shape == (75, 101, 1) and one["masks"].dtype == tf.uint8


def test_export_never_overwrites_unasked(tmp_path):
  """check_output runs before anything is built: a user's folder is never written into."""
  user = tmp_path / "mine"
  user.mkdir()
  (user / "notes.txt").write_text("keep me")
  with pytest.raises(export.ExportError, match="not an earlier export"):
    export.check_output(str(user), overwrite=True)
  earlier = tmp_path / "earlier"
  earlier.mkdir()
  (earlier / "segan_export.json").write_text("{}")
  with pytest.raises(export.ExportError, match="--overwrite"):
    export.check_output(str(earlier), overwrite=False)
  export.check_output(str(earlier), overwrite=True)
  export.check_output(str(tmp_path / "new"), overwrite=False)
  (tmp_path / "a_file").write_text("x")
  with pytest.raises(export.ExportError, match="is a file"):
    export.check_output(str(tmp_path / "a_file"), overwrite=True)
  assert (user / "notes.txt").read_text() == "keep me"


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                    reason="SavedModel export needs TensorFlow (the [tfds] extra)")
def test_tta_defaults_to_the_runs_config(trained_run, tmp_path, monkeypatch):
  """Without --tta/--notta the export bakes in the flips exactly when the run's eval.tta asks."""
  baked = []

  class Stop(Exception):
    pass

  def capture(models, tta, platforms):
    baked.append(tta)
    raise Stop

  monkeypatch.setattr(export, "build_module", capture)
  model = inference.load_model(trained_run)
  for config_tta, tta in ((False, None), (True, None), (True, "none")):
    model.config.eval.tta = config_tta
    with pytest.raises(Stop):
      export.export([model], str(tmp_path / "out"), tta=tta)
  with pytest.raises(Stop):  # the library's default is the run's config, as the command line's
    export.export([model], str(tmp_path / "out"))
  assert baked == ["none", "flips", "none", "flips"]
