"""The two players' steps on a tiny model: clipping, who changes, gradient signs, single compile."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from segan_jax import schedules, steps
from segan_jax.activations import adaptive_logistic
from segan_jax.losses import authors_dice_loss, binary_cross_entropy_with_logits, soft_dice_loss
from segan_jax.train import build_step_config, create_states
from segan_jax.train_state import EMATrainState, TrainState


def _batch(seed=0, b=2):
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:128, :128]
  masks = np.stack([((yy - 64 - 10 * i) ** 2 + (xx - 60) ** 2 < 30 ** 2) for i in range(b)])
  images = rng.normal(size=(b, 128, 128, 3)).astype(np.float32) + 1.5 * masks[..., None]
  return {"image": jnp.asarray(images), "mask": jnp.asarray(masks[..., None], jnp.float32)}


@pytest.fixture
def setup(tiny_config):
  config = tiny_config
  config.train.num_steps = 100
  config.schedule.k_decay_epochs = 1
  cfg = build_step_config(config, steps_per_epoch=1)  # k changes every step
  seg, critic = create_states(config, cfg)
  return config, cfg, seg, critic


def _copy(tree):
  return jax.tree.map(lambda x: np.array(x), tree)


def _loss(cfg, seg, critic, batch):
  k = cfg.k_schedule(seg.step)
  logits, _ = steps.segment(cfg, seg, batch["image"], train=True)
  probs = adaptive_logistic(logits, k)
  fake, stats = steps.critic_features(cfg, critic, batch["image"], probs)
  real, _ = steps.critic_features(cfg, critic, batch["image"], batch["mask"], batch_stats=stats)
  return float(steps.adversarial_loss(cfg, fake, real))


def _deleted(tree):
  """Whether each array leaf of a state was donated to (and so deleted by) a jitted call."""
  return [leaf.is_deleted() for leaf in jax.tree.leaves(tree) if isinstance(leaf, jax.Array)]


def test_critic_step_clips_and_donates_only_the_critic(setup):
  """make_jitted_steps' critic step updates (and clips) C, and takes over the buffers of C's old
  state alone: S's state stays valid and unchanged for the segmentor step that follows."""
  _, cfg, seg, critic = setup
  seg_before = _copy(seg)
  new_critic, metrics = steps.make_jitted_steps(cfg).critic_step(critic, seg, _batch())
  for leaf in jax.tree.leaves(new_critic.params):
    assert np.all(np.abs(np.asarray(leaf)) <= cfg.critic_clip + 1e-7)
  assert all(_deleted(critic))  # donated: its buffers now hold the new state
  assert not any(_deleted(seg))
  jax.tree.map(np.testing.assert_array_equal, _copy(seg), seg_before)
  assert np.isfinite(float(metrics["critic_loss"]))
  assert int(new_critic.step) == 1


def test_segmentor_step_updates_every_parameter_and_donates_only_the_segmentor(setup):
  """make_jitted_steps' segmentor step changes every parameter of S, and takes over the buffers
  of S's old state alone: C's state stays valid and unchanged for the next critic step."""
  _, cfg, seg, critic = setup
  critic_before, params_before = _copy(critic), _copy(seg.params)
  new_seg, metrics = steps.make_jitted_steps(cfg).segmentor_step(seg, critic, _batch())
  assert all(_deleted(seg))
  assert not any(_deleted(critic))
  jax.tree.map(np.testing.assert_array_equal, _copy(critic), critic_before)
  assert int(new_seg.step) == 1
  changed = [not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(_copy(new_seg.params)), jax.tree.leaves(params_before))]
  assert all(changed)
  assert np.isfinite(float(metrics["adversarial_loss"]))


def test_gradient_signs_on_a_fixed_batch(setup):
  config, _, _, _ = setup
  config.optim.learning_rate = 1e-3
  config.optim.schedule = "constant"
  cfg = build_step_config(config, steps_per_epoch=10_000)  # constant k
  seg, critic = create_states(config, cfg)
  # Start from a clipped critic, as after any critic step, so the update is the gradient's alone.
  critic = critic.replace(params=jax.tree.map(lambda p: jnp.clip(p, -0.05, 0.05), critic.params))
  batch = _batch(1)
  critic_step = jax.jit(functools.partial(steps.critic_step, cfg=cfg))
  segmentor_step = jax.jit(functools.partial(steps.segmentor_step, cfg=cfg))
  before = _loss(cfg, seg, critic, batch)
  new_critic, _ = critic_step(critic, seg, batch)
  after_critic = _loss(cfg, seg, new_critic, batch)
  assert after_critic > before  # C maximises the loss
  new_seg, _ = segmentor_step(seg, new_critic, batch)
  after_seg = _loss(cfg, new_seg, new_critic, batch)
  assert after_seg < after_critic  # S minimises it


def test_steps_compile_once_while_k_changes(setup):
  _, cfg, seg, critic = setup
  jitted = steps.make_jitted_steps(cfg)
  ks = []
  for i in range(4):
    seg, critic, metrics = jitted.train_step(seg, critic, _batch(i))
    ks.append(float(metrics["k"]))
  assert len(set(ks)) == 4  # k decays every step here
  assert jitted.train_step._cache_size() == 1
  for i in range(3):
    critic, _ = jitted.critic_step(critic, seg, _batch(i))
    seg, _ = jitted.segmentor_step(seg, critic, _batch(i))
  assert jitted.critic_step._cache_size() == 1
  assert jitted.segmentor_step._cache_size() == 1


def test_optional_dice_and_bce_terms(setup):
  """The reported terms are the losses of S's output before the update, and S's update follows
  their weighted gradients."""
  config, _, _, _ = setup
  config.loss.dice_weight = 1.0
  config.loss.bce_weight = 0.5
  cfg = build_step_config(config, steps_per_epoch=10)
  seg, critic = create_states(config, cfg)
  # A plain gradient step, new params = params - grads, so that the terms' gradients add up.
  sgd = optax.sgd(1.0)
  seg = seg.replace(tx=sgd, opt_state=sgd.init(seg.params))
  batch = _batch()
  images, masks = batch["image"], batch["mask"]
  new_seg, metrics = jax.jit(functools.partial(steps.segmentor_step, cfg=cfg))(seg, critic, batch)
  assert {"adversarial_loss", "dice_loss", "bce_loss"} <= set(metrics)
  assert all(np.isfinite(float(v)) for v in metrics.values())

  @jax.jit
  def losses(seg, critic):
    k = cfg.k_schedule(seg.step)
    logits, _ = steps.segment(cfg, seg, images, train=True)
    probs = adaptive_logistic(logits, k)
    fake, _ = steps.critic_features(cfg, critic, images, probs)
    real, _ = steps.critic_features(cfg, critic, images, masks)
    return {"adversarial_loss": steps.adversarial_loss(cfg, fake, real),
            "dice_loss": soft_dice_loss(probs, masks),
            "bce_loss": binary_cross_entropy_with_logits(logits, masks, k), "k": k}

  for name, value in losses(seg, critic).items():
    assert float(metrics[name]) == pytest.approx(float(value), rel=1e-4), name
  assert 0.0 < float(metrics["dice_loss"]) < 1.0 and float(metrics["bce_loss"]) > 0.0

  @jax.jit
  def pixel_grads(params):
    def weighted(p):
      k = cfg.k_schedule(seg.step)
      logits, _ = steps.segment(cfg, seg, images, train=True, params=p)
      return (1.0 * soft_dice_loss(adaptive_logistic(logits, k), masks)
              + 0.5 * binary_cross_entropy_with_logits(logits, masks, k))
    return jax.grad(weighted)(params)

  # The same step without the terms, minus their weighted gradients, is the step with them.
  config.loss.dice_weight = config.loss.bce_weight = 0.0
  plain_cfg = build_step_config(config, steps_per_epoch=10)
  plain_seg, plain_metrics = jax.jit(functools.partial(steps.segmentor_step, cfg=plain_cfg))(
      seg, critic, batch)
  assert "dice_loss" not in plain_metrics and "bce_loss" not in plain_metrics
  expected = jax.tree.map(lambda p, g: p - g, plain_seg.params, pixel_grads(seg.params))
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(_copy(pixel_grads(seg.params))))
  close = functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-3 * scale)
  jax.tree.map(close, _copy(new_seg.params), _copy(expected))


def test_critic_clipping_leaves_batch_norm_statistics_alone(setup):
  """Clipping bounds C's parameters (BatchNorm's scale and bias among them) but not its running
  statistics, which the step updates as without clipping."""
  _, cfg, seg, critic = setup
  bound = 1e-3
  batch = _batch(2)
  clipped, _ = jax.jit(functools.partial(steps.critic_step,
                                         cfg=dataclasses.replace(cfg, critic_clip=bound)))(
      critic, seg, batch)
  unclipped, _ = jax.jit(functools.partial(steps.critic_step,
                                           cfg=dataclasses.replace(cfg, critic_clip=1e9)))(
      critic, seg, batch)
  params = jax.tree.leaves(_copy(clipped.params))
  assert all(np.abs(p).max() <= bound for p in params)
  assert max(np.abs(p).max() for p in jax.tree.leaves(_copy(unclipped.params))) > 10 * bound
  stats = _copy(clipped.batch_stats)
  assert jax.tree.leaves(stats)
  assert max(np.abs(s).max() for s in jax.tree.leaves(stats)) > 10 * bound  # variances near 1
  jax.tree.map(np.testing.assert_array_equal, stats, _copy(unclipped.batch_stats))
  changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(stats),
                                                      jax.tree.leaves(_copy(critic.batch_stats)))]
  assert all(changed)  # both passes updated every running mean and variance


def test_non_adversarial_baseline_skips_the_critic(setup):
  config, _, _, _ = setup
  config.loss.adversarial_weight = 0.0
  config.loss.dice_weight = 1.0
  cfg = build_step_config(config, steps_per_epoch=10)
  seg, critic = create_states(config, cfg)
  critic_before = _copy(critic)
  seg, critic, metrics = steps.make_jitted_steps(cfg).train_step(seg, critic, _batch())
  assert "adversarial_loss" not in metrics and "critic_loss" not in metrics
  jax.tree.map(np.testing.assert_array_equal, _copy(critic), critic_before)


def test_bfloat16_compute_keeps_float32_state(setup):
  config, _, _, _ = setup
  config.dtype = "bfloat16"
  cfg = build_step_config(config, steps_per_epoch=10)
  seg, critic = create_states(config, cfg)
  seg, critic, metrics = steps.make_jitted_steps(cfg).train_step(seg, critic, _batch())
  for state in (seg, critic):
    for leaf in jax.tree.leaves((state.params, state.opt_state, state.batch_stats)):
      if jnp.issubdtype(leaf.dtype, jnp.floating):
        assert leaf.dtype == jnp.float32
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert metrics["adversarial_loss"].dtype == jnp.float32
  features = cfg.critic.apply({"params": critic.params, "batch_stats": critic.batch_stats},
                              _batch()["image"], train=False)
  logits = cfg.segmentor.apply({"params": seg.params, "batch_stats": seg.batch_stats},
                               _batch()["image"], train=False)
  assert logits.dtype == jnp.float32 and features[-1].dtype == jnp.float32
  jaxpr = str(jax.make_jaxpr(lambda x: cfg.segmentor.apply(
      {"params": seg.params, "batch_stats": seg.batch_stats}, x, train=False))(_batch()["image"]))
  assert "conv_general_dilated" in jaxpr and "bf16[2,64,64" in jaxpr  # convolutions run in bf16


@pytest.mark.parametrize("extra", [{}, {"dice_weight": 1.0}], ids=["segan", "segan_dice"])
def test_train_step_equals_critic_step_then_segmentor_step(setup, extra):
  """train_step's single S forward pass gives the two steps' iteration (two forward passes)."""
  config, _, seg, critic = setup
  for name, value in extra.items():
    config.loss[name] = value
  cfg = build_step_config(config, steps_per_epoch=1)
  batch = _batch(3)
  # Plain gradient steps (Adam's first step is about lr * sign(gradient), which turns rounding in
  # gradient entries near zero into whole steps), and no clipping: new params = params - grads.
  cfg = dataclasses.replace(cfg, critic_clip=1e9)
  sgd = optax.sgd(1.0)
  seg, critic = (st.replace(tx=sgd, opt_state=sgd.init(st.params)) for st in (seg, critic))

  def two_steps(s, c):
    c, m = steps.critic_step(c, s, batch, cfg)
    s, m2 = steps.segmentor_step(s, c, batch, cfg)
    return s, c, {**m, **m2}

  expected = jax.jit(two_steps)(seg, critic)
  actual = jax.jit(lambda s, c: steps.train_step(s, c, batch, cfg))(seg, critic)
  assert set(actual[2]) == set(expected[2])
  # Float32 rounding differs between the two programs (XLA fuses them differently) and grows
  # through the critic's update; a wrong order or a missing term changes gradients by their size.
  close = functools.partial(np.testing.assert_allclose, rtol=1e-3, atol=3e-4)
  jax.tree.map(close, _copy(actual), _copy(expected))


def test_default_states_have_no_moving_average_and_no_spectral_vectors(setup):
  """With the options off (the defaults) the states hold what they held before the options
  existed: no `ema`, the critic's batch_stats only its BatchNorm statistics."""
  config, cfg, seg, critic = setup
  assert (cfg.dice_form, cfg.critic_constraint, cfg.ema_decay) == ("soft", "clip", 0.0)
  assert type(seg) is TrainState and type(critic) is TrainState  # no `ema` field
  assert set(critic.batch_stats) == {f"c{i}_bn" for i in range(2, 7)}
  assert "bn" in seg.batch_stats["e1_res"]["conv0"]


def test_authors_dice_form_is_the_reported_and_trained_term(setup):
  config, _, _, _ = setup
  config.loss.dice_weight = 1.0
  config.loss.dice_form = "authors"
  cfg = build_step_config(config, steps_per_epoch=10)
  seg, critic = create_states(config, cfg)
  batch = _batch()
  k = cfg.k_schedule(seg.step)
  logits, _ = jax.jit(lambda s: steps.segment(cfg, s, batch["image"], train=True))(seg)
  probs = adaptive_logistic(logits, k)
  _, metrics = jax.jit(functools.partial(steps.segmentor_step, cfg=cfg))(seg, critic, batch)
  expected = float(authors_dice_loss(probs, batch["mask"]))
  assert float(metrics["dice_loss"]) == pytest.approx(expected, rel=1e-5)
  assert abs(expected - float(soft_dice_loss(probs, batch["mask"]))) > 1e-3


def _sigma_in_use(kernel, u, iterations):
  """The singular-value estimate flax.linen.SpectralNorm divides `kernel` by: power iterations
  from the stored vector u, the kernel as a (kh * kw * c_in, c_out) matrix."""
  w = np.asarray(kernel, np.float64).reshape(-1, kernel.shape[-1])
  u = np.asarray(u, np.float64)
  for _ in range(iterations):
    v = u @ w.T
    v /= np.linalg.norm(v)
    u = v @ w
    u /= np.linalg.norm(u)
  return float((v @ w @ u.T)[0, 0])


def _largest_singular_values(critic, normalized, iterations=0):
  out = {}
  for i in range(1, 7):
    kernel = np.asarray(critic.params[f"c{i}_conv"]["kernel"], np.float64)
    w = kernel.reshape(-1, kernel.shape[-1])
    if normalized:
      u = critic.batch_stats[f"c{i}_sn"][f"c{i}_conv/kernel/u"]
      w = w / _sigma_in_use(kernel, u, iterations)
    out[f"c{i}"] = float(np.linalg.svd(w, compute_uv=False)[0])
  return out


def _scaled_kernels_change_features(cfg, critic, images, factor=4.0):
  """Whether multiplying every critic kernel by `factor` changes C's eval-mode features."""
  scaled = jax.tree_util.tree_map_with_path(
      lambda path, p: p * factor if path[-1].key == "kernel" else p, critic.params)
  apply = jax.jit(lambda params: cfg.critic.apply(
      {"params": params, "batch_stats": critic.batch_stats}, images, train=False))
  return not all(np.allclose(a, b, rtol=1e-4, atol=1e-5)
                 for a, b in zip(_copy(apply(critic.params)), _copy(apply(scaled))))


def test_spectral_norm_critic_layers_have_largest_singular_value_one(setup):
  """train.critic_constraint='spectral_norm': after a few steps every kernel, as the critic uses
  it, has largest singular value ~1 (power iteration from the stored vectors trails the changing
  kernels by a few percent), and C is blind to the kernels' scale; the kernels are not clipped,
  the other parameters are. With 'clip' every parameter is clipped and the scale matters."""
  config, _, _, _ = setup
  config.train.critic_constraint = "spectral_norm"
  cfg = build_step_config(config, steps_per_epoch=10)
  seg, critic = create_states(config, cfg)
  jitted = steps.make_jitted_steps(cfg)
  for i in range(6):
    seg, critic, metrics = jitted.train_step(seg, critic, _batch(i))
  assert np.isfinite(float(metrics["critic_loss"]))
  singular = _largest_singular_values(critic, True, cfg.critic.spectral_norm_iterations)
  assert all(abs(s - 1.0) < 0.06 for s in singular.values()), singular
  images = _batch(7)["image"]
  assert not _scaled_kernels_change_features(cfg, critic, images)
  kernels = {k: np.abs(np.asarray(v["kernel"])).max() for k, v in critic.params.items()
             if "kernel" in v}
  assert max(kernels.values()) > 2 * cfg.critic_clip  # kernels are not clipped
  others = [np.abs(np.asarray(leaf)).max() for path, leaf in
            jax.tree_util.tree_leaves_with_path(critic.params) if path[-1].key != "kernel"]
  assert others and max(others) <= cfg.critic_clip + 1e-7  # BatchNorm scales, biases are

  config.train.critic_constraint = "clip"
  clip_cfg = build_step_config(config, steps_per_epoch=10)
  seg, critic = create_states(config, clip_cfg)
  seg, critic, _ = steps.make_jitted_steps(clip_cfg).train_step(seg, critic, _batch(0))
  assert set(critic.batch_stats) == {f"c{i}_bn" for i in range(2, 7)}
  assert all(np.abs(np.asarray(leaf)).max() <= clip_cfg.critic_clip + 1e-7
             for leaf in jax.tree.leaves(critic.params))
  assert _scaled_kernels_change_features(clip_cfg, critic, images)


def test_spectral_norm_passes_of_one_critic_step_share_one_normalisation(setup):
  """The fake pass leaves the power iteration alone, so the real pass normalises by the same
  estimate; the step then stores the advanced vectors."""
  config, _, _, _ = setup
  config.train.critic_constraint = "spectral_norm"
  cfg = build_step_config(config, steps_per_epoch=10)
  seg, critic = create_states(config, cfg)
  batch = _batch()
  _, held = steps.critic_features(cfg, critic, batch["image"], batch["mask"],
                                  update_spectral_norm=False)
  _, advanced = steps.critic_features(cfg, critic, batch["image"], batch["mask"])
  u = lambda stats: np.asarray(stats["c3_sn"]["c3_conv/kernel/u"])
  np.testing.assert_array_equal(u(held), u(critic.batch_stats))
  assert not np.allclose(u(advanced), u(critic.batch_stats))
  new_critic, _ = jax.jit(functools.partial(steps.critic_step, cfg=cfg))(critic, seg, batch)
  np.testing.assert_allclose(u(new_critic.batch_stats), u(advanced), rtol=1e-5, atol=1e-6)


def test_ema_is_the_debiased_average_of_the_weights_and_changes_nothing_else(setup):
  """train.ema_decay: after t updates S's moving average is sum_i (1 - d) d^(t - i) v_i /
  (1 - d^t) of its variables v_i after each update; training itself (S and C) is unchanged and
  the predictions use the average."""
  config, _, _, _ = setup
  decay = 0.6
  config.train.ema_decay = decay
  cfg = build_step_config(config, steps_per_epoch=10)
  seg, critic = create_states(config, cfg)
  assert isinstance(seg, EMATrainState) and type(critic) is TrainState
  plain_cfg = dataclasses.replace(cfg, ema_decay=0.0)
  plain_seg = TrainState(**{f.name: getattr(seg, f.name) for f in dataclasses.fields(TrainState)})
  plain_critic = critic
  plain_seg, plain_critic = jax.tree.map(jnp.array, (plain_seg, plain_critic))  # own buffers
  jitted, plain_jitted = steps.make_jitted_steps(cfg), steps.make_jitted_steps(plain_cfg)
  history = []
  for i in range(3):
    seg, critic, _ = jitted.train_step(seg, critic, _batch(i))
    plain_seg, plain_critic, _ = plain_jitted.train_step(plain_seg, plain_critic, _batch(i))
    history.append(_copy({"params": seg.params, "batch_stats": seg.batch_stats}))
  close = functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-7)
  jax.tree.map(close, _copy((seg.params, seg.batch_stats, critic.params, critic.batch_stats)),
               _copy((plain_seg.params, plain_seg.batch_stats, plain_critic.params,
                      plain_critic.batch_stats)))
  t = len(history)
  weights = [(1 - decay) * decay ** (t - 1 - i) / (1 - decay ** t) for i in range(t)]
  expected = jax.tree.map(lambda *v: sum(w * x for w, x in zip(weights, v)), *history)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6),
               _copy(seg.ema), expected)
  assert not np.allclose(_copy(seg.ema)["params"]["out_conv"]["kernel"],
                         history[-1]["params"]["out_conv"]["kernel"])
  images = _batch(5)["image"]
  probs = np.asarray(jitted.predict_probs(seg, images))
  k = schedules.last_update_k(cfg.k_schedule, seg.step)
  from_ema = adaptive_logistic(cfg.segmentor.apply(seg.ema, images, train=False), k)
  from_raw = adaptive_logistic(cfg.segmentor.apply(history[-1], images, train=False), k)
  np.testing.assert_allclose(probs, np.asarray(from_ema), rtol=1e-5, atol=1e-6)
  assert not np.allclose(probs, np.asarray(from_raw), atol=1e-4)


def test_critic_steps_are_that_many_critic_updates_on_the_iteration_batch(setup):
  """train.critic_steps=3: the iteration's critic step is three updates of C on the same batch
  and S's same output, all at the iteration's learning rate (the critic's schedule follows the
  training step, not its own count of updates); S's step then follows."""
  config, _, seg, _ = setup
  config.optim.schedule = "linear"  # over 4 steps: the rate falls by a quarter each step
  config.train.num_steps = 4
  config.train.critic_steps = 3
  cfg3 = dataclasses.replace(build_step_config(config, steps_per_epoch=1), critic_clip=1e9)
  _, critic = create_states(config, cfg3)
  config.train.critic_steps = 1
  cfg1 = dataclasses.replace(build_step_config(config, steps_per_epoch=1), critic_clip=1e9)
  rate = float(cfg1.critic_lr(0))
  assert float(cfg1.critic_lr(2)) == pytest.approx(rate / 2)
  # Expected: three one-update critic steps by an Adam whose rate stays at step 0's.
  at_step_0 = optax.adam(rate, b1=config.optim.b1, b2=config.optim.b2)
  expected = critic.replace(tx=at_step_0, opt_state=at_step_0.init(critic.params))
  batch = _batch(5)
  one = jax.jit(functools.partial(steps.critic_step, cfg=cfg1))
  for _ in range(3):
    expected, expected_metrics = one(expected, seg, batch)
  actual, metrics = jax.jit(functools.partial(steps.critic_step, cfg=cfg3))(critic, seg, batch)
  assert int(actual.step) == 3
  close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6)
  jax.tree.map(close, _copy(actual.params), _copy(expected.params))
  np.testing.assert_allclose(float(metrics["critic_loss"]),
                             float(expected_metrics["critic_loss"]), rtol=1e-5)
  assert float(metrics["critic_lr"]) == pytest.approx(rate)
  assert float(cfg3.critic_lr(3 * 2 + 2)) == pytest.approx(float(cfg3.segmentor_lr(2)))

  seg3, critic3, m3 = jax.jit(functools.partial(steps.train_step, cfg=cfg3))(seg, critic, batch)
  assert int(seg3.step) == 1 and int(critic3.step) == 3
  assert {"critic_loss", "adversarial_loss"} <= set(m3)
