"""Orbax checkpoints of both players (atomic: orbax writes to a temporary folder, then renames)."""

import contextlib
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from segan_jax.train_state import TrainState


@contextlib.contextmanager
def quiet_orbax():
  """Orbax logs every file operation at INFO through absl; keep the console for progress lines."""
  verbosity = logging.get_verbosity()
  logging.set_verbosity(min(verbosity, logging.WARNING))  # absl: lower is quieter
  try:
    yield
  finally:
    logging.set_verbosity(verbosity)


class CheckpointError(RuntimeError):
  """A checkpoint in the workdir cannot be restored into the configured model."""


def make_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  """A CheckpointManager over workdir/checkpoints keeping the newest `keep` steps."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  with quiet_orbax():
    return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                                 options=options)


def save(manager: ocp.CheckpointManager, step: int, segmentor: TrainState, critic: TrainState,
         extra: dict[str, Any] | None = None) -> None:
  """Saves both players (and a JSON dict of extra facts) at `step`, blocking until written."""
  args = {"segmentor": ocp.args.StandardSave(segmentor),
          "critic": ocp.args.StandardSave(critic),
          "extra": ocp.args.JsonSave(extra or {})}
  with quiet_orbax():
    manager.save(step, args=ocp.args.Composite(**args), force=True)
    manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, segmentor: TrainState, critic: TrainState,
            step: int | None = None) -> tuple[TrainState, TrainState, dict[str, Any], int] | None:
  """Restores the latest (or given) step into the structure of the given states; None if none."""
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  abstract = lambda tree: jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
  try:
    with quiet_orbax():
      restored = manager.restore(step, args=ocp.args.Composite(
          segmentor=ocp.args.StandardRestore(abstract(segmentor)),
          critic=ocp.args.StandardRestore(abstract(critic)),
          extra=ocp.args.JsonRestore()))
  except (ValueError, KeyError) as e:
    raise CheckpointError(
        f"Cannot restore {manager.directory}/{step} into this config's model: {e}. "
        "Use a new --workdir, or the config the checkpoint was trained with.") from e
  return restored["segmentor"], restored["critic"], dict(restored["extra"] or {}), step
