"""SegAN's two players' jitted steps: the critic maximises the multi-scale L1 loss with S fixed,
then the segmentor minimises it (plus optional pixel-wise terms) with C fixed.

Each step differentiates only its own player's parameters and returns only its own new state.
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from segan_jax import schedules
from segan_jax.activations import adaptive_logistic
from segan_jax.losses import binary_cross_entropy_with_logits, dice_loss, multiscale_l1
from segan_jax.models import mask_images, segment_inference
from segan_jax.sharding import DATA_AXIS
from segan_jax.train_state import (TrainState, clip_params, clip_params_except_kernels,
                                   update_ema)

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]

# How the critic is kept bounded (train.critic_constraint).
#   clip: every parameter clipped to [-critic_clip, critic_clip] after each update (the paper's
#     and the authors' weight clipping).
#   spectral_norm: every convolution kernel divided by its largest singular value (the Critic's
#     spectral_norm, power iteration); the other parameters (BatchNorm scales and offsets, c1's
#     bias) are still clipped to critic_clip, since the BatchNorm after c2-c6 would otherwise undo
#     the kernels' normalisation through its scale (a very large critic_clip leaves them free).
# A gradient penalty (WGAN-GP) is not offered: it constrains the input gradient of a scalar
# critic score, while this critic returns feature maps compared by an L1 distance (a penalty would
# need the norm of a Jacobian, not of a gradient), and its training-mode BatchNorm couples the
# samples of a batch, which makes a per-sample gradient penalty ill-defined (the WGAN-GP authors
# remove BatchNorm from the critic for that reason).
CRITIC_CONSTRAINTS = ("clip", "spectral_norm")


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """The static (hashable) settings of the steps."""
  segmentor: nn.Module
  critic: nn.Module
  k_schedule: Callable
  segmentor_lr: Callable
  critic_lr: Callable
  critic_clip: float = 0.05
  adversarial_weight: float = 1.0
  dice_weight: float = 0.0
  bce_weight: float = 0.0
  layer_weights: tuple[float, ...] | None = None
  feature_reduction: str = "per_layer"
  dice_form: str = "soft"  # losses.DICE_FORMS
  critic_constraint: str = "clip"  # CRITIC_CONSTRAINTS
  ema_decay: float = 0.0  # S's moving average (0: none; the state must hold `ema` otherwise)
  adam_restart: Callable | None = None  # S's Adam restarts at these steps (optimizers.adam)
  critic_adam_restart: Callable | None = None  # C's, counted in C's updates
  critic_steps: int = 1  # C's updates per iteration (critic_lr counts C's updates)


def _variables(state: TrainState, params: Any = None) -> dict[str, Any]:
  return {"params": state.params if params is None else params, "batch_stats": state.batch_stats}


def segment(cfg: StepConfig, state: TrainState, images: jax.Array, train: bool,
            params: Any = None) -> tuple[jax.Array, Any]:
  """S's logits and its new BatchNorm statistics (unchanged when not training)."""
  if not train:
    return (segment_inference(cfg.segmentor, _variables(state, params), images),
            state.batch_stats)
  logits, updates = cfg.segmentor.apply(_variables(state, params), images, train=True,
                                        mutable=["batch_stats"])
  return logits, updates["batch_stats"]


def critic_features(cfg: StepConfig, state: TrainState, images: jax.Array, maps: jax.Array,
                    params: Any = None, batch_stats: Any = None,
                    update_spectral_norm: bool = True) -> tuple[list[jax.Array], Any]:
  """C's feature maps of the images masked by each label map (BatchNorm in training mode).

  update_spectral_norm: whether a spectrally normalised critic advances its power iteration.
  """
  variables = {"params": state.params if params is None else params,
               "batch_stats": state.batch_stats if batch_stats is None else batch_stats}
  kwargs = {"update_spectral_norm": False} if not update_spectral_norm else {}
  features, updates = cfg.critic.apply(variables, mask_images(images, maps), train=True,
                                       mutable=["batch_stats"], **kwargs)
  return features, updates["batch_stats"]


def constrain_critic(cfg: StepConfig, params: Any) -> Any:
  """C's parameters after an update, constrained as cfg.critic_constraint says."""
  if cfg.critic_constraint == "clip":
    return clip_params(params, cfg.critic_clip)
  if cfg.critic_constraint == "spectral_norm":
    return clip_params_except_kernels(params, cfg.critic_clip)
  raise ValueError(f"Unknown critic constraint {cfg.critic_constraint!r}; expected one of "
                   f"{CRITIC_CONSTRAINTS}.")


def check_label_maps(logits: jax.Array, masks: jax.Array) -> None:
  """Raises ValueError unless the batch holds one ground-truth map per output map (N each)."""
  if masks.shape != logits.shape:
    raise ValueError(f"The batch's label maps {masks.shape} do not match S's output {logits.shape}:"
                     " the data must give one map per class of config.model.num_classes.")


def adversarial_loss(cfg: StepConfig, fake: list[jax.Array], real: list[jax.Array]) -> jax.Array:
  return multiscale_l1(fake, real, cfg.layer_weights, cfg.feature_reduction)


def _critic_update(critic_state: TrainState, batch: Batch, logits: jax.Array, k: jax.Array,
                   cfg: StepConfig) -> tuple[TrainState, Metrics]:
  """C's step given S's logits (detached here): maximise L(S, C), then clip."""
  images, masks = batch["image"], batch["mask"]
  check_label_maps(logits, masks)
  probs = jax.lax.stop_gradient(adaptive_logistic(logits, k))

  def loss_fn(params):
    # Two passes, as in the authors' code: each normalises by its own batch statistics and the
    # running statistics are updated by both in turn. A spectrally normalised critic advances its
    # power iteration in the second pass only, so both passes use the same kernels.
    fake, stats = critic_features(cfg, critic_state, images, probs, params,
                                  update_spectral_norm=False)
    real, stats = critic_features(cfg, critic_state, images, masks, params, stats)
    loss = adversarial_loss(cfg, fake, real)
    return -loss, (loss, stats)

  grads, (loss, stats) = jax.grad(loss_fn, has_aux=True)(critic_state.params)
  new_state = critic_state.apply_gradients(grads=grads, batch_stats=stats)
  new_state = new_state.replace(params=constrain_critic(cfg, new_state.params))
  return new_state, {"critic_loss": loss, "critic_lr": cfg.critic_lr(critic_state.step)}


def _segmentor_forward(segmentor_state: TrainState, images: jax.Array, cfg: StepConfig):
  """S's training-mode logits, the function that maps logit gradients to parameter gradients,
  and the new BatchNorm statistics."""
  return jax.vjp(lambda p: segment(cfg, segmentor_state, images, train=True, params=p),
                 segmentor_state.params, has_aux=True)


def loss_weights(cfg: StepConfig) -> dict[str, float]:
  """The weight of each term of S's objective (a term weighted 0 is not computed)."""
  return {"adversarial_loss": cfg.adversarial_weight, "dice_loss": cfg.dice_weight,
          "bce_loss": cfg.bce_weight}


def segmentor_terms(cfg: StepConfig, critic_state: TrainState, images: jax.Array,
                    masks: jax.Array, logits: jax.Array, k: jax.Array,
                    real: list[jax.Array] | None = None) -> dict[str, jax.Array]:
  """The unweighted terms of S's objective for S's logits: the multi-scale L1 between C's features
  of the images masked by S's maps and by the true ones (`real`: computed when not given), and the
  optional Dice and cross-entropy terms; only the terms weighted above 0."""
  probs = adaptive_logistic(logits, k)
  terms = {}
  if cfg.adversarial_weight:
    if real is None:
      real, _ = critic_features(cfg, critic_state, images, masks)
    fake, _ = critic_features(cfg, critic_state, images, probs)
    terms["adversarial_loss"] = adversarial_loss(cfg, fake, real)
  if cfg.dice_weight:
    terms["dice_loss"] = dice_loss(probs, masks, cfg.dice_form)
  if cfg.bce_weight:
    terms["bce_loss"] = binary_cross_entropy_with_logits(logits, masks, k)
  return terms


def _segmentor_update(segmentor_state: TrainState, critic_state: TrainState, batch: Batch,
                      forward, k: jax.Array, cfg: StepConfig) -> tuple[TrainState, Metrics]:
  """S's step given its forward pass (_segmentor_forward): minimise L(S, C) (plus the optional
  Dice/BCE terms) with C fixed."""
  images, masks = batch["image"], batch["mask"]
  logits, logits_vjp, stats = forward
  check_label_maps(logits, masks)
  real = critic_features(cfg, critic_state, images, masks)[0] if cfg.adversarial_weight else None
  weights = loss_weights(cfg)

  def loss_fn(logits):
    terms = segmentor_terms(cfg, critic_state, images, masks, logits, k, real)
    total = sum(weights[name] * value for name, value in terms.items())
    return total, terms

  logit_grads, terms = jax.grad(loss_fn, has_aux=True)(logits)
  (grads,) = logits_vjp(logit_grads)
  new_state = segmentor_state.apply_gradients(grads=grads, batch_stats=stats)
  if cfg.ema_decay:
    new_state = update_ema(new_state, cfg.ema_decay)
  metrics = {**terms, "k": k, "segmentor_lr": cfg.segmentor_lr(segmentor_state.step)}
  return new_state, metrics


def _critic_updates(critic_state: TrainState, batch: Batch, logits: jax.Array, k: jax.Array,
                    cfg: StepConfig) -> tuple[TrainState, Metrics]:
  """cfg.critic_steps updates of C on the same batch and S's same output (WGAN's n_critic, here
  without drawing new batches, so the data stream does not depend on it); the last one's
  metrics."""
  # Unrolled: under jax.lax.fori_loop the same updates ran 2-4x slower on XLA's CPU backend.
  for _ in range(cfg.critic_steps):
    critic_state, metrics = _critic_update(critic_state, batch, logits, k, cfg)
  return critic_state, metrics


def critic_step(critic_state: TrainState, segmentor_state: TrainState, batch: Batch,
                cfg: StepConfig) -> tuple[TrainState, Metrics]:
  """C's updates of one iteration (cfg.critic_steps, 1 in the paper) maximising L(S, C) with S
  fixed, each followed by clipping C's parameters."""
  k = cfg.k_schedule(segmentor_state.step)
  logits, _ = segment(cfg, segmentor_state, batch["image"], train=True)
  return _critic_updates(critic_state, batch, logits, k, cfg)


def segmentor_step(segmentor_state: TrainState, critic_state: TrainState, batch: Batch,
                   cfg: StepConfig) -> tuple[TrainState, Metrics]:
  """One update of S minimising L(S, C) (plus the optional Dice/BCE terms) with C fixed."""
  k = cfg.k_schedule(segmentor_state.step)
  forward = _segmentor_forward(segmentor_state, batch["image"], cfg)
  return _segmentor_update(segmentor_state, critic_state, batch, forward, k, cfg)


def train_step(segmentor_state: TrainState, critic_state: TrainState, batch: Batch,
               cfg: StepConfig) -> tuple[TrainState, TrainState, Metrics]:
  """One SegAN iteration: a critic step (cfg.critic_steps updates), then a segmentor step against
  the updated critic.

  S is the same in both steps, so its forward pass runs once: its detached output drives the
  critic step and its backward pass the segmentor step (critic_step then segmentor_step compute
  the same iteration with two forward passes).
  """
  k = cfg.k_schedule(segmentor_state.step)
  forward = _segmentor_forward(segmentor_state, batch["image"], cfg)
  metrics = {}
  if cfg.adversarial_weight:
    critic_state, metrics = _critic_updates(critic_state, batch, forward[0], k, cfg)
  segmentor_state, seg_metrics = _segmentor_update(segmentor_state, critic_state, batch, forward,
                                                   k, cfg)
  return segmentor_state, critic_state, {**metrics, **seg_metrics}


def predict_probs(segmentor_state: TrainState, images: jax.Array, cfg: StepConfig,
                  k: jax.Array | None = None) -> jax.Array:
  """S's probability maps in inference mode (running BatchNorm statistics), at k or else the k of
  S's last update; with the moving average of S's variables where the state has one
  (train.ema_decay)."""
  k = schedules.last_update_k(cfg.k_schedule, segmentor_state.step) if k is None else k
  logits = segment_inference(cfg.segmentor, segmentor_state.inference_variables(), images)
  return adaptive_logistic(logits, k)


@dataclasses.dataclass(frozen=True)
class JittedSteps:
  """The steps compiled once for a StepConfig; each donates its own state."""
  critic_step: Callable
  segmentor_step: Callable
  train_step: Callable
  predict_probs: Callable


def make_jitted_steps(cfg: StepConfig, mesh: Mesh | None = None) -> JittedSteps:
  """jax.jit-compiled steps bound to cfg; with a mesh, states stay replicated and batches split.

  Under the mesh the batch is one global array, so BatchNorm statistics and the losses are
  reduced over the global batch (XLA inserts the cross-device reductions).
  """
  bind = lambda fn: functools.partial(fn, cfg=cfg)
  if mesh is None:
    return JittedSteps(
        critic_step=jax.jit(bind(critic_step), donate_argnums=0),
        segmentor_step=jax.jit(bind(segmentor_step), donate_argnums=0),
        train_step=jax.jit(bind(train_step), donate_argnums=(0, 1)),
        predict_probs=jax.jit(bind(predict_probs)))
  rep, data = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS))
  return JittedSteps(
      critic_step=jax.jit(bind(critic_step), donate_argnums=0, in_shardings=(rep, rep, data),
                          out_shardings=(rep, rep)),
      segmentor_step=jax.jit(bind(segmentor_step), donate_argnums=0,
                             in_shardings=(rep, rep, data), out_shardings=(rep, rep)),
      train_step=jax.jit(bind(train_step), donate_argnums=(0, 1), in_shardings=(rep, rep, data),
                         out_shardings=(rep, rep, rep)),
      predict_probs=jax.jit(bind(predict_probs), in_shardings=(rep, data), out_shardings=data))

