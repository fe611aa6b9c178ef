"""segan_jax.host_memory: restarting a command with glibc's malloc tunables, synchronous dispatch."""

import os
import subprocess
import sys

import pytest

from segan_jax import host_memory

needs_huge_pages = pytest.mark.skipif(not host_memory.huge_pages_available(),
                                      reason="needs Linux, glibc >= 2.35 and THP not 'never'")
needs_tunables = pytest.mark.skipif(not host_memory.keep_freed_available(),
                                    reason="needs Linux with glibc >= 2.26")


def _run(code: str, env: dict, *args: str) -> subprocess.CompletedProcess:
  proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                        timeout=120, env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return proc


def _clean_env(**extra) -> dict:
  """The environment without malloc settings, and without the suite's XLA_FLAGS: the processes
  measure the runtime's memory as users run it, at XLA's default optimisation level."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("GLIBC_TUNABLES", host_memory._REEXEC_MARK, "XLA_FLAGS")}
  env.update(extra)
  return env


_REPORT = """
import os, sys
from segan_jax import host_memory
print("started", file=sys.stderr)
host_memory.configure(huge_pages=sys.argv[1] == "1", keep_freed_memory=sys.argv[2] == "1")
import jax
print(repr(os.environ.get("GLIBC_TUNABLES")), jax.config.values["jax_cpu_enable_async_dispatch"],
      sys.argv[3:])
"""
_KEEP = ":".join(host_memory.KEEP_FREED_TUNABLES)


def test_environ_with_tunables_keeps_the_users_tunables_and_values():
  env = host_memory.environ_with_tunables(
      {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.mmap_max=7"},
      host_memory.KEEP_FREED_TUNABLES + (host_memory.HUGE_PAGES_TUNABLE,))
  assert env["GLIBC_TUNABLES"] == (
      "glibc.malloc.arena_max=2:glibc.malloc.mmap_max=7:"
      f"{host_memory.KEEP_FREED_TUNABLES[1]}:glibc.malloc.hugetlb=1")
  assert host_memory.tunable_set("glibc.malloc.hugetlb=0", env)
  # A name, not a prefix:
  assert not host_memory.tunable_set("glibc.malloc.arena=1",
                                     {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
  env = host_memory.environ_with_tunables({}, [host_memory.HUGE_PAGES_TUNABLE])
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"


def test_wanted_tunables_follow_the_flags_and_the_machine():
  assert host_memory.wanted_tunables(huge_pages=False, keep_freed_memory=False) == []
  keep = host_memory.wanted_tunables(huge_pages=False, keep_freed_memory=True)
  assert keep == (list(host_memory.KEEP_FREED_TUNABLES)
                  if host_memory.keep_freed_available() else [])
  huge = host_memory.wanted_tunables(huge_pages=True, keep_freed_memory=False)
  assert huge == (["glibc.malloc.hugetlb=1"] if host_memory.huge_pages_available() else [])


@pytest.mark.parametrize("huge, keep", [("1", "1"), ("0", "1"), ("1", "0"), ("0", "0")])
def test_configure_restarts_the_same_command_once_with_what_was_asked(huge, keep):
  proc = _run(_REPORT, _clean_env(), huge, keep, "--flag", "x y")
  wanted = host_memory.wanted_tunables(huge == "1", keep == "1")
  tunables = repr(":".join(wanted)) if wanted else "None"
  async_dispatch = keep != "1"
  assert proc.stdout.strip() == f"{tunables} {async_dispatch} ['--flag', 'x y']"
  # The first process, then its replacement only.
  assert proc.stderr.count("started") == (2 if wanted else 1)


def test_tunables_the_user_set_are_left_alone():
  proc = _run(_REPORT, _clean_env(GLIBC_TUNABLES="glibc.malloc.hugetlb=0"), "1", "1")
  wanted = host_memory.wanted_tunables(True, True)
  expected = ":".join(["glibc.malloc.hugetlb=0"] + [t for t in wanted if "hugetlb" not in t])
  assert proc.stdout.strip() == f"{expected!r} False []"
  everything = "glibc.malloc.hugetlb=0:glibc.malloc.mmap_max=1:glibc.malloc.trim_threshold=9"
  proc = _run(_REPORT, _clean_env(GLIBC_TUNABLES=everything), "1", "1")
  assert proc.stdout.strip() == f"{everything!r} False []"
  assert proc.stderr.count("started") == 1  # nothing to add: no restart


def test_restart_is_said_once_and_only_for_the_cpu_backend():
  wanted = host_memory.wanted_tunables(True, True)
  proc = _run(_REPORT, _clean_env(JAX_PLATFORMS="cpu"), "1", "1")
  assert proc.stderr.count("restarting once with glibc malloc settings") == (1 if wanted else 0)
  # Another backend named: neither a restart nor synchronous dispatch.
  proc = _run(_REPORT, _clean_env(JAX_PLATFORMS="cuda,cpu"), "1", "1")
  assert proc.stdout.strip() == "None True []"
  assert proc.stderr.count("started") == 1 and "restarting" not in proc.stderr
  assert host_memory.cpu_backend_expected({"JAX_PLATFORMS": "cpu"})
  assert not host_memory.cpu_backend_expected({"JAX_PLATFORMS": "tpu"})


_FAULTS_OF_A_LARGE_MALLOC = """
import ctypes, resource
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
size = 256 << 20  # served by mmap under glibc's defaults, like XLA's per-execution buffers
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
p = libc.malloc(size)
ctypes.memset(p, 1, size)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@needs_huge_pages
def test_huge_pages_cut_the_page_faults_of_a_large_block():
  plain = int(_run(_FAULTS_OF_A_LARGE_MALLOC, _clean_env()).stdout)
  huge = int(_run(_FAULTS_OF_A_LARGE_MALLOC,
                  _clean_env(GLIBC_TUNABLES=host_memory.HUGE_PAGES_TUNABLE)).stdout)
  assert plain >= 30000  # 65536 pages of 4 KiB
  assert huge * 10 < plain, (plain, huge)


_FAULTS_OF_REPEATED_EXECUTIONS = """
import resource, sys
from segan_jax import host_memory
if sys.argv[1] == "1":
  host_memory.use_synchronous_cpu_dispatch()
import jax, jax.numpy as jnp
# Eight 128 MiB intermediates: a temporary buffer of about 1 GiB, beyond the 64 MiB a malloc
# thread arena may hold, like a training iteration's.
@jax.jit
def f(x):
  parts = [jnp.sin(x * i) for i in range(1, 9)]
  return sum(jnp.sum(p * p) for p in parts)
x = jnp.ones((1 << 25,), jnp.float32)
faults = []
for _ in range(8):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(f.lower(x).compile().memory_analysis().temp_size_in_bytes, *faults)
"""


@needs_tunables
def test_kept_memory_and_synchronous_dispatch_stop_the_page_faults_of_each_execution():
  def faults(env, synchronous):
    temp, *per_run = map(int, _run(_FAULTS_OF_REPEATED_EXECUTIONS, env, synchronous).stdout.split())
    return temp, sum(per_run[4:])  # the steady state: the last 4 of 8 executions
  keep = _clean_env(GLIBC_TUNABLES=_KEEP)
  temp, default = faults(_clean_env(), "0")
  assert temp >= 256 << 20, temp  # else XLA fused the intermediates away: the test tests nothing
  pages = temp // 4096
  assert default > 3 * pages, (temp, default)  # glibc's defaults: the buffer faulted in anew
  _, only_tunables = faults(keep, "0")
  assert only_tunables > 3 * pages, only_tunables  # a thread arena maps it anew
  # Kept: at most one more buffer's pages (the runtime may free the previous execution's buffer
  # just after the next one has allocated its own: then the heap holds two).
  _, kept = faults(keep, "1")
  assert kept < 1.1 * pages, (temp, kept)
