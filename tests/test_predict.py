"""predict: original-size masks with ISIC names, any image mode, bad files reported, selection."""

import csv
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from eval_fixtures import BATCH
from PIL import Image

from segan_jax import evaluate, inference, metrics, overlays, predict
from segan_jax.data import decode
from segan_jax.data.arrays import resize_image


def _make_inputs(folder):
  """Readable images of several sizes and modes, a corrupt and a truncated one, and a text file."""
  rng = np.random.default_rng(0)
  os.makedirs(folder, exist_ok=True)
  sizes = {}

  def save(name, array, **kwargs):
    Image.fromarray(array, **kwargs).save(os.path.join(folder, name))
    sizes[os.path.splitext(name)[0]] = array.shape[:2]

  save("ISIC_0000001.jpg", rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
  save("gray.png", rng.integers(0, 256, (77, 130), dtype=np.uint8))
  save("rgba.png", rng.integers(0, 256, (200, 150, 4), dtype=np.uint8))
  save("deep16.png", rng.integers(0, 65536, (90, 61), dtype=np.uint16))
  save("tiny.png", rng.integers(0, 256, (5, 7, 3), dtype=np.uint8))
  with open(os.path.join(folder, "corrupt.jpg"), "wb") as f:
    f.write(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 4)
  good = open(os.path.join(folder, "ISIC_0000001.jpg"), "rb").read()
  with open(os.path.join(folder, "truncated.jpg"), "wb") as f:
    f.write(good[:len(good) // 3])
  with open(os.path.join(folder, "notes.txt"), "w") as f:
    f.write("not an image; ignored because of its extension")
  return sizes


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "I;16", "I", "F", "1", "CMYK"])
def test_rgb8_handles_every_mode(mode):
  base = Image.fromarray(np.arange(0, 240, 2, dtype=np.uint8).reshape(10, 12))
  if mode == "I;16":
    image = Image.fromarray((np.asarray(base).astype(np.uint16) * 257))
    assert image.mode.startswith("I;16")
  elif mode == "F":
    image = Image.fromarray(np.asarray(base).astype(np.float32) / 255.0)
  else:
    image = base.convert(mode)
  rgb, _ = decode.rgb8(image)
  assert rgb.shape == (10, 12, 3) and rgb.dtype == np.uint8
  if mode in ("L", "LA", "I;16", "I", "F", "P", "RGBA"):  # the gray levels survive
    np.testing.assert_allclose(rgb[..., 0].astype(int), np.asarray(base).astype(int), atol=1)


def test_read_image_reports_corrupt_files(tmp_path):
  _make_inputs(tmp_path)
  with pytest.raises(predict.ImageReadError, match="corrupt"):
    predict.read_image(str(tmp_path / "corrupt.jpg"))
  (tmp_path / "text.png").write_text("hello")
  with pytest.raises(predict.ImageReadError, match="cannot read it as an image"):
    predict.read_image(str(tmp_path / "text.png"))
  with pytest.raises(predict.ImageReadError, match="truncated"):
    predict.read_image(str(tmp_path / "truncated.jpg"))
  assert predict.read_image(str(tmp_path / "deep16.png")).shape == (90, 61, 3)


def test_predict_writes_original_size_masks_and_reports_failures(trained_run, tmp_path):
  sizes = _make_inputs(tmp_path / "in")
  out = tmp_path / "out"
  model = inference.load_model(trained_run)
  report = predict.predict_files([model], [str(tmp_path / "in"), str(tmp_path / "missing.png")],
                                 str(out), batch_size=BATCH, save_probabilities=True,
                                 save_overlays=True, progress=False, log=lambda *_: None)
  assert report["num_files"] == 7 and report["num_segmented"] == 5
  failed = {os.path.basename(f["path"]): f["reason"] for f in report["failures"]}
  assert set(failed) == {"corrupt.jpg", "truncated.jpg", "missing.png"}
  assert "no such file" in failed["missing.png"]
  for iid, (h, w) in sizes.items():
    mask = Image.open(out / f"{iid}_segmentation.png")
    assert mask.mode == "L" and mask.size == (w, h)
    assert set(np.unique(np.asarray(mask))) <= {0, 255}
    assert Image.open(out / f"{iid}_probability.png").size == (w, h)
    assert Image.open(out / f"{iid}_overlay.jpg").size == (w, h)
  assert not any(name.startswith(("corrupt", "truncated", "notes")) for name in os.listdir(out))
  assert json.load(open(out / "predict_summary.json"))["num_segmented"] == 5

  # The mask is the evaluation protocol's binarisation of the resized map.
  small, size = predict.read_network_input(str(tmp_path / "in" / "ISIC_0000001.jpg"), 128)
  prob = inference.Predictor([model], BATCH).probabilities(small[None])
  expected = metrics.resize_probability(prob[0, ..., 0], size) > model.threshold
  got = np.asarray(Image.open(out / "ISIC_0000001_segmentation.png")) == 255
  np.testing.assert_array_equal(got, expected)


def _jpeg_folder(root, rng) -> dict[str, tuple[int, int]]:
  """Photo-like JPEGs large enough for a reduced-scale decode, with masks, in a folder layout."""
  sizes = {"j1": (300, 400), "j2": (520, 390), "j3": (768, 1024)}
  for name, (h, w) in sizes.items():
    coarse = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    photo = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC)).astype(np.int16)
    photo = np.clip(photo + rng.integers(-12, 13, photo.shape), 0, 255).astype(np.uint8)
    mask = np.where(rng.random((h // 8, w // 8)) > 0.5, 255, 0).astype(np.uint8)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "masks"), exist_ok=True)
    Image.fromarray(photo).save(os.path.join(root, "images", f"{name}.jpg"), quality=90)
    Image.fromarray(mask).resize((w, h), Image.NEAREST).save(
        os.path.join(root, "masks", f"{name}_segmentation.png"))
  return sizes


def test_predict_writes_the_masks_evaluate_scores_on_jpeg_inputs(trained_run, tmp_path):
  """On JPEGs, predict's network inputs are evaluate's (one decode path, a reduced-scale JPEG
  decode then a resize), its masks are evaluate's thresholded maps bit for bit, and evaluate's
  scores are those of the masks predict writes. A full decode would give other inputs."""
  data = tmp_path / "data"
  sizes = _jpeg_folder(str(data), np.random.default_rng(21))
  model = inference.load_model(trained_run)
  side = model.image_size
  config = evaluate.apply_data_overrides(model.config, "folder", str(data))
  eval_set = evaluate.load_eval_set(config, "all", side)
  assert sorted(eval_set.ids) == sorted(sizes)
  full_decodes_differ = []
  for image_id, image in zip(eval_set.ids, eval_set.images):
    path = str(data / "images" / f"{image_id}.jpg")
    small, size = predict.read_network_input(path, side)
    np.testing.assert_array_equal(small, image)
    assert size == sizes[image_id]
    full_decodes_differ.append(not np.array_equal(
        resize_image(predict.read_image(path), side, side), image))
  assert any(full_decodes_differ)

  out = tmp_path / "out"
  report = predict.predict_files([model], [str(data / "images")], str(out), batch_size=BATCH,
                                 tta="none", postprocess=False, progress=False,
                                 log=lambda *_: None)
  assert report["num_segmented"] == len(sizes)
  scored = evaluate.evaluate([trained_run], split="all", data_source="folder",
                             data_dir=str(data), output=str(tmp_path / "scored"), tta="none",
                             postprocess=False, batch_size=BATCH, num_worst=0, num_examples=0,
                             log=lambda *_: None)
  assert scored["data"]["num_images"] == len(sizes)
  rows = {r["id"]: r for r in _read_csv(tmp_path / "scored" / "per_image.csv")}
  probs = inference.Predictor([model], BATCH).probabilities(eval_set.images)
  for image_id, prob in zip(eval_set.ids, probs):
    written = np.asarray(Image.open(out / f"{image_id}_segmentation.png")) == 255
    expected = metrics.binarize_prediction(
        metrics.resize_probability(prob[..., 0], sizes[image_id]), model.threshold)
    np.testing.assert_array_equal(written, expected)
    truth = np.asarray(Image.open(data / "masks" / f"{image_id}_segmentation.png"))
    for name, value in metrics.image_scores(written, metrics.binarize_truth(truth)).items():
      assert float(rows[image_id][name]) == pytest.approx(value, abs=1e-12), (image_id, name)


def _read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_duplicate_ids_are_not_overwritten(trained_run, tmp_path):
  rng = np.random.default_rng(3)
  for ext in ("jpg", "png"):
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / f"a.{ext}")
  report = predict.predict_files([inference.load_model(trained_run)], [str(tmp_path)],
                                 str(tmp_path / "out"), batch_size=BATCH, progress=False,
                                 log=lambda *_: None)
  assert report["num_segmented"] == 1
  (failure,) = report["failures"]
  assert failure["path"].endswith("a.png") and "same id" in failure["reason"]


def test_predict_uses_the_stored_selection(run_copy, tmp_path):
  Image.fromarray(np.random.default_rng(5).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(
      tmp_path / "x.png")
  inference.write_selection(run_copy, {"step": 2, "k": 0.5, "threshold": 0.45})
  (model,) = inference.load_models([run_copy])
  report = predict.predict_files([model], [str(tmp_path / "x.png")], str(tmp_path / "out"),
                                 batch_size=BATCH, save_probabilities=True, progress=False)
  (described,) = report["models"]
  assert (described["step"], described["k"], report["threshold"]) == (2, 0.5, 0.45)
  explicit = inference.load_model(run_copy, step=2, k=0.5, threshold=0.45, use_selection=False)
  small, _ = predict.read_network_input(str(tmp_path / "x.png"), 128)
  prob = inference.Predictor([explicit], BATCH).probabilities(small[None])
  full = metrics.resize_probability(prob[0, ..., 0], (60, 80))
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "x_segmentation.png")),
                                np.where(full > 0.45, 255, 0).astype(np.uint8))


def test_cli_exits_nonzero_listing_failures_but_writes_the_rest(trained_run, tmp_path):
  sizes = _make_inputs(tmp_path / "in")
  out = tmp_path / "out"
  cmd = [sys.executable, "-m", "segan_jax.predict", f"--workdir={trained_run}",
         f"--input={tmp_path / 'in'}", f"--output={out}", f"--batch_size={BATCH}", "--tta",
         f"--jax_cache_dir={jax.config.jax_compilation_cache_dir or ''}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "2 input(s) failed" in proc.stderr and "corrupt.jpg" in proc.stderr
  assert "truncated.jpg" in proc.stderr and "Segmented 5 of 7 images" in proc.stdout
  assert sorted(os.listdir(out)) == sorted([f"{i}_segmentation.png" for i in sizes]
                                           + ["predict_summary.json"])


def _one_image(path, seed=0, shape=(40, 50, 3)):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)).save(path)


def _files(folder):
  return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


def test_predict_overwrites_only_its_own_outputs_and_only_when_asked(trained_run, tmp_path):
  model = inference.load_model(trained_run)
  _one_image(str(tmp_path / "in" / "a.png"))
  out = str(tmp_path / "out")
  run = lambda **kw: predict.predict_files([model], [str(tmp_path / "in")], out,
                                           batch_size=BATCH, progress=False,
                                           log=lambda *_: None, **kw)
  run()
  first = _files(out)
  with pytest.raises(predict.OutputError, match="--overwrite"):
    run()
  with pytest.raises(predict.OutputError, match="a_probability.png|a_segmentation.png"):
    run(save_probabilities=True)  # the new probability file alone would not clash, the mask does
  assert _files(out) == first
  report = run(overwrite=True, save_probabilities=True)
  assert report["num_segmented"] == 1
  assert sorted(report["written"]) == ["a_probability.png", "a_segmentation.png"]


def test_predict_never_replaces_ground_truth_or_inputs(trained_run, tmp_path):
  model = inference.load_model(trained_run)
  folder = tmp_path / "isic"
  _one_image(str(folder / "ISIC_0000001.jpg"))
  truth = np.zeros((40, 50), np.uint8)
  truth[10:30, 10:40] = 255
  Image.fromarray(truth).save(folder / "ISIC_0000001_segmentation.png")
  before = _files(folder)
  for overwrite in (False, True):
    with pytest.raises(predict.OutputError, match="did not write .*ground-truth"):
      predict.predict_files([model], [str(folder)], str(folder), batch_size=BATCH,
                            progress=False, log=lambda *_: None, overwrite=overwrite)
  # An input named like an output: predicting b.png would write b_segmentation.png over it.
  _one_image(str(tmp_path / "in2" / "b.png"))
  _one_image(str(tmp_path / "in2" / "b_segmentation.png"), seed=1)
  with pytest.raises(predict.OutputError, match="replace input images"):
    predict.predict_files([model], [str(tmp_path / "in2" / "b.png"),
                                    str(tmp_path / "in2" / "b_segmentation.png")],
                          str(tmp_path / "in2"), batch_size=BATCH, progress=False,
                          log=lambda *_: None, overwrite=True)
  assert _files(folder) == before


def test_unwritable_output_is_found_before_any_work(trained_run, tmp_path):
  model = inference.load_model(trained_run)
  _one_image(str(tmp_path / "in" / "a.png"))
  (tmp_path / "a_file").write_text("not a folder")
  calls = []
  real = inference.Predictor.probabilities
  inference.Predictor.probabilities = lambda self, *a, **k: calls.append(1) or real(self, *a, **k)
  try:
    with pytest.raises(predict.OutputError, match="cannot write into --output"):
      predict.predict_files([model], [str(tmp_path / "in")], str(tmp_path / "a_file" / "out"),
                            batch_size=BATCH, progress=False, log=lambda *_: None)
  finally:
    inference.Predictor.probabilities = real
  assert not calls


def test_entries_not_read_are_named(trained_run, tmp_path):
  folder = tmp_path / "in"
  _one_image(str(folder / "a.png"))
  _one_image(str(folder / "anim.gif"))
  (folder / "notes.txt").write_text("text")
  (folder / "sub").mkdir()
  _one_image(str(folder / "sub" / "c.png"))
  os.symlink(str(tmp_path / "gone.png"), str(folder / "broken.png"))
  logged = []
  report = predict.predict_files([inference.load_model(trained_run)], [str(folder)],
                                 str(tmp_path / "out"), batch_size=BATCH, progress=False,
                                 log=logged.append)
  assert report["num_segmented"] == 2  # a.png and anim.gif
  not_read = {os.path.basename(e["path"]): e["reason"] for e in report["not_read"]}
  assert set(not_read) == {"notes.txt", "sub", "broken.png"}
  assert "--recursive" in not_read["sub"] and "broken link" in not_read["broken.png"]
  assert "not an image extension (.txt)" in not_read["notes.txt"]
  assert sum("not read: " in line for line in logged) == 3


def test_cli_refuses_to_overwrite_with_one_line_and_exit_2(trained_run, tmp_path):
  _one_image(str(tmp_path / "in" / "a.png"))
  out = tmp_path / "out"
  out.mkdir()
  (out / "a_segmentation.png").write_bytes(b"the user's own file")
  cmd = [sys.executable, "-m", "segan_jax.predict", f"--workdir={trained_run}",
         f"--input={tmp_path / 'in'}", f"--output={out}", f"--batch_size={BATCH}", "--overwrite",
         f"--jax_cache_dir={jax.config.jax_compilation_cache_dir or ''}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 2, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and "a_segmentation.png" in errors[0] and "Traceback" not in proc.stderr
  assert (out / "a_segmentation.png").read_bytes() == b"the user's own file"


@pytest.mark.parametrize("tool, flag", [("predict", "--threshold=nan"), ("evaluate", "--threshold=-1"),
                                        ("predict", "--k=0")])
def test_cli_refuses_an_unusable_threshold_or_k_with_one_line_and_exit_2(trained_run, tmp_path,
                                                                       tool, flag):
  """A threshold outside (0, 1) or a k outside (0, inf) would give empty or full masks and
  scores that look like results: refused before any work."""
  _one_image(str(tmp_path / "in" / "a.png"))
  out = tmp_path / "out"
  io = ([f"--input={tmp_path / 'in'}", f"--output={out}"] if tool == "predict" else
        [f"--output={out}", "--num_worst=0", "--num_examples=0"])
  proc = subprocess.run([sys.executable, "-m", f"segan_jax.{tool}", f"--workdir={trained_run}",
                         *io, flag, f"--jax_cache_dir={jax.config.jax_compilation_cache_dir or ''}"],
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 2, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
  name = flag[2:].split("=")[0]
  assert len(errors) == 1 and f"--{name}" in errors[0] and "Traceback" not in proc.stderr
  assert not out.exists()


def test_contours_and_overlay():
  mask = np.zeros((9, 9), bool)
  mask[2:7, 2:7] = True
  edge = overlays.contour(mask)
  assert edge.sum() == 16 and not edge[3:6, 3:6].any() and (edge <= mask).all()
  assert overlays.contour(mask, thickness=2).sum() == 24
  image = np.zeros((9, 9, 3), np.uint8)
  drawn = overlays.prediction_overlay(image, mask, thickness=1)
  assert (drawn[edge] == overlays.PREDICTION_COLOR).all() and not drawn[~edge].any()
