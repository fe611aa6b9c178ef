"""The pretrained-model format: a weights file, its machine-readable card and its model card.

A model NAME is three files side by side:
  NAME.msgpack  S's inference variables ({"params", "batch_stats"}: the moving average where the
                run keeps one), float32 numpy arrays serialised by flax.serialization's msgpack
                (no pickle: loading runs no code);
  NAME.json     the card: the run's full config, step, k, threshold, the eval defaults (tta,
                postprocess), the sha256 and size of NAME.msgpack, training data, licence,
                citation and the figures the packager measured;
  NAME.md       the human-readable model card, generated from NAME.json.
The shipped models live in segan_jax/pretrained/weights/ (installed with the package). Loading
checks the size and sha256 of the weights before deserialising them, then that they fit the model
the card's config describes.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from typing import Any

import numpy as np

from segan_jax import inference
from segan_jax.errors import UserError

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
FORMAT = "segan_jax pretrained segmentor"
FORMAT_VERSION = 1
CARD_FIELDS = ("format", "format_version", "name", "weights_file", "sha256", "size_bytes",
               "config", "step", "k", "threshold", "eval", "image_size", "width", "num_classes")
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class PretrainedError(UserError, ValueError):
  """A pretrained model cannot be found, is damaged, or does not fit its card."""


def check_name(name: str) -> str:
  """`name` if it is a usable model name (letters, digits, '.', '_', '-'); else PretrainedError."""
  if (not name or not set(name) <= NAME_CHARS or name[0] in "._-"
      or name.endswith((".json", ".msgpack", ".md"))):
    raise PretrainedError(f"invalid model name {name!r}: use letters, digits, '.', '_' and '-', "
                          "starting with a letter or digit, without a file extension.")
  return name


def available() -> list[str]:
  """The names of the models shipped in segan_jax/pretrained/weights/ (one per NAME.json)."""
  return sorted(os.path.basename(p)[:-len(".json")]
                for p in glob.glob(os.path.join(WEIGHTS_DIR, "*.json")))


def card_path(name_or_path: str) -> str:
  """The card (.json) of a shipped model name or of a packaged model's .msgpack or .json path
  (or that path without its extension)."""
  value = os.fspath(name_or_path)
  if os.path.isdir(value):
    raise PretrainedError(f"{value} is a folder; pass a packaged model's .msgpack or .json file, "
                          "or a shipped model name (a training run folder: use --workdir or "
                          "segan_jax.pretrained.load).")
  stem, ext = os.path.splitext(value)
  if ext in (".json", ".msgpack"):
    path = stem + ".json"
    if not os.path.isfile(path):
      what = "its card " if ext == ".msgpack" else ""
      raise PretrainedError(f"pretrained model file missing: {what}{path} does not exist (a "
                            "packaged model is NAME.msgpack beside NAME.json).")
    return path
  if os.path.isfile(value + ".json"):  # a packaged model's path without the extension
    return value + ".json"
  if os.sep in value or (os.altsep and os.altsep in value) or os.path.isfile(value):
    raise PretrainedError(f"{value} is not a pretrained model: give a shipped model name or a "
                          "packaged model's .msgpack or .json file.")
  path = os.path.join(WEIGHTS_DIR, value + ".json")
  if not os.path.isfile(path):
    names = available()
    listed = (f"available: {', '.join(names)}" if names else
              "no pretrained models are installed with this copy of segan_jax")
    raise PretrainedError(f"unknown pretrained model {value!r} ({listed}); or give the path of a "
                          "packaged model's .msgpack or .json file.")
  return path


def read_card(path: str) -> dict[str, Any]:
  """A card's contents, checked for the fields loading needs; PretrainedError otherwise."""
  try:
    with open(path) as f:
      card = json.load(f)
  except OSError as e:
    raise PretrainedError(f"cannot read the pretrained model card {path}: "
                          f"{e.strerror or e}.") from e
  except ValueError as e:
    raise PretrainedError(f"{path} is damaged (not valid JSON: {e}); reinstall segan_jax, or "
                          "package the model again.") from e
  if not isinstance(card, dict) or card.get("format") != FORMAT:
    raise PretrainedError(f"{path} is not a segan_jax pretrained model card.")
  if not isinstance(card.get("format_version"), int) or card["format_version"] > FORMAT_VERSION:
    raise PretrainedError(f"{path} has format version {card.get('format_version')!r}; this "
                          f"segan_jax reads version {FORMAT_VERSION} or older: upgrade segan_jax.")
  missing = [f for f in CARD_FIELDS if f not in card]
  if missing:
    raise PretrainedError(f"{path} is damaged: its card lacks {', '.join(missing)}; reinstall "
                          "segan_jax, or package the model again.")
  return card


def sha256_of(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def read_weights(card: dict[str, Any], path: str) -> bytes:
  """The verified bytes of a card's weights file (`path` is the card); PretrainedError on a
  missing file or a size or checksum that differs from the card's."""
  weights = os.path.join(os.path.dirname(path), os.path.basename(str(card["weights_file"])))
  if not os.path.isfile(weights):
    raise PretrainedError(f"pretrained model file missing: {weights} (the weights of {path}); "
                          "reinstall segan_jax, or package the model again.")
  size = os.path.getsize(weights)
  if size != int(card["size_bytes"]):
    raise PretrainedError(f"{weights} is damaged: {size} bytes where its card says "
                          f"{card['size_bytes']} (checksum not verified); reinstall segan_jax, "
                          "or package the model again.")
  with open(weights, "rb") as f:
    data = f.read()
  digest = sha256_of(data)
  if digest != card["sha256"]:
    raise PretrainedError(f"{weights} is damaged: its sha256 checksum {digest[:16]}... differs "
                          f"from its card's {str(card['sha256'])[:16]}...; reinstall segan_jax, "
                          "or package the model again.")
  return data


def to_numpy_tree(variables: Any) -> dict[str, Any]:
  """A variables tree (dicts, FrozenDicts, jax arrays) as nested dicts of float32 numpy arrays."""
  if hasattr(variables, "items"):
    return {str(key): to_numpy_tree(value) for key, value in variables.items()}
  import jax
  return np.asarray(jax.device_get(variables)).astype(np.float32)


def serialize(variables: Any) -> bytes:
  """S's variables as msgpack bytes (flax.serialization), every array float32."""
  from flax import serialization
  return serialization.msgpack_serialize(to_numpy_tree(variables))


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flat(value, f"{prefix}/{key}" if prefix else str(key)))
    return out
  return {prefix: tree}


def _unflat(flat: dict[str, Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    node = tree
    *parents, leaf = path.split("/")
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return tree


def fit_variables(restored: Any, config, segmentor, where: str) -> dict[str, Any]:
  """The restored variables as jax arrays of the dtypes the config's segmentor declares;
  PretrainedError when their names or shapes differ from its variables."""
  import jax
  import jax.numpy as jnp
  side = int(config.data.image_size)
  abstract = jax.eval_shape(lambda: segmentor.init(
      jax.random.key(0), jnp.zeros((1, side, side, 3), jnp.float32), train=False))
  expected = _flat(_as_dict(abstract))
  got = _flat(restored) if isinstance(restored, dict) else {}
  missing = sorted(set(expected) - set(got))
  extra = sorted(set(got) - set(expected))
  wrong = sorted(k for k in set(expected) & set(got)
                 if tuple(np.shape(got[k])) != tuple(expected[k].shape))
  if missing or extra or wrong:
    parts = []
    if missing:
      parts.append(f"{len(missing)} variable(s) missing (e.g. {missing[0]})")
    if extra:
      parts.append(f"{len(extra)} unknown (e.g. {extra[0]})")
    if wrong:
      k = wrong[0]
      parts.append(f"{len(wrong)} of another shape (e.g. {k}: {tuple(np.shape(got[k]))} where the "
                   f"model has {tuple(expected[k].shape)})")
    m = config.model
    raise PretrainedError(f"the weights in {where} do not fit the model of its card's config "
                          f"(model.width={m.width}, model.num_classes={m.num_classes}): "
                          f"{'; '.join(parts)}. Package the model again from its run.")
  bad = [k for k, v in got.items() if not np.all(np.isfinite(np.asarray(v, np.float32)))]
  if bad:
    raise PretrainedError(f"the weights in {where} hold NaN or infinity (e.g. {bad[0]}); package "
                          "the model again from another checkpoint.")
  return _unflat({k: jnp.asarray(np.asarray(got[k]), expected[k].dtype) for k in expected})


def _as_dict(tree: Any) -> Any:
  if hasattr(tree, "items"):
    return {str(k): _as_dict(v) for k, v in tree.items()}
  return tree


def load_model(name_or_path: str, k: float | None = None,
               threshold: float | None = None) -> inference.LoadedModel:
  """A shipped model (by name) or a packaged one (its .msgpack or .json path) as a LoadedModel.

  The weights' size and sha256 are checked against the card before they are deserialised; k and
  threshold default to the card's. Raises PretrainedError with what to do.
  """
  from flax import serialization
  from segan_jax import train  # deferred: train imports the summary writers

  path = card_path(name_or_path)
  card = read_card(path)
  data = read_weights(card, path)
  weights_path = os.path.join(os.path.dirname(path), os.path.basename(str(card["weights_file"])))
  try:
    restored = serialization.msgpack_restore(data)
  except Exception as e:  # noqa: BLE001 - msgpack raises several kinds on bad data
    raise PretrainedError(f"{weights_path} cannot be deserialised ({type(e).__name__}: {e}); "
                          "reinstall segan_jax, or package the model again.") from e
  config = inference.config_from_dict(json.loads(json.dumps(card["config"])))
  config.model.conv_impl = "xla"  # as inference.load_model: the parameters do not depend on it
  for key in ("tta", "postprocess"):
    if key in card["eval"]:
      config.eval[key] = bool(card["eval"][key])
  segmentor, _ = train.build_models(config)
  variables = fit_variables(restored, config, segmentor, weights_path)
  sources = {"step": "pretrained", "k": "pretrained", "threshold": "pretrained"}
  if k is not None:
    sources["k"] = "argument"
  if threshold is not None:
    sources["threshold"] = "argument"
  k_value = float(card["k"] if k is None else k)
  t_value = float(card["threshold"] if threshold is None else threshold)
  try:
    inference.check_k_threshold(k_value, t_value, sources)
  except inference.RunError as e:
    raise PretrainedError(str(e)) from e
  return inference.LoadedModel(
      workdir=weights_path, config=config, segmentor=segmentor, variables=variables,
      step=int(card["step"]), k=k_value, threshold=t_value, sources=sources,
      checkpoint_extras={"pretrained": card["name"], "card": os.path.abspath(path)},
      weights=str(card.get("weights", "raw")))


def describe_figures(figures: Any, limit: int = 6) -> str:
  """A one-line summary of a card's figures ('test.jaccard=0.795, ...')."""
  if not isinstance(figures, dict) or not figures:
    return "no figures given"
  items = []
  for key, value in _flat(_as_dict(figures)).items():
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
      continue
    items.append(f"{key.replace('/', '.')}={value:.4g}" if isinstance(value, (int, float))
                 else f"{key.replace('/', '.')}={value}")
  more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
  return ", ".join(items[:limit]) + more if items else "no figures given"


def listing() -> list[str]:
  """One line per shipped model: name, step, one-line description and figures."""
  lines = []
  for name in available():
    path = os.path.join(WEIGHTS_DIR, name + ".json")
    try:
      card = read_card(path)
    except PretrainedError as e:
      lines.append(f"{name}: unreadable card ({e})")
      continue
    description = (str(card.get("description") or "").strip().splitlines() or ["-"])[0]
    lines.append(f"{name}: {description} (step {card['step']}, width {card['width']}, "
                 f"{card['image_size']}x{card['image_size']}, k={card['k']:g}, "
                 f"threshold={card['threshold']:g}; {describe_figures(card.get('figures'))})")
  return lines
