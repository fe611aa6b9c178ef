"""The base of every error a user can fix: the command-line tools print it as one line, exit 2."""

import sys


class UserError(Exception):
  """A problem with the user's input, files or options; its message says what to do."""


EXIT_USER_ERROR = 2


def exit_with(error: BaseException) -> None:
  """Prints `error` as one `error: ...` line on stderr and exits with status 2."""
  message = " ".join(str(error).split()) or type(error).__name__
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(EXIT_USER_ERROR)
