"""What the trained segmentor is fed at test time, and what its masks become: measured per image.

For each run (a training workdir) and its validation (held-out) images, scores at the original
resolution, threshold and k as the run's checkpoint stores them, every combination of

  view     squash: the whole image resized to 128x128 (segan_jax's evaluate, predict, export and
                   validation; the authors' evaluation);
           train_scale: the image resized to the training scale (data.resize_width x
                   resize_height, 180x135: the scale of the training crops, aspect kept for 4:3
                   photographs), reflect-padded to the next size the network accepts (256x256),
                   the map cropped back;
           train_scale_tiles: the same 180x135 image seen as the four 128x128 corner windows
                   (the training crops' size and scale), their maps averaged where they overlap;
  weights  ema (S's moving average, where the run keeps one) | raw;
  masks    plain | post (largest connected component, holes filled: segan_jax.postprocess).
Post-processing and the raw weights are scored on the squash view only (scoring at the original
resolution is what takes the time).

  python experiments/inference_view.py --workdir=runs/ref/authors_settings_s0 \
      --workdir=runs/ref/authors_settings_s1 --data_dir=/data/isic2017 --out=runs/ref/views.json

`--scores=runs/ref/views.json` adds the runs an earlier call scored (its --out) to the summary.
Prints one line per variant (mean over runs of the mean Jaccard, Dice, accuracy, thresholded
Jaccard) and the paired per-image difference of each variant against the first (squash, ema where
kept, plain), each image's Jaccard averaged over the runs, with a 95% bootstrap interval over
images. Nothing is selected on the held-out images: every variant is scored once.
"""

import argparse
import json
import math
import os

import jax
import numpy as np

from segan_jax import inference, metrics, postprocess
from segan_jax.data import arrays as data_arrays
from segan_jax.evaluate import apply_data_overrides, load_eval_set
from segan_jax.models import MIN_SIDE, segment_inference

VIEWS = ("squash", "train_scale", "train_scale_tiles")
MASKS = ("plain", "post")
METRICS = ("jaccard", "dice", "accuracy", "thresholded_jaccard")


def padded_side(size: int) -> int:
  """The smallest multiple of the network's granularity (128) that holds `size`."""
  return MIN_SIDE * math.ceil(size / MIN_SIDE)


def network_inputs(images: np.ndarray, view: str, config) -> tuple[np.ndarray, tuple]:
  """uint8 network inputs of the view, and the (top, left, height, width) window to crop back."""
  side = int(config.data.image_size)
  if view == "squash":
    return np.stack([data_arrays.resize_image(im, side, side) for im in images]), (0, 0, side, side)
  h, w = int(config.data.resize_height), int(config.data.resize_width)
  ph, pw = padded_side(h), padded_side(w)
  top, left = (ph - h) // 2, (pw - w) // 2
  resized = [data_arrays.resize_image(im, h, w) for im in images]
  padded = [np.pad(im, ((top, ph - h - top), (left, pw - w - left), (0, 0)), mode="reflect")
            for im in resized]
  return np.stack(padded), (top, left, h, w)


def tile_corners(height: int, width: int, side: int) -> list[tuple[int, int]]:
  """Top-left corners of the side x side windows at the four corners of a height x width image."""
  return sorted({(top, left) for top in (0, height - side) for left in (0, width - side)})


def tiled_probability_maps(model: inference.LoadedModel, images: np.ndarray, config,
                           batch: int = 8) -> np.ndarray:
  """sigmoid(logits / k) of the training-scale image from its four corner windows, averaged where
  they overlap: (M, resize_height, resize_width)."""
  side = int(config.data.image_size)
  h, w = int(config.data.resize_height), int(config.data.resize_width)
  resized = np.stack([data_arrays.resize_image(im, h, w) for im in images])
  total = np.zeros(resized.shape[:3], np.float32)
  count = np.zeros((h, w), np.float32)
  for top, left in tile_corners(h, w, side):
    window = resized[:, top:top + side, left:left + side]
    total[:, top:top + side, left:left + side] += probability_maps(
        model, window, (0, 0, side, side), batch)
    count[top:top + side, left:left + side] += 1
  return total / count


def probability_maps(model: inference.LoadedModel, inputs: np.ndarray, window: tuple,
                     batch: int = 8) -> np.ndarray:
  """sigmoid(logits / k) of one class, cropped to the view's window: (M, h, w)."""
  forward = jax.jit(lambda x: segment_inference(model.segmentor, model.variables, x))
  top, left, h, w = window
  out = []
  for start in range(0, len(inputs), batch):
    chunk = inputs[start:start + batch]
    pad = batch - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
    logits = np.asarray(forward(data_arrays.normalize(chunk)))[:len(inputs[start:start + batch])]
    out.append(inference.sigmoid(logits[:, top:top + h, left:left + w, 0] / np.float32(model.k)))
  return np.concatenate(out)


def score_run(workdir: str, data_dir: str | None) -> dict[str, dict[str, dict[str, float]]]:
  """{variant: {image id: scores}} of one run for every view x weights x masks."""
  config = apply_data_overrides(inference.load_config(workdir), None, data_dir)
  if int(config.model.num_classes) != 1:
    raise SystemExit(f"{workdir}: the views are measured on one-class (lesion) runs only.")
  # The images at 256x256 (or their own size when smaller) hold enough detail for either view.
  eval_set = load_eval_set(config, "validation", max(256, int(config.data.image_size)))
  weights = ["ema", "raw"] if float(config.train.ema_decay) > 0 else ["raw"]
  results = {}
  for weight in weights:
    model = inference.load_model(workdir, use_selection=False, use_ema=(weight == "ema"))
    for view in VIEWS if weight == weights[0] else VIEWS[:1]:
      if view == "train_scale_tiles":
        probs = tiled_probability_maps(model, eval_set.images, config)
      else:
        probs = probability_maps(model, *network_inputs(eval_set.images, view, config))
      for mask in MASKS if view == "squash" else MASKS[:1]:
        post = postprocess.postprocess_mask if mask == "post" else None
        results[f"{view}/{weight}/{mask}"] = {
            i: metrics.score_prediction(p, t, model.threshold, post)
            for i, p, t in zip(eval_set.ids, probs, eval_set.masks)}
    print(f"{workdir}: step {model.step}, k={model.k:g}, threshold={model.threshold:g}, "
          f"{weight} weights scored", flush=True)
  return results


def paired(per_run: list[dict], base: str, other: str, draws: int = 10000) -> str:
  ids = sorted(per_run[0][base])
  jac = lambda v: np.array([np.mean([r[v][i]["jaccard"] for r in per_run]) for i in ids])
  diff = jac(other) - jac(base)
  boot = diff[np.random.default_rng(0).integers(0, len(diff), (draws, len(diff)))].mean(axis=1)
  lo, hi = np.percentile(boot, [2.5, 97.5])
  return (f"{other} - {base}: Jaccard {100 * diff.mean():+.2f} points [{100 * lo:+.2f}, "
          f"{100 * hi:+.2f}], better on {int((diff > 0).sum())} images, worse on "
          f"{int((diff < 0).sum())}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", action="append", default=[],
                      help="a training run (repeat for seeds: each image's Jaccard is averaged)")
  parser.add_argument("--scores", action="append", default=[],
                      help="an earlier --out file whose runs join this summary unscored again")
  parser.add_argument("--data_dir", default=None, help="override config.data.dir")
  parser.add_argument("--out", default=None, help="JSON of every run's per-image scores")
  args = parser.parse_args()
  runs, per_run = [], []
  for path in args.scores:
    with open(path) as f:
      earlier = json.load(f)
    runs += earlier["runs"]
    per_run += earlier["scores"]
  runs += args.workdir
  per_run += [score_run(w, args.data_dir) for w in args.workdir]
  if not per_run:
    parser.error("give --workdir (runs to score) or --scores (earlier results)")
  variants = [v for v in per_run[0] if all(v in r for r in per_run)]
  print(f"\n{len(per_run)} run(s), {len(per_run[0][variants[0]])} held-out images; mean over "
        "runs (min-max), in %:")
  print("| view/weights/masks | " + " | ".join(METRICS) + " |")
  print("|---" * (len(METRICS) + 1) + "|")
  for v in variants:
    cells = []
    for m in METRICS:
      means = [100 * np.mean([s[m] for s in r[v].values()]) for r in per_run]
      cells.append(f"{np.mean(means):.1f}" + (f" ({min(means):.1f}-{max(means):.1f})"
                                              if len(means) > 1 else ""))
    print(f"| {v} | " + " | ".join(cells) + " |")
  print()
  for v in variants[1:]:
    print(paired(per_run, variants[0], v))
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump({"runs": runs, "scores": per_run}, f)


if __name__ == "__main__":
  main()
