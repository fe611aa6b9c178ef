"""experiments/inference_view.py: the test-time views' geometry, and its per-image scoring of a run."""

import numpy as np
import pytest

import experiment_scripts
from segan_jax import inference, metrics
from segan_jax.data import arrays as data_arrays


@pytest.fixture(scope="module")
def views():
  return experiment_scripts.load("inference_view")


def test_train_scale_view_pads_the_training_scale_image_and_crops_it_back(views, trained_run):
  config = inference.load_config(trained_run)
  images = np.random.default_rng(0).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
  inputs, (top, left, h, w) = views.network_inputs(images, "train_scale", config)
  assert (h, w) == (config.data.resize_height, config.data.resize_width) == (135, 180)
  assert inputs.shape == (2, 256, 256, 3) and (top, left) == (60, 38)
  for image, padded in zip(images, inputs):
    np.testing.assert_array_equal(padded[top:top + h, left:left + w],
                                  data_arrays.resize_image(image, h, w))
    # Reflected, not blank: the row above the window mirrors the window's second row.
    np.testing.assert_array_equal(padded[top - 1, left:left + w], padded[top + 1, left:left + w])
  assert views.tile_corners(135, 180, 128) == [(0, 0), (0, 52), (7, 0), (7, 52)]
  squashed, window = views.network_inputs(images, "squash", config)
  assert squashed.shape == (2, 128, 128, 3) and window == (0, 0, 128, 128)


def test_score_run_scores_every_view_and_mask_variant_per_image(views, trained_run):
  results = views.score_run(trained_run, None)
  assert sorted(results) == sorted(["squash/raw/plain", "squash/raw/post", "train_scale/raw/plain",
                                    "train_scale_tiles/raw/plain"])
  ids = set(results["squash/raw/plain"])
  assert len(ids) == 5 and all(set(r) == ids for r in results.values())
  for scores in results.values():
    for s in scores.values():
      assert 0.0 <= s["jaccard"] <= s["dice"] <= 1.0
  # The two views feed the network different pixels, so their maps differ.
  model = inference.load_model(trained_run, use_selection=False)
  images = np.random.default_rng(1).integers(0, 256, (3, 256, 256, 3), dtype=np.uint8)
  maps = {}
  for view in views.VIEWS[:2]:
    probs = views.probability_maps(model, *views.network_inputs(images, view, model.config),
                                   batch=2)
    maps[view] = np.stack([metrics.resize_probability(p, (64, 64)) for p in probs])
  tiled = views.tiled_probability_maps(model, images, model.config, batch=2)
  assert tiled.shape == (3, 135, 180)
  maps["tiles"] = np.stack([metrics.resize_probability(p, (64, 64)) for p in tiled])
  assert maps["squash"].shape == maps["train_scale"].shape == (3, 64, 64)
  assert not np.array_equal(maps["squash"], maps["train_scale"])
  assert not np.array_equal(maps["squash"], maps["tiles"])
  # Where only one window covers a pixel, the tiled map is that window's map.
  top_left = views.probability_maps(
      model, np.stack([data_arrays.resize_image(im, 135, 180)[:128, :128] for im in images]),
      (0, 0, 128, 128), batch=2)
  np.testing.assert_allclose(tiled[:, :7, :52], top_left[:, :7, :52], rtol=1e-6)
