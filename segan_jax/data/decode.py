"""The one image decode path of every network input: training, validation, evaluate and predict.

A JPEG brought to a smaller size is decoded through libjpeg's DCT scaling (PIL's draft mode: 1/2,
1/4 or 1/8 scale, never below the target size), then resized bilinearly with PIL's antialiasing
(`segan_jax.data.arrays.resize_image`). Both steps run the same way wherever an image meets the
network, so the masks predict writes are those evaluate scores (experiments/decode_paths.py
measures this path against a full decode; docs/evaluation.md gives the figures).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from segan_jax.data.arrays import resize_image

# What PIL raises on a file it cannot decode.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class ImageDecodeError(ValueError):
  """An image file that cannot be decoded or converted to 8-bit RGB; the message is the reason."""


def png_bit_depth(data: bytes) -> int | None:
  """The bit depth a PNG's header declares, None for other files."""
  if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 24:
    return data[24]
  return None


def to_8bit(array: np.ndarray) -> np.ndarray:
  """uint8 pixels of a one-channel integer or boolean array: values within 0..255 kept, 16-bit
  values reduced to their high byte."""
  if array.dtype == np.uint8:
    return array
  if array.dtype == bool:
    return array.astype(np.uint8) * 255
  if array.max(initial=0) <= 255 and array.min(initial=0) >= 0:
    return array.astype(np.uint8)
  if array.min(initial=0) >= 0 and array.max(initial=0) <= 65535:
    return (array.astype(np.uint32) >> 8).astype(np.uint8)
  raise ValueError(f"pixel values {array.min()}..{array.max()} outside 16 bits")


def _float_gray(array: np.ndarray) -> np.ndarray:
  """uint8 of a float image: [0, 1] scaled to 0..255, anything else clipped to it."""
  array = np.nan_to_num(array.astype(np.float64))
  if array.size and array.max() <= 1.0:
    array = array * 255.0
  return np.clip(np.round(array), 0, 255).astype(np.uint8)


def rgb8(im: Image.Image, data: bytes = b"") -> tuple[np.ndarray, list[str]]:
  """(h, w, 3) uint8 RGB of a decoded PIL image of any mode, and notes on conversions made
  (alpha dropped, 16-bit reduced to its high byte, float scaled); raises ImageDecodeError."""
  mode, notes = im.mode, []
  try:
    if mode == "RGB":
      if png_bit_depth(data) == 16:
        notes.append("16-bit RGB images reduced to 8 bits")
      array = np.asarray(im)
    elif mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
      notes.append(f"16-bit grayscale images ({mode}) converted to 8-bit RGB")
      array = np.repeat(to_8bit(np.asarray(im))[..., None], 3, axis=-1)
    elif mode == "F":
      notes.append("floating-point images converted to 8-bit RGB")
      array = np.repeat(_float_gray(np.asarray(im))[..., None], 3, axis=-1)
    elif mode in ("L", "1"):
      notes.append("grayscale images converted to RGB")
      array = np.asarray(im.convert("RGB"))
    elif mode in ("RGBA", "RGBa", "LA", "La", "PA"):
      notes.append(f"{mode} images converted to RGB (alpha dropped)")
      array = np.asarray(im.convert("RGBA").convert("RGB"))
    elif mode in ("P", "CMYK", "YCbCr", "LAB", "HSV"):
      notes.append(f"{mode} images converted to RGB")
      array = np.asarray(im.convert("RGBA" if "transparency" in im.info else "RGB").convert("RGB"))
    else:
      raise ValueError(f"unsupported image mode {mode}")
  except ValueError as e:
    raise ImageDecodeError(f"cannot convert the image to 8-bit RGB ({e})") from e
  if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
    raise ImageDecodeError(f"decoded to an unusable array of shape {array.shape}")
  return np.ascontiguousarray(array, dtype=np.uint8), notes


def decode_rgb(data: bytes, draft_size: tuple[int, int] | None = None
               ) -> tuple[np.ndarray, tuple[int, int], list[str], str | None]:
  """(h, w, 3) uint8 RGB of an encoded image, its original (h, w), conversion notes and format.

  draft_size (h, w): a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (DCT scaling), never below
  it; None decodes at full size. Raises ImageDecodeError with the reason.
  """
  try:
    im = Image.open(io.BytesIO(data))
    original = (im.height, im.width)
    if draft_size is not None and im.format == "JPEG":
      im.draft(im.mode, (draft_size[1], draft_size[0]))
    im.load()  # decode now: truncated or corrupt data fails here, not later
  except Image.DecompressionBombError as e:
    raise ImageDecodeError(f"unreadable: too large to decode safely ({e})") from e
  except Image.UnidentifiedImageError as e:
    raise ImageDecodeError("unreadable: cannot read it as an image (unknown format, or the "
                           "file is corrupt)") from e
  except DECODE_ERRORS as e:
    raise ImageDecodeError(f"unreadable, corrupt or truncated image "
                           f"({str(e) or type(e).__name__})") from e
  array, notes = rgb8(im, data)
  return array, original, notes, im.format


def network_image(data: bytes, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
  """An encoded image at the network's input size (h, w) as uint8 RGB, and its original (h, w):
  the decode path every network input takes."""
  image, original, _, _ = decode_rgb(data, size)
  return resize_image(image, *size), original
