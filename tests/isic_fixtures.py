"""Tiny image/mask fixtures in the official ISIC 2017 layout (folders or zips) and in images/ +
masks/ folders, for the folder-source and TFDS-builder tests; and where the real ISIC 2017 data
are, for the tests that use them."""

import io
import os
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image

# The real ISIC 2017 training pairs in the official folder layout, for the few tests that use real
# data (they skip where the folder is absent): the folder SEGAN_ISIC2017_DIR names. Without it,
# a development checkout's sibling folder ../shared/data/isic2017 (this is the only place that
# path appears).
ISIC2017_DIR_VARIABLE = "SEGAN_ISIC2017_DIR"
_DEVELOPMENT_COPY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                                 "data", "isic2017")


def real_isic2017_dir() -> str:
  """The folder of the real ISIC 2017 pairs ($SEGAN_ISIC2017_DIR, else the development copy);
  it may not exist, and tests that need it skip then."""
  return os.path.normpath(os.environ.get(ISIC2017_DIR_VARIABLE) or _DEVELOPMENT_COPY)


SKIN = (205, 150, 120)
LESION = (90, 40, 30)
ISIC_SPLITS = ("Training", "Validation", "Test_v2")


def lesion_pair(index: int, height: int = 24, width: int = 32) -> tuple[np.ndarray, np.ndarray]:
  """An image of skin colour with a lesion rectangle whose place depends on index; its 0/255 mask."""
  rng = np.random.default_rng(index)
  top, left = int(rng.integers(0, height // 2)), int(rng.integers(0, width // 2))
  mask = np.zeros((height, width), np.uint8)
  mask[top:top + height // 3, left:left + width // 3] = 255
  image = np.where(mask[..., None] > 0, np.array(LESION, np.uint8), np.array(SKIN, np.uint8))
  return image.astype(np.uint8), mask


def encode(array: np.ndarray, fmt: str = "PNG", **kwargs) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format=fmt, **kwargs)
  return buf.getvalue()


def png16_rgb(array: np.ndarray) -> bytes:
  """A 16-bit RGB PNG (PIL cannot write one)."""
  height, width, _ = array.shape
  raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)

  def chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data +
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
          + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def isic_ids(counts: dict[str, int]) -> dict[str, list[str]]:
  ids, n = {}, 0
  for split in ISIC_SPLITS:
    ids[split] = [f"ISIC_{n + i:07d}" for i in range(counts.get(split, 0))]
    n += counts.get(split, 0)
  return ids


def isic_files(counts: dict[str, int], test_masks: bool = True, mask_scale: int = 1,
               image_size: tuple[int, int] | None = None) -> dict[str, dict[str, bytes]]:
  """{folder name: {file name: bytes}} of the official layout, with the extras the zips hold.

  mask_scale > 1: masks at mask_scale times the image size (images are the downscaled copies);
  image_size: every image resized to this (h, w), masks kept (like real_isic2017_dir()'s copy:
  256x256 images, original-size masks).
  """
  folders = {}
  for split, ids in isic_ids(counts).items():
    if not ids:
      continue
    data, truth = {}, {}
    for i, isic_id in enumerate(ids):
      index = int(isic_id[5:])
      image, mask = lesion_pair(index, 24 * mask_scale, 32 * mask_scale)
      small = np.asarray(Image.fromarray(image).resize(
          (32, 24) if image_size is None else image_size[::-1], Image.NEAREST))
      data[f"{isic_id}.jpg"] = encode(small, "JPEG", quality=95)
      data[f"{isic_id}_superpixels.png"] = encode(np.zeros((24, 32, 3), np.uint8))
      truth[f"{isic_id}_segmentation.png"] = encode(mask)
    data[f"ISIC-2017_{split}_Data_metadata.csv"] = b"image_id,age_approximate,sex\n"
    folders[f"ISIC-2017_{split}_Data"] = data
    if split != "Test_v2" or test_masks:
      folders[f"ISIC-2017_{split}_Part1_GroundTruth"] = truth
  return folders


def write_folders(root: str, folders: dict[str, dict[str, bytes]]) -> str:
  for name, files in folders.items():
    os.makedirs(os.path.join(root, name), exist_ok=True)
    for file_name, data in files.items():
      with open(os.path.join(root, name, file_name), "wb") as f:
        f.write(data)
  return root


def write_zips(root: str, folders: dict[str, dict[str, bytes]]) -> str:
  """One zip per folder, holding that folder (as the official zips do)."""
  os.makedirs(root, exist_ok=True)
  for name, files in folders.items():
    with zipfile.ZipFile(os.path.join(root, name + ".zip"), "w") as z:
      for file_name, data in files.items():
        z.writestr(f"{name}/{file_name}", data)
  return root


def write_generic(root: str, count: int, mask_suffix: str = "_segmentation", bare_every: int = 3,
                  fmt: str = "PNG", start: int = 0) -> list[str]:
  """images/ + masks/ pairs; every bare_every-th mask is named <stem>.png instead."""
  os.makedirs(os.path.join(root, "images"), exist_ok=True)
  os.makedirs(os.path.join(root, "masks"), exist_ok=True)
  ids = []
  for i in range(start, start + count):
    stem = f"lesion_{i:03d}"
    image, mask = lesion_pair(i)
    ext = ".png" if fmt == "PNG" else ".jpg"
    with open(os.path.join(root, "images", stem + ext), "wb") as f:
      f.write(encode(image, fmt))
    name = stem + (".png" if bare_every and i % bare_every == 0 else mask_suffix + ".png")
    with open(os.path.join(root, "masks", name), "wb") as f:
      f.write(encode(mask))
    ids.append(stem)
  return ids


def truncate_pixels(path: str) -> None:
  """Cuts an image file short: its header still reads (a folder scan passes), its pixels do not
  decode (a JPEG ends with its start-of-scan header, a PNG halfway through)."""
  with open(path, "rb") as f:
    data = f.read()
  if data[:2] == b"\xff\xd8":
    scan = data.index(b"\xff\xda")
    end = scan + 2 + int.from_bytes(data[scan + 2:scan + 4], "big")
  else:
    end = len(data) // 2
  with open(path, "wb") as f:
    f.write(data[:end])
