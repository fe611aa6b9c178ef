"""Trains SegAN: python -m segan_jax.main --workdir=runs/demo [--config=...] [--config.x=y]."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow (tf.data only) start-up chatter

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from segan_jax import compilation_cache, host_memory  # noqa: E402

FLAGS = flags.FLAGS
_DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "default.py")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard logs and panels.")
flags.DEFINE_string("jax_cache_dir", compilation_cache.DEFAULT_DIR,
                    "Persistent XLA compilation cache ('' disables it).")
host_memory.define_flags()
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() first (multi-host runs, e.g. TPU pod slices).")
config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG, "Training config file.",
                                lock_config=True)
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  host_memory.configure(FLAGS.huge_pages, FLAGS.keep_freed_memory)
  import jax
  from segan_jax import train
  from segan_jax.config_validation import ConfigError, validate_config

  if FLAGS.distributed:
    jax.distributed.initialize()
  compilation_cache.enable(FLAGS.jax_cache_dir, 1.0)
  try:
    validate_config(FLAGS.config)
  except ConfigError as e:
    raise app.UsageError(str(e))
  logging.info("JAX devices: %s", jax.devices())
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
