"""Test-run settings: quiet TensorFlow, quick XLA compiles, one persistent XLA cache, workers."""

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Compiling, not running, takes most of the suite's time: XLA's CPU backend at optimisation level 0
# compiles the tests' tiny models about 40% faster, and its loop emitters instead of the fusion
# emitters about 3x faster again (a tiny segmentor step: 19 s -> 6 s on one EPYC core). Values
# differ from the defaults only in rounding, and the tests compare programs compiled alike or
# within tolerances. SEGAN_TEST_XLA_DEFAULTS=1 tests with the compiler settings users run.
_FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")


def _accepted_xla_flags(flags: tuple[str, ...]) -> list[str]:
  """Those of `flags` this jaxlib's XLA knows: it aborts the process on an unknown flag."""
  def accepted(candidate):
    env = dict(os.environ, XLA_FLAGS=" ".join(candidate), JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], env=env,
                          capture_output=True, timeout=300).returncode == 0
  return list(flags) if accepted(flags) else [f for f in flags if accepted((f,))]


# Probed once, in the first process; xdist workers and the tests' subprocesses inherit both.
if (os.environ.get("SEGAN_TEST_XLA_DEFAULTS", "0") != "1"
    and "SEGAN_TEST_XLA_FLAGS" not in os.environ):
  os.environ["SEGAN_TEST_XLA_FLAGS"] = " ".join(_accepted_xla_flags(_FAST_COMPILE_FLAGS))
  os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS", ""),
                                                   os.environ["SEGAN_TEST_XLA_FLAGS"]]))

import jax  # noqa: E402
import pytest  # noqa: E402

_CACHE = os.environ.get("SEGAN_TEST_JAX_CACHE",
                        os.path.join(os.path.expanduser("~"), ".cache", "segan_jax", "jax_tests"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
# Subprocesses started by tests (python -m segan_jax.main, multi-device runs) share the cache.
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"


@pytest.fixture
def tiny_config():
  from segan_jax.configs import tiny
  return tiny.get_config()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
  """A tiny trained workdir shared by the evaluation tests (see eval_fixtures.py); read-only."""
  import eval_fixtures
  return eval_fixtures.train_tiny_run(str(tmp_path_factory.mktemp("trained")))


@pytest.fixture
def run_copy(trained_run, tmp_path):
  """A private copy of the trained run, for tests that write into it (selection.json)."""
  import shutil
  return shutil.copytree(trained_run, str(tmp_path / "run"))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
  """`-n auto`: one worker per usable core, at most 8 (each holds its own JAX runtime and models).

  PYTEST_XDIST_AUTO_NUM_WORKERS overrides it, as in pytest-xdist.
  """
  del config
  if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
    return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
  return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else (os.cpu_count() or 1)))
