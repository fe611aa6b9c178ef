"""A training run's folder: one run at a time (a lock), and a config that never changes under it.

The lock is an advisory `flock` on WORKDIR/.lock, held for the whole run. The kernel releases it
when the process ends in any way (kill -9 included), so a crashed run never leaves it stuck; the
file itself (pid, host, start time) only serves the message a second run prints.

config.json describes the checkpoints beside it. A rerun with a config that differs in anything
that shapes training (seed, learning rate, loss, data, ...) would silently continue those
checkpoints under another recipe, so it stops with the list of differences, unless the user asks
for the change (`--allow_config_change`); the previous config.json is then kept in
config_history/. Run-length and bookkeeping fields (RESUMABLE_FIELDS) may change freely.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from typing import Any

import ml_collections

from segan_jax.errors import UserError

LOCK_FILE = ".lock"
CONFIG_FILE = "config.json"
HISTORY_DIR = "config_history"
# Fields a rerun may change without asking: how long to train, how often to log, validate and
# checkpoint, how many checkpoints to keep, how to evaluate and decode, which convolution code.
RESUMABLE_FIELDS = frozenset({
    "train.num_steps", "train.num_epochs", "train.log_every", "train.eval_every", "train.checkpoint_every",
    "train.keep_checkpoints", "eval.batch_size", "eval.num_panels", "data.decode_workers",
    "model.conv_impl", "eval.postprocess", "eval.tta",
})


class WorkdirBusyError(UserError):
  """Another training run holds the workdir."""


class ConfigChangedError(UserError):
  """A rerun's config differs from the config.json of the checkpoints it would continue."""


class WorkdirLock:
  """Exclusive lock of a workdir for one training run (context manager; released on exit)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd: int | None = None

  def acquire(self) -> None:
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_holder(fd)
      os.close(fd)
      raise WorkdirBusyError(
          f"{os.path.dirname(self.path)} is in use by another training run ({holder}). Wait for "
          "it to finish, stop it, or use another --workdir.") from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": _now()}).encode())
    self._fd = fd

  def release(self) -> None:
    if self._fd is not None:
      os.close(self._fd)  # closing the descriptor drops the flock
      self._fd = None

  def __enter__(self) -> "WorkdirLock":
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def _read_holder(fd: int) -> str:
  try:
    holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    return (f"pid {holder.get('pid')} on {holder.get('host')}, started "
            f"{holder.get('started')}")
  except (OSError, ValueError):
    return "its details are unreadable"


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def flatten_config(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  """A nested config dict (ConfigDict.to_dict() or config.json) as {"section.field": value}."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten_config(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def config_as_json(config: ml_collections.ConfigDict) -> str:
  return config.to_json_best_effort(indent=2)


def read_config_json(workdir: str) -> dict[str, Any] | None:
  """The workdir's config.json as a dict; None when absent; UserError when unreadable."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f"{path} cannot be read ({e}); it describes the checkpoints beside it. "
                    "Restore it, or use a new --workdir.") from e


def config_changes(old: dict[str, Any], config: ml_collections.ConfigDict
                   ) -> list[tuple[str, Any, Any]]:
  """(field, old value, new value) for every field that differs, RESUMABLE_FIELDS excluded.

  A field that only one side has counts as a change unless the new side holds the default value
  (configs written before a field existed).
  """
  from segan_jax.configs import default
  new = flatten_config(json.loads(config_as_json(config)))
  before = flatten_config(old)
  defaults = flatten_config(json.loads(config_as_json(default.get_config())))
  changes = []
  for key in sorted(set(new) | set(before)):
    if key in RESUMABLE_FIELDS:
      continue
    if key not in before:
      if key in defaults and new[key] == defaults[key]:
        continue
      changes.append((key, "(absent)", new[key]))
    elif key not in new:
      changes.append((key, before[key], "(absent)"))
    elif before[key] != new[key]:
      changes.append((key, before[key], new[key]))
  return changes


def check_config(workdir: str, config: ml_collections.ConfigDict, has_checkpoints: bool,
                 allow_change: bool) -> list[tuple[str, Any, Any]]:
  """Raises ConfigChangedError when the rerun's config differs from the checkpoints' config.json.

  Returns the changes (empty when none, or when there is nothing to continue).
  """
  old = read_config_json(workdir)
  if old is None or not has_checkpoints:
    return []
  changes = config_changes(old, config)
  if changes and not allow_change:
    listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changes[:8])
    more = f" and {len(changes) - 8} more" if len(changes) > 8 else ""
    raise ConfigChangedError(
        f"{workdir} holds checkpoints trained with another config ({listed}{more}). Use a new "
        "--workdir, rerun with the config in its config.json, or pass --allow_config_change to "
        "continue these checkpoints with the new values.")
  return changes


def write_config(workdir: str, config: ml_collections.ConfigDict, resumed_step: int,
                 changes: list[tuple[str, Any, Any]]) -> None:
  """Writes config.json atomically; a changed config's predecessor goes to config_history/."""
  path = os.path.join(workdir, CONFIG_FILE)
  if changes and os.path.exists(path):
    history = os.path.join(workdir, HISTORY_DIR)
    os.makedirs(history, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    os.replace(path, os.path.join(history, f"config_until_step{resumed_step}_{stamp}.json"))
  write_text(path, config_as_json(config))


def write_text(path: str, text: str) -> None:
  """Writes atomically: a reader sees the old file or the new one, never half of one."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
