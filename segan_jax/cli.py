"""Runs a command-line tool so that every user error is one `error: ...` line and exit status 2."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from segan_jax.errors import UserError, exit_with


def config_error_message(error: BaseException) -> str:
  """The readable part of ml_collections' errors for a misspelt field or unloadable config."""
  text = str(error).strip().strip("'\"").replace("\\n", " ").replace("\\'", "'")
  text = " ".join(text.split())
  cause = error.__cause__ or error.__context__
  if isinstance(error, OSError) and cause is not None and "earlier failure" in text:
    text = " ".join(str(cause).split())
  return text


CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
QUIET_LOGGERS = ("jax._src.xla_bridge", "matplotlib", "PIL", "tensorflow")


def resolve_config_path(value: str) -> str:
  """A --config value as a file path: a path that exists, else a config of segan_jax/configs
  named by its name ('isic2017'), file name ('isic2017.py') or repository path
  ('segan_jax/configs/isic2017.py'), from any working directory. ':args' suffixes are kept."""
  path, sep, rest = value.partition(":")
  if not path or os.path.isfile(path):
    return value
  name = os.path.basename(path)
  for candidate in (name, name + ".py"):
    full = os.path.join(CONFIG_DIR, candidate)
    if os.path.isfile(full) and (os.sep not in path or path.replace(os.sep, "/").endswith(
        "segan_jax/configs/" + candidate)):
      return full + sep + rest
  return value


def available_configs() -> list[str]:
  return sorted(f[:-3] for f in os.listdir(CONFIG_DIR) if f.endswith(".py") and f[0] != "_")


def _resolve_config_args(argv: list[str]) -> list[str]:
  out = []
  for arg in argv:
    for prefix in ("--config=", "-config="):
      if arg.startswith(prefix):
        arg = prefix + resolve_config_path(arg[len(prefix):])
    out.append(arg)
  return out


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing whose failures (unknown flag or config field, bad value) are one line.

  --config may name a config of segan_jax/configs by name (resolve_config_path).
  """
  from absl import flags
  try:
    return flags.FLAGS(_resolve_config_args(argv))
  except flags.Error as e:
    exit_with(UserError(f"{e}. Pass --helpshort to see the flags."))
  except (AttributeError, KeyError) as e:  # ml_collections: an override of an unknown field
    exit_with(UserError(f"unknown config field in the command line: {config_error_message(e)}"))
  except (OSError, ImportError, SyntaxError, TypeError, ValueError) as e:  # the --config file
    exit_with(UserError(f"cannot load the config: {config_error_message(e)} (a file path, or "
                        f"one of {', '.join(available_configs())})"))
  raise AssertionError("unreachable")


def _console_script_help(name: str | None, doc: str | None) -> None:
  """Makes `segan-X --help` show what `python -m segan_jax.X --help` shows.

  absl's --help prints the docstring of the __main__ module and the flags __main__ defined; under
  a console script __main__ is pip's wrapper, which has neither.
  """
  from absl import flags
  if not name or name == "__main__":
    return
  wrapper = sys.modules.get("__main__")
  if wrapper is not None and doc and not getattr(wrapper, "__doc__", None):
    wrapper.__doc__ = doc
  for flag in flags.FLAGS.get_flags_for_module(name):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def run(main: Callable[[list[str]], None], name: str | None = None,
        doc: str | None = None) -> None:
  """absl's app.run(main) with one-line errors: bad flags and UserError exit 2 with a message.

  `name` and `doc` (the tool module's __name__ and docstring) give --help its text and flags also
  when the tool runs as a console script.
  """
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow (tf.data only) start-up chatter
  import logging as py_logging
  from absl import app
  for logger in QUIET_LOGGERS:  # libraries' start-up notices (no TPU found, font caches, ...)
    py_logging.getLogger(logger).setLevel(py_logging.WARNING)
  _console_script_help(name, doc)

  def guarded(argv):
    try:
      main(argv)
    except UserError as e:
      exit_with(e)

  try:
    app.run(guarded, flags_parser=parse_flags)
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    sys.exit(130)
