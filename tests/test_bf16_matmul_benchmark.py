"""experiments/bf16_matmul_benchmark.py: every form computes the 3x3 convolution, and bad sizes
are refused by name."""

import numpy as np
import pytest

import experiment_scripts


@pytest.fixture(scope="module")
def script():
  return experiment_scripts.load("bf16_matmul_benchmark")


def test_matmul_forms_equal_the_convolution(script):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 6, 5, 3)).astype(np.float32)
  k = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
  ref = np.asarray(script.conv3x3(x, k))
  for form in (script.conv3x3_im2col, script.conv3x3_rows, script.conv3x3_taps):
    np.testing.assert_allclose(np.asarray(form(x, k)), ref, rtol=1e-5, atol=1e-5)


def test_prints_every_row(script, capsys):
  rows = script.main(["--batch=1", "--side=8", "--cin=4", "--cout=4", "--repeats=1",
                      "--notorch"])
  names = [r[0] for r in rows]
  assert len(names) == 8 and "matmul bfloat16 -> float32" in names and "taps bfloat16" in names
  out = capsys.readouterr().out
  assert all(name in out for name in names)
  errors = {r[0]: r[3] for r in rows}
  assert errors["conv float32"] == 0.0 and 0.0 < errors["im2col bfloat16"] < 2e-2


def test_rejects_bad_sizes(script, capsys):
  with pytest.raises(SystemExit):
    script.main(["--side=0"])
  assert "--side must be at least 1" in capsys.readouterr().err
