"""How much SegAN's critic adds to what the segmentor learns, checkpoint by checkpoint.

For each kept checkpoint of a run (a segan_jax.main --workdir) and a few of the training batches
that follow it (the run's own augmented batches), the gradient of each term of S's objective
with respect to S's logits, weighted as the objective weights it: the critic's multi-scale L1
term and the Dice and cross-entropy terms where the config has them. Printed per checkpoint, as
means over the batches: each term's value and gradient norm, the critic term's norm relative to
the other terms' together, and the cosine between the critic's gradient and theirs. A critic
gradient much smaller than the rest, or parallel to it, can change little of what S learns
(Adam rescales the sum, not each term).

  python experiments/critic_gradients.py --workdir=runs/ref/isic2017_plus_s0 --batches=4
  python experiments/critic_gradients.py --workdir=RUN --data_dir=/data/isic2017 --output=g.json
"""

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from segan_jax import checkpoints, steps, train
from segan_jax.errors import UserError, exit_with
from segan_jax.evaluate import apply_data_overrides
from segan_jax.inference import load_config

CRITIC = "adversarial_loss"


def term_gradients(cfg: steps.StepConfig, segmentor, critic, batch) -> dict[str, jax.Array]:
  """Per term: its value and weighted logit-gradient norm; the critic's share and cosine."""
  k = cfg.k_schedule(segmentor.step)
  images, masks = batch["image"], batch["mask"]
  logits, _ = steps.segment(cfg, segmentor, images, train=True)
  real, _ = steps.critic_features(cfg, critic, images, masks)
  weights = steps.loss_weights(cfg)
  # One forward pass of the terms, then one backward pass per term.
  terms, vjp = jax.vjp(
      lambda l: steps.segmentor_terms(cfg, critic, images, masks, l, k, real), logits)
  grads = {name: weights[name] * vjp({n: jnp.ones_like(v) if n == name else jnp.zeros_like(v)
                                      for n, v in terms.items()})[0] for name in terms}
  out = dict(terms)
  out.update({f"{name}_grad_norm": jnp.linalg.norm(g) for name, g in grads.items()})
  others = sum(g for name, g in grads.items() if name != CRITIC)
  critic_norm, others_norm = jnp.linalg.norm(grads[CRITIC]), jnp.linalg.norm(others)
  out["critic_to_others"] = critic_norm / others_norm
  out["cosine"] = jnp.vdot(grads[CRITIC], others) / (critic_norm * others_norm)
  return out


def measure(workdir: str, num_batches: int, data_dir: str | None = None) -> list[dict]:
  """One row per kept checkpoint of workdir: means over num_batches training batches."""
  config = load_config(workdir)
  config = apply_data_overrides(config, data_dir=data_dir)
  if not config.loss.adversarial_weight:
    raise UserError(f"{workdir} was trained without the critic (loss.adversarial_weight=0): "
                    "there is no critic term to measure.")
  if not (config.loss.dice_weight or config.loss.bce_weight):
    raise UserError(f"{workdir} trains S by the critic's term alone (loss.dice_weight and "
                    "loss.bce_weight are 0): there is no other term to compare it with.")
  arrays, _ = train.load_data(config)
  steps_per_epoch = len(arrays) // config.train.batch_size
  cfg = train.build_step_config(config, steps_per_epoch)
  manager = checkpoints.make_manager(workdir)
  saved = checkpoints.all_steps(manager)
  if not saved:
    raise UserError(f"{workdir} holds no checkpoint to measure.")
  probe = jax.jit(lambda s, c, b: term_gradients(cfg, s, c, b))
  shapes = train.abstract_states(config, cfg)
  rows = []
  for step in saved:
    segmentor, critic, _, _ = checkpoints.restore(manager, *shapes, step=step)
    batches = train.train_iterator(config, arrays, step)
    samples = [jax.device_get(probe(segmentor, critic, next(batches)))
               for _ in range(num_batches)]
    rows.append({"step": step, "batches": num_batches,
                 **{key: float(np.mean([s[key] for s in samples])) for key in samples[0]}})
    print(f"step {step}: measured on {num_batches} batches", file=sys.stderr, flush=True)
  manager.close()
  return rows


def format_table(rows: list[dict]) -> str:
  """A markdown table: each term's value, then its gradient norm, then the critic's share and
  cosine."""
  measured = [k for k in rows[0] if k not in ("step", "batches")]
  values = [k for k in measured if k.endswith("_loss")]
  keys = (values + [f"{k}_grad_norm" for k in values if f"{k}_grad_norm" in measured]
          + ["critic_to_others", "cosine"])
  lines = ["| step | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
  for row in rows:
    lines.append(f"| {row['step']} | " + " | ".join(f"{row[k]:.4g}" for k in keys) + " |")
  return "\n".join(lines)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="a segan_jax.main run with checkpoints")
  parser.add_argument("--batches", type=int, default=4, help="training batches per checkpoint")
  parser.add_argument("--data_dir", default=None,
                      help="the run's data where it has moved since training (config.data.dir)")
  parser.add_argument("--output", default=None, help="also write the rows to this JSON file")
  args = parser.parse_args(argv)
  try:
    if args.batches < 1:
      raise UserError(f"--batches must be at least 1, not {args.batches}.")
    if not os.path.isdir(args.workdir):
      raise UserError(f"--workdir {args.workdir} is not a folder.")
    rows = measure(args.workdir, args.batches, args.data_dir)
  except UserError as e:
    exit_with(e)
  print(format_table(rows))
  if args.output:
    with open(args.output, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  sys.exit(main())
