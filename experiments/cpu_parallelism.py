"""Three CPU-throughput choices of segan_jax, each measured against its absence in one process.

  python experiments/cpu_parallelism.py --width=16 --batch=25 --repeats=7

* inference in independent batch pieces (models.segment_inference): 1, 2, 3 and 4 pieces;
* large convolutions on 2 batch pieces (conv._CONV_PIECES) in the training iteration: 1 and 2
  (the default before jaxlib 0.11; from 0.11 convolutions stay whole, see conv.cpu_pieces);
* the training iteration with S's forward pass once (steps.train_step) against critic_step then
  segmentor_step (two forward passes).

Each variant is compiled first, then the variants' timed runs alternate (segan_jax.benchmark's
`alternate`), so that the comparison holds on a busy machine; medians in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install


def _time(fns: dict, args: dict, repeats: int) -> dict[str, float]:
  import jax

  from segan_jax.benchmark import alternate
  for name, fn in fns.items():
    jax.block_until_ready(fn(*args[name]))
  times = alternate({name: (lambda f=fn, a=args[name]: jax.block_until_ready(f(*a)))
                     for name, fn in fns.items()}, 1, repeats)
  return {name: 1e3 * statistics.median(ts) for name, ts in times.items()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--width", type=int, default=16)
  parser.add_argument("--batch", type=int, default=25)
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args()

  import jax

  from segan_jax import conv, models, sharding, steps, train
  from segan_jax.benchmark import _synthetic_batch
  from segan_jax.configs import default

  config = default.get_config()
  config.model.width, config.train.batch_size = args.width, args.batch
  cfg = train.build_step_config(config, 40)
  seg, critic = train.create_states(config, cfg)
  batch = sharding.global_batch(_synthetic_batch(args.batch, 128, 1),
                                sharding.make_mesh(jax.devices()[:1]))
  variables = {"params": seg.params, "batch_stats": seg.batch_stats}
  print(f"width {args.width}, batch {args.batch}, 128x128, float32, jax {jax.__version__} "
        f"({jax.default_backend()}, {jax.device_count()} device(s)), median of {args.repeats}")

  fns, fargs = {}, {}
  for n in (1, 2, 3, 4):
    name = f"inference, {n} piece(s)"
    fns[name] = jax.jit(lambda v, x, n=n: models.segment_inference(cfg.segmentor, v, x, n)
                        ).lower(variables, batch["image"]).compile()
    fargs[name] = (variables, batch["image"])
  for name, ms in _time(fns, fargs, args.repeats).items():
    print(f"  {name:<44} {ms:8.0f} ms", flush=True)

  # From jaxlib 0.11 conv.cpu_pieces keeps convolutions whole; the comparison forces the pieces.
  default_pieces, threaded = conv._CONV_PIECES, conv._runtime_threads_each_convolution
  fns, fargs = {}, {}
  try:
    conv._runtime_threads_each_convolution = lambda: False
    for n in (1, 2):
      conv._CONV_PIECES = n  # read when the step is traced
      name = f"training iteration, convolutions in {n} piece(s)"
      fns[name] = jax.jit(lambda s, c: steps.train_step(s, c, batch, cfg)).lower(
          seg, critic).compile()
      fargs[name] = (seg, critic)
  finally:
    conv._CONV_PIECES, conv._runtime_threads_each_convolution = default_pieces, threaded
  default = "2" if conv.cpu_pieces(args.batch, 2) > 1 else "1"
  print(f"  (the default on this jaxlib: convolutions in {default} piece(s); inference in "
        f"{models.inference_chunks(args.batch)})")

  def two_steps(s, c):
    c, m = steps.critic_step(c, s, batch, cfg)
    s, m2 = steps.segmentor_step(s, c, batch, cfg)
    return s, c, {**m, **m2}

  name = "training iteration, two S forward passes"
  fns[name] = jax.jit(two_steps).lower(seg, critic).compile()
  fargs[name] = (seg, critic)
  for name, ms in _time(fns, fargs, args.repeats).items():
    print(f"  {name:<44} {ms:8.0f} ms", flush=True)


if __name__ == "__main__":
  main()
