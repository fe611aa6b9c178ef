"""Data parallelism with jax.jit over a device Mesh: replicated states, batches split on 'data'."""

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A one-axis mesh over all (global) devices, for data parallelism."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the data axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch: int, mesh: Mesh, field: str = "config.train.batch_size") -> None:
  """Raises ValueError unless the global batch splits evenly over the mesh's devices."""
  n = mesh.devices.size
  if global_batch % n:
    raise ValueError(f"{field}={global_batch} must be divisible by the number of devices ({n}); "
                     f"use a multiple of {n}.")


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places every leaf of tree on every device of mesh."""
  return jax.device_put(tree, replicated(mesh))


def global_batch(local_batch: dict[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles this process's slice of the batch into global arrays split on the data axis;
  arrays already split that way (the device input pipeline's) pass through unchanged."""
  sharding = batch_sharding(mesh)
  return {k: v if _split_on_data(v, sharding) else
          jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def _split_on_data(value: Any, sharding: NamedSharding) -> bool:
  return isinstance(value, jax.Array) and value.sharding.is_equivalent_to(sharding, value.ndim)
