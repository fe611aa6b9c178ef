"""The training input stream: batch `step` of a run is a pure function of (train.seed, step).

Each epoch is a seeded permutation of the examples (the remainder that does not fill a global
batch is dropped: steps per epoch = N // batch_size); slot i of step s's global batch takes
example order[s % steps_per_epoch * batch_size + i] of its epoch's order and is augmented
(segan_jax/data/augment.py) from its own key, fold_in(fold_in(key(seed, augment), s), i). So a
resumed run meets exactly the batches of an uninterrupted one, and every device count, process
count and install computes the same examples with the same draws; the pairs are augmented one
per loop iteration, so their values are bit-identical on any device or process count too (on one
backend: CPU and GPU may round differently).

Two placements of the same jitted computation (config.data.loader):
* device (default): the uint8 arrays live on every device of the mesh (replicated; 194 MB for
  the 2000 ISIC pairs at 135x180 with their masks, 131 MB more for their whole views where
  data.whole_image_prob > 0); each device selects and augments its own shard of the global
  batch (shard_map over the data axis), so the batch is born sharded and only the step number
  crosses from the host per step;
* host: the arrays stay in host memory; this process's slice of each global batch is computed
  on the host CPU, in a background thread a few batches ahead, and handed over as numpy arrays
  (for devices whose memory cannot spare the arrays).
"""

import atexit
import dataclasses
import functools
import queue
import threading
import weakref
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from segan_jax import sharding
from segan_jax.data.arrays import TrainArrays
from segan_jax.data.augment import Augmentation, augment, pairs as make_pairs, whole_views

LOADERS = ("device", "host")
_SHUFFLE_SALT = 0x5EED
_AUGMENT_SALT = 1_000_003


@dataclasses.dataclass(frozen=True)
class Stream:
  """What the stream depends on besides the arrays (hashable: static in the jitted functions)."""
  seed: int
  global_batch: int
  num_examples: int
  aug: Augmentation

  @property
  def steps_per_epoch(self) -> int:
    return self.num_examples // self.global_batch

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, num_examples: int) -> "Stream":
    """The stream of config.train (seed, batch_size) and config.data over num_examples pairs."""
    global_batch = int(config.train.batch_size)
    if num_examples < global_batch:
      raise ValueError(f"The training split has {num_examples} examples, fewer than "
                       f"config.train.batch_size={global_batch}; lower the batch size or add data.")
    return cls(seed=int(config.train.seed), global_batch=global_batch,
               num_examples=int(num_examples), aug=Augmentation.from_config(config.data))


def batch_slots(pairs: jax.Array, wholes: jax.Array | None, step: jax.Array,
                first: jax.Array | int, count: int, stream: Stream) -> dict[str, jax.Array]:
  """Slots first..first+count-1 of the global batch of `step` (traceable): {'image', 'mask'}.

  pairs: (M, H, W, 3 + N) uint8 (augment.pairs, N label maps); wholes: their whole views
  (augment.whole_views)
  where stream.aug.whole_image_prob > 0, else None.
  """
  base = jax.random.key(stream.seed)
  step = jnp.asarray(step, jnp.int32)
  epoch, within = step // stream.steps_per_epoch, step % stream.steps_per_epoch
  order = jax.random.permutation(jax.random.fold_in(jax.random.fold_in(base, _SHUFFLE_SALT), epoch),
                                 stream.num_examples)
  slots = jnp.asarray(first, jnp.int32) + jnp.arange(count, dtype=jnp.int32)
  index = order[within * stream.global_batch + slots]
  step_key = jax.random.fold_in(jax.random.fold_in(base, _AUGMENT_SALT), step)
  keys = jax.vmap(lambda slot: jax.random.fold_in(step_key, slot))(slots)
  # One pair per loop iteration (not vmap): each pair is computed by the same code whatever the
  # number of slots, so the batches are bit-identical on any device or process count.
  def one(args):
    key, i = args
    return augment(key, pairs[i], stream.aug, None if wholes is None else wholes[i])

  image, mask = jax.lax.map(one, (keys, index))
  return {"image": image, "mask": mask}


def _host_arrays(arrays: TrainArrays, stream: Stream) -> tuple[np.ndarray, np.ndarray | None]:
  """The pairs and (where the whole view is drawn) their whole views, as batch_slots reads them."""
  h, w = arrays.images.shape[1:3]
  size = stream.aug.size
  if h < size or w < size:
    raise ValueError(f"The training arrays are {h}x{w}, smaller than data.image_size={size}: set "
                     "data.resize_height and data.resize_width to at least data.image_size.")
  wholes = (whole_views(arrays.images, arrays.masks, size)
            if stream.aug.whole_image_prob > 0 else None)
  return make_pairs(arrays.images, arrays.masks), wholes


class DeviceStream:
  """The arrays replicated on the mesh; batch(step) is the global batch, sharded on 'data'."""

  def __init__(self, arrays: TrainArrays, stream: Stream, mesh: Mesh):
    sharding.check_batch_size(stream.global_batch, mesh)
    self.stream, self.mesh = stream, mesh
    self._replicated = sharding.replicated(mesh)
    host_pairs, host_wholes = _host_arrays(arrays, stream)
    self.pairs = _global_copy(host_pairs, self._replicated)
    self.wholes = None if host_wholes is None else _global_copy(host_wholes, self._replicated)
    local = stream.global_batch // mesh.devices.size

    def shard(pairs, wholes, step):
      first = jax.lax.axis_index(sharding.DATA_AXIS) * local
      return batch_slots(pairs, wholes, step, first, local, stream)

    self._fn = jax.jit(jax.shard_map(shard, mesh=mesh, in_specs=(P(), P(), P()),
                                     out_specs=P(sharding.DATA_AXIS)))

  def batch(self, step: int) -> dict[str, jax.Array]:
    return self._fn(self.pairs, self.wholes, _global_copy(np.int32(step), self._replicated))


def _global_copy(value: np.ndarray, replicated: NamedSharding) -> jax.Array:
  """A global array replicated over the mesh (every process holds the same value)."""
  value = np.asarray(value)
  return jax.make_array_from_callback(value.shape, replicated, lambda index: value[index])


class HostStream:
  """The arrays on the host CPU; batch(step) is this process's slice of the global batch."""

  def __init__(self, arrays: TrainArrays, stream: Stream, process_index: int = 0,
               process_count: int = 1):
    if stream.global_batch % process_count:
      raise ValueError(f"config.train.batch_size={stream.global_batch} must divide by the number "
                       f"of processes ({process_count}).")
    self._cpu = jax.local_devices(backend="cpu")[0]
    host_pairs, host_wholes = _host_arrays(arrays, stream)
    self.pairs = jax.device_put(host_pairs, self._cpu)
    self.wholes = None if host_wholes is None else jax.device_put(host_wholes, self._cpu)
    local = stream.global_batch // process_count
    self._fn = jax.jit(functools.partial(batch_slots, first=process_index * local, count=local,
                                         stream=stream))

  def batch(self, step: int) -> dict[str, np.ndarray]:
    out = self._fn(self.pairs, self.wholes, jax.device_put(np.int32(step), self._cpu))
    return {k: np.asarray(v) for k, v in out.items()}


def device_batches(arrays: TrainArrays, config: ml_collections.ConfigDict, mesh: Mesh,
                   start_step: int = 0) -> Iterator[dict[str, jax.Array]]:
  """Global batches from start_step on, sharded over mesh's data axis (loader 'device')."""
  source = DeviceStream(arrays, Stream.from_config(config, len(arrays)), mesh)
  step = start_step
  while True:
    yield source.batch(step)
    step += 1


def host_batches(arrays: TrainArrays, config: ml_collections.ConfigDict, start_step: int = 0,
                 process_index: int = 0, process_count: int = 1,
                 prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
  """This process's slices of the global batches from start_step on, as numpy arrays, computed
  `prefetch` batches ahead in a background thread (loader 'host')."""
  source = HostStream(arrays, Stream.from_config(config, len(arrays)), process_index,
                      process_count)
  batches: queue.Queue = queue.Queue(maxsize=prefetch)
  stop = threading.Event()

  def put(item) -> bool:
    while not stop.is_set():
      try:
        batches.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def produce():
    step = start_step
    try:
      while put(source.batch(step)):
        step += 1
    except Exception as e:  # handed to the consumer, which re-raises it instead of waiting forever
      put(e)

  thread = threading.Thread(target=produce, daemon=True)
  thread.start()
  _PRODUCERS[thread] = stop
  try:
    while True:
      item = batches.get()
      if isinstance(item, Exception):
        raise item
      yield item
  finally:
    stop.set()


_PRODUCERS: "weakref.WeakKeyDictionary[threading.Thread, threading.Event]" = (
    weakref.WeakKeyDictionary())


@atexit.register
def _stop_producers() -> None:
  """Lets every producer thread finish its batch before the interpreter (and XLA) shut down."""
  for thread, stop in list(_PRODUCERS.items()):
    stop.set()
    thread.join(timeout=10)


def train_batches(arrays: TrainArrays, config: ml_collections.ConfigDict, mesh: Mesh,
                  start_step: int = 0) -> Iterator[dict]:
  """The batches of config.data.loader from start_step: global arrays sharded on mesh ('device')
  or this process's numpy slices ('host', for sharding.global_batch)."""
  loader = config.data.loader
  if loader == "device":
    return device_batches(arrays, config, mesh, start_step)
  if loader == "host":
    return host_batches(arrays, config, start_step, jax.process_index(), jax.process_count())
  raise ValueError(f"config.data.loader={loader!r}: use one of {LOADERS}.")
