"""The throughput benchmark (python -m segan_jax.benchmark) and its PyTorch reference model."""

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from segan_jax import benchmark, host_memory

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed (extra [bench])")
RATIO_LINE = re.compile(r"^train_ratio_vs_torch=(\S+) infer_ratio_vs_torch=(\S+) "
                        r"pipeline_ratio_vs_train=(\S+) train_ratio_vs_authors=(\S+) "
                        r"infer_ratio_vs_authors=(\S+)$")
# A checkout of the authors' SegAN repository (their net.py), for the side-by-side timing.
AUTHORS_DIR = Path(os.environ.get("SEGAN_AUTHORS_DIR", Path(__file__).resolve().parents[2]
                                  / "shared" / "reference" / "segan_authors"))
HAS_AUTHORS = HAS_TORCH and (AUTHORS_DIR / "net.py").is_file()


def _benchmark(tmp_path, *extra):
  out = tmp_path / "bench.json"
  cmd = [sys.executable, "-m", "segan_jax.benchmark", "--width=2", "--batch_size=2", "--steps=1",
         "--warmup=1", "--conv_impl=xla", "--pipeline_batches=2", f"--json={out}",
         f"--jax_cache_dir={jax.config.jax_compilation_cache_dir or ''}", *extra]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout.strip().splitlines(), json.load(open(out))


def test_benchmark_runs_and_reports(tmp_path):
  extra = (["--torch"] if HAS_TORCH else []) + ([f"--authors_dir={AUTHORS_DIR}"] if HAS_AUTHORS
                                                 else [])
  lines, result = _benchmark(tmp_path, *extra)
  match = RATIO_LINE.match(lines[-1])
  assert match, lines[-1]
  ratios = [float(x) for x in match.groups()]
  torch_ratios, pipeline_ratio, authors_ratios = ratios[:2], ratios[2], ratios[3:]
  if HAS_TORCH:
    assert all(math.isfinite(x) and x > 0 for x in torch_ratios)
  else:
    assert all(math.isnan(x) for x in torch_ratios)
  if HAS_AUTHORS:
    assert all(math.isfinite(x) and x > 0 for x in authors_ratios)
    assert result["train_ratio_vs_authors"] == pytest.approx(
        result["segan_jax_train_images_per_s"] / result["authors_train_images_per_s"])
    assert result["infer_ratio_vs_authors"] == pytest.approx(
        result["segan_jax_infer_images_per_s"] / result["authors_infer_images_per_s"])
    assert result["authors_train_flops"] > 0 and "authors' code" in lines[0]
  else:
    assert all(math.isnan(x) for x in authors_ratios)
  # The input pipeline: both placements, and the configured one against the training iteration.
  assert pipeline_ratio == pytest.approx(result["pipeline_ratio_vs_train"], rel=1e-3)
  assert result["pipeline_ratio_vs_train"] == pytest.approx(
      result["pipeline_device_images_per_s"] / result["segan_jax_train_images_per_s"])
  assert result["pipeline_images_per_s"] == result["pipeline_device_images_per_s"]
  assert result["pipeline_host_images_per_s"] > 0

  # The table's images/s rows hold positive numbers for each framework that ran.
  rows = [l for l in lines if "images/s" in l and "(" in l and "pipeline" not in l]
  assert len(rows) == 2, lines
  for row in rows:
    numbers = [float(x) for x in re.findall(r"\d+\.\d+", row.split("images/s", 1)[1])]
    count = 1 + 2 * HAS_TORCH + 2 * HAS_AUTHORS
    assert len(numbers) == count and all(x > 0 for x in numbers), row
  pipeline = [l for l in lines if "input pipeline" in l]
  assert [l.split(":")[0].strip() for l in pipeline] == [
      "input pipeline, device (config.data.loader)", "input pipeline, host"]
  assert all(float(re.search(r"([\d.]+) images/s", l).group(1)) > 0 for l in pipeline)
  assert "x the training iteration's" in pipeline[0]
  assert any(l.strip().startswith("compile, training iteration") for l in lines)

  for key in ("segan_jax_train_images_per_s", "segan_jax_infer_images_per_s", "train_flops",
              "train_flops_per_s", "train_compile_s", "train_lower_s", "infer_compile_s",
              "max_rss_bytes", "pipeline_images_per_s"):
    assert result[key] > 0, key
  # On CPU with conv_impl=xla, XLA's compiled cost analysis counts the same convolutions and dots
  # as the jaxpr count, plus the elementwise work.
  assert result["train_flops"] <= result["train_flops_compiled"]
  assert result["train_flops"] == pytest.approx(result["train_flops_compiled"], rel=0.3)
  if HAS_TORCH:
    assert result["torch_train_images_per_s"] > 0 and result["torch_infer_images_per_s"] > 0
    assert result["train_ratio_vs_torch"] == pytest.approx(
        result["segan_jax_train_images_per_s"] / result["torch_train_images_per_s"])
    # PyTorch's own count: its reference runs S forward twice per iteration and convolves the
    # upsampled maps in the decoder, where segan_jax upsamples inside the global convolutions.
    assert result["torch_train_flops"] > result["train_flops"]
    assert result["torch_infer_flops"] > result["infer_flops"]
    assert result["torch_train_flops_per_s"] > 0 and result["torch_infer_flops_per_s"] > 0
  kept = host_memory.keep_freed_available()  # the benchmark restarts with the tunables
  assert result["malloc"] == ("keep freed memory" if kept else "default")
  assert result["cpu_dispatch"] == "synchronous"
  assert f"malloc: {result['malloc']}, CPU dispatch synchronous" in lines[0]


def test_benchmark_without_keeping_freed_memory_says_so(tmp_path):
  lines, result = _benchmark(tmp_path, "--nokeep_freed_memory", "--nohuge_pages", "--notrain",
                             "--nopipeline")
  assert result["malloc"] == "default" and result["cpu_dispatch"] == "asynchronous"
  assert "glibc.malloc" not in result["glibc_tunables"]
  assert "malloc: default, CPU dispatch asynchronous" in lines[0]


def test_alternate_interleaves_and_drops_warmup():
  calls = []
  times = benchmark.alternate({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                              warmup=1, steps=2)
  assert calls == ["a", "b", "b", "a", "a", "b"]
  assert [len(v) for v in times.values()] == [2, 2]


def test_report_without_torch_ends_with_nan_ratios():
  r = {"width": 2, "batch_size": 2, "dtype": "float32", "conv_impl": "xla",
       "conv_impl_resolved": "xla", "devices": 1, "backend": "cpu", "device_kind": "cpu",
       "jax_version": jax.__version__, "cpu_model": "x", "cpu_count": 2, "threads": 2,
       "load_average_start": 1.0, "load_average_end": 1.0, "steps": 1, "warmup": 1,
       "segan_jax_train_s": 0.5, "segan_jax_train_images_per_s": 4.0, "train_flops": 1e9,
       "train_flops_per_s": 2e9, "max_rss_bytes": 2.0**30, "train_ratio_vs_torch": math.nan,
       "infer_ratio_vs_torch": math.nan}
  lines = benchmark.format_report(r).splitlines()
  assert lines[-1] == ("train_ratio_vs_torch=nan infer_ratio_vs_torch=nan "
                       "pipeline_ratio_vs_train=nan train_ratio_vs_authors=nan "
                       "infer_ratio_vs_authors=nan")


def test_torch_reference_is_found_in_the_checkout():
  # experiments/torch_reference.py is part of the repository, not of the installed package.
  assert benchmark.torch_reference_path() == benchmark.TORCH_REFERENCE
  assert benchmark.TORCH_REFERENCE.is_file()


@needs_torch
def test_torch_reference_weight_counts_match_jax_at_width_64():
  import torch
  ref = benchmark.torch_reference()
  with torch.device("meta"):  # shapes only, no 600 MB allocation
    s, c = ref.Segmentor(width=64), ref.Critic(width=64)
  # The same counts as tests/test_models.py asserts for the Flax models (docs/architecture.md).
  assert ref.count_kernel_weights(s) == 156_207_872
  assert ref.count_kernel_weights(c) == 9_389_248


@needs_torch
@pytest.mark.parametrize("network", ["segmentor", "critic", "critic_global_conv"])
def test_torch_reference_computes_the_same_as_the_flax_models(network):
  # In float64 on both sides, so that only a difference in the architecture can show (in float32,
  # BatchNorm over the 1x1 bottleneck of a batch of 2 amplifies rounding to ~1e-4).
  import jax.numpy as jnp
  import torch
  ref = benchmark.torch_reference()
  from segan_jax.models import Critic, Segmentor, mask_images

  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 128, 128, 3))
  masks = (rng.uniform(size=(2, 128, 128, 1)) < 0.5).astype(np.float64)
  with jax.enable_x64(True):
    f64 = jnp.float64
    if network == "segmentor":
      cases = [(Segmentor(width=2, dtype=f64, conv_impl="xla"), ref.Segmentor(width=2), x)]
    else:
      global_conv = network == "critic_global_conv"
      cases = [(Critic(width=2, global_conv=global_conv, dtype=f64, conv_impl="xla"),
                ref.Critic(width=2, global_conv=global_conv), np.asarray(mask_images(x, masks)))]
    for flax_model, torch_model, inputs in cases:
      variables = jax.jit(lambda x, m=flax_model: m.init(jax.random.key(1), x, train=False))(
          inputs)
      # Non-trivial BatchNorm statistics, so that inference mode is checked too.
      stats = jax.tree.map(lambda v: v + 0.1 * jax.random.uniform(jax.random.key(2), v.shape),
                           variables.get("batch_stats", {}))
      variables = {"params": variables["params"], "batch_stats": stats}
      ref.load_flax_variables(torch_model, variables["params"], stats)
      torch_model.double()
      # Inference first: a PyTorch training pass updates its running statistics.
      for train in (False, True):
        torch_model.train(train)
        with torch.no_grad():
          got = torch_model(torch.from_numpy(np.ascontiguousarray(np.moveaxis(inputs, -1, 1))))
        want, _ = jax.jit(lambda v, x, m=flax_model, t=train: m.apply(
            v, x, train=t, mutable=["batch_stats"]))(variables, inputs)
        got = got if isinstance(got, list) else [got]
        want = want if isinstance(want, list) else [want]
        assert len(got) == len(want)
        for g, w in zip(got, want):
          w = np.moveaxis(np.asarray(w), -1, 1)
          np.testing.assert_allclose(g.double().numpy(), w, rtol=1e-6,
                                     atol=1e-6 * np.abs(w).max())
      assert ref.count_kernel_weights(torch_model) == sum(
          int(np.prod(p.shape)) for path, p in jax.tree_util.tree_leaves_with_path(
              variables["params"]) if path[-1].key == "kernel")


@needs_torch
def test_torch_reference_training_iteration():
  import torch
  ref = benchmark.torch_reference()
  threads = torch.get_num_threads()
  torch.set_num_threads(1)  # tiny layers: OpenMP's spin-waiting costs more than it gains
  try:
    _torch_training_iteration(ref)
  finally:
    torch.set_num_threads(threads)


def _torch_training_iteration(ref):
  import torch
  model = ref.SegAN(width=2, lr=1e-2)
  rng = np.random.default_rng(0)
  images = ref.to_nchw(rng.standard_normal((2, 128, 128, 3)))
  masks = ref.to_nchw((rng.uniform(size=(2, 128, 128, 1)) < 0.5))
  before = [p.detach().clone() for p in model.segmentor.parameters()]
  out = model.train_step(images, masks)
  assert set(out) == {"critic_loss", "segmentor_loss"}
  assert all(torch.isfinite(v) for v in out.values())
  assert all(p.abs().max() <= 0.05 for p in model.critic.parameters())
  assert all(p.requires_grad for p in model.critic.parameters())
  assert any(not torch.equal(a, b) for a, b in zip(before, model.segmentor.parameters()))
  probs = model.predict_probs(images)
  assert probs.shape == (2, 1, 128, 128) and 0 <= probs.min() and probs.max() <= 1


@pytest.mark.skipif(not HAS_AUTHORS, reason="needs torch and the authors' code (SEGAN_AUTHORS_DIR)")
def test_authors_code_runs_their_training_iteration():
  import torch
  code = benchmark.authors_code()
  model = code.authors_segan(AUTHORS_DIR, 2, lr=1e-2)
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  try:
    rng = np.random.default_rng(0)
    ref = benchmark.torch_reference()
    images = ref.to_nchw(rng.standard_normal((2, 128, 128, 3)))
    masks = ref.to_nchw((rng.uniform(size=(2, 128, 128, 1)) < 0.5))
    before = [p.detach().clone() for p in model.segmentor.parameters()]
    out = model.train_step(images, masks)
    assert all(torch.isfinite(v) for v in out.values()) and float(out["critic_loss"]) <= 0
    assert all(p.abs().max() <= 0.05 for p in model.critic.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.segmentor.parameters()))
    probs = model.predict_probs(images)
    assert probs.shape == (2, 1, 128, 128) and 0 <= probs.min() and probs.max() <= 1
    # Their residual blocks build BatchNorm and never call it: no BatchNorm runs on their maps.
    assert model.segmentor.convblock1_1.norm1.num_batches_tracked == 0
  finally:
    torch.set_num_threads(threads)


def test_authors_code_refuses_a_folder_without_their_net_py(tmp_path):
  pytest.importorskip("torch")
  with pytest.raises(FileNotFoundError, match="--authors_dir"):
    benchmark.authors_code().load_authors_net(tmp_path, 2, align_corners=False)
