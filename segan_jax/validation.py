"""Validation during training: batched inference on an EvalSet, scored by the ISIC protocol."""

from collections.abc import Callable

import jax
import numpy as np

from segan_jax import metrics
from segan_jax.data.arrays import EvalSet, normalize


def predict_eval_set(predict: Callable[[np.ndarray], jax.Array], eval_set: EvalSet,
                     batch_size: int) -> np.ndarray:
  """(M, S, S, N) probabilities; the last batch is padded so every call has one shape (one compile)."""
  outputs = []
  for start in range(0, len(eval_set), batch_size):
    images = normalize(eval_set.images[start:start + batch_size])
    n = len(images)
    if n < batch_size:
      images = np.concatenate([images, np.zeros((batch_size - n, *images.shape[1:]), np.float32)])
    outputs.append(np.asarray(jax.device_get(predict(images)))[:n])
  return np.concatenate(outputs) if outputs else np.zeros((0,), np.float32)


def score_eval_set(probs: np.ndarray, eval_set: EvalSet, threshold: float,
                   label_map: int | None = None,
                   postprocess: metrics.PostProcess | None = None) -> metrics.ScoreAccumulator:
  """Scores each prediction (M, S, S, N) against its mask at the original resolution (each
  thresholded mask passed through `postprocess` first, where given).

  One map (N = 1), or `label_map` given: that map against 0/255 masks. N > 1: every class
  against index masks (metrics.score_classes), the means over classes plus each class's scores.
  """
  n = probs.shape[-1] if np.ndim(probs) == 4 else 1
  multi = n > 1 and label_map is None
  acc = metrics.ScoreAccumulator(n if multi else 1)
  for prob, mask, image_id in zip(probs, eval_set.masks, eval_set.ids):
    if mask is not None:
      acc.add(prob if multi else prob[..., label_map or 0], mask, threshold, image_id=image_id,
              postprocess=postprocess)
  return acc
