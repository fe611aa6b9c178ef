"""SIGTERM as a request to stop training cleanly: the loop saves a checkpoint at the end of the
step it is in and returns, so a scheduler's stop (SLURM, Kubernetes, `timeout`, a preemptible
VM) loses no finished step; rerunning the same command resumes there."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

# The exit status of a process ended by SIGTERM; a stopped run exits with it so that schedulers
# and scripts see an unfinished run.
EXIT_STOPPED = 128 + signal.SIGTERM


class StopRequest:
  """Whether SIGTERM arrived since the context was entered (`signal_name` names it)."""

  def __init__(self) -> None:
    self.signal_name: str | None = None

  @property
  def requested(self) -> bool:
    return self.signal_name is not None


@contextlib.contextmanager
def on_sigterm(enabled: bool = True) -> Iterator[StopRequest]:
  """Within the context SIGTERM sets the returned request instead of ending the process; the
  previous handler is restored on exit. Signals can only be caught on the main thread: elsewhere
  (or with enabled=False) the request stays unset and SIGTERM keeps its usual effect."""
  request = StopRequest()
  if not enabled or threading.current_thread() is not threading.main_thread():
    yield request
    return

  def handle(signum, frame):  # noqa: ARG001 - the signal module's signature
    request.signal_name = signal.Signals(signum).name

  previous = signal.signal(signal.SIGTERM, handle)
  try:
    yield request
  finally:
    signal.signal(signal.SIGTERM, previous)
