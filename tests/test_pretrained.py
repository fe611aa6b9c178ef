"""Pretrained models: packaging a run, loading it by path or name, masks equal to segan-predict's,
damaged files refused, the --model and --list_models flags, and the weights shipped in a wheel."""

import configparser
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest
from eval_fixtures import BATCH
from PIL import Image

from segan_jax import evaluate, inference, predict, pretrained
from segan_jax.data.arrays import resize_image
from segan_jax.errors import UserError
from segan_jax.pretrained import package, store

ROOT = Path(__file__).resolve().parents[1]
FIGURES = {"validation": {"jaccard": 0.1234, "dice": 0.2}, "images": 5}


@pytest.fixture(scope="module")
def packaged(trained_run, tmp_path_factory):
  """The tiny run packaged as `tiny` (ISIC 2017 data text, figures); read-only."""
  out = tmp_path_factory.mktemp("packaged")
  paths = package.package(trained_run, "tiny", str(out), description="A tiny test model.\nMore.",
                          figures=FIGURES, training_data=package.ISIC2017_DATA)
  return {ext: Path(p) for ext, p in paths.items()}


def _cli(module, *args, cwd=None, env=None):
  cmd = [sys.executable, "-m", module, *args]
  return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=cwd, env=env)


def _cache_flag():
  return f"--jax_cache_dir={jax.config.jax_compilation_cache_dir or ''}"


def _one_error_line(proc, *needles):
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, proc.stderr[-3000:]
  for needle in needles:
    assert needle in errors[0], errors[0]
  return errors[0]


def _photo(shape, seed):
  """A smooth photo-like image (JPEG artefacts and the reduced-scale decode matter on it)."""
  rng = np.random.default_rng(seed)
  h, w = shape[:2]
  coarse = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
  photo = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC)).astype(np.int16)
  return np.clip(photo + rng.integers(-12, 13, photo.shape), 0, 255).astype(np.uint8)


def _inputs(folder) -> dict[str, tuple[int, int]]:
  """JPEGs large enough for a reduced-scale decode and PNGs, none at the network's size."""
  os.makedirs(folder, exist_ok=True)
  sizes = {"j1.jpg": (300, 400), "j2.jpg": (520, 390), "p1.png": (77, 130), "p2.png": (200, 150)}
  for i, (name, size) in enumerate(sizes.items()):
    image = Image.fromarray(_photo(size, i))
    if name == "p2.png":
      image = image.convert("L")
    image.save(os.path.join(folder, name), **({"quality": 90} if name.endswith(".jpg") else {}))
  return sizes


def test_card_and_model_card_describe_the_run(packaged, trained_run):
  card = json.loads(packaged["json"].read_text())
  loaded = inference.load_model(trained_run)
  assert card["name"] == "tiny" and card["description"].startswith("A tiny test model.")
  assert (card["step"], card["k"], card["threshold"]) == (loaded.step, loaded.k, loaded.threshold)
  assert card["config"] == json.loads(inference.load_config(trained_run).to_json_best_effort())
  # A shipped card names no folder of the machine it was packaged on.
  assert package._without_local_paths(
      {"data": {"dir": "/home/u/isic2017/", "source": "folder", "val_ids_file": "ids.txt"},
       "n": 1}) == {"data": {"dir": "isic2017", "source": "folder", "val_ids_file": "ids.txt"},
                    "n": 1}
  assert card["eval"] == {"tta": False, "postprocess": False}
  assert (card["image_size"], card["width"], card["num_classes"]) == (128, 2, 1)
  data = packaged["msgpack"].read_bytes()
  assert card["size_bytes"] == len(data) and card["sha256"] == store.sha256_of(data)
  assert "arXiv:1710.05006" in card["training_data"] and card["figures"] == FIGURES
  assert card["license"] and "Adversarial learning" in card["citation"]
  text = packaged["md"].read_text()
  assert text == package.render_model_card(card)
  assert card["sha256"] in text and "| validation.jaccard | 0.1234 |" in text
  # Only S's inference variables, float32, and exactly the run's.
  from flax import serialization
  restored = serialization.msgpack_restore(data)
  assert sorted(restored) == ["batch_stats", "params"]
  leaves = jax.tree.leaves(restored)
  assert leaves and all(x.dtype == np.float32 for x in leaves)
  model = pretrained.load_model(str(packaged["msgpack"]))
  assert jax.tree.structure(model.variables) == jax.tree.structure(dict(loaded.variables))
  for a, b in zip(jax.tree.leaves(model.variables), jax.tree.leaves(dict(loaded.variables))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert model.describe()["workdir"] == str(packaged["msgpack"])
  assert set(model.sources.values()) == {"pretrained"}


def test_masks_equal_segan_predict_bit_for_bit(packaged, trained_run, tmp_path):
  sizes = _inputs(tmp_path / "in")
  paths = [str(tmp_path / "in" / name) for name in sizes]
  model = pretrained.load(str(packaged["json"]), batch_size=BATCH)
  assert (model.tta, model.postprocess) == ("none", False)  # the card's eval defaults
  probs = model.probabilities(paths)
  for p, (name, size) in zip(probs, sizes.items()):
    assert p.shape == size and p.dtype == np.float32, name
  # A threshold inside the tiny model's narrow range of outputs, so the masks hold both values.
  threshold = float(np.median(np.concatenate([p.ravel() for p in probs])))
  side = model.image_size
  reduced = [not np.array_equal(predict.read_network_input(p, side)[0],
                                resize_image(predict.read_image(p), side, side))
             for p in paths if p.endswith(".jpg")]
  assert any(reduced)  # the JPEGs take the reduced-scale decode, as segan-predict reads them

  variants = {"workdir": ([f"--workdir={trained_run}"], {}),
              "model": ([f"--model={packaged['msgpack']}", "--tta", "--postprocess"],
                        {"tta": True, "postprocess": True})}
  for label, (flags, options) in variants.items():
    out = tmp_path / f"out_{label}"
    proc = _cli("segan_jax.predict", *flags, f"--input={tmp_path / 'in'}", f"--output={out}",
                f"--batch_size={BATCH}", f"--threshold={threshold!r}", "--noprogress",
                _cache_flag())
    assert proc.returncode == 0, proc.stderr[-3000:]
    source = str(packaged["msgpack"]) if label == "model" else trained_run
    masks = pretrained.load(source, batch_size=BATCH, threshold=threshold,
                            **options).predict(paths)
    for mask, (name, size) in zip(masks, sizes.items()):
      written = np.asarray(Image.open(out / f"{os.path.splitext(name)[0]}_segmentation.png"))
      assert mask.shape == size and mask.dtype == np.uint8, (label, name)
      np.testing.assert_array_equal(mask, written, err_msg=f"{label} {name}")
    values = np.unique(np.concatenate([m.ravel() for m in masks]))
    assert values.tolist() == [0, 255], label
  summary = json.loads((tmp_path / "out_model" / "predict_summary.json").read_text())
  assert summary["models"][0]["workdir"] == str(packaged["msgpack"])
  assert (summary["tta"], summary["postprocess"]) == ("flips", True)


def test_pil_images_and_arrays_keep_their_original_size(packaged):
  model = pretrained.load(str(packaged["msgpack"]), batch_size=BATCH)
  rgb = _photo((61, 93), 7)
  as_pil, as_gray = Image.fromarray(rgb), Image.fromarray(rgb).convert("L")
  masks = model.predict([as_pil, rgb, as_gray])
  assert [m.shape for m in masks] == [(61, 93)] * 3
  assert all(m.dtype == np.uint8 and set(np.unique(m)) <= {0, 255} for m in masks)
  np.testing.assert_array_equal(masks[0], masks[1])  # the same pixels, however they come
  single = model.probabilities(rgb)
  assert isinstance(single, np.ndarray) and single.shape == (61, 93)
  assert single.dtype == np.float32 and 0 <= single.min() <= single.max() <= 1
  expected, _ = predict.original_size_outputs(
      model.predictor.probabilities(resize_image(rgb, 128, 128)[None])[0], (61, 93),
      model.threshold)
  np.testing.assert_array_equal(single, expected)
  assert model.predict(as_pil).shape == (61, 93)
  with pytest.raises(ValueError, match="HxWx3 uint8"):
    model.predict(rgb.astype(np.float32) / 255)
  with pytest.raises(TypeError):
    model.predict(42)


def test_a_damaged_model_is_refused(packaged, tmp_path):
  damaged = tmp_path / "damaged"
  damaged.mkdir()
  for path in packaged.values():
    shutil.copy(path, damaged / path.name)
  weights = damaged / "tiny.msgpack"
  data = bytearray(weights.read_bytes())
  data[len(data) // 2] ^= 0xFF
  weights.write_bytes(bytes(data))
  with pytest.raises(pretrained.PretrainedError, match="checksum") as info:
    pretrained.load_model(str(weights))
  assert "damaged" in str(info.value) and "reinstall segan_jax" in str(info.value)
  proc = _cli("segan_jax.predict", f"--model={weights}", f"--input={tmp_path}",
              f"--output={tmp_path / 'out'}")
  _one_error_line(proc, "checksum", "tiny.msgpack")
  assert not (tmp_path / "out").exists()

  weights.write_bytes(bytes(data[:-10]))
  with pytest.raises(pretrained.PretrainedError, match="damaged: .* bytes where its card says"):
    pretrained.load_model(str(damaged / "tiny.json"))
  weights.unlink()
  with pytest.raises(pretrained.PretrainedError, match="missing"):
    pretrained.load_model(str(damaged / "tiny.json"))
  with pytest.raises(pretrained.PretrainedError, match="missing"):
    pretrained.load_model(str(tmp_path / "nowhere" / "tiny.msgpack"))


def test_weights_that_do_not_fit_the_config_are_refused(packaged, tmp_path):
  shutil.copy(packaged["msgpack"], tmp_path / "tiny.msgpack")
  card = json.loads(packaged["json"].read_text())
  card["config"]["model"]["width"] = 4
  (tmp_path / "tiny.json").write_text(json.dumps(card))
  with pytest.raises(pretrained.PretrainedError, match="do not fit the model") as info:
    pretrained.load_model(str(tmp_path / "tiny.json"))
  assert "model.width=4" in str(info.value) and "shape" in str(info.value)


def test_names_resolve_in_the_weights_folder(packaged, tmp_path, monkeypatch):
  shipped = tmp_path / "weights"
  shipped.mkdir()
  monkeypatch.setattr(store, "WEIGHTS_DIR", str(shipped))
  assert pretrained.available() == []
  with pytest.raises(pretrained.PretrainedError, match="no pretrained models are installed"):
    pretrained.load_model("tiny")
  for path in packaged.values():
    shutil.copy(path, shipped / path.name)
  assert pretrained.available() == ["tiny"]
  with pytest.raises(pretrained.PretrainedError, match=r"unknown pretrained model 'tinny' "
                                                       r"\(available: tiny\)"):
    pretrained.load_model("tinny")
  assert pretrained.load_model("tiny").workdir == str(shipped / "tiny.msgpack")
  lines = store.listing()
  assert len(lines) == 1 and lines[0].startswith("tiny: A tiny test model. (step 4")
  assert "validation.jaccard=0.1234" in lines[0] and "images=5" in lines[0]
  with pytest.raises(pretrained.PretrainedError, match="invalid model name"):
    package.package(str(tmp_path), "../x", str(tmp_path))


def test_list_models_prints_the_shipped_models_and_exits_0(tmp_path):
  proc = _cli("segan_jax.predict", "--list_models", cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  names = pretrained.available()
  if names:
    assert [line.split(":")[0] for line in proc.stdout.splitlines()] == names
  else:
    assert "No pretrained models are installed" in proc.stdout


@pytest.mark.parametrize("module, args, needles", [
    ("segan_jax.evaluate", ["--model=M.json", "--split=test", "--output=o"], ["--data_dir"]),
    ("segan_jax.evaluate", ["--model=M.json", "--search", "--data_dir=d", "--output=o"],
     ["--search"]),
    ("segan_jax.export", ["--model=a", "--model=b", "--output=o"], ["one pretrained model"]),
    ("segan_jax.predict", ["--model=a", "--workdir=b", "--input=i", "--output=o"], ["not both"]),
    ("segan_jax.predict", ["--model=M.json", "--step=2", "--input=i", "--output=o"], ["--step"]),
])
def test_model_flag_misuse_is_one_error_line(module, args, needles, tmp_path):
  _one_error_line(_cli(module, *args, cwd=tmp_path), *needles)


def test_evaluate_scores_a_pretrained_model_as_its_run(packaged, trained_run, tmp_path):
  options = dict(split="validation", tta="none", postprocess=False, batch_size=BATCH,
                 num_worst=0, num_examples=0, log=lambda *_: None)
  by_run = evaluate.evaluate([trained_run], output=str(tmp_path / "run"), **options)
  model = pretrained.load_model(str(packaged["json"]))
  by_model = evaluate.evaluate([], models=[model], data_source="synthetic",
                               output=str(tmp_path / "model"), **options)
  assert by_model["variants"]["model"]["summary"] == by_run["variants"]["model"]["summary"]
  assert by_model["models"][0]["workdir"] == str(packaged["msgpack"])
  with pytest.raises(evaluate.EvaluationError, match="--data_dir"):
    evaluate.evaluate([], models=[model], output=str(tmp_path / "x"), **options)
  with pytest.raises(evaluate.EvaluationError, match="--output"):
    evaluate.evaluate([], models=[model], data_source="synthetic", **options)


def test_packager_refuses_to_overwrite(packaged, trained_run, tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "tiny.json").write_text("the user's own file")
  proc = _cli("segan_jax.pretrained.package", f"--workdir={trained_run}", "--name=tiny",
              f"--output={out}", cwd=tmp_path)
  _one_error_line(proc, "--overwrite", "tiny.json")
  assert sorted(os.listdir(out)) == ["tiny.json"]
  assert (out / "tiny.json").read_text() == "the user's own file"
  with pytest.raises(UserError, match="--overwrite"):
    package.package(trained_run, "tiny", str(out))
  paths = package.package(trained_run, "tiny", str(out), overwrite=True)
  assert sorted(os.listdir(out)) == ["tiny.json", "tiny.md", "tiny.msgpack"]  # no temporaries
  assert Path(paths["msgpack"]).read_bytes() == packaged["msgpack"].read_bytes()
  assert pretrained.load_model(paths["json"]).step == 4


def _package_data() -> list[str]:
  cfg = configparser.ConfigParser()
  cfg.read(ROOT / "setup.cfg")
  return cfg.get("options.package_data", "segan_jax.pretrained", fallback="").split()


def test_setup_cfg_ships_the_weights_folder_and_shipped_models_load():
  patterns = _package_data()
  for ext in ("msgpack", "json", "md"):
    assert f"weights/*.{ext}" in patterns
  assert store.WEIGHTS_DIR == str(ROOT / "segan_jax" / "pretrained" / "weights")
  for name in pretrained.available():  # every shipped model is intact and fits its config
    model = pretrained.load_model(name)
    assert model.step > 0 and model.sources["step"] == "pretrained"


def _can_build_wheels() -> bool:
  import setuptools
  major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
  return importlib.util.find_spec("wheel") is not None or (major, minor) >= (70, 1)


@pytest.mark.skipif(not _can_build_wheels(), reason="building a wheel with setuptools < 70.1 "
                    "needs the `wheel` package")
def test_a_wheel_ships_the_weights_and_loads_them(packaged, tmp_path):
  # The repository's package tree, with the tiny model as a shipped one (the checkout's own
  # weights folder is left alone).
  src = tmp_path / "src"
  src.mkdir()
  for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE", "CITATION.cff"):
    shutil.copy(ROOT / name, src / name)
  shutil.copytree(ROOT / "segan_jax", src / "segan_jax",
                  ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
  weights = src / "segan_jax" / "pretrained" / "weights"
  weights.mkdir(exist_ok=True)
  for path in packaged.values():
    shutil.copy(path, weights / path.name)
  dist = tmp_path / "dist"
  proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                         "--no-index", "-q", "-w", str(dist), str(src)],
                        capture_output=True, text=True, timeout=300, cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (wheel,) = dist.glob("segan_jax-*.whl")
  with zipfile.ZipFile(wheel) as zf:
    names = set(zf.namelist())
  shipped = {f"segan_jax/pretrained/weights/{name}.{ext}" for ext in ("msgpack", "json", "md")
             for name in ["tiny", *pretrained.available()]}
  assert shipped <= names
  assert "segan_jax/pretrained/__init__.py" in names
  assert sum(n.startswith("segan_jax/pretrained/weights/") for n in names) == len(shipped)

  target = tmp_path / "installed"
  proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                         "--target", str(target), str(wheel)],
                        capture_output=True, text=True, timeout=300, cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  image = tmp_path / "photo.png"
  Image.fromarray(_photo((90, 70), 3)).save(image)
  code = ("import json, sys, numpy as np, segan_jax\n"
          "from segan_jax import pretrained\n"
          f"model = pretrained.load('tiny', batch_size={BATCH})\n"
          f"np.save(sys.argv[1], model.predict({str(image)!r}))\n"
          "print(json.dumps({'file': segan_jax.__file__, 'available': pretrained.available(),"
          " 'weights': model.model.workdir}))\n")
  run_dir = tmp_path / "elsewhere"
  run_dir.mkdir()
  env = dict(os.environ, PYTHONPATH=str(target))
  proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "mask.npy")],
                        capture_output=True, text=True, timeout=600, cwd=run_dir, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  assert Path(report["file"]).resolve().is_relative_to(target.resolve())
  assert report["available"] == sorted(["tiny", *pretrained.available()])
  assert Path(report["weights"]).resolve() == (target / "segan_jax" / "pretrained" / "weights"
                                               / "tiny.msgpack").resolve()
  expected = pretrained.load(str(packaged["msgpack"]), batch_size=BATCH).predict(str(image))
  np.testing.assert_array_equal(np.load(tmp_path / "mask.npy"), expected)

  listed = _cli("segan_jax.predict", "--list_models", cwd=run_dir, env=env)
  assert listed.returncode == 0, listed.stderr[-3000:]
  assert "tiny: A tiny test model. (step 4, width 2, 128x128" in listed.stdout


@pytest.mark.parametrize("name", pretrained.available())
def test_the_shipped_models_are_intact_and_segment(name, tmp_path):
  """Each model shipped in the package passes its checksum, fits its card's config, and gives a
  mask of the image's own size for a photo and the same mask for that photo's file."""
  card = store.read_card(store.card_path(name))
  model = pretrained.load(name)
  assert (model.model.step, model.threshold) == (card["step"], card["threshold"])
  assert (model.tta, model.postprocess) == ("flips" if card["eval"]["tta"] else "none",
                                            card["eval"]["postprocess"])
  photo = _photo((150, 200), 9)
  Image.fromarray(photo).save(tmp_path / "photo.png")
  mask = model.predict(photo)
  assert mask.shape == (150, 200) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
  np.testing.assert_array_equal(model.predict(str(tmp_path / "photo.png")), mask)
