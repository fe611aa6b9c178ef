"""--model and --list_models for segan-predict, segan-evaluate and segan-export."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from segan_jax import inference
from segan_jax.errors import UserError
from segan_jax.pretrained import store

# Flags that choose among a run's checkpoints or weights: a pretrained model has one set.
RUN_ONLY_FLAGS = ("step", "use_selection", "use_ema")


def define_flags() -> None:
  """Defines --model and --list_models (the tool defines --workdir)."""
  from absl import flags
  flags.DEFINE_multi_string("model", None, "A pretrained model instead of --workdir: a shipped "
                            "name (see --list_models) or a packaged model's .msgpack or .json.")
  flags.DEFINE_bool("list_models", False, "Print the shipped pretrained models and exit.")


def list_models_if_asked(print_fn: Callable[[str], None] = print) -> bool:
  """With --list_models, prints the shipped models (or that there are none); True if it did."""
  from absl import flags
  if not flags.FLAGS.list_models:
    return False
  lines = store.listing()
  if not lines:
    print_fn(f"No pretrained models are installed with this copy of segan_jax "
             f"({store.WEIGHTS_DIR} holds none). Package a trained run with `python -m "
             "segan_jax.pretrained.package` and pass its .msgpack or .json as --model.")
  for line in lines:
    print_fn(line)
  return True


def require(names: Sequence[str]) -> None:
  """UserError naming the first of `names` that is not set (flags required unless listing)."""
  from absl import flags
  for name in names:
    if not flags.FLAGS[name].value:
      raise UserError(f"--{name} is required.")


def pretrained_model_name() -> str | None:
  """The --model value after checking the flags around it; None when --workdir is used.

  Exactly one of --workdir and --model; one --model; no flag that selects among a run's
  checkpoints or weights (RUN_ONLY_FLAGS) beside --model.
  """
  from absl import flags
  FLAGS = flags.FLAGS
  workdirs, names = FLAGS.workdir or [], FLAGS.model or []
  if workdirs and names:
    raise UserError("give --workdir (trained runs) or --model (a pretrained model), not both.")
  if not workdirs and not names:
    raise UserError("give --workdir=RUN (a trained run) or --model=NAME_OR_PATH (a pretrained "
                    "model; --list_models lists the shipped ones).")
  if not names:
    return None
  if len(names) > 1:
    raise UserError(f"--model takes one pretrained model (got {len(names)}); an ensemble is "
                    "made of trained runs, several --workdir.")
  for name in RUN_ONLY_FLAGS:
    if name in FLAGS and FLAGS[name].present:
      raise UserError(f"--{name} chooses among a trained run's checkpoints or weights; a "
                      f"pretrained model (--model) has one set. Leave --{name} out, or use "
                      "--workdir.")
  return names[0]


def load_models(load_runs: Callable[[], list[inference.LoadedModel]], k: float | None = None,
                threshold: float | None = None) -> list[inference.LoadedModel]:
  """The models of --model (with k and threshold overrides) or, without it, `load_runs()`."""
  name = pretrained_model_name()
  if name is None:
    return load_runs()
  return [store.load_model(name, k=k, threshold=threshold)]
