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
  from absl import app
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
