import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segan_jax.losses import (authors_dice_loss, binary_cross_entropy_with_logits, dice_loss,
                              multiscale_l1, soft_dice_loss)


def _features(rng, scale=1.0):
  shapes = [(2, 8, 8, 3), (2, 4, 4, 5), (2, 2, 2, 7)]
  return [scale * rng.standard_normal(s).astype(np.float32) for s in shapes]


def test_multiscale_l1_per_layer_matches_numpy():
  rng = np.random.default_rng(0)
  a, b = _features(rng), _features(rng)
  expected = np.mean([np.mean(np.abs(x - y)) for x, y in zip(a, b)])
  np.testing.assert_allclose(multiscale_l1(a, b), expected, rtol=1e-6)


def test_multiscale_l1_weights():
  rng = np.random.default_rng(1)
  a, b = _features(rng), _features(rng)
  w = (1.0, 2.0, 4.0)
  expected = sum(wi * np.mean(np.abs(x - y)) for wi, x, y in zip(w, a, b)) / 3
  np.testing.assert_allclose(multiscale_l1(a, b, w), expected, rtol=1e-6)


def test_multiscale_l1_concatenated_is_authors_reduction():
  rng = np.random.default_rng(2)
  a, b = _features(rng), _features(rng)
  w = (1.0, 2.0, 4.0)
  flat_a = np.concatenate([wi * x.reshape(2, -1) for wi, x in zip(w, a)], axis=1)
  flat_b = np.concatenate([wi * y.reshape(2, -1) for wi, y in zip(w, b)], axis=1)
  np.testing.assert_allclose(multiscale_l1(a, b, w, reduction="concatenated"),
                             np.mean(np.abs(flat_a - flat_b)), rtol=1e-6)


def test_multiscale_l1_errors():
  rng = np.random.default_rng(3)
  a = _features(rng)
  with pytest.raises(ValueError, match="feature maps"):
    multiscale_l1(a, a[:2])
  with pytest.raises(ValueError, match="layer_weights"):
    multiscale_l1(a, a, (1.0, 1.0))
  with pytest.raises(ValueError, match="reduction"):
    multiscale_l1(a, a, reduction="sum")


def test_multiscale_l1_gradient_sign():
  # Moving features towards the target lowers the loss: the gradient points away from the target.
  a = [jnp.full((1, 2, 2, 1), 2.0)]
  b = [jnp.zeros((1, 2, 2, 1))]
  g = jax.grad(lambda f: multiscale_l1([f], b))(a[0])
  assert np.all(np.asarray(g) > 0)


def test_soft_dice_matches_numpy():
  rng = np.random.default_rng(4)
  p = rng.uniform(size=(3, 6, 6, 1)).astype(np.float32)
  t = (rng.uniform(size=(3, 6, 6, 1)) > 0.5).astype(np.float32)
  inter = (p * t).sum(axis=(1, 2))
  dice = (2 * inter + 1) / (p.sum(axis=(1, 2)) + t.sum(axis=(1, 2)) + 1)
  np.testing.assert_allclose(soft_dice_loss(p, t), 1 - dice.mean(), rtol=1e-6)
  assert float(soft_dice_loss(t, t)) < 1e-6


def test_bce_matches_numpy():
  z = np.array([[-3.0, 0.0], [0.5, 4.0]], np.float32).reshape(1, 2, 2, 1)
  t = np.array([[0, 1], [1, 1]], np.float32).reshape(1, 2, 2, 1)
  for k in (1.0, 0.3):
    p = 1 / (1 + np.exp(-z.astype(np.float64) / k))
    expected = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
    np.testing.assert_allclose(binary_cross_entropy_with_logits(z, t, k), expected, rtol=1e-5)


def _authors_dice_loss_numpy(input, target):
  """The authors' train.py `dice_loss`, line by line, in numpy (NCHW, torch.sum -> np.sum)."""
  num = input * target
  num = np.sum(num, axis=2)
  num = np.sum(num, axis=2)
  den1 = input * input
  den1 = np.sum(den1, axis=2)
  den1 = np.sum(den1, axis=2)
  den2 = target * target
  den2 = np.sum(den2, axis=2)
  den2 = np.sum(den2, axis=2)
  dice = 2 * (num / (den1 + den2))
  dice_total = 1 - 1 * np.sum(dice) / dice.shape[0]  # divide by batchsize
  return dice_total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_authors_dice_is_their_formula(seed):
  """dice_form='authors' equals a transcription of their dice_loss on random maps (one label map,
  as their code has), and differs from segan_jax's soft Dice."""
  rng = np.random.default_rng(seed)
  batch, side = 2 + seed, 5 + 3 * seed
  p = rng.uniform(size=(batch, side, side, 1)).astype(np.float32)
  t = (rng.uniform(size=(batch, side, side, 1)) > 0.6).astype(np.float32)
  expected = _authors_dice_loss_numpy(np.moveaxis(p, -1, 1).astype(np.float64),
                                      np.moveaxis(t, -1, 1).astype(np.float64))
  np.testing.assert_allclose(authors_dice_loss(p, t), expected, rtol=1e-5)
  np.testing.assert_allclose(dice_loss(p, t, "authors"), expected, rtol=1e-5)
  assert abs(float(dice_loss(p, t, "soft")) - expected) > 1e-3
  assert float(dice_loss(p, t, "soft")) == float(soft_dice_loss(p, t))


def test_dice_forms_agree_on_binary_maps_and_unknown_forms_fail():
  """On 0/1 maps p^2 = p, so the two forms differ only by the soft form's smoothing."""
  t = np.zeros((1, 4, 4, 1), np.float32)
  t[0, 1:3, 1:3] = 1.0
  assert float(authors_dice_loss(t, t)) == 0.0
  with pytest.raises(ValueError, match="Dice form"):
    dice_loss(t, t, "squared")


@pytest.mark.parametrize("form", ["authors", "soft"])
def test_dice_forms_stay_finite_on_an_empty_target(form):
  """Constant logits of -13 at k = 0.3 underflow the squared prediction: on an empty target map
  the authors' 0 / 0 must give its limit (loss 1, no gradient), not NaN; a non-empty map in the
  same batch keeps its exact value and gradient."""
  from segan_jax.activations import adaptive_logistic
  logits = jnp.full((2, 16, 16, 1), -13.0)
  targets = np.zeros((2, 16, 16, 1), np.float32)
  targets[1, 4:9, 4:9] = 1.0
  loss = lambda z, t: dice_loss(adaptive_logistic(z, 0.3), t, form)
  value, grad = jax.value_and_grad(loss)(logits, targets)
  assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))
  empty_only = float(loss(logits[:1], targets[:1]))
  if form == "authors":
    assert empty_only == 1.0
    assert not np.any(np.asarray(jax.grad(loss)(logits[:1], targets[:1])))
    np.testing.assert_allclose(float(loss(logits[1:], targets[1:])),
                               _authors_dice_loss_numpy(
                                   np.moveaxis(np.asarray(adaptive_logistic(logits[1:], 0.3)),
                                               -1, 1).astype(np.float64),
                                   np.moveaxis(targets[1:], -1, 1).astype(np.float64)), rtol=1e-6)
    assert np.any(np.asarray(grad)[1] != 0)
  else:
    assert 0.0 <= empty_only < 1e-3  # smoothing: an empty prediction of an empty map is right


def test_authors_dice_is_refused_for_several_classes():
  from segan_jax.config_validation import ConfigError, validate_config
  from segan_jax.configs import tiny
  config = tiny.get_config()
  config.loss.dice_weight, config.loss.dice_form = 1.0, "authors"
  validate_config(config)
  config.model.num_classes = 3
  with pytest.raises(ConfigError, match=r"loss\.dice_form .*num_classes > 1 use 'soft'"):
    validate_config(config)
  config.loss.dice_form = "soft"
  validate_config(config)
