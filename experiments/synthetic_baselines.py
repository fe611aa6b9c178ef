"""Mean Jaccard of trivial baselines on the synthetic dataset, to show it is not solvable by thresholds.

Usage: python experiments/synthetic_baselines.py --seed 0 --count 200
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from segan_jax.data.synthetic import generate_example  # noqa: E402

Baseline = Callable[[np.ndarray], np.ndarray]


def jaccard(pred: np.ndarray, truth: np.ndarray) -> float:
  """Per-image Jaccard TP / (TP + FP + FN) of boolean masks; both empty counts as 1."""
  union = np.logical_or(pred, truth).sum()
  return 1.0 if union == 0 else float(np.logical_and(pred, truth).sum() / union)


def grayscale(image: np.ndarray) -> np.ndarray:
  """ITU-R 601 luma of an RGB uint8 image, as float in [0, 255]."""
  return image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def otsu_threshold(gray: np.ndarray) -> float:
  """Otsu's threshold on a 256-bin histogram: maximises the between-class variance."""
  hist = np.bincount(np.clip(gray, 0, 255).astype(np.int64).ravel(), minlength=256).astype(np.float64)
  p = hist / hist.sum()
  omega = np.cumsum(p)
  mu = np.cumsum(p * np.arange(256))
  with np.errstate(divide="ignore", invalid="ignore"):
    between = (mu[-1] * omega - mu) ** 2 / (omega * (1.0 - omega))
  return float(np.nanargmax(between)) + 1.0  # pixels with value < thr form the dark class


def predict_all(image: np.ndarray) -> np.ndarray:
  """Everything is lesion."""
  return np.ones(image.shape[:2], bool)


def predict_none(image: np.ndarray) -> np.ndarray:
  """Nothing is lesion."""
  return np.zeros(image.shape[:2], bool)


def predict_centred_ellipse(image: np.ndarray, scale: float = 0.6) -> np.ndarray:
  """Centred axis-aligned ellipse with semi-axes ``scale``/2 of the image height and width."""
  h, w = image.shape[:2]
  yy, xx = np.mgrid[0:h, 0:w]
  return ((xx - (w - 1) / 2) / (scale * w / 2)) ** 2 + ((yy - (h - 1) / 2) / (scale * h / 2)) ** 2 <= 1.0


def predict_otsu_dark(image: np.ndarray) -> np.ndarray:
  """Pixels darker than the per-image Otsu threshold of the grayscale image."""
  gray = grayscale(image)
  return gray < otsu_threshold(gray)


def otsu_best_polarity_jaccard(image: np.ndarray, truth: np.ndarray) -> float:
  """Oracle-assisted Otsu: the better of (gray < thr) and (gray >= thr) per image, an upper bound."""
  gray = grayscale(image)
  dark = gray < otsu_threshold(gray)
  return max(jaccard(dark, truth), jaccard(~dark, truth))


BASELINES: dict[str, Baseline] = {
  "all_lesion": predict_all,
  "nothing": predict_none,
  "centred_ellipse": predict_centred_ellipse,
  "otsu_dark": predict_otsu_dark,
}


def evaluate(seed: int, start: int, count: int) -> dict[str, float]:
  """Mean Jaccard of every baseline (plus the best-polarity Otsu oracle) over a split."""
  scores: dict[str, list[float]] = {name: [] for name in [*BASELINES, "otsu_best_polarity"]}
  for i in range(start, start + count):
    image, mask = generate_example(seed, i)
    truth = mask > 0
    for name, fn in BASELINES.items():
      scores[name].append(jaccard(fn(image), truth))
    scores["otsu_best_polarity"].append(otsu_best_polarity_jaccard(image, truth))
  return {name: float(np.mean(v)) for name, v in scores.items()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--start", type=int, default=0)
  parser.add_argument("--count", type=int, default=200)
  args = parser.parse_args()
  t0 = time.perf_counter()
  results = evaluate(args.seed, args.start, args.count)
  last = args.start + args.count - 1
  print(f"seed={args.seed} examples {args.start}..{last} ({time.perf_counter() - t0:.1f}s)")
  for name, value in results.items():
    print(f"  {name:20s} mean Jaccard {value:.4f}")


if __name__ == "__main__":
  main()
