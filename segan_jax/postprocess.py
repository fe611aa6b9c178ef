"""Post-processing of binary lesion masks: an ISIC lesion is one contiguous region.

Applied (optionally: `--postprocess` of evaluate and predict) to each thresholded mask at the
image's original resolution, before it is scored or written: keep the largest connected component
(8-connectivity, so a lesion touching itself diagonally stays one) and fill its holes. Small
false-positive islands and false-negative holes inside the lesion go; a mask with no foreground
stays empty.
"""

import numpy as np
from scipy import ndimage

_EIGHT_NEIGHBOURS = np.ones((3, 3), bool)


def largest_component(mask: np.ndarray) -> np.ndarray:
  """The largest 8-connected component of a 2-D binary mask (ties: the first in scan order)."""
  mask = _as_bool_2d(mask)
  labels, count = ndimage.label(mask, structure=_EIGHT_NEIGHBOURS)
  if count <= 1:
    return mask.copy()
  sizes = np.bincount(labels.ravel())
  sizes[0] = 0  # the background
  return labels == int(np.argmax(sizes))


def fill_holes(mask: np.ndarray) -> np.ndarray:
  """The mask with every background region that does not touch the border filled."""
  return ndimage.binary_fill_holes(_as_bool_2d(mask))


def postprocess_mask(mask: np.ndarray) -> np.ndarray:
  """The largest connected component of a 2-D binary mask, its holes filled (a bool array)."""
  return fill_holes(largest_component(mask))


def _as_bool_2d(mask: np.ndarray) -> np.ndarray:
  mask = np.asarray(mask)
  if mask.ndim == 3 and mask.shape[-1] == 1:
    mask = mask[..., 0]
  if mask.ndim != 2:
    raise ValueError(f"post-processing needs a 2-D mask (HxW or HxWx1), got shape {mask.shape}.")
  return mask.astype(bool, copy=False)
