"""Transparent huge pages for the host memory of XLA's CPU runtime, through glibc's malloc.

XLA's CPU runtime allocates each execution's temporary buffer afresh (1.3 GiB for a width-16
training iteration at batch 25) from a malloc thread arena, which maps a block that large with
mmap and unmaps it when it is freed: every iteration then page-faults it in again, 4 KiB at a
time (about 335,000 faults and 0.5 s of kernel time per width-16 iteration on 2 cores). glibc 2.35+
asks the kernel for transparent huge pages (madvise) on the memory it maps when the tunable
glibc.malloc.hugetlb=1 is set; a tunable is read only when a process starts, so
`reexec_with_huge_pages` starts the same command again with it. Measured on 2 cores
(experiments/RESULTS.md, "Session 4"): a width-16 training iteration 1.45 s -> 1.13-1.18 s.
"""

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
FLAG_HELP = ("On Linux with glibc >= 2.35, start the process again once with GLIBC_TUNABLES="
             "glibc.malloc.hugetlb=1, so that XLA's CPU runtime gets its buffers in transparent "
             "huge pages instead of page-faulting them in every step (segan_jax/host_memory.py: "
             "a width-16 CPU training step 20% faster, inference 10%). A glibc.malloc.hugetlb "
             "already in GLIBC_TUNABLES is left as it is.")
_REEXEC_MARK = "SEGAN_JAX_HUGE_PAGES_REEXEC"
_THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def huge_pages_available() -> bool:
  """Linux with glibc >= 2.35 (the tunable) and transparent huge pages not switched off."""
  if not sys.platform.startswith("linux"):
    return False
  libc, version = platform.libc_ver()
  try:
    major_minor = tuple(int(p) for p in version.split(".")[:2])
  except ValueError:
    return False
  if libc != "glibc" or major_minor < (2, 35):
    return False
  try:
    with open(_THP_SETTING) as f:
      return "[never]" not in f.read()
  except OSError:
    return False


def tunable_set(environ: dict | None = None) -> bool:
  """Whether GLIBC_TUNABLES already sets glibc.malloc.hugetlb (to any value: the user's choice)."""
  env = os.environ if environ is None else environ
  return "glibc.malloc.hugetlb=" in env.get("GLIBC_TUNABLES", "")


def environ_with_huge_pages(environ: dict) -> dict:
  """A copy of `environ` with glibc.malloc.hugetlb=1 added to GLIBC_TUNABLES (kept otherwise)."""
  env = dict(environ)
  env["GLIBC_TUNABLES"] = ":".join(t for t in (env.get("GLIBC_TUNABLES"), TUNABLE) if t)
  env[_REEXEC_MARK] = "1"
  return env


def reexec_with_huge_pages() -> None:
  """Replaces this process by the same command line with glibc.malloc.hugetlb=1, once.

  Does nothing where the tunable is already set (to any value), where huge pages are not
  available (huge_pages_available), or in a process this function already started. Call it at
  the start of a command, before it has done anything that must not run twice.
  """
  if tunable_set() or os.environ.get(_REEXEC_MARK) or not huge_pages_available():
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, environ_with_huge_pages(os.environ))
