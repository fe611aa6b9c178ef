"""Orbax checkpoints of both players: atomic, verified finite, rotated safely, restored with fallback.

Orbax writes each step into a temporary folder and renames it when complete, so a crash never
leaves a half-written step. On top of that this module
- refuses to save a state holding NaN or infinity (a diverged run keeps its last good checkpoints);
- rotates old steps itself: a step is first renamed out of `checkpoints/` and only then deleted, so
  a kill during rotation never leaves a half-deleted step that still counts as a checkpoint; the
  step chosen by `segan_jax.evaluate --search` (selection.json) is never rotated away;
- restores the newest step that reads back completely and finitely; a newer step that does not
  (a file deleted, truncated or corrupted) is moved to `corrupt_checkpoints/` with a warning
  naming it, instead of stopping the run or being deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging

from segan_jax.errors import UserError
from segan_jax.train_state import TrainState

SELECTION_FILE = "selection.json"
CORRUPT_DIR = "corrupt_checkpoints"
_TRASH_DIR = ".deleting_checkpoints"


@contextlib.contextmanager
def quiet_orbax():
  """Orbax logs every file operation at INFO through absl; keep the console for progress lines."""
  verbosity = logging.get_verbosity()
  logging.set_verbosity(min(verbosity, logging.WARNING))  # absl: lower is quieter
  try:
    yield
  finally:
    logging.set_verbosity(verbosity)


class CheckpointError(UserError, RuntimeError):
  """A checkpoint in the workdir cannot be saved or restored into the configured model."""


def make_manager(workdir: str, keep: int | None = None) -> ocp.CheckpointManager:
  """A CheckpointManager over workdir/checkpoints; `keep` is applied by `save`, not by orbax."""
  del keep  # rotation is done by `rotate`, which renames before deleting
  options = ocp.CheckpointManagerOptions(max_to_keep=None, create=True)
  workdir = os.path.abspath(workdir)
  _empty_trash(workdir)
  with quiet_orbax():
    return ocp.CheckpointManager(os.path.join(workdir, "checkpoints"), options=options)


def all_steps(manager: ocp.CheckpointManager) -> list[int]:
  """The manager's steps as on disk now, ascending."""
  with quiet_orbax():
    manager.reload()
    return sorted(int(s) for s in manager.all_steps())


def workdir_of(manager: ocp.CheckpointManager) -> str:
  return os.path.dirname(os.fspath(manager.directory))


def nonfinite_parts(**states: TrainState) -> list[str]:
  """Names ('segmentor.params', 'critic.opt_state', ...) of the parts holding NaN or infinity."""
  parts = {f"{name}.{part}": getattr(state, part) for name, state in states.items()
           for part in ("params", "batch_stats", "opt_state", "ema")
           if getattr(state, part, None) is not None}
  if bool(_all_finite(_inexact_leaves(parts))):  # one reduction in the common case
    return []
  return [name for name, tree in parts.items()
          if _inexact_leaves(tree) and not bool(_all_finite(_inexact_leaves(tree)))]


def _inexact_leaves(tree) -> list:
  return [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]


@jax.jit
def _all_finite(leaves):
  if not leaves:
    return jnp.array(True)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def protected_steps(workdir: str) -> set[int]:
  """Steps that rotation keeps: the step stored in selection.json by `evaluate --search`."""
  path = os.path.join(workdir, SELECTION_FILE)
  try:
    with open(path) as f:
      step = json.load(f).get("step")
  except (OSError, ValueError, AttributeError):
    return set()
  return {int(step)} if isinstance(step, int) else set()


def save(manager: ocp.CheckpointManager, step: int, segmentor: TrainState, critic: TrainState,
         extra: dict[str, Any] | None = None, keep: int | None = None) -> None:
  """Saves both players (and a JSON dict of extra facts) at `step`, then rotates to `keep` steps.

  Raises CheckpointError, writing nothing, when either state holds NaN or infinity.
  """
  bad = nonfinite_parts(segmentor=segmentor, critic=critic)
  if bad:
    raise CheckpointError(f"Not saving step {step}: {', '.join(bad)} hold NaN or infinity "
                          "(training diverged); the earlier checkpoints are kept.")
  args = {"segmentor": ocp.args.StandardSave(segmentor),
          "critic": ocp.args.StandardSave(critic),
          "extra": ocp.args.JsonSave(extra or {})}
  with quiet_orbax():
    manager.save(step, args=ocp.args.Composite(**args), force=True)
    manager.wait_until_finished()
  if keep is not None:
    rotate(manager, keep)


def rotate(manager: ocp.CheckpointManager, keep: int) -> list[int]:
  """Deletes all but the newest `keep` steps and the protected ones; returns the deleted steps.

  Each step is renamed out of the checkpoint folder before its files are deleted, so an
  interrupted rotation leaves only whole steps behind (the leftovers are removed at next start).
  """
  workdir = workdir_of(manager)
  steps = all_steps(manager)
  keep_set = set(steps[-keep:]) | protected_steps(workdir)
  doomed = [s for s in steps if s not in keep_set]
  if not doomed or jax.process_index() != 0:
    return []
  trash = os.path.join(workdir, _TRASH_DIR)
  os.makedirs(trash, exist_ok=True)
  for step in doomed:
    target = os.path.join(trash, f"{step}-{time.time_ns()}")
    os.replace(os.path.join(os.fspath(manager.directory), str(step)), target)
  with quiet_orbax():
    manager.reload()
  _empty_trash(workdir)
  return doomed


def _empty_trash(workdir: str) -> None:
  shutil.rmtree(os.path.join(workdir, _TRASH_DIR), ignore_errors=True)


def _abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _restore_step(manager: ocp.CheckpointManager, step: int, segmentor: TrainState,
                  critic: TrainState) -> tuple[TrainState, TrainState, dict[str, Any]]:
  with quiet_orbax():
    restored = manager.restore(step, args=ocp.args.Composite(
        segmentor=ocp.args.StandardRestore(_abstract(segmentor)),
        critic=ocp.args.StandardRestore(_abstract(critic)),
        extra=ocp.args.JsonRestore()))
  seg, cri = restored["segmentor"], restored["critic"]
  bad = nonfinite_parts(segmentor=seg, critic=cri)
  if bad:
    raise ValueError(f"{', '.join(bad)} hold NaN or infinity")
  return seg, cri, dict(restored["extra"] or {})


def _reason(error: BaseException) -> str:
  text = " ".join(str(error).split())
  text = text if len(text) <= 300 else text[:297] + "..."
  return f"{type(error).__name__}: {text}" if text else type(error).__name__


def quarantine(manager: ocp.CheckpointManager, step: int) -> str:
  """Moves a bad step to workdir/corrupt_checkpoints/ (kept for inspection); returns its path."""
  workdir = workdir_of(manager)
  target_dir = os.path.join(workdir, CORRUPT_DIR)
  os.makedirs(target_dir, exist_ok=True)
  target = os.path.join(target_dir, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
  os.replace(os.path.join(os.fspath(manager.directory), str(step)), target)
  with quiet_orbax():
    manager.reload()
  return target


def restore(manager: ocp.CheckpointManager, segmentor: TrainState, critic: TrainState,
            step: int | None = None
            ) -> tuple[TrainState, TrainState, dict[str, Any], int] | None:
  """Restores the given step, or the newest intact one, into the structure of the given states.

  Returns None when there is no checkpoint. Without `step`, a newer step that cannot be read
  back completely and finitely is moved to corrupt_checkpoints/ (with a warning naming it) and
  the next older one is tried. Raises CheckpointError when no step can be restored.
  """
  if step is not None:
    try:
      return (*_restore_step(manager, step, segmentor, critic), step)
    except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise many kinds
      raise CheckpointError(f"Cannot restore {manager.directory}/{step}: {_reason(e)}") from e
  steps = all_steps(manager)[::-1]
  if not steps:
    return None
  failures: list[tuple[int, str]] = []
  for candidate in steps:
    try:
      seg, cri, extra = _restore_step(manager, candidate, segmentor, critic)
    except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise many kinds
      failures.append((candidate, _reason(e)))
      continue
    for bad_step, reason in failures:
      where = quarantine(manager, bad_step) if jax.process_index() == 0 else "(left in place)"
      logging.warning("Checkpoint %s/%d is unreadable (%s); moved it to %s and resumed from "
                      "step %d instead.", manager.directory, bad_step, reason, where, candidate)
    return seg, cri, extra, candidate
  newest, reason = failures[0]
  raise CheckpointError(
      f"None of the {len(steps)} checkpoints in {manager.directory} can be restored into this "
      f"config's model; the newest (step {newest}) fails with {reason}. If the config changed, "
      "rerun with the config the checkpoints were trained with (its config.json), or use a new "
      "--workdir.")


def intact_steps(manager: ocp.CheckpointManager) -> list[int]:
  """The steps whose folders hold every item a checkpoint of both players needs, ascending."""
  steps = []
  for s in all_steps(manager):
    root = os.path.join(os.fspath(manager.directory), str(s))
    items = [os.path.join(root, item) for item in ("segmentor", "critic", "extra")]
    if (os.path.isfile(os.path.join(root, "_CHECKPOINT_METADATA"))
        and all(os.path.isdir(item) and os.listdir(item) for item in items)):
      steps.append(s)
  return steps


