"""Host memory for XLA's CPU runtime: reusing its per-execution buffer, and huge pages.

XLA's CPU runtime mallocs each execution's temporary buffer afresh (1.3 GiB for a width-16
training iteration at batch 25, 5.4 GiB at width 64) and frees it afterwards. Under glibc's
defaults a block that large is mapped with mmap and unmapped when freed, so every iteration
page-faults it in again 4 KiB at a time: about 335,000 faults and 0.5 s of kernel time per
width-16 iteration on 2 cores, 1.45 million faults and 4-16 s at width 64. Two remedies:

* keep freed memory (`--keep_freed_memory`): the glibc tunables glibc.malloc.mmap_max=0 and
  glibc.malloc.trim_threshold=1 TiB make the main malloc arena serve large blocks from its heap
  and keep them when they are freed, so the next execution reuses the same, already mapped pages.
  Thread arenas map blocks over 64 MiB whatever the tunables say, so JAX must also run CPU
  computations synchronously, on (and allocating from) the calling thread:
  jax_cpu_enable_async_dispatch=False. No page faults after the first iteration; a width-64
  training iteration 11.0-11.5 s instead of 13.6-14.2 s (experiments/RESULTS.md, "Host memory").
* huge pages (`--huge_pages`): glibc.malloc.hugetlb=1 (glibc 2.35+) asks for transparent huge
  pages on what malloc maps (a width-16 iteration 1.45 s -> 1.13-1.20 s on its own, same section).

glibc reads its tunables only when a process starts, so `configure` starts the same command again
once with them in GLIBC_TUNABLES, and says so in one line. A tunable the user already set there (to
any value) is kept. Only where JAX will compute on the CPU: with an accelerator plugin installed
(CUDA, ROCm, TPU) or JAX_PLATFORMS naming another backend, nothing is changed.
"""

import importlib.util
import os
import platform
import sys

KEEP_FREED_TUNABLES = ("glibc.malloc.mmap_max=0", f"glibc.malloc.trim_threshold={1 << 40}")
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
HUGE_PAGES_HELP = (
    "On Linux with glibc >= 2.35 and transparent huge pages not 'never', run with GLIBC_TUNABLES="
    "glibc.malloc.hugetlb=1 (the command starts itself again once), so that the memory XLA's CPU "
    "runtime maps comes in huge pages (segan_jax/host_memory.py).")
KEEP_FREED_HELP = (
    "On Linux with glibc, run with GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc."
    "trim_threshold=1TiB (the command starts itself again once) and JAX's CPU computations "
    "dispatched synchronously, so that XLA's CPU runtime reuses its per-step buffer instead of "
    "page-faulting it in every step (segan_jax/host_memory.py; a width-64 CPU training step "
    "11-11.5 s instead of 13.6-14.2 s). The process keeps its peak memory until it ends.")
_REEXEC_MARK = "SEGAN_JAX_MALLOC_TUNABLES_REEXEC"
_THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def glibc_version() -> tuple[int, int] | None:
  """(major, minor) of the glibc this Linux process runs on, else None."""
  if not sys.platform.startswith("linux"):
    return None
  libc, version = platform.libc_ver()
  try:
    major_minor = tuple(int(p) for p in version.split(".")[:2])
  except ValueError:
    return None
  return major_minor if libc == "glibc" and len(major_minor) == 2 else None


def huge_pages_available() -> bool:
  """Linux with glibc >= 2.35 (the tunable) and transparent huge pages not switched off."""
  version = glibc_version()
  if version is None or version < (2, 35):
    return False
  try:
    with open(_THP_SETTING) as f:
      return "[never]" not in f.read()
  except OSError:
    return False


def keep_freed_available() -> bool:
  """Linux with glibc >= 2.26 (GLIBC_TUNABLES)."""
  version = glibc_version()
  return version is not None and version >= (2, 26)


def _name(tunable: str) -> str:
  return tunable.split("=", 1)[0]


def tunable_set(tunable: str, environ: dict | None = None) -> bool:
  """Whether GLIBC_TUNABLES already sets `tunable`'s name (to any value: the user's choice)."""
  env = os.environ if environ is None else environ
  names = {_name(t) for t in env.get("GLIBC_TUNABLES", "").split(":") if t}
  return _name(tunable) in names


def wanted_tunables(huge_pages: bool, keep_freed_memory: bool) -> list[str]:
  """The tunables asked for that this machine supports, in GLIBC_TUNABLES syntax."""
  wanted = []
  if keep_freed_memory and keep_freed_available():
    wanted += KEEP_FREED_TUNABLES
  if huge_pages and huge_pages_available():
    wanted.append(HUGE_PAGES_TUNABLE)
  return wanted


def environ_with_tunables(environ: dict, tunables: list[str] | tuple[str, ...]) -> dict:
  """A copy of `environ` with `tunables` appended to GLIBC_TUNABLES, except those already set."""
  env = dict(environ)
  added = [t for t in tunables if not tunable_set(t, environ)]
  env["GLIBC_TUNABLES"] = ":".join(t for t in [env.get("GLIBC_TUNABLES")] + added if t)
  env[_REEXEC_MARK] = "1"
  return env


_ACCELERATOR_MODULES = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                        "jax_rocm7_plugin", "libtpu")


def cpu_backend_expected(environ: dict | None = None) -> bool:
  """Whether JAX will compute on the CPU, judged without starting JAX: JAX_PLATFORMS if set,
  else whether an accelerator plugin (CUDA, ROCm, TPU) is installed."""
  env = os.environ if environ is None else environ
  platforms = env.get("JAX_PLATFORMS", "").strip()
  if platforms:
    return platforms.split(",")[0].strip().lower() == "cpu"
  for name in _ACCELERATOR_MODULES:
    try:
      if importlib.util.find_spec(name) is not None:
        return False
    except (ImportError, ValueError):
      continue
  return True


def reexec_with_tunables(tunables: list[str] | tuple[str, ...]) -> None:
  """Replaces this process by the same command line with `tunables` in GLIBC_TUNABLES, once.

  Does nothing where every one of them is already set (to any value), or in a process this
  function already started. Call it at the start of a command, before it has done anything that
  must not run twice.
  """
  if os.environ.get(_REEXEC_MARK) or all(tunable_set(t) for t in tunables):
    return
  print("segan_jax: restarting once with glibc malloc settings for XLA's CPU runtime "
        "(--nokeep_freed_memory --nohuge_pages skip this).", file=sys.stderr)
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, environ_with_tunables(os.environ, tunables))


def use_synchronous_cpu_dispatch() -> None:
  """Runs JAX's CPU computations on the calling thread (before the CPU backend starts).

  The temporary buffer of an execution then comes from the main malloc arena, which keeps it for
  the next execution under KEEP_FREED_TUNABLES; asynchronous dispatch allocates it from a worker
  thread's arena, which maps and unmaps it every time.
  """
  import jax
  jax.config.update("jax_cpu_enable_async_dispatch", False)


def configure(huge_pages: bool = True, keep_freed_memory: bool = True) -> None:
  """Sets a command up for XLA's CPU runtime as asked: restarts it with the tunables, once, then
  (keep_freed_memory) switches JAX to synchronous CPU dispatch. Call it before JAX computes."""
  if not cpu_backend_expected():
    return
  reexec_with_tunables(wanted_tunables(huge_pages, keep_freed_memory))
  if keep_freed_memory:
    use_synchronous_cpu_dispatch()


def define_flags(flag_values=None) -> None:
  """Defines --huge_pages and --keep_freed_memory (both on by default) for a command."""
  from absl import flags
  fv = flags.FLAGS if flag_values is None else flag_values
  flags.DEFINE_bool("huge_pages", True, HUGE_PAGES_HELP, flag_values=fv)
  flags.DEFINE_bool("keep_freed_memory", True, KEEP_FREED_HELP, flag_values=fv)
