"""segan_jax.host_memory: restarting a command with glibc's transparent-huge-page tunable."""

import os
import subprocess
import sys

import pytest

from segan_jax import host_memory

needs_huge_pages = pytest.mark.skipif(not host_memory.huge_pages_available(),
                                      reason="needs Linux, glibc >= 2.35 and THP not 'never'")


def _run(code: str, env: dict) -> str:
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                        env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return proc.stdout.strip()


def _clean_env(**extra) -> dict:
  env = {k: v for k, v in os.environ.items()
         if k not in ("GLIBC_TUNABLES", host_memory._REEXEC_MARK)}
  env.update(extra)
  return env


_REPORT = """
import os, sys
from segan_jax import host_memory
print("started", file=sys.stderr)
host_memory.reexec_with_huge_pages()
print(repr(os.environ.get("GLIBC_TUNABLES")), sys.argv[1:])
"""


def test_environ_with_huge_pages_keeps_other_tunables():
  env = host_memory.environ_with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  assert host_memory.tunable_set(env)
  assert host_memory.environ_with_huge_pages({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
  assert not host_memory.tunable_set({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})


def test_reexec_restarts_the_same_command_once_with_the_tunable():
  proc = subprocess.run([sys.executable, "-c", _REPORT, "--flag", "x y"], capture_output=True,
                        text=True, timeout=120, env=_clean_env())
  assert proc.returncode == 0, proc.stderr[-2000:]
  if host_memory.huge_pages_available():
    assert proc.stdout.strip() == "'glibc.malloc.hugetlb=1' ['--flag', 'x y']"
    assert proc.stderr.count("started") == 2  # the first process, then its replacement only
  else:
    assert proc.stdout.strip() == "None ['--flag', 'x y']"
    assert proc.stderr.count("started") == 1


def test_a_tunable_the_user_set_is_left_alone():
  out = _run(_REPORT, _clean_env(GLIBC_TUNABLES="glibc.malloc.hugetlb=0"))
  assert out == "'glibc.malloc.hugetlb=0' []"


_FAULTS_OF_A_LARGE_MALLOC = """
import ctypes, resource
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
size = 256 << 20  # served by mmap, like XLA's per-execution buffers
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
p = libc.malloc(size)
ctypes.memset(p, 1, size)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@needs_huge_pages
def test_the_tunable_cuts_the_page_faults_of_a_large_block():
  plain = int(_run(_FAULTS_OF_A_LARGE_MALLOC, _clean_env()))
  huge = int(_run(_FAULTS_OF_A_LARGE_MALLOC, _clean_env(GLIBC_TUNABLES=host_memory.TUNABLE)))
  assert plain >= 30000  # 65536 pages of 4 KiB
  assert huge * 10 < plain, (plain, huge)
