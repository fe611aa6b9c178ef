"""Segments image files with a trained run (or an ensemble) and writes ISIC-style mask PNGs.

  python -m segan_jax.predict --workdir=RUN --input=DIR_OR_FILE [--input=...] --output=DIR
      [--tta] [--save_probabilities] [--save_overlays] [--overwrite] [--postprocess]
  python -m segan_jax.predict --model=NAME_OR_PATH --input=... --output=DIR   (a pretrained model)
  python -m segan_jax.predict --list_models

For each readable image `<id>.<ext>` (JPEG, PNG and other formats PIL reads; any size; RGB,
grayscale, palette, RGBA (alpha dropped), 16-bit) it writes, at the image's ORIGINAL size (the
network sees the image through the decode path of training and evaluate, segan_jax.data.decode:
a JPEG decoded at reduced scale where the network's size allows, then resized):
  <id>_segmentation.png   the mask, 0/255 (uint8, one channel): the network-size probability map
                          resized bilinearly to the original size, then `prob > threshold`, exactly
                          as segan_jax.evaluate scores it (--postprocess: then reduced to its
                          largest connected component with its holes filled, as
                          `evaluate --postprocess` scores it);
  <id>_probability.png    (--save_probabilities) the probability map as 8-bit gray (p * 255);
  <id>_overlay.jpg        (--save_overlays) the photo with the lesion contour in magenta.
Several classes (model.num_classes N > 1): <id>_segmentation.png is an index mask (uint8, one
channel, 0 background and 1..N): each pixel takes the class of its most probable map when that
probability exceeds the threshold, else 0 (ties to the lower class; metrics.label_prediction, as
evaluate scores it), computed from the maps resized to the original size; --save_probabilities
writes <id>_probability_class1.png ... _classN.png and --save_overlays one <id>_overlay.jpg with
each class tinted and outlined in its colour (overlays.CLASS_COLORS).
Images are read in a thread pool and segmented in padded batches (one compile). An unreadable file
is reported with its reason and skipped; the others are still written; the failures are listed at
the end and the exit status is 1 if any file failed. k, threshold and checkpoint come from
RUN/selection.json where `segan_jax.evaluate --search` stored them, else from the checkpoint.
EXIF orientation tags are ignored: masks align with the stored pixel grid, as ISIC's masks do.

Nothing is overwritten unasked: before any work, predict checks that the output folder is writable
and that none of the files it would write exists; --overwrite allows replacing files that an
earlier predict run wrote there (listed in its predict_summary.json), never other files (ground
truth masks share the `<id>_segmentation.png` name) and never an input. Folder entries that are
not read (other extensions, sub-folders without --recursive, broken links, masks and earlier
outputs) are named in a notice and in predict_summary.json.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from segan_jax import cli, compilation_cache, host_memory, inference, metrics, overlays
from segan_jax import postprocess as post
from segan_jax.data import decode
from segan_jax.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
SUMMARY_FILE = "predict_summary.json"


class ImageReadError(ValueError):
  """A file cannot be read as an image."""


class OutputError(UserError):
  """The output folder cannot be written, or writing would replace files that must be kept."""


@dataclasses.dataclass(frozen=True)
class Failure:
  path: str
  reason: str


def image_id(path: str) -> str:
  """The ISIC id of an image file: its name without the extension."""
  return os.path.splitext(os.path.basename(path))[0]


OUTPUT_SUFFIXES = ("_segmentation.png", "_probability.png", "_overlay.jpg")
_CLASS_OUTPUT = re.compile(r"(_probability|_segmentation)_class\d+\.png$|_overlay_class\d+\.jpg$")


def find_inputs(inputs: Sequence[str], recursive: bool = False
                ) -> tuple[list[str], list[Failure], list[Failure]]:
  """Image files named by `inputs` (files, folders or glob patterns), the inputs not found, and
  the folder entries left out with the reason.

  A folder contributes its files with an image extension (sorted; sub-folders with `recursive`),
  except masks and this command's own outputs (names ending in _segmentation.png,
  _probability.png, _overlay.jpg); a file named explicitly is always tried, whatever its name.
  """
  files: list[str] = []
  missing: list[Failure] = []
  skipped: list[Failure] = []
  for item in inputs:
    if os.path.isdir(item):
      pattern = os.path.join(item, "**", "*") if recursive else os.path.join(item, "*")
      for p in sorted(glob.glob(pattern, recursive=recursive)):
        reason = _skip_reason(p, recursive)
        if reason is None:
          files.append(p)
        elif reason:
          skipped.append(Failure(p, reason))
    elif os.path.isfile(item):
      files.append(item)
    elif glob.has_magic(item):
      matched = sorted(p for p in glob.glob(item, recursive=recursive) if os.path.isfile(p))
      if not matched:
        missing.append(Failure(item, "the pattern matches no file"))
      files.extend(matched)
    elif os.path.islink(item):
      missing.append(Failure(item, "a broken link (its target does not exist)"))
    else:
      missing.append(Failure(item, "no such file or folder"))
  seen, unique = set(), []
  for f in files:  # the same file named twice is read once
    key = os.path.abspath(f)
    if key not in seen:
      seen.add(key)
      unique.append(f)
  return unique, missing, skipped


def _skip_reason(path: str, recursive: bool) -> str | None:
  """Why a folder entry is not read (None: it is read; '': silently, a folder being recursed)."""
  name = os.path.basename(path).lower()
  if os.path.isdir(path):
    return "" if recursive else "a sub-folder (pass --recursive to search it)"
  if not os.path.exists(path):
    return "a broken link (its target does not exist)"
  if not os.path.isfile(path):
    return "not a regular file"
  if name == SUMMARY_FILE:
    return ""
  if name.endswith(OUTPUT_SUFFIXES) or _CLASS_OUTPUT.search(name):
    suffix = next((s for s in OUTPUT_SUFFIXES if name.endswith(s)), None)
    suffix = suffix or _CLASS_OUTPUT.search(name).group(0)
    return (f"a mask or an earlier prediction (name ends in {suffix}); name it explicitly to "
            "segment it")
  if not name.endswith(IMAGE_EXTENSIONS):
    ext = os.path.splitext(name)[1] or "no extension"
    return f"not an image extension ({ext}); name the file explicitly to try it anyway"
  return None


def output_names(image_id_: str, num_classes: int, save_probabilities: bool,
                 save_overlays: bool) -> list[str]:
  """The file names predict writes for one image."""
  if num_classes > 1:  # one index mask, a probability map per class, one colour overlay
    names = [f"{image_id_}_segmentation.png"]
    if save_probabilities:
      names += [f"{image_id_}_probability_class{c}.png" for c in range(1, num_classes + 1)]
    if save_overlays:
      names.append(f"{image_id_}_overlay.jpg")
    return names
  names = []
  for c in range(num_classes):
    suffix = "" if c == 0 else f"_class{c}"
    names.append(f"{image_id_}_segmentation{suffix}.png")
    if save_probabilities:
      names.append(f"{image_id_}_probability{suffix}.png")
    if save_overlays:
      names.append(f"{image_id_}_overlay{suffix}.jpg")
  return names


def _previous_outputs(output: str) -> set[str]:
  """The files an earlier predict run wrote into `output` (from its predict_summary.json)."""
  try:
    with open(os.path.join(output, SUMMARY_FILE)) as f:
      return set(json.load(f).get("written", []))
  except (OSError, ValueError, AttributeError, TypeError):
    return set()


def check_output(output: str, files: Sequence[str], num_classes: int, save_probabilities: bool,
                 save_overlays: bool, overwrite: bool) -> None:
  """Raises OutputError before any work when the outputs cannot be written or would replace an
  input, a file predict did not write (ground truth), or (without overwrite) any existing file."""
  try:
    os.makedirs(output, exist_ok=True)
    probe = os.path.join(output, f".predict_write_test_{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise OutputError(f"cannot write into --output={output}: {e.strerror or e}.") from e
  inputs = {os.path.realpath(f) for f in files}
  ours = _previous_outputs(output)
  clash_input, foreign, existing = [], [], []
  for path in files:
    for name in output_names(image_id(path), num_classes, save_probabilities, save_overlays):
      target = os.path.join(output, name)
      if os.path.realpath(target) in inputs:
        clash_input.append(target)
      elif os.path.lexists(target):
        (existing if name in ours else foreign).append(target)

  def listed(paths):
    return ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")

  if clash_input:
    raise OutputError(f"writing into --output={output} would replace input images "
                      f"({listed(clash_input)}); choose another --output folder.")
  if foreign:
    raise OutputError(f"--output={output} already holds {len(foreign)} file(s) with the names "
                      f"predict would write that an earlier predict run did not write (e.g. "
                      f"ground-truth masks): {listed(foreign)}. Choose another --output folder; "
                      "predict never replaces them, even with --overwrite.")
  if existing and not overwrite:
    raise OutputError(f"--output={output} already holds {len(existing)} earlier prediction(s) "
                      f"for these images: {listed(existing)}. Pass --overwrite to replace them, "
                      "or choose another --output folder.")


def read_image(path: str) -> np.ndarray:
  """Decodes a file fully into HxWx3 uint8 RGB; raises ImageReadError with the reason."""
  return _decoded(_file_bytes(path), lambda data: decode.decode_rgb(data)[0])


def read_network_input(path: str, side: int) -> tuple[np.ndarray, tuple[int, int]]:
  """A file at the network's input size (side x side uint8 RGB) and its original (h, w), by the
  decode path of training and evaluate (segan_jax.data.decode.network_image)."""
  return _decoded(_file_bytes(path), lambda data: decode.network_image(data, (side, side)))


def _file_bytes(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def _decoded(data: bytes, decode_fn):
  """decode_fn(data), its ImageDecodeError as an ImageReadError."""
  try:
    return decode_fn(data)
  except decode.ImageDecodeError as e:
    raise ImageReadError(str(e)) from e


@dataclasses.dataclass(frozen=True)
class _Input:
  """One readable input: its size (h, w), the network's view, and the photo (for overlays)."""
  size: tuple[int, int]
  small: np.ndarray
  photo: np.ndarray | None


def _read(path: str, side: int, keep_photo: bool):
  """(path, _Input, error): decoding and resizing run in threads; the full-size photo is decoded
  only for overlays."""
  try:
    data = _file_bytes(path)  # read once, decoded once more at full size only for overlays
    small, size = _decoded(data, lambda d: decode.network_image(d, (side, side)))
    photo = _decoded(data, lambda d: decode.decode_rgb(d)[0]) if keep_photo else None
    return path, _Input(size, small, photo), None
  except ImageReadError as e:
    return path, None, str(e)
  except OSError as e:
    return path, None, f"cannot read the file ({e.strerror or e})"
  except Exception as e:  # noqa: BLE001 - one bad file must not stop the others
    return path, None, f"{type(e).__name__}: {e}"


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
  for start in range(0, len(items), size):
    yield items[start:start + size]


def label_map_mask(prob: np.ndarray, size: tuple[int, int], threshold: float,
                   postprocess: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """One network-size probability map at an image's original size (h, w), as predict writes it:
  the map resized bilinearly (HxW float32) and its bool mask `map > threshold` (with
  `postprocess`: its largest connected component with its holes filled)."""
  full = metrics.resize_probability(prob, size)
  mask = metrics.binarize_prediction(full, threshold)
  if postprocess:
    mask = post.postprocess_mask(mask)
  return full, mask


def class_label_mask(probs: np.ndarray, size: tuple[int, int],
                     threshold: float) -> tuple[np.ndarray, np.ndarray]:
  """N > 1 network-size maps (S, S, N) at an image's original size (h, w): the maps resized
  bilinearly (h, w, N) and the uint8 index mask predict writes (metrics.label_prediction)."""
  full = metrics.resize_probabilities(probs, size)
  return full, metrics.label_prediction(full, threshold)


def original_size_outputs(probs: np.ndarray, size: tuple[int, int], threshold: float,
                          postprocess: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """An image's network-size maps (S, S, N) as the files predict writes hold them, at its
  original size (h, w): (the probability map, HxW float32 for one class, HxWxN for N; the uint8
  mask: 0/255 for one class, the index mask 0..N for N classes)."""
  if probs.shape[-1] > 1:
    if postprocess:
      raise UserError("postprocess keeps one lesion's largest component; the model segments "
                      f"{probs.shape[-1]} classes.")
    return class_label_mask(probs, size, threshold)
  full, mask = label_map_mask(probs[..., 0], size, threshold, postprocess)
  return full, (mask * 255).astype(np.uint8)


def _save_outputs(output: str, image_id_: str, image: _Input, prob: np.ndarray,
                  threshold: float, save_probabilities: bool, save_overlays: bool,
                  label_map: int, postprocess: bool = False) -> list[str]:
  h, w = image.size
  suffix = "" if label_map == 0 else f"_class{label_map}"
  full, mask = label_map_mask(prob, (h, w), threshold, postprocess)
  written = []
  path = os.path.join(output, f"{image_id_}_segmentation{suffix}.png")
  overlays.save_png(path, (mask * 255).astype(np.uint8))
  written.append(path)
  if save_probabilities:
    path = os.path.join(output, f"{image_id_}_probability{suffix}.png")
    overlays.save_png(path, np.round(full * 255).astype(np.uint8))
    written.append(path)
  if save_overlays:
    path = os.path.join(output, f"{image_id_}_overlay{suffix}.jpg")
    tmp = path + ".tmp.jpg"
    Image.fromarray(overlays.prediction_overlay(image.photo, mask)).save(tmp, quality=92)
    os.replace(tmp, path)
    written.append(path)
  return written


def _save_all(output: str, image_id_: str, image: _Input, probs: np.ndarray, threshold: float,
              save_probabilities: bool, save_overlays: bool,
              postprocess: bool = False) -> list[str]:
  """Writes the outputs of every label map of one image (probs: S x S x N)."""
  if probs.shape[-1] > 1:
    return _save_classes(output, image_id_, image, probs, threshold, save_probabilities,
                         save_overlays)
  return [p for c in range(probs.shape[-1])
          for p in _save_outputs(output, image_id_, image, probs[..., c], threshold,
                                 save_probabilities, save_overlays, c, postprocess)]


def _save_classes(output: str, image_id_: str, image: _Input, probs: np.ndarray,
                  threshold: float, save_probabilities: bool, save_overlays: bool) -> list[str]:
  """Several classes: the index mask, each class's probability map, the colour overlay."""
  h, w = image.size
  n = probs.shape[-1]
  full, labels = class_label_mask(probs, (h, w), threshold)
  written = [os.path.join(output, f"{image_id_}_segmentation.png")]
  overlays.save_png(written[-1], labels)
  if save_probabilities:
    for c in range(1, n + 1):
      written.append(os.path.join(output, f"{image_id_}_probability_class{c}.png"))
      overlays.save_png(written[-1], np.round(full[..., c - 1] * 255).astype(np.uint8))
  if save_overlays:
    written.append(os.path.join(output, f"{image_id_}_overlay.jpg"))
    tmp = written[-1] + ".tmp.jpg"
    Image.fromarray(overlays.class_overlay(image.photo, labels, n)).save(tmp, quality=92)
    os.replace(tmp, written[-1])
  return written


def predict_files(models: Sequence[inference.LoadedModel], inputs: Sequence[str], output: str,
                  batch_size: int = 8, tta: str | None = None,
                  save_probabilities: bool = False,
                  save_overlays: bool = False, recursive: bool = False, progress: bool = True,
                  workers: int = 4, log=print, overwrite: bool = False,
                  postprocess: bool | None = None) -> dict[str, Any]:
  """Segments every image of `inputs` into `output`; returns the report (predict_summary.json).

  With `postprocess`, each mask is its largest connected component with its holes filled
  (segan_jax.postprocess), at the original size, as `evaluate --postprocess` scores it; None
  takes the first run's config.eval.postprocess, and `tta` None its config.eval.tta (the defaults:
  as `segan-predict` segments).
  Raises OutputError before any work if the outputs would replace files (see check_output).
  """
  t0 = time.time()
  if postprocess is None:
    postprocess = bool(models[0].config.eval.postprocess)
  tta = inference.tta_mode(tta, models[0].config)
  if postprocess and models[0].num_classes > 1:
    raise UserError("--postprocess keeps one lesion's largest component; the run segments "
                    f"model.num_classes={models[0].num_classes} classes. Leave --postprocess out.")
  files, failures, skipped = find_inputs(inputs, recursive)
  predictor = inference.Predictor(models, batch_size, tta)
  threshold = predictor.threshold
  side = predictor.image_size
  check_output(output, files, predictor.num_classes, save_probabilities, save_overlays, overwrite)
  for entry in skipped:
    log(f"not read: {entry.path}: {entry.reason}")
  written_ids: dict[str, str] = {}
  written_files: list[str] = []
  num_written = 0

  bar = None
  if progress:
    from tqdm import tqdm
    bar = tqdm(total=len(files), unit="img", desc="predict", file=sys.stderr)
    log = lambda message: bar.write(message, file=sys.stderr)
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    pending_writes = []
    chunks = list(_chunks(files, batch_size))
    submit_reads = lambda i: ([pool.submit(_read, p, side, save_overlays) for p in chunks[i]]
                              if i < len(chunks) else [])
    next_reads = submit_reads(0)
    for i, chunk in enumerate(chunks):
      reads, next_reads = next_reads, submit_reads(i + 1)  # decode the next batch meanwhile
      good = []
      for path, image, error in (r.result() for r in reads):
        if error is not None:
          failures.append(Failure(path, error))
          log(f"skipping {path}: {error}")
          continue
        iid = image_id(path)
        if iid in written_ids:
          reason = f"same id {iid!r} as {written_ids[iid]}; its outputs would be overwritten"
          failures.append(Failure(path, reason))
          log(f"skipping {path}: {reason}")
          continue
        written_ids[iid] = path
        good.append((path, iid, image))
      if good:
        probs = predictor.probabilities(np.stack([g[2].small for g in good]))
        for (path, iid, image), prob in zip(good, probs):
          if not np.all(np.isfinite(prob)):
            failures.append(Failure(path, "the model's output holds NaN (a diverged model?)"))
            log(f"skipping {path}: the model's output holds NaN")
            continue
          pending_writes.append((path, pool.submit(_save_all, output, iid, image, prob, threshold,
                                                   save_probabilities, save_overlays,
                                                   postprocess)))
      done, pending_writes = _collect(pending_writes, failures, written_files, wait_all=False)
      num_written += done
      if len(pending_writes) > 2 * batch_size:  # bound the maps and photos held in memory
        done, _ = _collect(pending_writes, failures, written_files, wait_all=True)
        num_written, pending_writes = num_written + done, []
      if bar is not None:
        bar.update(len(chunk))
    done, _ = _collect(pending_writes, failures, written_files, wait_all=True)
    num_written += done
  if bar is not None:
    bar.close()

  report = {
      "models": [m.describe() for m in models], "tta": tta, "threshold": threshold,
      "postprocess": postprocess,
      "inputs": list(inputs), "output": os.path.abspath(output),
      "num_files": len(files), "num_segmented": num_written,
      "failures": [dataclasses.asdict(f) for f in failures],
      "not_read": [dataclasses.asdict(f) for f in skipped],
      # Every file predict has written here, this run and earlier ones: what --overwrite may replace.
      "written": sorted(_previous_outputs(output) | {os.path.basename(p) for p in written_files}),
      "wall_time_s": time.time() - t0,
  }
  path = os.path.join(output, SUMMARY_FILE)
  try:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
      json.dump(report, f, indent=2)
    os.replace(tmp, path)
  except OSError as e:
    for failure in failures:
      log(f"failed: {failure.path}: {failure.reason}")
    raise OutputError(f"segmented {num_written} of {len(files)} images but cannot write {path}: "
                      f"{e.strerror or e}.") from e
  return report


def _collect(futures, failures: list[Failure], written: list[str], wait_all: bool):
  """Counts finished writes (recording written files and write errors); returns (count, pending)."""
  done_count, still = 0, []
  for path, fut in futures:
    if wait_all or fut.done():
      try:
        written.extend(fut.result())
        done_count += 1
      except Exception as e:  # noqa: BLE001 - a disk error on one file must not stop the others
        failures.append(Failure(path, f"cannot write its outputs: {type(e).__name__}: {e}"))
    else:
      still.append((path, fut))
  return done_count, still


# ---------------------------------------------------------------------------------------------
# Command line.

def _define_flags():
  from absl import flags
  flags.DEFINE_multi_string("workdir", None, "Training run(s); several form an ensemble. Or "
                            "--model.")
  flags.DEFINE_multi_string("input", None, "Image file, folder or glob pattern (repeatable).")
  flags.DEFINE_string("output", None, "Folder for the masks (created).")
  flags.DEFINE_bool("tta", None, "Average the maps of the 4 flipped views. Default: the run's "
                    "config.eval.tta.")
  flags.DEFINE_bool("save_probabilities", False, "Also write <id>_probability.png (8-bit).")
  flags.DEFINE_bool("save_overlays", False, "Also write <id>_overlay.jpg (contour on the photo).")
  flags.DEFINE_bool("postprocess", None, "Keep each mask's largest connected component and fill "
                    "its holes (at the original size). Default: the run's config.eval.postprocess.")
  flags.DEFINE_bool("use_ema", True, "Use the moving average of S's weights where the run keeps one "
                    "(train.ema_decay > 0); --nouse_ema uses the raw weights.")
  flags.DEFINE_bool("recursive", False, "Search input folders recursively.")
  flags.DEFINE_integer("batch_size", 16, "Images per forward pass.")
  flags.DEFINE_integer("step", None, "Checkpoint step (single run; default: selection or latest).")
  flags.DEFINE_float("k", None, "Override k.")
  flags.DEFINE_float("threshold", None, "Override the threshold.")
  flags.DEFINE_bool("use_selection", True, "Use RUN/selection.json where present.")
  flags.DEFINE_bool("progress", True, "Show a progress bar.")
  flags.DEFINE_bool("overwrite", False, "Replace outputs an earlier predict run wrote into --output "
                    "(never other files, such as ground-truth masks).")
  host_memory.define_flags()
  flags.DEFINE_string("jax_cache_dir", compilation_cache.DEFAULT_DIR,
                      "Persistent XLA compilation cache ('' disables it).")
  from segan_jax.pretrained import tool_flags
  tool_flags.define_flags()


def main(argv):
  from absl import flags
  from segan_jax.pretrained import tool_flags
  FLAGS = flags.FLAGS
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])} (flags take the form "
                    "--name=value)")
  if tool_flags.list_models_if_asked():
    return
  tool_flags.require(["input", "output"])
  tool_flags.pretrained_model_name()  # --workdir or --model, checked before any work
  if FLAGS.batch_size < 1:
    raise UserError(f"--batch_size must be >= 1 (got {FLAGS.batch_size}).")
  host_memory.configure(FLAGS.huge_pages, FLAGS.keep_freed_memory)
  import jax  # noqa: F401 - after configure, which may restart the process
  compilation_cache.enable(FLAGS.jax_cache_dir, 1.0)
  models = tool_flags.load_models(
      lambda: inference.load_models(FLAGS.workdir, FLAGS.step, FLAGS.k, FLAGS.threshold,
                                    FLAGS.use_selection, use_ema=FLAGS.use_ema),
      FLAGS.k, FLAGS.threshold)
  for m in models:
    print(f"model {m.workdir}: step {m.step} ({m.sources['step']}), k={m.k:g} "
          f"({m.sources['k']}), threshold={m.threshold:g} ({m.sources['threshold']})")
  log = lambda message: print(message, file=sys.stderr)
  report = predict_files(models, FLAGS.input, FLAGS.output, FLAGS.batch_size,
                         inference.tta_from_flag(FLAGS.tta), FLAGS.save_probabilities,
                         FLAGS.save_overlays, FLAGS.recursive, FLAGS.progress, log=log,
                         overwrite=FLAGS.overwrite, postprocess=FLAGS.postprocess)
  print(f"Segmented {report['num_segmented']} of {report['num_files']} images into "
        f"{report['output']} in {report['wall_time_s']:.1f}s.")
  if report["failures"]:
    print(f"{len(report['failures'])} input(s) failed:", file=sys.stderr)
    for failure in report["failures"]:
      print(f"  {failure['path']}: {failure['reason']}", file=sys.stderr)
    sys.exit(1)
  if not report["num_files"]:
    raise UserError("no image files found in --input.")


def run() -> None:
  """The command line (`python -m segan_jax.predict`, the `segan-predict` console script)."""
  _define_flags()
  cli.run(main, __name__, __doc__)


if __name__ == "__main__":
  run()
