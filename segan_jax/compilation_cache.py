"""JAX's persistent compilation cache, shared by the command-line tools (compiles cost minutes on CPU)."""

import os

DEFAULT_DIR = os.path.join(os.path.expanduser("~"), ".cache", "segan_jax", "jax")


def enable(cache_dir: str, min_compile_time_s: float = 1.0) -> None:
  """Caches compiled programs that took at least min_compile_time_s in cache_dir ('' = off)."""
  if not cache_dir:
    return
  import jax
  jax.config.update("jax_compilation_cache_dir", cache_dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time_s)
