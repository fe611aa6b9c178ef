"""Folders of image/mask pairs, read in place with PIL (no conversion step, no TensorFlow).

Layouts (found under a root folder, ``config.data.dir``):

* The official ISIC 2017 layout: ``ISIC-2017_<Split>_Data/ISIC_nnnnnnn.jpg`` with
  ``ISIC-2017_<Split>_Part1_GroundTruth/ISIC_nnnnnnn_segmentation.png``, Split in Training,
  Validation, Test_v2. Each folder may also be the official zip (``ISIC-2017_<Split>_Data.zip``),
  read without extracting it. The ``*_superpixels.png`` files and the metadata CSV that the
  official zips hold are ignored. The test split may come without ground truth (prediction only).
* A generic layout: ``images/`` + ``masks/``, paired by file stem: the mask of ``images/<stem>.jpg``
  is ``masks/<stem><mask_suffix>.png`` or ``masks/<stem>.png`` (``config.data.mask_suffix``,
  default ``_segmentation``). Optionally one such pair of folders per split, under ``train/``,
  ``validation/`` (or ``val/``) and ``test/``; ``test/`` may lack ``masks/``.

Every pair is checked at start-up, before any training step, in two passes: a scan (listing,
pairing, and the sizes from the file headers) and a threaded decode. A problem raises `DataError`
naming the file, or, where an option says so, is handled as the table says:

=====================================  ===================================================
input                                  handling
=====================================  ===================================================
wrong path, not a folder, empty        always an error
folder, no images, unknown layout
two images with one stem, two masks    always an error
for one image
image without mask, mask without       error; ``data.on_bad_pairs='skip'``: the pair is left
image (a stray PNG in ``masks/``),     out (a stray mask ignored) and the count is logged
corrupt / truncated image or mask,
mask size check failed (below),
label-map mask (values <= 127 only),
non-binary mask with
``nonbinary_masks='error'``; N > 1:
class index > N, 0/255 or colour mask
grayscale, grayscale+alpha, RGBA,      converted to 8-bit RGB (alpha dropped, 16-bit reduced
palette, CMYK, 16-bit, bilevel image   to its high byte), counted in a logged notice
mask stored as 1 bit, palette, 16 bit  read as one channel; a mask with one non-zero value
or equal-channel RGB; 0/1 masks        (0/1, 0/65535 ...) becomes 0/255, with a notice
antialiased / JPEG-like mask           ``data.nonbinary_masks='binarize'`` (default):
(more than two values)                 thresholded at > 127 (the ISIC scoring rule), with a
                                       notice; ``'error'``: a bad pair
colour mask (channels differ)          a bad pair
=====================================  ===================================================

Several classes (``config.model.num_classes`` N > 1): each mask is an index mask, a
single-channel PNG (8 or 16 bit, or equal-channel RGB) whose value is the class (0 background,
1..N), or a palette PNG whose palette index is the class. A value above N, a binary 0/255 mask, or
a colour mask is a bad pair (the message names the file). Index masks with N = 1 (several values
all <= 127) are refused the same way, pointing to ``config.model.num_classes``.

Mask size against image size (``data.size_check``): the original size of an example is always its
mask's size (that is what the ISIC protocol scores at); the image may be a resized copy.

* ``auto`` (default): sizes must agree, except for an image that keeps its mask's aspect ratio
  (a proportional downscale) or whose split holds images of one single size (a folder resized
  to a fixed size, for example 256x256 copies of the ISIC images beside their original-size masks).
  Anything else, e.g. one 640x480 image paired with a 1022x767 mask, is a misaligned pair.
* ``aspect``: sizes may differ only by a proportional resize.
* ``equal``: sizes must be equal.
* ``any``: any size accepted (notice only).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import io
import os
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
from absl import logging
from PIL import Image

from segan_jax.data import decode as decode_lib
from segan_jax.data.arrays import Example, resize_image, resize_mask
from segan_jax.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
MASK_EXTENSIONS = (".png",)
SPLITS = ("train", "validation", "test")
ISIC_SPLIT_NAMES = {"train": ("Training",), "validation": ("Validation",),
                    "test": ("Test_v2", "Test")}
ISIC_MASK_SUFFIX = "_segmentation"
ISIC_URL = "https://isic-challenge-data.s3.amazonaws.com/2017/{name}.zip"
ISIC_ARCHIVES = tuple(f"ISIC-2017_{split}_{part}" for split in ("Training", "Validation", "Test_v2")
                      for part in ("Data", "Part1_GroundTruth"))
GENERIC_SPLIT_DIRS = {"train": ("train", "training"), "validation": ("validation", "val", "valid"),
                      "test": ("test",)}
ON_BAD_PAIRS = ("error", "skip")
SIZE_CHECKS = ("auto", "aspect", "equal", "any")
NONBINARY_MASKS = ("binarize", "error")
_MAX_LISTED = 10


class DataError(UserError, ValueError):
  """Input data that cannot be used as it is; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Options:
  """How a folder is read and what happens to bad input (see the module docstring)."""
  mask_suffix: str = "_segmentation"
  on_bad_pairs: str = "error"
  size_check: str = "auto"
  nonbinary_masks: str = "binarize"
  workers: int = 0  # decoding threads; 0: one per available CPU core, at most 16
  num_classes: int = 1  # 1: 0/255 lesion masks; N > 1: index masks 0..N (config.model.num_classes)

  def __post_init__(self):
    for field, choices in (("on_bad_pairs", ON_BAD_PAIRS), ("size_check", SIZE_CHECKS),
                           ("nonbinary_masks", NONBINARY_MASKS)):
      if getattr(self, field) not in choices:
        raise ValueError(f"{field} must be one of {choices} (got {getattr(self, field)!r}).")

  @classmethod
  def from_config(cls, data, num_classes: int = 1) -> "Options":
    """Options from a config.data section and config.model.num_classes."""
    return cls(mask_suffix=data.mask_suffix, on_bad_pairs=data.on_bad_pairs,
               size_check=data.size_check, nonbinary_masks=data.nonbinary_masks,
               workers=data.decode_workers, num_classes=int(num_classes))

  @property
  def num_workers(self) -> int:
    if self.workers > 0:
      return self.workers
    try:
      cores = len(os.sched_getaffinity(0))
    except AttributeError:
      cores = os.cpu_count() or 1
    return max(1, min(16, cores))


# ---------------------------------------------------------------------------------------------
# Files: plain files, zip members, or bytes already in memory.

_zip_handles = threading.local()


def _zip(path: str) -> zipfile.ZipFile:
  """One open ZipFile per thread and archive."""
  handles = getattr(_zip_handles, "handles", None)
  if handles is None:
    handles = _zip_handles.handles = {}
  if path not in handles:
    handles[path] = zipfile.ZipFile(path)
  return handles[path]


@dataclasses.dataclass(frozen=True)
class FileRef:
  """A file: `path` on disk, or `member` of the zip archive at `path`, or `data` in memory."""
  path: str
  member: str | None = None
  data: bytes | None = dataclasses.field(default=None, repr=False, compare=False)

  @property
  def name(self) -> str:
    return os.path.basename(self.member if self.member is not None else self.path)

  def open(self):
    if self.data is not None:
      return io.BytesIO(self.data)
    if self.member is not None:
      return _zip(self.path).open(self.member)
    return open(self.path, "rb")

  def read(self) -> bytes:
    if self.data is not None:
      return self.data
    with self.open() as f:
      return f.read()

  def __str__(self) -> str:
    return f"{self.path}:{self.member}" if self.member is not None else self.path


@dataclasses.dataclass(frozen=True)
class Pair:
  """An image and its mask (None: a split without ground truth), with header sizes (h, w)."""
  id: str
  image: FileRef
  mask: FileRef | None
  image_size: tuple[int, int] | None = None
  mask_size: tuple[int, int] | None = None

  @property
  def original_size(self) -> tuple[int, int] | None:
    return self.mask_size if self.mask is not None else self.image_size


@dataclasses.dataclass
class Decoded:
  """A decoded pair: image (h, w, 3) uint8, mask (h', w') uint8 (0/255, or an index mask 0..N
  for N classes) or None, original size."""
  id: str
  image: np.ndarray
  mask: np.ndarray | None
  original_size: tuple[int, int]
  image_bytes: bytes | None = None  # the file's bytes, when kept and already 8-bit RGB JPEG/PNG
  mask_bytes: bytes | None = None  # the file's bytes, when kept and already a 0/255 'L' PNG

  def example(self) -> Example:
    return Example(id=self.id, image=self.image, mask=self.mask)


# ---------------------------------------------------------------------------------------------
# Scanning: layouts, listing, pairing.

@dataclasses.dataclass(frozen=True)
class _SplitFiles:
  name: str
  where: str  # for messages
  images: list[FileRef]
  masks: list[FileRef] | None
  masks_where: str | None
  mask_suffix: str


def _visible(name: str) -> bool:
  return not name.startswith(".") and not name.startswith("__MACOSX")


def _ext(name: str) -> str:
  return os.path.splitext(name)[1].lower()


def _list_dir(path: str) -> list[FileRef]:
  """Files of a folder (not recursive); a folder holding only a same-named folder is entered."""
  names = sorted(n for n in os.listdir(path) if _visible(n))
  inner = os.path.join(path, os.path.basename(os.path.normpath(path)))
  if names == [os.path.basename(inner)] and os.path.isdir(inner):
    return _list_dir(inner)
  return [FileRef(os.path.join(path, n)) for n in names if os.path.isfile(os.path.join(path, n))]


def _list_zip(path: str) -> list[FileRef]:
  try:
    with zipfile.ZipFile(path) as z:
      members = [i.filename for i in z.infolist() if not i.is_dir()]
  except (zipfile.BadZipFile, OSError) as e:
    raise DataError(f"{path}: not a readable zip archive ({e}).") from e
  return [FileRef(path, m) for m in sorted(members)
          if all(_visible(part) for part in m.split("/"))]


def _list_source(path: str) -> list[FileRef]:
  return _list_zip(path) if path.endswith(".zip") else _list_dir(path)


def isic_sources(root: str) -> dict[str, str]:
  """The official folders or zips under root: {'ISIC-2017_Training_Data': path, ...}."""
  found = {}
  for name in ISIC_ARCHIVES + ("ISIC-2017_Test_Data", "ISIC-2017_Test_Part1_GroundTruth"):
    if os.path.isdir(os.path.join(root, name)):
      found[name] = os.path.join(root, name)
    elif os.path.isfile(os.path.join(root, name + ".zip")):
      found[name] = os.path.join(root, name + ".zip")
  return found


def isic_splits(sources: dict[str, str], where: str) -> list[_SplitFiles]:
  """Splits of the official layout, given its folders/zips by official name."""
  splits = []
  for split, names in ISIC_SPLIT_NAMES.items():
    for name in names:
      data, truth = f"ISIC-2017_{name}_Data", f"ISIC-2017_{name}_Part1_GroundTruth"
      if data not in sources and truth not in sources:
        continue
      if data not in sources:
        raise DataError(f"{sources[truth]}: ground truth without its images ({data}/ or "
                        f"{data}.zip) in {where}.")
      if truth not in sources and split != "test":
        raise DataError(f"{sources[data]}: images without their ground truth ({truth}/ or "
                        f"{truth}.zip) in {where}.")
      images = [f for f in _list_source(sources[data])
                if _ext(f.name) in IMAGE_EXTENSIONS and
                not os.path.splitext(f.name)[0].endswith("_superpixels")]
      masks = _list_source(sources[truth]) if truth in sources else None
      splits.append(_SplitFiles(split, sources[data], images, masks, sources.get(truth),
                                ISIC_MASK_SUFFIX))
      break
  return splits


def _generic_split(name: str, path: str, mask_suffix: str) -> _SplitFiles | None:
  images_dir, masks_dir = os.path.join(path, "images"), os.path.join(path, "masks")
  if not os.path.isdir(images_dir):
    return None
  images = [f for f in _list_dir(images_dir) if _ext(f.name) in IMAGE_EXTENSIONS]
  if not os.path.isdir(masks_dir):
    if name != "test":
      raise DataError(f"{images_dir}: images without a masks/ folder beside them.")
    return _SplitFiles(name, images_dir, images, None, None, mask_suffix)
  return _SplitFiles(name, images_dir, images, _list_dir(masks_dir), masks_dir, mask_suffix)


def _find_splits(root: str, mask_suffix: str) -> list[_SplitFiles]:
  if not root:
    raise DataError("No data folder given (config.data.dir is empty).")
  if not os.path.exists(root):
    raise DataError(f"{root}: no such folder.")
  if not os.path.isdir(root):
    raise DataError(f"{root}: not a folder.")
  if not any(_visible(n) for n in os.listdir(root)):
    raise DataError(f"{root}: the folder is empty.")
  sources = isic_sources(root)
  if sources:
    return isic_splits(sources, root)
  top = _generic_split("train", root, mask_suffix)
  if top is not None:
    return [top]
  splits = []
  for split, names in GENERIC_SPLIT_DIRS.items():
    for name in names:
      found = _generic_split(split, os.path.join(root, name), mask_suffix)
      if found is not None:
        splits.append(found)
        break
  if not splits:
    raise DataError(
        f"{root}: neither the ISIC 2017 layout (ISIC-2017_Training_Data/ and "
        "ISIC-2017_Training_Part1_GroundTruth/, or their zips) nor images/ + masks/ (optionally "
        "under train/, validation/, test/).")
  return splits


class _Problems:
  """Bad pairs: raised at once (on_bad_pairs='error') or counted and logged ('skip')."""

  def __init__(self, options: Options, what: str):
    self.options, self.what, self.items = options, what, []
    self.lock = threading.Lock()

  def add(self, message: str) -> None:
    with self.lock:
      self.items.append(message)

  def check(self) -> None:
    if not self.items:
      return
    listed = "\n  ".join(self.items[:_MAX_LISTED])
    more = f"\n  ... and {len(self.items) - _MAX_LISTED} more" if len(self.items) > _MAX_LISTED else ""
    if self.options.on_bad_pairs == "error":
      raise DataError(f"{len(self.items)} bad input file(s) in {self.what}:\n  {listed}{more}\n"
                      "(data.on_bad_pairs='skip' leaves such pairs out instead).")
    logging.warning("Skipped %d bad pair(s) in %s (data.on_bad_pairs='skip'):\n  %s%s",
                    len(self.items), self.what, listed, more)


def _list_names(names: Sequence[str]) -> str:
  """Up to _MAX_LISTED names, then how many more."""
  more = f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
  return ", ".join(names[:_MAX_LISTED]) + more


def _pair(split: _SplitFiles, problems: _Problems) -> list[Pair]:
  """Pairs images with masks by stem; missing and stray masks go to problems."""
  images: dict[str, FileRef] = {}
  for ref in split.images:
    stem = os.path.splitext(ref.name)[0]
    if stem in images:
      raise DataError(f"{ref}: two images with the id {stem!r} (also {images[stem]}).")
    images[stem] = ref
  if not images:
    raise DataError(f"{split.where}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the "
                    f"{split.name} split.")
  if split.masks is None:
    return [Pair(stem, ref, None) for stem, ref in sorted(images.items())]
  suffix = split.mask_suffix
  masks: dict[str, FileRef] = {}
  for ref in split.masks:
    stem, ext = os.path.splitext(ref.name)
    if ext.lower() not in IMAGE_EXTENSIONS:
      continue  # README, metadata CSV, Thumbs.db ...
    if suffix and stem.endswith(suffix) and stem[:-len(suffix)] in images:
      key = stem[:-len(suffix)]
    elif stem in images:
      key = stem
    else:
      problems.add(f"{ref}: a mask without an image (expected images named <id>.jpg or similar "
                   f"for masks named <id>{suffix}.png or <id>.png)")
      continue
    if ext.lower() not in MASK_EXTENSIONS:
      problems.add(f"{ref}: masks must be PNG files (lossless), named <id>{suffix}.png or <id>.png")
      continue
    if key in masks:
      raise DataError(f"{ref}: a second mask for {images[key]} (also {masks[key]}).")
    masks[key] = ref
  pairs = []
  for stem, ref in sorted(images.items()):
    if stem in masks:
      pairs.append(Pair(stem, ref, masks[stem]))
    else:
      problems.add(f"{ref}: no mask (expected {stem}{suffix}.png or {stem}.png in "
                   f"{split.masks_where})")
  return pairs


def _header_size(ref: FileRef, kind: str) -> tuple[int, int]:
  try:
    with ref.open() as f, Image.open(f) as im:
      return im.height, im.width
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise DataError(f"{ref}: unreadable {kind} ({e}).") from e


def _aspect_matches(image: tuple[int, int], mask: tuple[int, int]) -> bool:
  """Whether image (h, w) is mask (h, w) resized proportionally (up to rounding)."""
  (hi, wi), (hm, wm) = image, mask
  for scale in (hi / hm, wi / wm):
    if abs(hm * scale - hi) <= 1 + 0.005 * hi and abs(wm * scale - wi) <= 1 + 0.005 * wi:
      return True
  return False


def _check_sizes(pairs: list[Pair], options: Options, problems: _Problems, what: str) -> list[Pair]:
  image_sizes = {p.image_size for p in pairs}
  uniform = len(image_sizes) == 1 and len(pairs) >= 2
  good, resized = [], 0
  for p in pairs:
    if p.mask is None or p.image_size == p.mask_size:
      good.append(p)
      continue
    mode = options.size_check
    ok = (mode == "any" or (mode in ("auto", "aspect") and _aspect_matches(p.image_size, p.mask_size))
          or (mode == "auto" and uniform))
    if ok:
      resized += 1
      good.append(p)
      continue
    (hi, wi), (hm, wm) = p.image_size, p.mask_size
    problems.add(f"{p.image}: image is {wi}x{hi} but its mask {p.mask} is {wm}x{hm} "
                 f"(data.size_check={mode!r}; see segan_jax/data/folder.py)")
  if resized:
    common = next(iter(image_sizes)) if uniform else None
    logging.info("%d of %d images in %s differ in size from their masks: taken as resized copies "
                 "(original size = mask size)%s; data.size_check='equal' forbids that.", resized,
                 len(pairs), what, f"; every image is {common[1]}x{common[0]}" if common else "")
  if uniform and options.size_check == "auto":
    _warn_unusual_mask_shapes(good, what)
  return good


UNUSUAL_ASPECT = 1.4  # a mask whose w/h differs from the split's median by more than this factor


def unusual_mask_shapes(pairs: Sequence[Pair]) -> list[Pair]:
  """Pairs whose mask shape (w/h) is far from the split's median: in a folder of images resized
  to one size, the images cannot vouch for their masks' geometry, so these are worth a look
  (a rotated mask, a mask of another image, or a genuinely unusual original)."""
  shaped = [p for p in pairs if p.mask_size is not None]
  if len(shaped) < 3:
    return []
  aspects = np.array([p.mask_size[1] / p.mask_size[0] for p in shaped])
  median = float(np.median(aspects))
  far = np.abs(np.log(aspects / median)) > np.log(UNUSUAL_ASPECT)
  return [p for p, f in zip(shaped, far) if f]


def _warn_unusual_mask_shapes(pairs: Sequence[Pair], what: str) -> None:
  unusual = unusual_mask_shapes(pairs)
  if not unusual:
    return
  aspects = [p.mask_size[1] / p.mask_size[0] for p in pairs if p.mask_size is not None]
  lo, hi = np.percentile(aspects, [5, 95])
  names = _list_names([f"{p.mask.name} ({p.mask_size[1]}x{p.mask_size[0]})" for p in unusual])
  logging.warning(
      "%s: every image has one size, so the images cannot confirm their masks' geometry (the "
      "mask's size is taken as the original size). %d mask(s) have a shape unlike the rest "
      "(90%% of width/height ratios lie in %.2f-%.2f): %s. Check that each belongs to its image "
      "and is not rotated; data.size_check='aspect' or 'equal' enforces geometry for folders "
      "that keep their images' shapes.", what, len(unusual), lo, hi, names)


def _threaded(fn: Callable, items: Iterable, workers: int) -> Iterator:
  """fn over items in order with `workers` threads and a bounded window; stops at an exception."""
  if workers <= 1:
    yield from map(fn, items)
    return
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    pending = collections.deque()
    try:
      for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= 4 * workers:
          yield pending.popleft().result()
      while pending:
        yield pending.popleft().result()
    finally:
      for future in pending:
        future.cancel()


def scan_splits(splits: Sequence[_SplitFiles], options: Options) -> dict[str, list[Pair]]:
  """Pairs and header-checks each split; raises DataError or skips bad pairs (logged)."""
  result = {}
  for split in splits:
    what = f"the {split.name} split ({split.where})"
    problems = _Problems(options, what)
    pairs = _pair(split, problems)

    def sizes(p: Pair) -> Pair | None:
      try:
        return dataclasses.replace(
            p, image_size=_header_size(p.image, "image"),
            mask_size=_header_size(p.mask, "mask") if p.mask is not None else None)
      except DataError as e:
        if options.on_bad_pairs == "error":
          raise
        problems.add(str(e))
        return None

    pairs = [p for p in _threaded(sizes, pairs, options.num_workers) if p is not None]
    pairs = _check_sizes(pairs, options, problems, what)
    problems.check()
    if not pairs:
      raise DataError(f"No usable pairs left in {what}.")
    result[split.name] = pairs
  return result


def scan(root: str, options: Options = Options()) -> dict[str, list[Pair]]:
  """Finds the layout under root and returns its pairs per split ('train', 'validation', 'test').

  Raises DataError (naming the file) on anything the module docstring lists as an error, before
  decoding any pixel.
  """
  return scan_splits(_find_splits(root, options.mask_suffix), options)


# ---------------------------------------------------------------------------------------------
# Decoding.

_IMAGE_ERRORS = decode_lib.DECODE_ERRORS


def decode_image(ref: FileRef, draft_size: tuple[int, int] | None = None,
                 keep_bytes: bool = False) -> tuple[np.ndarray, tuple[int, int], list[str], bytes | None]:
  """(h, w, 3) uint8 RGB, the original (h, w), conversion notes, and the file's bytes if asked.

  draft_size (h, w): a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (libjpeg DCT scaling), never
  below draft_size (segan_jax.data.decode: the path every network input takes). The bytes come
  back only for an 8-bit RGB JPEG or PNG (usable as they are).
  """
  data = ref.read()
  try:
    array, original, notes, fmt = decode_lib.decode_rgb(data, draft_size)
  except decode_lib.ImageDecodeError as e:
    raise DataError(f"{ref}: {e}.") from e
  passthrough = keep_bytes and not notes and fmt in ("JPEG", "PNG") and draft_size is None
  return array, original, notes, data if passthrough else None


def _one_channel(ref: FileRef, im: Image.Image, array: np.ndarray, expected_shape: str,
                 expected_type: str) -> tuple[np.ndarray, list[str]]:
  """A mask's pixels as one integer channel, and notes: a multi-channel mask whose colour channels
  agree is read as one channel, a boolean one as uint8; anything else is a DataError naming what
  was expected."""
  notes = []
  if array.ndim == 3:
    colour = array[..., :3] if array.shape[-1] >= 3 else array[..., :1]
    if not (colour == colour[..., :1]).all():
      raise DataError(f"{ref}: a colour mask (mode {im.mode} with differing channels); expected "
                      f"{expected_shape}.")
    notes.append(f"{im.mode} masks read as one channel")
    array = colour[..., 0]
  if array.dtype == bool:
    array = array.astype(np.uint8)
  if array.dtype.kind not in "ui":
    raise DataError(f"{ref}: mask pixels of type {array.dtype}; expected {expected_type}.")
  return array, notes


def _index_mask(ref: FileRef, im: Image.Image, num_classes: int) -> tuple[np.ndarray, list[str]]:
  """(h, w) uint8 class indices 0..num_classes of an index or palette mask, and notes."""
  notes = []
  array = np.asarray(im)  # a palette image gives its palette indices
  if im.mode == "P":
    notes.append("palette masks read by palette index")
  array, channel_notes = _one_channel(
      ref, im, array, f"a single-channel index mask (0 background, 1..{num_classes}) or a "
      "palette PNG whose palette index is the class", "integer class indices")
  notes.extend(channel_notes)
  values = np.unique(array)
  top = int(values.max(initial=0))
  if top == 255 and set(values.tolist()) <= {0, 255}:
    raise DataError(f"{ref}: a binary 0/255 mask, but config.model.num_classes={num_classes} "
                    f"expects index masks (0 background, 1..{num_classes}); use "
                    "config.model.num_classes=1 for lesion masks.")
  if top > num_classes or int(values.min(initial=0)) < 0:
    raise DataError(f"{ref}: holds the class index {top}, above config.model.num_classes="
                    f"{num_classes} (index masks hold 0 for background and 1..{num_classes}; "
                    f"values found: {values[:8].tolist()}).")
  return array.astype(np.uint8), notes


def decode_mask(ref: FileRef, nonbinary: str = "binarize", keep_bytes: bool = False,
                num_classes: int = 1) -> tuple[np.ndarray, list[str], bytes | None]:
  """(h, w) uint8 mask with values 0/255 (num_classes > 1: class indices 0..N), notes, and the
  file's bytes if asked and already so."""
  data = ref.read()
  try:
    im = Image.open(io.BytesIO(data))
    im.load()
  except _IMAGE_ERRORS as e:
    raise DataError(f"{ref}: unreadable, corrupt or truncated mask ({e}).") from e
  if num_classes > 1:
    mask, notes = _index_mask(ref, im, num_classes)
    return mask, notes, None
  mode, fmt = im.mode, im.format
  array, notes = _one_channel(ref, im, np.asarray(im), "a single-channel 0/255 mask",
                              "integers (0/255)")
  if array.dtype == np.uint8 and array.ndim == 2:
    single = Image.fromarray(array) if im.mode != "L" else im
    values = np.flatnonzero(np.asarray(single.histogram()))  # C speed, no temporary arrays
  else:
    values = np.unique(array)
  nonzero = values[values != 0]
  if len(nonzero) == 0:
    mask = np.zeros(array.shape, np.uint8)
  elif len(nonzero) == 1 and nonzero[0] == 255 and array.dtype == np.uint8:
    mask = array
  elif len(nonzero) == 1:
    notes.append(f"masks with values {{0, {nonzero[0]}}} mapped to 0/255")
    mask = np.where(array == nonzero[0], 255, 0).astype(np.uint8)
  else:
    try:
      array8 = decode_lib.to_8bit(array)
    except ValueError as e:
      raise DataError(f"{ref}: mask values out of range ({e}).") from e
    if array8.max() <= 127:
      raise DataError(f"{ref}: mask values {nonzero[:8].tolist()} look like a label map (an index "
                      "mask of several classes), not a 0/255 lesion mask; set "
                      "config.model.num_classes to the number of classes to train on it.")
    if nonbinary == "error":
      raise DataError(f"{ref}: a non-binary mask ({len(values)} distinct values, e.g. antialiased "
                      "or JPEG-compressed); data.nonbinary_masks='binarize' thresholds it at > 127.")
    notes.append("non-binary (antialiased) masks binarised at > 127")
    mask = np.where(array8 > 127, 255, 0).astype(np.uint8)
  canonical = keep_bytes and not notes and fmt == "PNG" and mode == "L"
  return mask, notes, data if canonical else None


def decode(pairs: Iterable[Pair], options: Options = Options(),
           image_size: tuple[int, int] | None = None, mask_size: tuple[int, int] | None = None,
           keep_bytes: bool = False, what: str = "the data") -> Iterator[Decoded]:
  """Decodes pairs with threads, in order.

  image_size / mask_size (h, w): resize images bilinearly / masks by nearest neighbour to that
  size (None keeps the decoded size). A resized image is decoded through a JPEG draft no smaller
  than image_size. Bad pairs raise DataError or, with on_bad_pairs='skip', are left out; the
  notes and skips are logged once the iterator is exhausted.
  """
  problems = _Problems(options, what)
  notes: dict[str, list[str]] = collections.defaultdict(list)  # note -> the files it concerns
  lock = threading.Lock()
  count = 0

  def one(p: Pair) -> Decoded | None:
    try:
      image, original, image_notes, image_bytes = decode_image(p.image, image_size, keep_bytes)
      mask, mask_notes, mask_bytes = (decode_mask(p.mask, options.nonbinary_masks, keep_bytes,
                                                  options.num_classes)
                                      if p.mask is not None else (None, [], None))
    except DataError as e:
      if options.on_bad_pairs == "error":
        raise
      problems.add(str(e))
      return None
    if mask is not None:
      original = mask.shape[:2]
      if p.mask_size is not None and p.mask_size != original:
        raise DataError(f"{p.mask}: decoded size differs from its header.")
    if image_size is not None:
      image = resize_image(image, *image_size)
    if mask is not None and mask_size is not None:
      mask = resize_mask(mask, *mask_size)
    with lock:
      for note in image_notes:
        notes[note].append(p.image.name)
      for note in mask_notes:
        notes[note].append(p.mask.name)
    return Decoded(p.id, image, mask, tuple(int(s) for s in original), image_bytes, mask_bytes)

  for item in _threaded(one, pairs, options.num_workers):
    if item is not None:
      count += 1
      yield item
  for note, names in sorted(notes.items()):
    logging.info("%s: %s: %d file(s): %s.", what, note, len(names), _list_names(sorted(names)))
  problems.check()
  if count == 0:
    raise DataError(f"No usable pairs in {what}.")


# ---------------------------------------------------------------------------------------------
# Splits.

def holdout_ids(ids: Iterable[str], fraction: float, seed: int) -> list[str]:
  """A deterministic hold-out: the round(fraction * n) ids (at least 1, at most n - 1) whose
  sha256(seed:id) ranks lowest. Depends only on (ids, fraction, seed), not on listing order or
  library versions; adding ids moves few of the others."""
  ids = sorted(set(ids))
  if len(ids) < 2:
    raise DataError(f"Cannot hold out validation ids from {len(ids)} training example(s).")
  count = min(len(ids) - 1, max(1, int(round(fraction * len(ids)))))
  ranked = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
  return sorted(ranked[:count])


def read_ids(path: str) -> list[str]:
  """Ids from a file, one per line ('#' comments and blank lines ignored)."""
  try:
    with open(path) as f:
      lines = [line.split("#", 1)[0].strip() for line in f]
  except OSError as e:
    raise DataError(f"{path}: cannot read the ids file ({e}).") from e
  return [line for line in lines if line]


def write_ids(path: str, ids: Iterable[str], header: str = "") -> None:
  """Writes ids one per line (after an optional '#' header line)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    if header:
      f.write(f"# {header}\n")
    f.writelines(f"{i}\n" for i in ids)


def validation_ids(train_ids: Sequence[str], fraction: float, seed: int,
                   ids_file: str = "") -> list[str]:
  """The held-out validation ids among train_ids.

  With ids_file: read from it if it exists (each id must be a training id); otherwise the seeded
  hold-out is computed and written there, so later runs and other tools reuse the same ids.
  """
  known = set(train_ids)
  if ids_file and os.path.exists(ids_file):
    ids = read_ids(ids_file)
    unknown = [i for i in ids if i not in known]
    if unknown:
      raise DataError(f"{ids_file}: {len(unknown)} id(s) not among the training ids, e.g. "
                      f"{unknown[:5]}.")
    if not ids or len(set(ids)) >= len(known):
      raise DataError(f"{ids_file}: holds {len(set(ids))} of the {len(known)} training ids; "
                      "needs at least one and fewer than all.")
    logging.info("Validation ids: %d read from %s.", len(set(ids)), ids_file)
    return sorted(set(ids))
  ids = holdout_ids(train_ids, fraction, seed)
  if ids_file:
    write_ids(ids_file, ids, f"held-out validation ids: fraction {fraction}, seed {seed}, "
              f"{len(ids)} of {len(known)}")
    logging.info("Validation ids: %d written to %s.", len(ids), ids_file)
  return ids


def split_train_val(splits: dict, data, ids_of=lambda p: p.id) -> tuple[list, list]:
  """(train, validation) items: the official validation split when present, else a hold-out."""
  if "train" not in splits:
    raise DataError(f"{data.dir}: no training split.")
  train = splits["train"]
  if "validation" in splits:
    if data.val_ids_file:
      logging.warning("data.val_ids_file=%r is not used: the data has an official validation "
                      "split.", data.val_ids_file)
    logging.info("Validation: the official validation split (%d).", len(splits["validation"]))
    return train, splits["validation"]
  held = set(validation_ids([ids_of(p) for p in train], data.val_fraction, data.seed,
                            data.val_ids_file))
  logging.info("Validation: %d of %d training ids held out (data.val_fraction=%s, data.seed=%d).",
               len(held), len(train), data.val_fraction, data.seed)
  return ([p for p in train if ids_of(p) not in held], [p for p in train if ids_of(p) in held])


def load_train_val(data, num_classes: int = 1) -> tuple[list[Example], list[Example]]:
  """(training, validation) examples of the folder config.data.dir names (masks 0/255, or index
  masks for num_classes > 1).

  Training pairs come resized to (data.resize_height, data.resize_width) and validation images to
  data.image_size square (exactly what prepare_train / prepare_eval would make of the originals,
  whose resize to the same size is then a copy), so full-resolution images never all sit in
  memory; validation masks keep the original resolution for scoring.
  """
  options = Options.from_config(data, num_classes)
  splits = scan(data.dir, options)
  train_pairs, val_pairs = split_train_val(splits, data)
  size = (data.resize_height, data.resize_width)
  train = [d.example() for d in decode(train_pairs, options, size, size,
                                       what=f"the training pairs of {data.dir}")]
  return train, _validation_examples(val_pairs, options, data)


def _validation_examples(pairs: list[Pair], options: Options, data) -> list[Example]:
  """Validation pairs decoded as every tool scores them: images at data.image_size square, masks
  at their original resolution."""
  return [d.example() for d in decode(pairs, options, (data.image_size, data.image_size),
                                      what=f"the validation pairs of {data.dir}")]


def load_split(root: str, split: str = "test", options: Options = Options(),
               image_size: tuple[int, int] | None = None) -> list[Decoded]:
  """One split of a folder, decoded (masks at the original resolution, None without ground
  truth), e.g. the test split for prediction; each item carries its original size."""
  splits = scan(root, options)
  if split not in splits:
    raise DataError(f"{root}: no {split} split (found {sorted(splits)}).")
  return list(decode(splits[split], options, image_size, what=f"the {split} split of {root}"))


def load_validation(data, num_classes: int = 1) -> list[Example]:
  """The validation examples of load_train_val(data, num_classes), decoding no training pair.

  The same scan and split, and the same decoding (images at data.image_size square, masks at
  their original resolution), so scoring the validation split costs its own pairs alone.
  """
  options = Options.from_config(data, num_classes)
  _, val_pairs = split_train_val(scan(data.dir, options), data)
  return _validation_examples(val_pairs, options, data)
