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


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing whose failures (unknown flag or config field, bad value) are one line."""
  from absl import flags
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    exit_with(UserError(f"{e}. Pass --helpshort to see the flags."))
  except (AttributeError, KeyError) as e:  # ml_collections: an override of an unknown field
    exit_with(UserError(f"unknown config field in the command line: {config_error_message(e)}"))
  except (OSError, ImportError, SyntaxError, TypeError, ValueError) as e:  # the --config file
    exit_with(UserError(f"cannot load the config: {config_error_message(e)}"))
  raise AssertionError("unreachable")


def run(main: Callable[[list[str]], None], name: str | None = None,
        doc: str | None = None) -> None:
  """absl's app.run(main) with one-line errors: bad flags and UserError exit 2 with a message.

  `doc` (the tool module's docstring) becomes the --help text also when the tool runs as a console
  script, whose __main__ module is pip's wrapper; `name` is the module's __name__ (unused by absl).
  """
  del name
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow (tf.data only) start-up chatter
  from absl import app
  if doc:
    main_module = sys.modules.get("__main__")
    if main_module is not None and not (getattr(main_module, "__doc__", None) or "").strip():
      main_module.__doc__ = doc

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
