"""Trains SegAN: python -m segan_jax.main --workdir=runs/demo [--config=...] [--config.x=y].

--config is a config file, or the name of one in segan_jax/configs (default, isic2017, tiny, ...).

Rerunning the same command resumes from the newest intact checkpoint; SIGTERM (a scheduler's
stop, `timeout`) saves one at the end of the current step and exits with status 143. A workdir
holds one run at a time, and its checkpoints continue only under the config they were trained
with, unless --allow_config_change. Errors a user can fix print one `error: ...` line and exit
with status 2.
"""

import os
import sys

from absl import flags, logging
from ml_collections import config_flags

from segan_jax import cli, compilation_cache, graceful_stop, host_memory

FLAGS = flags.FLAGS
_DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "default.py")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard logs and panels.")
flags.DEFINE_bool("allow_config_change", False,
                  "Continue the workdir's checkpoints although the config differs from its "
                  "config.json (e.g. a lower learning rate after divergence); the old config.json "
                  "is kept in config_history/.")
flags.DEFINE_string("jax_cache_dir", compilation_cache.DEFAULT_DIR,
                    "Persistent XLA compilation cache ('' disables it).")
host_memory.define_flags()
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() first (multi-host runs, e.g. TPU pod slices).")
config_flags.DEFINE_config_file(
    "config", _DEFAULT_CONFIG, "Training config: a file, or the name of one in segan_jax/configs "
    "(default, isic2017, tiny, ...).", lock_config=True)
flags.mark_flags_as_required(["workdir"])


def main(argv):
  from segan_jax.config_validation import ConfigError, validate_config
  if len(argv) > 1:
    raise ConfigError(f"unexpected arguments: {' '.join(argv[1:])} (flags take the form "
                      "--name=value)")
  try:
    validate_config(FLAGS.config)  # before the restart below, so a bad value fails at once
  except OSError as e:  # ml_collections reports an unloadable --config file on first access
    raise ConfigError(f"cannot load the config: {cli.config_error_message(e)} (a file path, or "
                      f"one of {', '.join(cli.available_configs())})") from e
  host_memory.configure(FLAGS.huge_pages, FLAGS.keep_freed_memory)
  import jax
  from segan_jax import train

  if FLAGS.distributed:
    jax.distributed.initialize()
  compilation_cache.enable(FLAGS.jax_cache_dir, 1.0)
  logging.info("JAX devices: %s", jax.devices())
  result = train.train_and_evaluate(FLAGS.config, FLAGS.workdir, FLAGS.allow_config_change)
  if result.get("stopped_by"):  # saved and stopped early: an unfinished run, as SIGTERM's status
    sys.exit(graceful_stop.EXIT_STOPPED)


def run() -> None:
  """The command line (`python -m segan_jax.main`, the `segan-train` console script)."""
  cli.run(main, __name__, __doc__)


if __name__ == "__main__":
  run()
