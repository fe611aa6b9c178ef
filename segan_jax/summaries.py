"""TensorBoard metric writers: clu's (TensorFlow summaries) where TensorFlow is installed, else a
writer on tensorboard's own event-file writer, with the same write_* methods."""

import importlib.util
import io
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from absl import logging
from PIL import Image


def create_writer(workdir: str, just_logging: bool = False):
  """A metric writer logging to the console and writing TensorBoard events into workdir."""
  if importlib.util.find_spec("tensorflow") is not None:
    from clu import metric_writers
    return metric_writers.create_default_writer(workdir, just_logging=just_logging)
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
    logging.info("[%d] %s", step, ", ".join(f"{k}={float(v):.6g}" for k, v in scalars.items()))
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
    logging.info("Hyperparameters: %s", dict(hparams))

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
