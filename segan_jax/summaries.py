"""TensorBoard metric writers: clu's (TensorFlow summaries) where TensorFlow is installed, else a
writer on tensorboard's own event-file writer, with the same write_* methods."""

import io
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from segan_jax.optional import tensorflow_available


def create_writer(workdir: str, just_logging: bool = False):
  """A writer of TensorBoard events into workdir (a no-op where just_logging: non-lead processes).

  The console gets the training loop's own progress lines, so the writer does not log values.
  """
  if tensorflow_available():
    from clu import metric_writers
    if just_logging:
      return metric_writers.MultiWriter([])
    return metric_writers.AsyncWriter(metric_writers.SummaryWriter(workdir))
  return EventFileWriter(workdir, just_logging=just_logging)


class EventFileWriter:
  """clu-style writer (write_scalars/images/hparams, flush, close) without TensorFlow."""

  def __init__(self, logdir: str, just_logging: bool = False):
    self._writer = None
    if not just_logging:
      from tensorboard.summary.writer.event_file_writer import EventFileWriter as _Writer
      self._writer = _Writer(logdir)

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
