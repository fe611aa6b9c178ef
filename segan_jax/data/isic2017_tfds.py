"""TFDS builder `isic2017`: ISIC 2017 Part 1 (lesion segmentation) from the six official zips.

Importing this module registers the dataset, so that afterwards

    import segan_jax.data.isic2017_tfds  # noqa: F401  (or import segan_jax after tensorflow_datasets)
    ds = tfds.load("isic2017", split="train", data_dir=...,
                   download_and_prepare_kwargs={"download_config":
                       tfds.download.DownloadConfig(manual_dir="/path/to/zips")})

(`import segan_jax` registers it only when tensorflow_datasets is already imported, so that the
package itself stays importable without TensorFlow.)

Sources, in order: `manual_dir` when it exists and is not empty, holding the official zips
(`ISIC-2017_Training_Data.zip`, ...: read in place, not extracted), their extracted folders, or any
folder of image/mask pairs that segan_jax/data/folder.py reads (images/ + masks/, optionally per
split); otherwise the six zips are downloaded from the official URLs. Splits: train, validation and
test, each present when its source is (a folder of training pairs only gives only `train`).

Every pair is paired, checked and normalised exactly as data.source='folder' does (builder kwargs
mask_suffix, on_bad_pairs, size_check, nonbinary_masks, workers; see folder.py), so a built dataset
holds only clean pairs. Features of an example:

  id             ISIC id (file stem), e.g. 'ISIC_0000000'
  image          uint8 (h, w, 3): the image file's bytes as they were when it is an 8-bit RGB
                 JPEG/PNG (no re-encoding), else the image converted to 8-bit RGB, as PNG
  mask           uint8 (h', w', 1) with values 0/255, PNG, at the mask file's resolution;
                 a 1x1 zero mask when has_mask is False
  has_mask       False for a split without ground truth (the test split, for prediction)
  original_size  int32 (height, width): the mask's size where there is one, else the image's
                 (the ISIC protocol scores at the original size; an image may be a resized copy)
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from segan_jax.data import folder
from segan_jax.data.arrays import Example

NAME = "isic2017"

_DESCRIPTION = """
ISIC 2017 challenge "Skin Lesion Analysis Towards Melanoma Detection", Part 1: lesion segmentation.
Dermoscopic images with binary lesion masks: 2000 training, 150 validation, 600 test pairs in the
official release.
"""

_CITATION = """
@inproceedings{codella2018isic,
  title={Skin lesion analysis toward melanoma detection: A challenge at the 2017 International
         Symposium on Biomedical Imaging (ISBI), hosted by the International Skin Imaging
         Collaboration (ISIC)},
  author={Codella, Noel CF and Gutman, David and Celebi, M Emre and Helba, Brian and Marchetti,
          Michael A and Dusza, Stephen W and Kalloo, Aadi and Liopyris, Konstantinos and Mishra,
          Nabin and Kittler, Harald and Halpern, Allan},
  booktitle={ISBI},
  year={2018}
}
"""

URLS = {name: folder.ISIC_URL.format(name=name) for name in folder.ISIC_ARCHIVES}


class Isic2017(tfds.core.GeneratorBasedBuilder):
  """ISIC 2017 Part 1 lesion segmentation (train / validation / test)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Place in manual_dir either the official zips (any of them, Training at least):
    ISIC-2017_Training_Data.zip, ISIC-2017_Training_Part1_GroundTruth.zip,
    ISIC-2017_Validation_Data.zip, ISIC-2017_Validation_Part1_GroundTruth.zip,
    ISIC-2017_Test_v2_Data.zip, ISIC-2017_Test_v2_Part1_GroundTruth.zip
  from https://challenge.isic-archive.com/data/#2017 (direct links:
  https://isic-challenge-data.s3.amazonaws.com/2017/<name>.zip), or their extracted folders, or a
  folder of images/ + masks/ pairs. Without manual_dir the zips are downloaded.
  """

  def __init__(self, *, mask_suffix: str = "_segmentation", on_bad_pairs: str = "error",
               size_check: str = "auto", nonbinary_masks: str = "binarize", workers: int = 0,
               **kwargs):
    self._options = folder.Options(mask_suffix=mask_suffix, on_bad_pairs=on_bad_pairs,
                                   size_check=size_check, nonbinary_masks=nonbinary_masks,
                                   workers=workers)
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "id": tfds.features.Text(doc="ISIC id (file stem)"),
            "image": tfds.features.Image(shape=(None, None, 3), doc="RGB image"),
            "mask": tfds.features.Image(shape=(None, None, 1), encoding_format="png",
                                        doc="lesion mask, 0/255, original resolution"),
            "has_mask": tfds.features.Scalar(dtype=np.bool_, doc="False: no ground truth"),
            "original_size": tfds.features.Tensor(shape=(2,), dtype=np.int32,
                                                  doc="(height, width) of the original image"),
        }),
        supervised_keys=("image", "mask"),
        homepage="https://challenge.isic-archive.com/landing/2017/",
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = _manual_root(dl_manager)
    if root is not None:
      logging.info("isic2017: reading %s.", root)
      splits = folder.scan(root, self._options)
    else:
      logging.info("isic2017: no manual_dir; downloading the official zips.")
      try:
        paths = dl_manager.download(URLS)
      except Exception as e:  # noqa: BLE001 - any network failure
        raise folder.DataError(
            f"Could not download the ISIC 2017 zips ({type(e).__name__}: {e}). Download them "
            f"elsewhere and pass their folder as manual_dir.{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
        ) from e
      sources = {name: str(path) for name, path in paths.items()}
      splits = folder.scan_splits(folder.isic_splits(sources, "the downloaded zips"),
                                  self._options)
    logging.info("isic2017 splits: %s.", {k: len(v) for k, v in splits.items()})
    return {name: self._generate_examples(name, pairs) for name, pairs in splits.items()}

  def _generate_examples(self, split: str, pairs: list[folder.Pair]):
    for d in folder.decode(pairs, self._options, keep_bytes=True, what=f"the {split} split"):
      if d.mask is None:
        mask, has_mask = np.zeros((1, 1, 1), np.uint8), False
      else:
        mask, has_mask = (d.mask_bytes if d.mask_bytes is not None else d.mask[..., None]), True
      yield d.id, {
          "id": d.id,
          "image": d.image_bytes if d.image_bytes is not None else d.image,
          "mask": mask,
          "has_mask": has_mask,
          "original_size": np.asarray(d.original_size, np.int32),
      }


def _manual_root(dl_manager) -> str | None:
  """The manual_dir to read; None to download. A manual_dir that was given (not TFDS's default
  <data_dir>/downloads/manual) but is missing or empty is an error, not a silent download."""
  manual = getattr(dl_manager, "_manual_dir", None)
  if manual is None:
    return None
  manual = os.fspath(manual)
  if os.path.isdir(manual) and any(not n.startswith(".") for n in os.listdir(manual)):
    return manual
  default = os.path.join(os.fspath(dl_manager.download_dir), "manual")
  if os.path.normpath(manual) != os.path.normpath(default):
    raise folder.DataError(f"manual_dir {manual}: no such folder, or an empty one.")
  return None


def builder(data, **kwargs) -> Isic2017:
  """The builder for a config.data section (data_dir = data.dir, TFDS's default when empty)."""
  return Isic2017(data_dir=data.dir or None, mask_suffix=data.mask_suffix,
                  on_bad_pairs=data.on_bad_pairs, size_check=data.size_check,
                  nonbinary_masks=data.nonbinary_masks, workers=data.decode_workers, **kwargs)


def prepare(b: Isic2017, manual_dir: str = "") -> None:
  """Builds the dataset unless it is already there."""
  try:
    b.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir or None))
  except ModuleNotFoundError as e:
    if e.name != "importlib_resources":
      raise
    # tensorflow-datasets 4.9.x imports it without declaring it (tensorflow/datasets#11212).
    raise ModuleNotFoundError("tensorflow_datasets needs the package importlib_resources, which "
                              "it does not declare: pip install importlib_resources",
                              name=e.name) from e


def records(b: Isic2017, split: str, fields=None):
  """Numpy records of a split in id order, image and mask left as encoded bytes."""
  ds = b.as_dataset(split=split, shuffle_files=False,
                    decoders={"image": tfds.decode.SkipDecoding(),
                              "mask": tfds.decode.SkipDecoding()})
  if fields is not None:
    ds = ds.map(lambda r: {k: r[k] for k in fields})
  for r in tfds.as_numpy(ds):
    if "id" in r:
      r["id"] = r["id"].decode()
    yield r


def _pairs(b: Isic2017, split: str, keep=None):
  for r in records(b, split):
    if keep is not None and r["id"] not in keep:
      continue
    where = f"{b.data_dir}[{split}]/{r['id']}"
    yield folder.Pair(r["id"], folder.FileRef(where + "/image", data=r["image"]),
                      folder.FileRef(where + "/mask", data=r["mask"]) if r["has_mask"] else None)


def _prepared(data) -> Isic2017:
  """The builder of config.data, with its dataset built (from data.manual_dir) if not yet."""
  b = builder(data)
  if (not data.manual_dir and not data.get("download", False)
      and not b.data_path.exists()):
    raise folder.DataError(
        f"The isic2017 TFDS dataset is not built in {b.data_dir}, and nothing says where to "
        "build it from: set --config.data.manual_dir to the folder of the official ISIC 2017 zips "
        "(or their folders), --config.data.download=True to download the six official zips "
        "(several GB), or use --config.data.source=folder --config.data.dir=<that folder>.")
  try:
    prepare(b, data.manual_dir)
  except AssertionError as e:
    raise folder.DataError(f"Cannot build the isic2017 dataset in {b.data_dir}: {e}") from e
  return b


def load_train_val(data) -> tuple[list[Example], list[Example]]:
  """(training, validation) examples from the built dataset (building it first if needed).

  Same conventions as folder.load_train_val: the official validation split when the dataset has
  one, else the same seeded hold-out of the training ids; training pairs resized to
  (resize_height, resize_width), validation images to image_size, validation masks original.
  Images are decoded with PIL, as the folder source does, so both give the same arrays.
  """
  b = _prepared(data)
  options = folder.Options(workers=data.decode_workers)  # checked when the dataset was built
  ids = [r["id"] for r in records(b, "train", fields=("id",))]
  if "validation" in b.info.splits:
    train_keep, val_split, val_keep = None, "validation", None
    if data.val_ids_file:
      logging.warning("data.val_ids_file=%r is not used: the dataset has a validation split.",
                      data.val_ids_file)
  else:
    val_keep = set(folder.validation_ids(ids, data.val_fraction, data.seed, data.val_ids_file))
    train_keep, val_split = set(ids) - val_keep, "train"
    logging.info("Validation: %d of %d training ids held out (data.val_fraction=%s, "
                 "data.seed=%d).", len(val_keep), len(ids), data.val_fraction, data.seed)
  size = (data.resize_height, data.resize_width)
  train = [d.example() for d in folder.decode(_pairs(b, "train", train_keep), options, size, size,
                                              what="isic2017[train]")]
  val = [d.example() for d in folder.decode(_pairs(b, val_split, val_keep), options,
                                            (data.image_size, data.image_size),
                                            what=f"isic2017[{val_split}]")]
  return _sorted(train), _sorted(val)


def load_split(data, split: str, image_size: int) -> list[Example]:
  """Every example of one split of the built dataset ('all': of every split, pairs with masks
  only), images at image_size, masks at their original size, for scoring and prediction."""
  b = _prepared(data)
  names = sorted(b.info.splits) if split == "all" else [split]
  missing = [n for n in names if n not in b.info.splits]
  if missing:
    raise folder.DataError(f"The isic2017 dataset in {b.data_dir} has no {missing[0]!r} split "
                           f"(it has {sorted(b.info.splits)}).")
  options = folder.Options(workers=data.decode_workers)
  examples = []
  for name in names:
    decoded = folder.decode(_pairs(b, name), options, (image_size, image_size),
                            what=f"isic2017[{name}]")
    examples.extend(d.example() for d in decoded if split != "all" or d.mask is not None)
  return _sorted(examples)


def _sorted(examples: list[Example]) -> list[Example]:
  return sorted(examples, key=lambda e: e.id)
