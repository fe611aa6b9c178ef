"""Training curves of SegAN runs from their TensorBoard events: both players' losses and the
validation Jaccard, as one matplotlib PNG (needs the `[plots]` extra: matplotlib).

  python experiments/plot_training.py --workdir=runs/ablation/segan_paper_s2 \
      --out=docs/figures/training_curves.png
  # several runs on the same axes (labelled by their directory names)
  python experiments/plot_training.py --workdir=runs/ablation/segan_paper_s2 \
      --workdir=runs/ablation/bce_only_s1 --out=/tmp/compare.png
"""

from __future__ import annotations

import argparse
import glob
import os

import numpy as np

CRITIC_LOSS = "critic_loss"
VALIDATION = {"val_jaccard": "validation Jaccard", "val_dice": "validation Dice"}


class CurveError(ValueError):
  """A workdir without usable TensorBoard events."""


def read_scalars(workdir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{tag: (steps, values)} of every scalar in workdir's event files, steps ascending.

  Reads both clu's (TensorFlow tensor summaries) and segan_jax's TensorFlow-free writer
  (simple_value scalars); where a step was written twice (a resumed run), the last value wins.
  """
  from tensorboard.backend.event_processing import event_accumulator
  from tensorboard.util import tensor_util

  if not glob.glob(os.path.join(workdir, "events.out.tfevents.*")):
    raise CurveError(f"{workdir}: no TensorBoard event files (events.out.tfevents.*); is it a "
                     "segan_jax workdir that has logged at least once?")
  acc = event_accumulator.EventAccumulator(
      workdir, size_guidance={event_accumulator.TENSORS: 0, event_accumulator.SCALARS: 0})
  acc.Reload()
  points: dict[str, dict[int, float]] = {}
  for tag in acc.Tags()["scalars"]:
    for event in acc.Scalars(tag):
      points.setdefault(tag, {})[event.step] = float(event.value)
  for tag in acc.Tags()["tensors"]:
    for event in acc.Tensors(tag):
      value = tensor_util.make_ndarray(event.tensor_proto)
      if value.shape == () and np.issubdtype(value.dtype, np.number):
        points.setdefault(tag, {})[event.step] = float(value)
  return {tag: (np.array(sorted(p)), np.array([p[s] for s in sorted(p)]))
          for tag, p in points.items()}


def plot_runs(workdirs: list[str], out: str, title: str | None = None) -> str:
  """Writes a 3-panel PNG (critic loss, segmentor losses, validation Jaccard/Dice); returns out."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, (ax_c, ax_s, ax_v) = plt.subplots(1, 3, figsize=(15, 4.2))
  several = len(workdirs) > 1
  for workdir in workdirs:
    curves = read_scalars(workdir)
    name = os.path.basename(os.path.normpath(workdir))
    prefix = f"{name}: " if several else ""
    if CRITIC_LOSS in curves:
      ax_c.plot(*curves[CRITIC_LOSS], label=f"{prefix}multi-scale L1 (C maximises it)")
    for tag in sorted(t for t in curves if t.endswith("_loss") and t != CRITIC_LOSS):
      ax_s.plot(*curves[tag], label=prefix + tag.replace("_", " "))
    for (tag, label), style in zip(VALIDATION.items(), ("-o", "--s")):
      if tag in curves:
        steps, values = curves[tag]
        ax_v.plot(steps, 100 * values, style, markersize=3, label=prefix + label)
  if not any(ax.lines for ax in (ax_c, ax_s, ax_v)):
    plt.close(fig)
    raise CurveError(f"{', '.join(workdirs)}: no loss or validation scalars in the events.")
  ax_c.set_title("Critic C: its objective at its step")
  ax_s.set_title("Segmentor S: loss terms (S minimises them)")
  ax_v.set_title("Held-out validation, ISIC protocol (%)")
  for ax in (ax_c, ax_s, ax_v):
    ax.set_xlabel("training step")
    ax.grid(alpha=0.3)
    if ax.lines:
      ax.legend(fontsize=8)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  tmp = out + ".tmp.png"
  fig.savefig(tmp, dpi=110)
  plt.close(fig)
  os.replace(tmp, out)
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", action="append", required=True,
                      help="a segan_jax workdir (repeat to overlay several runs)")
  parser.add_argument("--out", required=True, help="PNG path to write")
  parser.add_argument("--title", default=None)
  args = parser.parse_args()
  try:
    import matplotlib  # noqa: F401
  except ImportError:
    parser.error("matplotlib is not installed: pip install -e '.[plots]'")
  try:
    print("Wrote", plot_runs(args.workdir, args.out, args.title))
  except CurveError as error:
    parser.error(str(error))


if __name__ == "__main__":
  main()
