import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segan_jax import conv
from jax import lax

from segan_jax.layers import (GlobalConvBlock, conv_upsampled_along, upsample2x_bilinear,
                              upsample2x_bilinear_along)
from segan_jax.models import (Critic, Segmentor, inference_chunks, mask_images,
                               segment_inference)
from segan_jax.train_state import count_kernel_weights


def _abstract_params(module):
  x = jnp.zeros((1, 128, 128, 3))
  return jax.eval_shape(lambda: module.init(jax.random.key(0), x, train=False))["params"]


def test_kernel_weight_counts_at_width_64():
  # The architecture of docs/architecture.md (section 1).
  assert count_kernel_weights(_abstract_params(Segmentor(width=64))) == 156_207_872
  assert count_kernel_weights(_abstract_params(Critic(width=64))) == 9_389_248


def test_segmentor_output_shape_and_multiclass():
  for n in (1, 3):
    model = Segmentor(width=2, num_classes=n)
    x = jnp.zeros((2, 128, 256, 3))
    out = jax.eval_shape(lambda: model.apply(model.init(jax.random.key(0), x, train=False), x,
                                             train=False))
    assert out.shape == (2, 128, 256, n)


@pytest.mark.parametrize("global_conv", [False, True])
def test_critic_feature_shapes(global_conv):
  model = Critic(width=2, global_conv=global_conv)
  x = jnp.ones((3, 128, 128, 3))
  features = jax.jit(lambda: model.apply(model.init(jax.random.key(0), x, train=False), x,
                                         train=False))()
  assert [f.shape for f in features] == [
      (3, 128, 128, 3), (3, 64, 64, 2), (3, 32, 32, 4), (3, 16, 16, 8), (3, 8, 8, 16),
      (3, 4, 4, 16), (3, 2, 2, 16)]
  assert all(np.all(np.isfinite(np.asarray(f))) for f in features)


def test_rejects_sizes_that_are_not_multiples_of_128():
  model = Segmentor(width=2)
  with pytest.raises(ValueError, match="multiples of 128"):
    model.init(jax.random.key(0), jnp.zeros((1, 100, 128, 3)), train=False)


def test_mask_images_stacks_label_maps():
  images = jnp.arange(2 * 128 * 128 * 3, dtype=jnp.float32).reshape(2, 128, 128, 3)
  maps = jnp.stack([jnp.ones((2, 128, 128)), jnp.zeros((2, 128, 128))], axis=-1)
  masked = mask_images(images, maps)
  assert masked.shape == (4, 128, 128, 3)
  np.testing.assert_array_equal(masked[0], images[0])
  np.testing.assert_array_equal(masked[1], 0)
  np.testing.assert_array_equal(masked[2], images[1])


@pytest.mark.parametrize("shape", [(2, 1, 1, 3), (1, 2, 2, 1), (2, 5, 7, 4)])
def test_upsample_matches_jax_image_resize(shape):
  x = jax.random.normal(jax.random.key(1), shape)
  expected = jax.image.resize(x, (shape[0], 2 * shape[1], 2 * shape[2], shape[3]), "bilinear")
  np.testing.assert_allclose(upsample2x_bilinear(x), expected, rtol=1e-5, atol=1e-6)


def test_upsample_along_each_axis_composes_to_the_2d_upsample():
  x = jax.random.normal(jax.random.key(1), (2, 3, 5, 4))
  both = upsample2x_bilinear_along(upsample2x_bilinear_along(x, 2), 1)
  np.testing.assert_allclose(both, upsample2x_bilinear(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("axis", [1, 2])
@pytest.mark.parametrize("k", [3, 7, 9, 11])
@pytest.mark.parametrize("n", [1, 2, 3, 8])
def test_conv_of_the_upsampled_map_computed_on_the_map_itself(axis, k, n):
  # Tiny n: the border corrections of both ends overlap, or cover every output.
  shape = (2, n, 5, 3) if axis == 1 else (2, 5, n, 3)
  x = jax.random.normal(jax.random.key(k), shape)
  kernel = jax.random.normal(jax.random.key(n), (k, 1, 3, 4) if axis == 1 else (1, k, 3, 4))
  p = (k - 1) // 2
  pads = ((p, p), (0, 0)) if axis == 1 else ((0, 0), (p, p))

  @jax.jit
  def both_ways(x, kernel):
    want = lax.conv_general_dilated(upsample2x_bilinear_along(x, axis), kernel, (1, 1), pads,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))
    got = [conv_upsampled_along(x, kernel, axis, impl) for impl in ("xla", "cpu")]
    return want, got, conv_upsampled_along(x.astype(jnp.bfloat16), kernel, axis, "xla")

  want, got, got16 = both_ways(x, kernel)
  scale = float(jnp.abs(want).max())
  for g in got:
    assert g.shape == want.shape
    np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5 * scale)
  assert got16.dtype == jnp.bfloat16
  np.testing.assert_allclose(got16.astype(jnp.float32), want, atol=0.05 * scale)


def test_conv_upsampled_along_rejects_what_it_cannot_compute():
  x = jnp.ones((1, 4, 4, 2))
  with pytest.raises(ValueError, match="odd k x 1"):
    conv_upsampled_along(x, jnp.ones((4, 1, 2, 3)), 1)
  with pytest.raises(ValueError, match="odd k x 1"):
    conv_upsampled_along(x, jnp.ones((1, 5, 2, 3)), 1)
  with pytest.raises(ValueError, match="axis must be 1"):
    conv_upsampled_along(x, jnp.ones((5, 1, 2, 3)), 3)
  with pytest.raises(ValueError, match="needs strides"):
    GlobalConvBlock(3, 5, strides=(2, 2), upsample=True).init(jax.random.key(0), x)


@pytest.mark.parametrize("impl", ["xla", "cpu"])
@pytest.mark.parametrize("k", [7, 9, 11])
def test_global_conv_with_upsample_equals_global_conv_of_the_upsampled_map(k, impl):
  # The decoder's global convolutions upsample their input inside, each path's first conv at
  # half the pixels; values and gradients must be those of upsampling first.
  x = jax.random.normal(jax.random.key(3), (2, 6, 10, 5))
  inside = GlobalConvBlock(4, k, conv_impl=impl, upsample=True)
  outside = GlobalConvBlock(4, k, conv_impl=impl)
  params = outside.init(jax.random.key(4), upsample2x_bilinear(x))
  params = jax.tree.map(lambda p: p + 0.1, params)  # non-zero biases too
  f_in = lambda p, x: inside.apply(p, x)
  f_out = lambda p, x: outside.apply(p, upsample2x_bilinear(x))
  y_in, y_out = jax.jit(f_in)(params, x), jax.jit(f_out)(params, x)
  assert y_in.shape == (2, 12, 20, 4)
  np.testing.assert_allclose(y_in, y_out, rtol=1e-4, atol=1e-4)
  loss = lambda f: lambda p, x: jnp.sum(jnp.sin(f(p, x)))
  g_in = jax.jit(jax.grad(loss(f_in), argnums=(0, 1)))(params, x)
  g_out = jax.jit(jax.grad(loss(f_out), argnums=(0, 1)))(params, x)
  for a, b in zip(jax.tree.leaves(g_in), jax.tree.leaves(g_out)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


def test_batchnorm_statistics_update_in_training_mode():
  model = Segmentor(width=2)
  x = jax.random.normal(jax.random.key(2), (2, 128, 128, 3))
  variables = jax.jit(lambda: model.init(jax.random.key(0), x, train=False))()
  _, updates = jax.jit(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables)
  before = jax.tree.leaves(variables["batch_stats"])
  after = jax.tree.leaves(updates["batch_stats"])
  assert any(not np.allclose(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("batch,chunks", [(5, 4), (3, 4), (4, 2), (1, 4)])
def test_inference_in_pieces_matches_one_batch(batch, chunks):
  model = Segmentor(width=2)
  x = jax.random.normal(jax.random.key(1), (batch, 128, 128, 3))
  # Jitted: run op by op, the network's hundreds of small operations each compile on their own.
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(x[:1])
  whole = jax.jit(lambda v, x: segment_inference(model, v, x, chunks=1))(variables, x)
  pieces = jax.jit(lambda v, x: segment_inference(model, v, x, chunks=chunks))(variables, x)
  assert pieces.shape == whole.shape == (batch, 128, 128, 1)
  np.testing.assert_allclose(pieces, whole, rtol=1e-5, atol=1e-5)


def test_inference_pieces_policy(monkeypatch):
  monkeypatch.setattr(conv, "_runtime_threads_each_convolution", lambda: False)
  expected = 1 if jax.default_backend() != "cpu" or jax.device_count() > 1 else 4
  assert inference_chunks(25) == expected
  assert inference_chunks(1) == 1


def _abstract_variables(module):
  x = jnp.zeros((1, 128, 128, 3))
  return jax.eval_shape(lambda: module.init(jax.random.key(0), x, train=False))


def _paths(tree):
  return {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)}


def test_residual_batchnorm_off_leaves_only_the_residual_blocks_without_batchnorm():
  """model.residual_batchnorm=False (the authors' forward pass): the residual blocks lose their
  BatchNorm (scale, bias and statistics), every other layer keeps its own; kernels are the same."""
  with_bn = _abstract_variables(Segmentor(width=2))
  without = _abstract_variables(Segmentor(width=2, residual_batchnorm=False))
  residual_bn = {p for p in _paths(with_bn) if "_res']" in p and "['bn']" in p}
  assert len(residual_bn) == 11 * 3 * 4  # e1-e5, d3-d8 x 3 convs x (scale, bias, mean, var)
  assert _paths(without) == _paths(with_bn) - residual_bn
  assert count_kernel_weights(without["params"]) == count_kernel_weights(with_bn["params"])
  x = jax.random.normal(jax.random.key(1), (2, 128, 128, 3))
  model = Segmentor(width=2, residual_batchnorm=False)
  variables = jax.jit(lambda: model.init(jax.random.key(0), x, train=False))()
  out, _ = jax.jit(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables)
  assert out.shape == (2, 128, 128, 1) and np.all(np.isfinite(np.asarray(out)))


@pytest.mark.parametrize("global_conv", [False, True])
def test_spectral_norm_critic_has_the_same_parameters_and_its_vectors_in_batch_stats(global_conv):
  plain = _abstract_variables(Critic(width=2, global_conv=global_conv))
  normed = _abstract_variables(Critic(width=2, global_conv=global_conv, spectral_norm=True))
  assert jax.tree.map(lambda a: a.shape, normed["params"]) == jax.tree.map(
      lambda a: a.shape, plain["params"])
  extra = set(normed["batch_stats"]) - set(plain["batch_stats"])
  assert extra == {f"c{i}_sn" for i in range(1, 7)}
  kernels = sum(1 for p in _paths(plain["params"]) if p.endswith("['kernel']"))
  vectors = [p for p in _paths({k: normed["batch_stats"][k] for k in extra}) if p.endswith("/u']")]
  assert len(vectors) == kernels  # one power-iteration vector per kernel
