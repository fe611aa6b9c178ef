"""Data parallelism on 4 simulated CPU devices (subprocesses, since the device count is fixed at
JAX start-up): same step as on one device, global BatchNorm statistics, the same input batches
(each device augmenting its own shard), restore across counts."""

import os
import subprocess
import sys
import textwrap

import pytest

STEP_EQUIVALENCE = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    assert jax.device_count() == 4, jax.devices()
    from segan_jax import sharding, steps
    from segan_jax.configs import tiny
    import optax
    from segan_jax.train import build_step_config
    from segan_jax.train_state import create_train_state
    config = tiny.get_config()
    cfg = build_step_config(config, steps_per_epoch=4)
    # Plain SGD, so parameters move in proportion to the gradients (Adam's first step is their sign,
    # which flips for gradients that are zero up to rounding).
    keys = jax.random.split(jax.random.key(0))
    seg = create_train_state(cfg.segmentor, keys[0], (1, 128, 128, 3), optax.sgd(0.1))
    critic = create_train_state(cfg.critic, keys[1], (1, 128, 128, 3), optax.sgd(0.1))
    rng = np.random.default_rng(0)
    images = rng.normal(size=(4, 128, 128, 3)).astype(np.float32)
    images[2:] *= 5.0  # the devices' shards differ: per-device statistics would differ too
    masks = (rng.uniform(size=(4, 128, 128, 1)) > 0.5).astype(np.float32)
    batch = {"image": images, "mask": masks}
    copy = lambda t: jax.tree.map(lambda x: np.array(x), t)
    single = steps.make_jitted_steps(cfg).train_step(copy(seg), copy(critic), batch)
    mesh = sharding.make_mesh()
    s4, c4 = sharding.replicate((copy(seg), copy(critic)), mesh)
    gbatch = sharding.global_batch(batch, mesh)
    assert gbatch["image"].sharding.spec[0] == "data"
    multi = steps.make_jitted_steps(cfg, mesh).train_step(s4, c4, gbatch)
    for a, b in zip(single[:2], multi[:2]):
      for x, y in zip(jax.tree.leaves((a.params, a.batch_stats)),
                      jax.tree.leaves((b.params, b.batch_stats))):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(single[2]["adversarial_loss"], multi[2]["adversarial_loss"],
                               rtol=1e-4)
    try:
      sharding.check_batch_size(6, mesh)
    except ValueError as e:
      assert "divisible by the number of devices (4)" in str(e)
    else:
      raise AssertionError("batch 6 on 4 devices was accepted")
    print("OK")
""")

PIPELINE_EQUIVALENCE = textwrap.dedent("""
    import jax, numpy as np
    assert jax.device_count() == 4, jax.devices()
    from segan_jax import sharding
    from segan_jax.configs import tiny
    from segan_jax.data import pipeline, sources
    from segan_jax.data.arrays import prepare_train
    config = tiny.get_config()
    config.train.batch_size = 8
    config.data.whole_image_prob = 0.5
    arrays = prepare_train(sources.synthetic_examples(0, 0, 20), 135, 180)
    stream = pipeline.Stream.from_config(config, len(arrays))
    four = sharding.make_mesh()
    one = sharding.make_mesh(jax.devices()[:1])
    on_four = pipeline.DeviceStream(arrays, stream, four)
    on_one = pipeline.DeviceStream(arrays, stream, one)
    host = pipeline.HostStream(arrays, stream)
    for step in (0, 3, 7):
      a, b, c = on_four.batch(step), on_one.batch(step), host.batch(step)
      # Each device holds (and computed) its own quarter of the global batch.
      shards = sorted(a["image"].addressable_shards, key=lambda s: s.index[0].start)
      assert [s.data.shape[0] for s in shards] == [2, 2, 2, 2]
      assert len({s.device for s in shards}) == 4
      for k in ("image", "mask"):
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))
        np.testing.assert_array_equal(np.asarray(a[k]), c[k])
    # No device gathers another's slots: the program has no collectives.
    hlo = on_four._fn.lower(on_four.pairs, on_four.wholes, np.int32(0)).compile().as_text()
    assert not any(op in hlo for op in ("all-gather", "all-reduce", "collective-permute",
                                        "all-to-all")), "collectives in the input pipeline"
    # ... and none computes the whole batch: every image array in the per-device program holds 2.
    assert "f32[2,128,128,3]" in hlo and "f32[8,128,128" not in hlo
    print("OK")
""")

TRAIN = textwrap.dedent("""
    import sys, jax
    from absl import logging
    logging.set_verbosity("info")
    from segan_jax import train
    from segan_jax.configs import tiny
    config = tiny.get_config()
    config.train.num_steps = int(sys.argv[2])
    config.train.checkpoint_every = 2
    config.train.eval_every = 2
    result = train.train_and_evaluate(config, sys.argv[1])
    print("DEVICES", jax.device_count(), "STEP", result["step"])
""")


def _run(code, devices, *args):
  env = dict(os.environ)
  env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                        env=env, timeout=900)


def test_data_parallel_step_equals_single_device_step():
  out = _run(STEP_EQUIVALENCE, 4)
  assert out.returncode == 0, out.stderr[-4000:]
  assert "OK" in out.stdout


def test_input_pipeline_on_4_devices_equals_1_device_and_host():
  out = _run(PIPELINE_EQUIVALENCE, 4)
  assert out.returncode == 0, out.stderr[-4000:]
  assert "OK" in out.stdout


def test_checkpoint_from_4_devices_resumes_on_1(tmp_path):
  workdir = str(tmp_path / "run")
  four = _run(TRAIN, 4, workdir, "2")
  assert four.returncode == 0, four.stderr[-4000:]
  assert "DEVICES 4 STEP 2" in four.stdout
  one = _run(TRAIN, 1, workdir, "4")
  assert one.returncode == 0, one.stderr[-4000:]
  assert "Resumed from" in one.stderr and "DEVICES 1 STEP 4" in one.stdout
