"""TensorBoard metric writer on tensorboard's own event-file writer (no TensorFlow, no clu), with
clu's write_* methods: the same event files whatever else is installed."""

import glob
import io
import itertools
import os
import socket
import struct
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image


def create_writer(workdir: str, just_logging: bool = False, resume_step: int | None = None):
  """A writer of TensorBoard events into workdir (a no-op where just_logging: non-lead processes).

  The console gets the training loop's own progress lines, so the writer does not log values.
  With resume_step, earlier event files first lose their events after that step (written by a
  run that stopped after its last checkpoint), so TensorBoard shows each step once.
  """
  if resume_step is not None and not just_logging:
    trim_event_files(workdir, resume_step)
  return EventFileWriter(workdir, just_logging=just_logging)


class EventFileWriter:
  """clu-style writer (write_scalars/images/hparams, flush, close) without TensorFlow."""

  def __init__(self, logdir: str, just_logging: bool = False):
    self._writer = None if just_logging else _EventFile(logdir)

  def _add(self, step: int, values: list) -> None:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    if self._writer is not None:
      summary = summary_pb2.Summary(value=values)
      self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                             summary=summary))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    from tensorboard.compat.proto import summary_pb2
    self._add(step, [summary_pb2.Summary.Value(tag=k, simple_value=float(v))
                     for k, v in scalars.items()])

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    from tensorboard.compat.proto import summary_pb2
    values = []
    for tag, batch in images.items():
      for i, image in enumerate(np.asarray(batch)):
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="PNG")
        encoded = summary_pb2.Summary.Image(height=image.shape[0], width=image.shape[1],
                                            colorspace=image.shape[2] if image.ndim == 3 else 1,
                                            encoded_image_string=buffer.getvalue())
        values.append(summary_pb2.Summary.Value(tag=f"{tag}/{i}", image=encoded))
    self._add(step, values)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    from tensorboard.compat.proto import summary_pb2, tensor_pb2
    text = "\n".join(f"{k}: {v}" for k, v in sorted(hparams.items()))
    tensor = tensor_pb2.TensorProto(dtype=7, string_val=[text.encode()])  # DT_STRING
    meta = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text"))
    self._add(0, [summary_pb2.Summary.Value(tag="hparams", tensor=tensor, metadata=meta)])

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


class _EventFile:
  """One event file, written with tensorboard's record format on a plain local file: tensorboard's
  own EventFileWriter opens files through tf.io.gfile, which imports TensorFlow where installed."""

  _uids = itertools.count()

  def __init__(self, logdir: str):
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter
    os.makedirs(logdir, exist_ok=True)
    name = "events.out.tfevents.%010d.%s.%s.%s" % (time.time(), socket.gethostname(), os.getpid(),
                                                   next(self._uids))
    self._file = open(os.path.join(logdir, name), "wb")
    self._records = RecordWriter(self._file)
    self.add_event(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
    self.flush()

  def add_event(self, event) -> None:
    self._records.write(event.SerializeToString())

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    if not self._file.closed:
      self._file.close()


def _records(data: bytes):
  """The records of a TFRecord file's bytes (a truncated last record is left out)."""
  offset = 0
  while offset + 12 <= len(data):
    (length,) = struct.unpack_from("<Q", data, offset)
    end = offset + 12 + length + 4
    if end > len(data):
      return
    yield data[offset:end], data[offset + 12:offset + 12 + length]
    offset = end


def trim_event_files(logdir: str, last_step: int) -> list[str]:
  """Drops the events after `last_step` from logdir's event files (atomically); returns the files
  changed. Records keep their bytes and checksums; only whole records are removed."""
  from tensorboard.compat.proto import event_pb2
  changed = []
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      data = f.read()
    kept, dropped = [], 0
    for raw, payload in _records(data):
      event = event_pb2.Event.FromString(payload)
      if event.step > last_step and not event.HasField("file_version"):
        dropped += 1
      else:
        kept.append(raw)
    if dropped:
      tmp = path + ".trim.tmp"
      with open(tmp, "wb") as f:
        f.write(b"".join(kept))
      os.replace(tmp, path)
      changed.append(path)
  return changed
