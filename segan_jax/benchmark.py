r"""Throughput benchmark: SegAN training iterations, inference and the input pipeline.

  python -m segan_jax.benchmark [--config=segan_jax/configs/default.py] [--config.x=y ...] \
      [--width=64] [--batch_size=25] [--dtype=float32|bfloat16] [--conv_impl=auto|xla|cpu] \
      [--devices=N] [--steps=5] [--warmup=2] [--torch] [--authors_dir=DIR] [--threads=N]

Measures, for the config (and the flags overriding it):
* training iteration: one critic step + one segmentor step (segan_jax.steps.train_step, one jitted
  function), images/s of the global batch, median over `--steps` timed iterations after
  `--warmup`, each ended by block_until_ready; data-parallel over the first `--devices` devices
  (a jax.sharding.Mesh, replicated states, the batch split on the data axis);
* inference: the segmentor's forward pass in inference mode (predict_probs), images/s;
* compile time of both, separately (lower + compile, timed);
* FLOPs per iteration (convolutions and matrix products, counted on the jaxpr by
  segan_jax.flop_count; PyTorch's by torch.utils.flop_counter, as its reference computes more:
  two S forward passes per iteration and the decoder's convolutions after the upsampling), and
  the achieved FLOP/s;
* peak memory: device.memory_stats() where the backend exposes it (GPU, TPU), else the process's
  maximum resident set size (resource.getrusage), plus XLA's own buffer estimate;
* input pipeline: images/s of both placements of the training stream (segan_jax/data/pipeline.py:
  'device', the arrays on the benchmark's devices, each augmenting its shard; 'host', on the host
  CPU) on the embedded synthetic data with the config's augmentation, timed after the training
  and inference phases on the same devices; pipeline_ratio_vs_train is the configured loader's
  images/s over the training iteration's.

With `--torch`, an equivalent PyTorch SegAN (experiments/torch_reference.py, same architecture and
the same iteration; it is part of the repository checkout, not of the installed package, so run
`--torch` from a checkout: `pip install -e ".[bench]"`) runs in the same process on the same batch with the same number of threads,
its timed iterations ALTERNATING with segan_jax's, so that the ratio holds on a busy machine;
`--dtype=bfloat16` runs PyTorch under bfloat16 autocast. With `--authors_dir` (a checkout of the
authors' repository, YuanXue1993/SegAN, e.g. shared/reference/segan_authors beside this one), the
authors' own NetS and NetC (their net.py, imported at run time by experiments/authors_code.py with
the fixes a current PyTorch needs) run one iteration of their train.py and their inference, timed
in the same alternation (float32, width = --width; their networks have one output map).
PyTorch's OpenMP threads wait passively
(OMP_WAIT_POLICY=PASSIVE, see --omp_wait_policy) unless told otherwise, and both run with glibc's
malloc keeping freed memory and JAX dispatching CPU work synchronously (--keep_freed_memory,
segan_jax/host_memory.py). The last line printed is always
`train_ratio_vs_torch=X infer_ratio_vs_torch=Y pipeline_ratio_vs_train=Z train_ratio_vs_authors=A
infer_ratio_vs_authors=B` (segan_jax images/s over the PyTorch rebuild's, the input pipeline's
over the training iteration's, segan_jax's over the authors' code's; `nan` where not measured).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from absl import app, flags
from ml_collections import config_flags

from segan_jax import compilation_cache, flop_count, host_memory

FLAGS = flags.FLAGS
_DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "default.py")
config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG, "Config file (training settings).",
                                lock_config=True)
flags.DEFINE_integer("width", None, "Overrides config.model.width (ndf; the paper uses 64).")
flags.DEFINE_integer("batch_size", None, "Overrides config.train.batch_size (the global batch).")
flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "Overrides config.dtype (compute dtype); "
                  "bfloat16 also runs the PyTorch reference under bfloat16 autocast.")
flags.DEFINE_enum("conv_impl", None, ["auto", "xla", "cpu"], "Overrides config.model.conv_impl.")
flags.DEFINE_integer("devices", 0, "Use the first N devices, data-parallel (0: all of them).")
flags.DEFINE_integer("host_devices", 0, "On the CPU backend, split the host into this many XLA "
                     "devices (--xla_force_host_platform_device_count), to try --devices > 1.")
flags.DEFINE_integer("steps", 5, "Timed iterations (the median is reported).")
flags.DEFINE_integer("warmup", 2, "Untimed iterations first (after compiling).")
flags.DEFINE_bool("torch", False, "Compare with the PyTorch reference (needs torch installed and "
                  "the repository checkout: experiments/torch_reference.py).")
flags.DEFINE_string("authors_dir", "", "Also time the SegAN authors' own PyTorch code (needs "
                    "torch): the folder holding their net.py (a checkout of YuanXue1993/SegAN), "
                    "loaded at run time by the checkout's experiments/authors_code.py.")
flags.DEFINE_integer("threads", 0, "CPU threads for both frameworks (0: every core this process "
                     "may use). Fewer restricts the process's CPU affinity, which XLA's thread "
                     "pools follow, and sets torch.set_num_threads.")
flags.DEFINE_enum("omp_wait_policy", "passive", ["passive", "active", "default"],
                  "OMP_WAIT_POLICY for PyTorch's OpenMP threads (set before torch is imported; "
                  "an OMP_WAIT_POLICY already in the environment wins). On a machine shared with "
                  "other processes, OpenMP's default spin-waiting made PyTorch 2-3x slower at "
                  "width 16 on 2 cores, so 'passive' is the default, the conservative choice for "
                  "the ratio; 'default' leaves OpenMP's own policy.")
host_memory.define_flags()  # both frameworks run under them
flags.DEFINE_bool("train", True, "Benchmark the training iteration.")
flags.DEFINE_bool("infer", True, "Benchmark inference.")
flags.DEFINE_bool("pipeline", True, "Benchmark the input pipeline.")
flags.DEFINE_integer("pipeline_batches", 10, "Batches timed in the input-pipeline benchmark.")
flags.DEFINE_string("jax_cache_dir", "", "Persistent XLA compilation cache ('' disables it, so "
                    "that compile times are real compiles).")
flags.DEFINE_string("json", "", "Also write the results to this JSON file.")

Timer = Callable[[], None]


def _configure_threads(threads: int) -> int:
  """Restricts this process to `threads` cores (0: leave as is); returns the core count in use."""
  cores = sorted(os.sched_getaffinity(0))
  if threads and threads < len(cores):
    os.sched_setaffinity(0, cores[:threads])
    cores = cores[:threads]
  return len(cores)


def apply_overrides(config, width=None, batch_size=None, dtype=None, conv_impl=None):
  """The config with the benchmark's shortcut flags applied (a copy)."""
  config = config.copy_and_resolve_references()
  if width is not None:
    config.model.width = width
  if batch_size is not None:
    config.train.batch_size = batch_size
  if dtype is not None:
    config.dtype = dtype
  if conv_impl is not None:
    config.model.conv_impl = conv_impl
  return config


def alternate(timers: dict[str, Timer], warmup: int, steps: int) -> dict[str, list[float]]:
  """Runs the timers in turn, warmup + steps rounds (order reversed every other round), and
  returns each one's timed durations (seconds) of the last `steps` rounds."""
  names = list(timers)
  times: dict[str, list[float]] = {name: [] for name in names}
  for i in range(warmup + steps):
    for name in (names if i % 2 == 0 else names[::-1]):
      start = time.perf_counter()
      timers[name]()
      elapsed = time.perf_counter() - start
      if i >= warmup:
        times[name].append(elapsed)
  return times


def _record(result: dict[str, Any], phase: str, times: dict[str, list[float]],
            batch_size: int) -> None:
  """Each framework's median, all timings and images/s of one phase (train or infer)."""
  for name, ts in times.items():
    med = statistics.median(ts)
    result[f"{name}_{phase}_s"] = med
    result[f"{name}_{phase}_s_all"] = ts
    result[f"{name}_{phase}_images_per_s"] = batch_size / med


def _flops(cost: Any) -> float:
  """The 'flops' entry of an XLA cost analysis (a dict, or a list of per-module dicts)."""
  if cost is None:
    return float("nan")
  if isinstance(cost, dict):
    cost = [cost]
  values = [c.get("flops") for c in cost if c and c.get("flops") is not None]
  return float(sum(values)) if values else float("nan")


def _memory_analysis_bytes(compiled) -> float:
  """Arguments + outputs + temporaries of a compiled executable (XLA's estimate), in bytes."""
  try:
    m = compiled.memory_analysis()
    return float(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
                 + m.temp_size_in_bytes)
  except Exception:  # not every backend implements it
    return float("nan")


def _max_rss_bytes() -> float:
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return float(rss if sys.platform == "darwin" else rss * 1024)


def _device_peak_bytes(devices) -> float:
  """Largest peak_bytes_in_use over the devices, or nan where memory_stats() is unavailable."""
  peaks = []
  for d in devices:
    try:
      stats = d.memory_stats()
    except Exception:
      stats = None
    if stats and "peak_bytes_in_use" in stats:
      peaks.append(stats["peak_bytes_in_use"])
  return float(max(peaks)) if peaks else float("nan")


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _synthetic_batch(batch: int, side: int, num_classes: int, seed: int = 0):
  import numpy as np
  rng = np.random.default_rng(seed)
  images = rng.standard_normal((batch, side, side, 3), dtype=np.float32)
  masks = (rng.uniform(size=(batch, side, side, num_classes)) < 0.4).astype(np.float32)
  return {"image": images, "mask": masks}


TORCH_REFERENCE = Path(__file__).resolve().parents[1] / "experiments" / "torch_reference.py"
_TORCH_REFERENCE_MODULE = "segan_jax_torch_reference"


def torch_reference_path() -> Path | None:
  """experiments/torch_reference.py of the repository checkout this package runs from (an
  editable install) or of the current folder; None where neither has it."""
  for path in (TORCH_REFERENCE, Path.cwd() / "experiments" / "torch_reference.py"):
    if path.is_file():
      return path
  return None


def torch_reference() -> ModuleType:
  """The PyTorch reference SegAN (experiments/torch_reference.py), loaded once from the checkout.

  Raises ImportError where the checkout's file is missing (an installed package has no
  experiments/ folder) or torch is not installed.
  """
  path = torch_reference_path()
  if path is None:
    raise ImportError("The PyTorch reference (experiments/torch_reference.py) is part of the "
                      "segan_jax repository, not of the installed package: run --torch from a "
                      "checkout (pip install -e '.[bench]').")
  return _checkout_module(path, _TORCH_REFERENCE_MODULE)


AUTHORS_CODE = TORCH_REFERENCE.with_name("authors_code.py")
_AUTHORS_CODE_MODULE = "segan_jax_authors_code"


def authors_code() -> ModuleType:
  """experiments/authors_code.py (the loader of the authors' own code), once, from the checkout."""
  for path in (AUTHORS_CODE, Path.cwd() / "experiments" / "authors_code.py"):
    if path.is_file():
      return _checkout_module(path, _AUTHORS_CODE_MODULE)
  raise ImportError("--authors_dir needs the repository checkout: experiments/authors_code.py "
                    "(which loads the authors' code) is not part of the installed package.")


def _checkout_module(path: Path, name: str) -> ModuleType:
  """The script at `path` of the checkout, executed once as module `name`."""
  if name in sys.modules:
    return sys.modules[name]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  try:
    spec.loader.exec_module(module)
  except BaseException:
    del sys.modules[name]
    raise
  return module


def _torch_model(config, use_cuda: bool):
  import torch
  weights = tuple(float(w) for w in config.loss.layer_weights) or None
  return torch_reference().SegAN(
      width=config.model.width, num_classes=config.model.num_classes,
      critic_global_conv=config.model.critic_global_conv, lr=config.optim.learning_rate,
      b1=config.optim.b1, b2=config.optim.b2, critic_clip=config.train.critic_clip,
      k=config.schedule.k_init, adversarial_weight=config.loss.adversarial_weight,
      dice_weight=config.loss.dice_weight, bce_weight=config.loss.bce_weight,
      layer_weights=weights, feature_reduction=config.loss.feature_reduction,
      bf16=config.dtype == "bfloat16", device="cuda" if use_cuda else "cpu",
      seed=config.train.seed,
      residual_batchnorm=bool(config.model.get("residual_batchnorm", True))), torch


def _authors_model(config, authors_dir: str, use_cuda: bool):
  """The authors' NetS and NetC at the config's width, with their train.py's iteration."""
  if config.model.num_classes != 1:
    raise ValueError("--authors_dir: the authors' networks have one output map "
                     f"(config.model.num_classes={config.model.num_classes}).")
  return authors_code().authors_segan(
      Path(authors_dir), config.model.width, lr=config.optim.learning_rate, b1=config.optim.b1,
      b2=config.optim.b2, clip=config.train.critic_clip, device="cuda" if use_cuda else "cpu")


def _torch_flops(fn: Callable[[], Any]) -> float:
  """FLOPs of one call of fn, by PyTorch's own counter (convolutions and matrix products)."""
  from torch.utils.flop_counter import FlopCounterMode
  with FlopCounterMode(display=False) as counter:
    fn()
  return float(counter.get_total_flops())


def pipeline_throughput(config, mesh, batches: int, warmup: int = 2,
                        log: Callable[[str], None] = print) -> dict[str, Any]:
  """Images/s of both placements of the training stream (segan_jax/data/pipeline.py) on synthetic
  data with the config's augmentation: 'device' on mesh's devices, 'host' on the host CPU
  (this process's slice). Also the start-up of each (arrays placed, first batch compiled)."""
  import jax

  from segan_jax.data import arrays as data_arrays
  from segan_jax.data import pipeline, sources, throughput
  n = max(4 * config.train.batch_size, 32)
  examples = sources.synthetic_examples(config.data.seed, 0, n)
  arrays = data_arrays.prepare_train(examples, config.data.resize_height, config.data.resize_width)
  stream = pipeline.Stream.from_config(config, n)
  out: dict[str, Any] = {"loader": config.data.loader, "batch": config.train.batch_size,
                         "batches": batches, "examples": n,
                         "whole_image_prob": stream.aug.whole_image_prob}
  for loader in pipeline.LOADERS:
    t0 = time.perf_counter()
    source = (pipeline.DeviceStream(arrays, stream, mesh) if loader == "device" else
              pipeline.HostStream(arrays, stream, jax.process_index(), jax.process_count()))
    jax.block_until_ready(source.batch(0))
    out[f"{loader}_startup_s"] = time.perf_counter() - t0
    rate, _ = throughput.images_per_second(source.batch, batches, warmup)
    out[f"{loader}_images_per_s"] = rate
    log(f"  {loader}: {rate:.1f} images/s (start-up {out[f'{loader}_startup_s']:.1f}s)")
    del source
  out["images_per_s"] = out[f"{config.data.loader}_images_per_s"]
  return out


def run(config, *, devices: int = 0, steps: int = 5, warmup: int = 2, use_torch: bool = False,
        threads: int = 1, do_train: bool = True, do_infer: bool = True, do_pipeline: bool = True,
        pipeline_batches: int = 10, authors_dir: str = "",
        log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs the benchmark for `config`; returns the figures (see format_report)."""
  import jax
  import numpy as np

  from segan_jax import sharding, steps as steps_lib, train
  from segan_jax.config_validation import validate_config

  warnings.filterwarnings("ignore", message=".*donated buffers were not usable.*")
  validate_config(config)
  if steps < 1 or warmup < 0:
    raise ValueError("--steps must be >= 1 and --warmup >= 0.")
  available = jax.devices()
  n = devices or len(available)
  if n > len(available):
    raise ValueError(f"--devices={n} but only {len(available)} devices are available "
                     f"({available[0].platform}); on CPU, try --host_devices={n}.")
  used = available[:n]
  mesh = sharding.make_mesh(used)
  global_batch_size = config.train.batch_size
  sharding.check_batch_size(global_batch_size, mesh, "--batch_size")
  backend = used[0].platform
  impl = config.model.conv_impl
  resolved_impl = ("cpu" if backend == "cpu" else "xla") if impl == "auto" else impl
  result: dict[str, Any] = {
      "width": config.model.width, "batch_size": global_batch_size, "dtype": config.dtype,
      "conv_impl": impl, "conv_impl_resolved": resolved_impl, "devices": n, "backend": backend,
      "device_kind": used[0].device_kind, "threads": threads, "steps": steps, "warmup": warmup,
      "cpu_model": _cpu_model(), "cpu_count": len(os.sched_getaffinity(0)),
      "load_average_start": os.getloadavg()[0], "jax_version": jax.__version__}

  steps_per_epoch = max(config.data.train_size // global_batch_size, 1)
  cfg = train.build_step_config(config, steps_per_epoch)
  xla_config = config.copy_and_resolve_references()
  xla_config.model.conv_impl = "xla"  # the same arithmetic, with loops XLA can count through
  xla_cfg = train.build_step_config(xla_config, steps_per_epoch)
  seg_state, critic_state = sharding.replicate(train.create_states(config, cfg), mesh)
  jitted = steps_lib.make_jitted_steps(cfg, mesh)
  side = config.data.image_size
  local = _synthetic_batch(global_batch_size // jax.process_count(), side,
                           config.model.num_classes)
  batch = sharding.global_batch(local, mesh)

  tr = torch = None
  if use_torch:
    tr, torch = _torch_model(config, use_cuda=backend == "gpu")
    torch.set_num_threads(threads)
    t_images = _to_torch(local["image"], tr.device)
    t_masks = _to_torch(local["mask"], tr.device)
    result["torch_version"] = torch.__version__
    result["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY", "default")
    sync = torch.cuda.synchronize if tr.device.type == "cuda" else (lambda: None)
  authors = None
  if authors_dir:
    import torch
    authors = _authors_model(config, authors_dir, use_cuda=backend == "gpu")
    torch.set_num_threads(threads)
    a_images = _to_torch(local["image"], authors.device)
    a_masks = _to_torch(local["mask"], authors.device)
    result["authors_dir"] = str(authors_dir)
    result["authors_torch_version"] = torch.__version__
    a_sync = torch.cuda.synchronize if authors.device.type == "cuda" else (lambda: None)
  ratios = {"train": float("nan"), "infer": float("nan")}
  authors_ratios = {"train": float("nan"), "infer": float("nan")}

  if do_train:
    log(f"Compiling the training iteration (width {config.model.width}, batch "
        f"{global_batch_size}, {config.dtype}, conv_impl {impl}->{resolved_impl}, {n} device(s))...")
    t0 = time.perf_counter()
    lowered = jitted.train_step.lower(seg_state, critic_state, batch)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    result["train_lower_s"], result["train_compile_s"] = t1 - t0, t2 - t1
    # On SPMD programs the compiled cost analysis is per device: scale to the whole iteration.
    # XLA's figure depends on the backend (no cuDNN convolutions on GPU, loop bodies once on
    # CPU), so the FLOPs reported are counted on the jaxpr of the conv_impl=xla iteration.
    result["train_flops_compiled"] = _flops(compiled.cost_analysis()) * n
    result["train_xla_buffer_bytes"] = _memory_analysis_bytes(compiled)
    flops = result["train_flops"] = flop_count.count(
        functools.partial(steps_lib.train_step, cfg=xla_cfg), seg_state, critic_state, batch)
    log(f"  lowered in {t1 - t0:.1f}s, compiled in {t2 - t1:.1f}s; "
        f"{flops / global_batch_size / 1e9:.2f} GFLOP per image.")

    state = {"seg": seg_state, "critic": critic_state}

    def jax_train():
      s, c, metrics = compiled(state["seg"], state["critic"], batch)
      jax.block_until_ready((s, c, metrics))
      state["seg"], state["critic"] = s, c

    jax_train()  # the first run also allocates; its peak is segan_jax's own
    result["max_rss_bytes_after_jax_train"] = _max_rss_bytes()
    timers = {"segan_jax": jax_train}
    if tr is not None:
      def torch_train():
        tr.train_step(t_images, t_masks)
        sync()
      timers["torch"] = torch_train
      result["torch_train_flops"] = _torch_flops(torch_train)  # an extra warm-up iteration
    if authors is not None:
      def authors_train():
        authors.train_step(a_images, a_masks)
        a_sync()
      timers["authors"] = authors_train
      result["authors_train_flops"] = _torch_flops(authors_train)
    log(f"Timing {steps} training iterations after {warmup} warm-up "
        f"({' and '.join(timers)}, alternating)...")
    _record(result, "train", alternate(timers, warmup, steps), global_batch_size)
    result["train_flops_per_s"] = flops / result["segan_jax_train_s"]
    if tr is not None:
      result["torch_train_flops_per_s"] = result["torch_train_flops"] / result["torch_train_s"]
      ratios["train"] = (result["segan_jax_train_images_per_s"]
                         / result["torch_train_images_per_s"])
    if authors is not None:
      result["authors_train_flops_per_s"] = (result["authors_train_flops"]
                                             / result["authors_train_s"])
      authors_ratios["train"] = (result["segan_jax_train_images_per_s"]
                                 / result["authors_train_images_per_s"])
    seg_state, critic_state = state["seg"], state["critic"]
    del compiled, lowered

  if do_infer:
    log("Compiling inference...")
    t0 = time.perf_counter()
    lowered = jitted.predict_probs.lower(seg_state, batch["image"])
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    result["infer_lower_s"], result["infer_compile_s"] = t1 - t0, t2 - t1
    result["infer_flops"] = flop_count.count(
        functools.partial(steps_lib.predict_probs, cfg=xla_cfg), seg_state, batch["image"])
    images = batch["image"]

    def jax_infer():
      jax.block_until_ready(compiled(seg_state, images))

    timers = {"segan_jax": jax_infer}
    if tr is not None:
      def torch_infer():
        tr.predict_probs(t_images)
        sync()
      timers["torch"] = torch_infer
      result["torch_infer_flops"] = _torch_flops(torch_infer)
    if authors is not None:
      def authors_infer():
        authors.predict_probs(a_images)
        a_sync()
      timers["authors"] = authors_infer
      result["authors_infer_flops"] = _torch_flops(authors_infer)
    log(f"Timing {steps} inference batches after {warmup} warm-up...")
    _record(result, "infer", alternate(timers, warmup, steps), global_batch_size)
    result["infer_flops_per_s"] = result["infer_flops"] / result["segan_jax_infer_s"]
    if tr is not None:
      result["torch_infer_flops_per_s"] = result["torch_infer_flops"] / result["torch_infer_s"]
      ratios["infer"] = (result["segan_jax_infer_images_per_s"]
                         / result["torch_infer_images_per_s"])
    if authors is not None:
      result["authors_infer_flops_per_s"] = (result["authors_infer_flops"]
                                             / result["authors_infer_s"])
      authors_ratios["infer"] = (result["segan_jax_infer_images_per_s"]
                                 / result["authors_infer_images_per_s"])
    del compiled, lowered

  result["device_peak_bytes"] = _device_peak_bytes(used)
  result["max_rss_bytes"] = _max_rss_bytes()
  if tr is not None and tr.device.type == "cuda":
    result["torch_cuda_peak_bytes"] = float(torch.cuda.max_memory_allocated())

  result["pipeline_ratio_vs_train"] = float("nan")
  if do_pipeline:
    log(f"Timing the input pipeline (both placements, {pipeline_batches} batches each, on the "
        "devices above)...")
    p = pipeline_throughput(config, mesh, pipeline_batches, log=log)
    result.update({f"pipeline_{k}": v for k, v in p.items()})
    if "segan_jax_train_images_per_s" in result:
      result["pipeline_ratio_vs_train"] = (result["pipeline_images_per_s"]
                                           / result["segan_jax_train_images_per_s"])
  result["train_ratio_vs_torch"], result["infer_ratio_vs_torch"] = ratios["train"], ratios["infer"]
  result["train_ratio_vs_authors"] = authors_ratios["train"]
  result["infer_ratio_vs_authors"] = authors_ratios["infer"]
  result["load_average_end"] = os.getloadavg()[0]
  return result


def _to_torch(x, device):
  return torch_reference().to_nchw(x, device)


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "-"
  return f"{value:{spec}}{unit}"


def _gib(b: float | None) -> str:
  return _fmt(None if b is None else b / 2**30, ".2f", " GiB")


def format_report(r: dict[str, Any]) -> str:
  """A readable table of run()'s figures; its last line is the machine-readable ratios."""
  has_torch = "torch_version" in r
  has_authors = "authors_dir" in r
  lines = [
      f"segan_jax benchmark: width {r['width']}, global batch {r['batch_size']}, {r['dtype']}, "
      f"conv_impl {r['conv_impl']} (-> {r['conv_impl_resolved']}), {r['devices']} x "
      f"{r['backend']} device ({r['device_kind']}), jax {r['jax_version']}"
      + (f", torch {r['torch_version']} (OMP_WAIT_POLICY {r.get('omp_wait_policy', 'default')})"
         if has_torch else "")
      + (f", the authors' code from {r['authors_dir']} (torch {r['authors_torch_version']})"
         if has_authors else "") + f"; malloc: {r.get('malloc', 'default')}"
      + f", CPU dispatch {r.get('cpu_dispatch', 'asynchronous')}"
      + (f", GLIBC_TUNABLES={r['glibc_tunables']}" if r.get("glibc_tunables") else ""),
      f"machine: {r['cpu_model']}, {r['cpu_count']} CPU cores used, {r['threads']} threads; "
      f"load average {r['load_average_start']:.1f} at start, {r['load_average_end']:.1f} at end; "
      f"median of {r['steps']} timed iterations after {r['warmup']} warm-up",
      ""]
  def row(name, a, b="", c="", d="", e=""):
    return (f"  {name:<40s}{a:>15s}" + (f"{b:>15s}{c:>9s}" if has_torch else "")
            + (f"{d:>15s}{e:>9s}" if has_authors else ""))

  lines.append(row("", "segan_jax", "PyTorch", "ratio", "authors' code", "ratio"))
  for kind, label in (("train", "train iteration (C + S steps)"), ("infer", "inference (S forward)")):
    if f"segan_jax_{kind}_s" not in r:
      continue
    lines.append(row(f"{label}, s/batch", _fmt(r[f"segan_jax_{kind}_s"], ".3f"),
                     _fmt(r.get(f"torch_{kind}_s"), ".3f"), "",
                     _fmt(r.get(f"authors_{kind}_s"), ".3f")))
    lines.append(row(f"{label}, images/s", _fmt(r[f"segan_jax_{kind}_images_per_s"], ".2f"),
                     _fmt(r.get(f"torch_{kind}_images_per_s"), ".2f"),
                     _fmt(r[f"{kind}_ratio_vs_torch"], ".2f", "x"),
                     _fmt(r.get(f"authors_{kind}_images_per_s"), ".2f"),
                     _fmt(r.get(f"{kind}_ratio_vs_authors"), ".2f", "x")))
  spread = lambda key: f"{min(r[key]):.3f}-{max(r[key]):.3f}" if key in r else ""
  for kind in ("train", "infer"):
    if f"segan_jax_{kind}_s_all" in r:
      lines.append(row(f"{kind}, s/batch min-max", spread(f"segan_jax_{kind}_s_all"),
                       spread(f"torch_{kind}_s_all"), "", spread(f"authors_{kind}_s_all")))
  gflop = lambda key: _fmt(r[key] / 1e9, ".1f") if key in r else ""
  if "segan_jax_train_s" in r:
    lines.append(row("train GFLOP/iteration", gflop("train_flops"), gflop("torch_train_flops"),
                     "", gflop("authors_train_flops")))
    lines.append(row("train achieved GFLOP/s", gflop("train_flops_per_s"),
                     gflop("torch_train_flops_per_s"), "", gflop("authors_train_flops_per_s")))
  if "segan_jax_infer_s" in r:
    lines.append(row("inference GFLOP/batch", gflop("infer_flops"), gflop("torch_infer_flops"),
                     "", gflop("authors_infer_flops")))
    lines.append(row("inference achieved GFLOP/s", gflop("infer_flops_per_s"),
                     gflop("torch_infer_flops_per_s"), "", gflop("authors_infer_flops_per_s")))
  lines.append("")
  if "train_compile_s" in r:
    lines.append(f"  compile, training iteration: lower {r['train_lower_s']:.1f}s + compile "
                 f"{r['train_compile_s']:.1f}s")
  if "infer_compile_s" in r:
    lines.append(f"  compile, inference:          lower {r['infer_lower_s']:.1f}s + compile "
                 f"{r['infer_compile_s']:.1f}s")
  if "train_flops_compiled" in r:
    lines.append(f"  FLOPs above: convolutions and matrix products, segan_jax's counted on the jaxpr"
                 + (", PyTorch's by torch.utils.flop_counter" if has_torch else "") + "; XLA's "
                 f"compiled cost analysis of the training iteration: "
                 f"{r['train_flops_compiled'] / 1e9:.1f} GFLOP (backend-dependent)")
  mem = []
  if not math.isnan(r.get("device_peak_bytes", float("nan"))):
    mem.append(f"device peak {_gib(r['device_peak_bytes'])}")
  if "max_rss_bytes_after_jax_train" in r:
    mem.append(f"process max RSS after segan_jax's first training iteration "
               f"{_gib(r['max_rss_bytes_after_jax_train'])}")
  mem.append(f"process max RSS at the end {_gib(r['max_rss_bytes'])}"
             + (" (includes PyTorch)" if has_torch else ""))
  if "train_xla_buffer_bytes" in r:
    mem.append(f"XLA buffers of the training iteration {_gib(r['train_xla_buffer_bytes'])}")
  if "torch_cuda_peak_bytes" in r:
    mem.append(f"PyTorch CUDA peak {_gib(r['torch_cuda_peak_bytes'])}")
  lines.append("  memory: " + "; ".join(mem))
  if "pipeline_images_per_s" in r:
    train_rate = r.get("segan_jax_train_images_per_s")
    for loader in ("device", "host"):
      if f"pipeline_{loader}_images_per_s" not in r:
        continue
      rate = r[f"pipeline_{loader}_images_per_s"]
      vs_train = (f" = {rate / train_rate:.1f}x the training iteration's {train_rate:.2f}"
                  if train_rate else "")
      default = " (config.data.loader)" if loader == r["pipeline_loader"] else ""
      lines.append(f"  input pipeline, {loader}{default}: {rate:.1f} images/s{vs_train} "
                   f"(synthetic data, batch {r['pipeline_batch']}, whole-image view "
                   f"p={r['pipeline_whole_image_prob']:g}; start-up "
                   f"{r[f'pipeline_{loader}_startup_s']:.1f}s)")
  lines.append(f"train_ratio_vs_torch={_ratio(r['train_ratio_vs_torch'])} "
               f"infer_ratio_vs_torch={_ratio(r['infer_ratio_vs_torch'])} "
               f"pipeline_ratio_vs_train={_ratio(r.get('pipeline_ratio_vs_train'))} "
               f"train_ratio_vs_authors={_ratio(r.get('train_ratio_vs_authors'))} "
               f"infer_ratio_vs_authors={_ratio(r.get('infer_ratio_vs_authors'))}")
  return "\n".join(lines)


def _ratio(x: float) -> str:
  return "nan" if x is None or math.isnan(x) else f"{x:.3f}"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  host_memory.configure(FLAGS.huge_pages, FLAGS.keep_freed_memory)
  if FLAGS.host_devices:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={FLAGS.host_devices}")
  threads = _configure_threads(FLAGS.threads)  # before JAX starts its thread pools
  if (FLAGS.torch or FLAGS.authors_dir) and FLAGS.omp_wait_policy != "default":
    os.environ.setdefault("OMP_WAIT_POLICY", FLAGS.omp_wait_policy.upper())
  import jax
  compilation_cache.enable(FLAGS.jax_cache_dir, 0.5)
  from segan_jax.config_validation import ConfigError
  config = apply_overrides(FLAGS.config, FLAGS.width, FLAGS.batch_size, FLAGS.dtype,
                           FLAGS.conv_impl)
  if FLAGS.torch:
    try:
      import torch  # noqa: F401
    except ImportError:
      raise app.UsageError("--torch needs PyTorch: pip install 'segan_jax[bench]' "
                           "(torch==2.13.0).")
    if torch_reference_path() is None:
      raise app.UsageError("--torch needs the repository checkout: the PyTorch reference is "
                           "experiments/torch_reference.py, which the installed package lacks. "
                           "Run it from a clone of the repository.")
  if FLAGS.authors_dir:
    try:
      import torch  # noqa: F401
      authors_code()
    except ImportError as e:
      raise app.UsageError(f"--authors_dir: {e} (torch: pip install 'segan_jax[bench]').")
    if not os.path.isfile(os.path.join(FLAGS.authors_dir, "net.py")):
      raise app.UsageError(f"--authors_dir={FLAGS.authors_dir} holds no net.py: name a checkout "
                           "of the authors' repository (YuanXue1993/SegAN).")
  try:
    result = run(config, devices=FLAGS.devices, steps=FLAGS.steps, warmup=FLAGS.warmup,
                 use_torch=FLAGS.torch, threads=threads, do_train=FLAGS.train,
                 do_infer=FLAGS.infer, do_pipeline=FLAGS.pipeline,
                 pipeline_batches=FLAGS.pipeline_batches, authors_dir=FLAGS.authors_dir,
                 log=lambda s: print(s, file=sys.stderr, flush=True))
  except ConfigError as e:
    raise app.UsageError(str(e))
  tunables = os.environ.get("GLIBC_TUNABLES", "").split(":")
  kept = all(t in tunables for t in host_memory.KEEP_FREED_TUNABLES)
  result["malloc"] = "keep freed memory" if kept else "default"
  result["cpu_dispatch"] = ("asynchronous" if jax.config.values["jax_cpu_enable_async_dispatch"]
                            else "synchronous")
  result["glibc_tunables"] = os.environ.get("GLIBC_TUNABLES", "")
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump(result, f, indent=2, sort_keys=True)
  print(format_report(result), flush=True)


if __name__ == "__main__":
  app.run(main)
