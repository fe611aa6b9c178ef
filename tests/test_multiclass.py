"""Several classes (model.num_classes N > 1): N label maps through data, steps, scoring and the
tools; each class is trained and scored against its own ground truth, and N = 1 is unchanged."""

import csv
import functools
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from segan_jax import metrics, overlays, panels, steps, validation
from segan_jax.data import arrays, pipeline
from segan_jax.models import mask_images
from segan_jax.train import build_step_config, create_states

N = 3


# --- data ------------------------------------------------------------------------------------

def test_label_maps_one_hot_and_one_class_as_before():
  index = np.array([[0, 1, 2], [3, 3, 0]], np.uint8)
  maps = arrays.label_maps(index, N)
  assert maps.shape == (2, 3, N) and maps.dtype == np.uint8
  for c in range(N):
    np.testing.assert_array_equal(maps[..., c], index == c + 1)
  lesion = np.array([[0, 255], [255, 0]], np.uint8)
  np.testing.assert_array_equal(arrays.label_maps(lesion, 1), (lesion > 127)[..., None])
  with pytest.raises(ValueError, match="value 3, above num_classes=2"):
    arrays.label_maps(index, 2)


def _coded_arrays(count=6, h=135, w=180):
  """Index masks 0..N whose image codes the class in its red channel (class * 60), so that any
  misalignment of maps and image through crops and flips shows."""
  rng = np.random.default_rng(0)
  examples = []
  for i in range(count):
    index = rng.integers(0, N + 1, (h // 15, w // 15)).astype(np.uint8).repeat(15, 0).repeat(15, 1)
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = index * 60
    examples.append(arrays.Example(id=str(i), image=image, mask=index))
  return arrays.prepare_train(examples, h, w, N)


@pytest.mark.parametrize("whole_image_prob", [0.0, 1.0])
def test_training_batches_carry_n_maps_aligned_with_the_image(tiny_config, whole_image_prob):
  config = tiny_config
  config.data.whole_image_prob = whole_image_prob
  for jitter in ("brightness", "contrast", "saturation", "hue"):
    config.data[jitter] = 0.0
  data = _coded_arrays()
  stream = pipeline.Stream.from_config(config, len(data))
  batch = pipeline.HostStream(data, stream).batch(1)
  masks, images = batch["mask"], arrays.denormalize(batch["image"])
  assert masks.shape == (4, 128, 128, N) and set(np.unique(masks)) == {0.0, 1.0}
  assert np.all(masks.sum(-1) <= 1)
  # Each map is where the image draws its class: everywhere in a crop, away from the block edges
  # (bilinear image, nearest-neighbour maps) in a whole view.
  code = np.round(images[..., 0] / 60.0)
  for c in range(N):
    agree = (masks[..., c] == 1) == (code == c + 1)
    assert agree.mean() > (0.9 if whole_image_prob else 0.9999), c


# --- the critic's inputs and the steps -------------------------------------------------------

def test_mask_images_pairs_each_image_with_each_of_its_maps():
  images = jnp.arange(2 * 128 * 128 * 3, dtype=jnp.float32).reshape(2, 128, 128, 3)
  maps = jnp.stack([jnp.full((2, 128, 128), float(c + 1)) for c in range(N)], -1)
  maps = maps * jnp.array([1.0, 10.0])[:, None, None, None]
  masked = mask_images(images, maps)
  assert masked.shape == (2 * N, 128, 128, 3)
  for b in range(2):
    for c in range(N):
      np.testing.assert_array_equal(masked[b * N + c], images[b] * maps[b, ..., c, None])
  with pytest.raises(ValueError, match="matching the images"):
    mask_images(images, maps[:1])  # one image's maps for two images: no silent broadcast


def _mc_batch(zero_class=None):
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[:128, :128]
  index = np.zeros((2, 128, 128), np.int64)
  for b in range(2):
    index[b][(yy - 60 - 8 * b) ** 2 + (xx - 64) ** 2 < 35 ** 2] = 1
    index[b][np.abs(yy - xx - 10 * b) < 3] = 2
    index[b][(yy > 100) & (xx < 40 + 10 * b)] = 3
  masks = np.stack([index == c + 1 for c in range(N)], -1).astype(np.float32)
  if zero_class is not None:
    masks[..., zero_class] = 0.0
  images = rng.normal(size=(2, 128, 128, 3)).astype(np.float32) + index[..., None] * 0.7
  return {"image": jnp.asarray(images), "mask": jnp.asarray(masks)}


@pytest.fixture
def mc_setup(tiny_config):
  config = tiny_config
  config.model.num_classes = N
  config.train.num_steps = 100
  config.optim.schedule = "constant"
  return config


def _sgd(state):
  """The state with plain SGD at rate 1, so a step moves each parameter by minus its gradient."""
  tx = optax.sgd(1.0)
  return state.replace(tx=tx, opt_state=tx.init(state.params))


def test_each_class_is_trained_on_its_own_ground_truth(mc_setup):
  """Zeroing one class's ground truth changes every loss term, and the gradient of S's output
  layer for that class only.

  The output layer's kernel and bias for class c receive only the gradient of logit map c, so
  they show which target each map was pulled towards (adversarial, Dice and BCE terms together).
  The adversarial term is taken on the masked input alone (layer weights 1, 0, ...): the deeper
  critic layers' BatchNorm mixes the samples of a batch, and with it the classes, by design.
  """
  config = mc_setup
  config.loss.dice_weight = 1.0
  config.loss.bce_weight = 1.0
  config.loss.layer_weights = (1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
  cfg = build_step_config(config, steps_per_epoch=10)
  seg, critic = create_states(config, cfg)
  step = jax.jit(functools.partial(steps.segmentor_step, cfg=cfg))

  def out_grads(batch):
    before = jax.tree.map(np.array, seg.params["out_conv"])
    new, terms = step(_sgd(seg), critic, batch)
    after = jax.tree.map(np.asarray, new.params["out_conv"])
    return {k: before[k] - after[k] for k in before}, terms

  full, terms = out_grads(_mc_batch())
  for zero in range(N):
    zeroed, zeroed_terms = out_grads(_mc_batch(zero_class=zero))
    for term in ("adversarial_loss", "dice_loss", "bce_loss"):
      assert float(terms[term]) != float(zeroed_terms[term]), term
    for name in ("kernel", "bias"):
      for c in range(N):
        if c != zero:
          np.testing.assert_array_equal(full[name][..., c], zeroed[name][..., c])
      assert np.abs(full[name][..., zero] - zeroed[name][..., zero]).max() > 1e-3 * np.abs(
          full[name][..., zero]).max()


def test_three_classes_train_with_every_term(mc_setup):
  """A few full iterations (critic and segmentor, all three terms) at N = 3 stay finite and
  move every map; the critic sees B * N masked images on both sides."""
  config = mc_setup
  config.loss.dice_weight = 1.0
  config.loss.bce_weight = 1.0
  cfg = build_step_config(config, steps_per_epoch=1)
  seg, critic = create_states(config, cfg)
  train_step = jax.jit(functools.partial(steps.train_step, cfg=cfg))
  batch = _mc_batch()
  losses = []
  for _ in range(3):
    seg, critic, m = train_step(seg, critic, batch)
    losses.append({k: float(v) for k, v in m.items()})
  assert all(np.isfinite(v) for row in losses for v in row.values())
  assert losses[-1]["k"] < losses[0]["k"]  # the k schedule runs for every map alike
  features, _ = steps.critic_features(cfg, critic, batch["image"], batch["mask"])
  assert features[0].shape == (2 * N, 128, 128, 3)
  bad = {"image": batch["image"], "mask": batch["mask"][..., :1]}
  with pytest.raises(ValueError, match=r"label maps \(2, 128, 128, 1\) do not match"):
    train_step(seg, critic, bad)


# --- scoring ---------------------------------------------------------------------------------

def test_label_prediction_rule():
  probs = np.array([[[0.9, 0.5, 0.1], [0.2, 0.3, 0.35], [0.6, 0.6, 0.1], [0.1, 0.7, 0.8]]])
  np.testing.assert_array_equal(metrics.label_prediction(probs, 0.4), [[1, 0, 1, 3]])
  one = np.array([[[0.39], [0.41]]])
  np.testing.assert_array_equal(metrics.label_prediction(one, 0.4), [[0, 1]])


def test_per_class_scores_by_hand():
  truth = np.array([[1, 1, 0, 2], [0, 0, 2, 2], [3, 0, 0, 0]], np.uint8)
  pred = np.array([[1, 0, 0, 2], [0, 1, 2, 0], [0, 0, 0, 0]], np.uint8)
  probs = np.stack([(pred == c + 1) * 0.9 for c in range(N)], -1).astype(np.float32)
  acc = metrics.ScoreAccumulator(N)
  acc.add(probs, truth, 0.5, image_id="a")
  acc.add(np.zeros_like(probs), np.zeros_like(truth), 0.5, image_id="b")  # all empty: freebies
  rows, summary = acc.rows(), acc.summary()
  # Class 1: tp 1, fp 1, fn 1 -> 1/3; class 2: tp 2, fn 1 -> 2/3; class 3: fn 1 -> 0.
  expected_a = [1 / 3, 2 / 3, 0.0]
  for c, value in enumerate(expected_a, start=1):
    assert rows[0][f"jaccard_class{c}"] == pytest.approx(value)
    assert rows[1][f"jaccard_class{c}"] == 1.0
    assert summary[f"jaccard_class{c}"] == pytest.approx((value + 1.0) / 2)
  assert rows[0]["jaccard"] == pytest.approx(np.mean(expected_a))
  assert summary["jaccard"] == pytest.approx((np.mean(expected_a) + 1.0) / 2)
  assert summary["dice_class2"] == pytest.approx((0.8 + 1.0) / 2)
  assert summary["pooled_jaccard_class3"] == 0.0 and summary["images_with_class3"] == 1
  assert summary["pooled_jaccard"] == pytest.approx(np.mean(expected_a))
  assert summary["num_classes"] == N and summary["num_images"] == 2


def test_one_class_keys_unchanged():
  acc = metrics.ScoreAccumulator()
  acc.add(np.full((4, 4), 0.9, np.float32), np.full((4, 4), 255, np.uint8), 0.4)
  assert set(acc.summary()) == set(metrics.METRIC_NAMES) | {"num_images"}
  assert list(acc.rows()[0]) == ["id", *metrics.METRIC_NAMES]


def test_score_eval_set_scores_every_class_at_the_original_size():
  rng = np.random.default_rng(1)
  truths = [rng.integers(0, N + 1, (50, 70)).astype(np.uint8) for _ in range(2)]
  eval_set = arrays.EvalSet(ids=["x", "y"], images=np.zeros((2, 128, 128, 3), np.uint8),
                            masks=truths, original_sizes=[(50, 70)] * 2)
  probs = rng.uniform(size=(2, 128, 128, N)).astype(np.float32)
  acc = validation.score_eval_set(probs, eval_set, 0.5)
  for row, prob, truth in zip(acc.rows(), probs, truths):
    labels = metrics.label_prediction(metrics.resize_probabilities(prob, truth.shape), 0.5)
    for c in range(1, N + 1):
      assert row[f"jaccard_class{c}"] == metrics.image_scores(labels == c, truth == c)["jaccard"]
  one = validation.score_eval_set(probs, eval_set, 0.5, label_map=0)  # one map, as before
  assert "jaccard_class1" not in one.summary()


def test_panels_colour_the_classes():
  images = np.full((1, 128, 128, 3), 100, np.uint8)
  truth = np.zeros((60, 60), np.uint8)
  truth[:30] = 2
  probs = np.zeros((1, 128, 128, N), np.float32)
  probs[0, 64:, :, 2] = 0.9
  grid = panels.panel_grid(images, [truth], probs, 0.5)
  assert grid.shape == (128, 4 * 128 + 6, 3)
  truth_cell, pred_cell = grid[:, 130:258], grid[:, 390:518]
  assert np.all(truth_cell[20, 20] == np.round(0.55 * 100 + 0.45 * np.array(
      overlays.class_color(2))))
  assert np.all(pred_cell[100, 20] == np.round(0.55 * 100 + 0.45 * np.array(
      overlays.class_color(3))))
  assert np.all(pred_cell[20, 20] == 100)


# --- end to end: train, evaluate, predict, export --------------------------------------------

@pytest.fixture(scope="module")
def mc_run(tmp_path_factory):
  from segan_jax import train
  from segan_jax.configs import tiny
  config = tiny.get_config()
  config.model.num_classes = N
  config.train.num_steps = 2
  config.train.checkpoint_every = 2
  config.train.eval_every = 2
  workdir = str(tmp_path_factory.mktemp("multiclass") / "run")
  result = train.train_and_evaluate(config, workdir)
  return workdir, result


def test_training_reports_each_class(mc_run):
  workdir, result = mc_run
  val = result["val"]
  per_class = [val[f"jaccard_class{c}"] for c in range(1, N + 1)]
  assert val["jaccard"] == pytest.approx(np.mean(per_class))
  assert json.load(open(os.path.join(workdir, "metrics.json")))["val"] == val
  events = [f for f in os.listdir(workdir) if f.startswith("events.out.tfevents")]
  assert events
  raw = open(os.path.join(workdir, events[0]), "rb").read()
  for key in ("val_jaccard", "val_jaccard_class1", f"val_jaccard_class{N}"):
    assert key.encode() in raw


def test_evaluate_and_predict_write_per_class_results(mc_run, tmp_path):
  from segan_jax import evaluate, inference, predict
  workdir, result = mc_run
  out = str(tmp_path / "eval")
  summary = evaluate.evaluate([workdir], output=out, batch_size=4, num_worst=2, num_examples=2,
                              log=lambda *_: None)
  primary = summary["variants"]["model"]["summary"]
  for key in ("jaccard", "jaccard_class1", f"dice_class{N}", f"pooled_jaccard_class{N}"):
    # What validation reported, up to pixels that float rounding moves across the threshold.
    assert primary[key] == pytest.approx(result["val"][key], abs=1e-3)
  assert json.load(open(os.path.join(out, "summary.json")))["num_classes"] == N
  with open(os.path.join(out, "per_image.csv")) as f:
    rows = list(csv.DictReader(f))
  assert {"jaccard", "jaccard_class1", f"accuracy_class{N}"} <= set(rows[0])
  assert os.path.exists(os.path.join(out, "worst_cases.png"))

  images = tmp_path / "images"
  images.mkdir()
  photo = np.random.default_rng(0).integers(0, 256, (90, 150, 3), dtype=np.uint8)
  Image.fromarray(photo).save(images / "p.png")
  model = inference.load_model(workdir)
  report = predict.predict_files([model], [str(images)], str(tmp_path / "pred"), batch_size=4,
                                 save_probabilities=True, save_overlays=True, progress=False,
                                 log=lambda *_: None)
  assert report["num_segmented"] == 1
  written = sorted(os.listdir(tmp_path / "pred"))
  assert written == sorted(["p_segmentation.png", "p_overlay.jpg", "predict_summary.json"]
                           + [f"p_probability_class{c}.png" for c in range(1, N + 1)])
  labels = Image.open(tmp_path / "pred" / "p_segmentation.png")
  assert labels.mode == "L" and labels.size == (150, 90)
  small = arrays.resize_image(photo, 128, 128)
  probs = inference.Predictor([model], 4).probabilities(small[None])[0]
  expected = metrics.label_prediction(metrics.resize_probabilities(probs, (90, 150)),
                                       model.threshold)
  np.testing.assert_array_equal(np.asarray(labels), expected)
  with pytest.raises(evaluate.EvaluationError, match="--postprocess"):
    evaluate.evaluate([workdir], output=out, postprocess=True, log=lambda *_: None)


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                    reason="SavedModel export needs TensorFlow (the [tfds] extra)")
def test_export_returns_the_index_mask(mc_run, tmp_path):
  import tensorflow as tf

  from segan_jax import export, inference
  model = inference.load_model(mc_run[0])
  out = str(tmp_path / "saved_model")
  export.export([model], out)
  loaded = tf.saved_model.load(out)
  images = np.random.default_rng(0).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
  served = loaded.signatures["serving_default"](images=tf.constant(images))
  probs = served["probabilities"].numpy()
  assert probs.shape == (2, 128, 128, N)
  np.testing.assert_array_equal(served["labels"].numpy(),
                                metrics.label_prediction(probs, model.threshold))


# --- several devices -------------------------------------------------------------------------

TWO_DEVICES = textwrap.dedent("""
    import jax, numpy as np, optax
    assert jax.device_count() == 2, jax.devices()
    from segan_jax import sharding, steps
    from segan_jax.configs import tiny
    from segan_jax.train import build_step_config
    from segan_jax.train_state import create_train_state
    config = tiny.get_config()
    config.model.num_classes = 3
    config.loss.dice_weight = 1.0
    cfg = build_step_config(config, steps_per_epoch=4)
    keys = jax.random.split(jax.random.key(0))
    seg = create_train_state(cfg.segmentor, keys[0], (1, 128, 128, 3), optax.sgd(0.1))
    critic = create_train_state(cfg.critic, keys[1], (1, 128, 128, 3), optax.sgd(0.1))
    rng = np.random.default_rng(0)
    images = rng.normal(size=(4, 128, 128, 3)).astype(np.float32)
    images[2:] *= 5.0
    index = rng.integers(0, 4, (4, 128, 128))
    masks = np.stack([index == c + 1 for c in range(3)], -1).astype(np.float32)
    batch = {"image": images, "mask": masks}
    copy = lambda t: jax.tree.map(lambda x: np.array(x), t)
    single = steps.make_jitted_steps(cfg).train_step(copy(seg), copy(critic), batch)
    mesh = sharding.make_mesh()
    s2, c2 = sharding.replicate((copy(seg), copy(critic)), mesh)
    multi = steps.make_jitted_steps(cfg, mesh).train_step(s2, c2, sharding.global_batch(batch, mesh))
    for a, b in zip(single[:2], multi[:2]):
      for x, y in zip(jax.tree.leaves((a.params, a.batch_stats)),
                      jax.tree.leaves((b.params, b.batch_stats))):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-3, atol=1e-4)
    for key in ("adversarial_loss", "dice_loss", "critic_loss"):
      np.testing.assert_allclose(single[2][key], multi[2][key], rtol=1e-4)
    print("OK")
""")


def test_three_classes_on_two_devices_equal_one_device():
  # At XLA's default optimisation level, not the suite's level 0: level 0 sums the batch in an
  # order that rounds about 5x more (largest difference 1.3e-4 against 2.4e-5 here).
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", TWO_DEVICES], capture_output=True, text=True,
                       env=env, timeout=900)
  assert out.returncode == 0, out.stderr[-4000:]
  assert "OK" in out.stdout

