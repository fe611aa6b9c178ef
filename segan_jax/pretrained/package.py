"""Packages a trained run as a pretrained model: NAME.msgpack, NAME.json (card) and NAME.md.

  python -m segan_jax.pretrained.package --workdir=RUN --name=NAME --output=DIR [--step=N]
      [--description=TEXT] [--figures=FIGURES.json] [--data=isic2017 | --data_card=FILE]
      [--overwrite]

The run is loaded as segan-predict loads it (segan_jax.inference.load_model: the step, k and
threshold of RUN/selection.json where `segan-evaluate --search` stored them, else the latest
checkpoint's; the moving average of S's weights where the run keeps one). Only S's inference
variables are kept, as float32 arrays serialised with flax.serialization's msgpack. The card holds
the run's full config, the eval defaults (tta, postprocess), the weights' sha256 and size, the
training data and licence, the citation, and the figures of --figures (a JSON object, as measured
by the packager; nothing is measured here). Existing files are never replaced without
--overwrite; the three files are written to temporary names first, then moved into place.
Copy them into segan_jax/pretrained/weights/ to ship them with the package.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

from segan_jax import inference
from segan_jax.errors import UserError
from segan_jax.pretrained import store

ISIC2017_DATA = (
    "ISIC 2017 Challenge Part 1 training set (2000 dermoscopic images with lesion masks), "
    "International Skin Imaging Collaboration; images under the ISIC Archive's terms (mostly "
    "CC-0 or CC-BY-NC); cite Codella et al., 'Skin Lesion Analysis Toward Melanoma Detection: A "
    "Challenge at the 2017 ISBI', arXiv:1710.05006")
DATA_CARDS = {"isic2017": ISIC2017_DATA}
DEFAULT_LICENSE = ("The weights: Apache-2.0, as segan_jax. The training data keeps its own terms "
                   "(see the training data).")
CITATION = ("Y. Xue, T. Xu, X. Huang, 'Adversarial learning with multi-scale loss for skin lesion "
            "segmentation', ISBI 2018, pp. 859-863 (the method); segan_jax (the implementation, "
            "see its CITATION.cff).")


def _run_data_text(config) -> str:
  data = config.data
  where = f", data.dir={os.path.basename(os.path.normpath(data.dir))!r}" if data.dir else ""
  return (f"Not described by the packager; the run's config reads data.source={data.source!r}"
          f"{where}, data.image_size={data.image_size}.")


def _without_local_paths(tree: Any) -> Any:
  """The config with every absolute path (data.dir, data.val_ids_file ...) cut to its last part:
  a shipped card names no folder of the machine it was packaged on."""
  if isinstance(tree, dict):
    return {key: _without_local_paths(value) for key, value in tree.items()}
  if isinstance(tree, str) and os.path.isabs(tree):
    return os.path.basename(os.path.normpath(tree))
  return tree


def build_card(model: inference.LoadedModel, name: str, weights: bytes, description: str = "",
               figures: dict[str, Any] | None = None, training_data: str | None = None,
               license_text: str = DEFAULT_LICENSE, run_config: dict[str, Any] | None = None
               ) -> dict[str, Any]:
  """The card (NAME.json) of a loaded run's weights (`weights`: the serialised bytes)."""
  from segan_jax import __version__
  config = _without_local_paths(run_config if run_config is not None else json.loads(
      model.config.to_json_best_effort()))
  return {
      "format": store.FORMAT, "format_version": store.FORMAT_VERSION,
      "name": store.check_name(name),
      "description": description.strip(),
      "weights_file": f"{name}.msgpack", "sha256": store.sha256_of(weights),
      "size_bytes": len(weights),
      "weights": model.weights,
      "step": model.step, "k": model.k, "threshold": model.threshold,
      "eval": {"tta": bool(model.config.eval.tta),
               "postprocess": bool(model.config.eval.postprocess)},
      "image_size": model.image_size, "width": int(model.config.model.width),
      "num_classes": model.num_classes,
      "training_data": training_data or _run_data_text(model.config),
      "license": license_text,
      "citation": CITATION,
      "figures": dict(figures or {}),
      "source": {"run": os.path.basename(os.path.normpath(os.path.abspath(model.workdir))),
                 "step": model.sources.get("step"), "k": model.sources.get("k"),
                 "threshold": model.sources.get("threshold")},
      "segan_jax_version": __version__,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "config": config,
  }


def render_model_card(card: dict[str, Any]) -> str:
  """NAME.md: the human-readable model card of a card (NAME.json)."""
  name = card["name"]
  side = card["image_size"]
  classes = card["num_classes"]
  output = ("a 0/255 lesion mask" if classes == 1 else
            f"an index mask (0 background, 1..{classes} the classes)")
  lines = [
      f"# {name}", "",
      card.get("description") or "A SegAN segmentor trained with segan_jax.", "",
      "## Use", "",
      "```python",
      "from segan_jax import pretrained",
      f"model = pretrained.load({name!r})",
      "masks = model.predict(['photo.jpg'])  # uint8 masks at each image's original size",
      "```", "",
      "```",
      f"segan-predict --model={name} --input=photos --output=masks",
      f"segan-evaluate --model={name} --data_dir=DATA --split=test --output=scores",
      "```", "",
      "## Model", "",
      "| | |", "|---|---|",
      f"| architecture | SegAN segmentor S, width {card['width']} |",
      f"| input | {side}x{side} RGB (any image is resized to it; masks come back at its size) |",
      f"| output | {output} |",
      f"| training step | {card['step']} |",
      "| weights | " + ("the moving average of S's weights" if card.get("weights") == "ema"
                         else "S's raw weights (the run kept no moving average)") + " |",
      f"| k (adaptive logistic) | {card['k']:g} |",
      f"| threshold | {card['threshold']:g} |",
      f"| test-time flips (default) | {'on' if card['eval']['tta'] else 'off'} |",
      f"| post-processing (default) | {'on' if card['eval']['postprocess'] else 'off'} |",
      "",
      "## Training data", "",
      card.get("training_data") or "-", "",
      "## Figures", "",
  ]
  figures = store._flat(store._as_dict(card.get("figures") or {}))
  if figures:
    lines += ["| figure | value |", "|---|---|"]
    lines += [f"| {key.replace('/', '.')} | {value} |" for key, value in figures.items()]
  else:
    lines.append("No figures were given by the packager.")
  lines += [
      "", "## Licence", "", card.get("license") or "-", "",
      "## Citation", "", card.get("citation") or "-", "",
      "## Files", "",
      f"- `{card['weights_file']}`: {card['size_bytes']} bytes, sha256 `{card['sha256']}` "
      "(checked before every load)",
      f"- `{name}.json`: the machine-readable card, with the run's full config",
      "",
      f"Packaged by segan_jax {card.get('segan_jax_version', '?')} on "
      f"{card.get('created', '?')} from run `{card.get('source', {}).get('run', '?')}`.", "",
  ]
  return "\n".join(lines)


def read_figures(path: str | None) -> dict[str, Any]:
  """The JSON object of a --figures file ({} for None)."""
  if not path:
    return {}
  try:
    with open(path) as f:
      figures = json.load(f)
  except OSError as e:
    raise UserError(f"cannot read --figures={path}: {e.strerror or e}.") from e
  except ValueError as e:
    raise UserError(f"--figures={path} is not valid JSON: {e}.") from e
  if not isinstance(figures, dict):
    raise UserError(f"--figures={path} must hold a JSON object (e.g. {{\"test\": {{\"jaccard\": "
                    "0.79}}}), not a list or a number.")
  return figures


def data_text(data: str | None, data_card: str | None) -> str | None:
  """The training-data text of --data (a known data set) or --data_card (a text file)."""
  if data and data_card:
    raise UserError("give --data or --data_card, not both.")
  if data:
    if data not in DATA_CARDS:
      raise UserError(f"unknown --data={data!r}; known: {', '.join(sorted(DATA_CARDS))} (or "
                      "describe the data in a text file given as --data_card).")
    return DATA_CARDS[data]
  if data_card:
    try:
      with open(data_card) as f:
        text = f.read().strip()
    except OSError as e:
      raise UserError(f"cannot read --data_card={data_card}: {e.strerror or e}.") from e
    if not text:
      raise UserError(f"--data_card={data_card} is empty.")
    return text
  return None


def package(workdir: str, name: str, output: str, step: int | None = None,
            description: str = "", figures: dict[str, Any] | None = None,
            training_data: str | None = None, license_text: str = DEFAULT_LICENSE,
            overwrite: bool = False) -> dict[str, str]:
  """Writes output/NAME.msgpack, NAME.json and NAME.md from a run; returns their paths."""
  store.check_name(name)
  paths = {ext: os.path.join(output, f"{name}.{ext}") for ext in ("msgpack", "json", "md")}
  existing = [p for p in paths.values() if os.path.lexists(p)]
  if existing and not overwrite:
    raise UserError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace, or "
                    "choose another --name or --output.")
  model = inference.load_model(workdir, step)
  run_config = json.loads(inference.load_config(workdir).to_json_best_effort())
  weights = store.serialize(model.variables)
  card = build_card(model, name, weights, description, figures, training_data, license_text,
                    run_config)
  contents = {"msgpack": weights,
              "json": (json.dumps(card, indent=2) + "\n").encode(),
              "md": render_model_card(card).encode()}
  try:
    os.makedirs(output, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create --output={output}: {e.strerror or e}.") from e
  temporary = {ext: f"{path}.tmp{os.getpid()}" for ext, path in paths.items()}
  try:
    for ext, tmp in temporary.items():
      with open(tmp, "wb") as f:
        f.write(contents[ext])
    for ext in ("msgpack", "json", "md"):  # the weights first: a card never names missing ones
      os.replace(temporary[ext], paths[ext])
  except OSError as e:
    raise UserError(f"cannot write into --output={output}: {e.strerror or e}.") from e
  finally:
    for tmp in temporary.values():
      if os.path.exists(tmp):
        os.remove(tmp)
  return paths


# ---------------------------------------------------------------------------------------------
# Command line.

def _define_flags():
  from absl import flags
  flags.DEFINE_string("workdir", None, "The trained run to package.")
  flags.DEFINE_string("name", None, "The model's name (letters, digits, '.', '_', '-').")
  flags.DEFINE_string("output", None, "Folder for NAME.msgpack, NAME.json and NAME.md (created).")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: RUN/selection.json's, else the "
                       "latest).")
  flags.DEFINE_string("description", "", "What the model is, for the card (first line: the "
                      "one-line summary --list_models prints).")
  flags.DEFINE_string("figures", None, "A JSON file with the measured figures to put in the card.")
  flags.DEFINE_enum("data", None, sorted(DATA_CARDS), "A known training set whose description, "
                    "terms and citation go into the card.")
  flags.DEFINE_string("data_card", None, "A text file describing the training data and its terms.")
  flags.DEFINE_string("license", DEFAULT_LICENSE, "The licence statement of the card.")
  flags.DEFINE_bool("overwrite", False, "Replace existing files of the same name in --output.")


def main(argv):
  from absl import flags
  FLAGS = flags.FLAGS
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])} (flags take the form "
                    "--name=value)")
  for required in ("workdir", "name", "output"):
    if not FLAGS[required].value:
      raise UserError(f"--{required} is required.")
  figures = read_figures(FLAGS.figures)
  training_data = data_text(FLAGS.data, FLAGS.data_card)
  paths = package(FLAGS.workdir, FLAGS.name, FLAGS.output, FLAGS.step, FLAGS.description,
                  figures, training_data, FLAGS.license, FLAGS.overwrite)
  with open(paths["json"]) as f:
    card = json.load(f)
  print(f"Packaged {FLAGS.workdir} (step {card['step']}, {card['weights']} weights, "
        f"k={card['k']:g}, threshold={card['threshold']:g}) as {card['name']}: "
        f"{paths['msgpack']} ({card['size_bytes']} bytes, sha256 {card['sha256'][:16]}...), "
        f"{paths['json']}, {paths['md']}")


def run() -> None:
  """The command line: `python -m segan_jax.pretrained.package`."""
  from segan_jax import cli
  _define_flags()
  cli.run(main, __name__, __doc__)


if __name__ == "__main__":
  run()
