"""Multiply-add FLOPs of a traced program (convolutions and matrix products), on any backend.

XLA's cost analysis depends on the backend: on GPU the convolutions are cuDNN custom calls that
it does not count (a width-64 training iteration came out as 11 GFLOP instead of about 4 TFLOP),
and on CPU it counts a loop body once. Counting on the jaxpr instead gives the same figure
everywhere: two per multiply-add that touches real data, for every convolution (padding and the
zeros of an input dilation left out, as XLA's CPU cost analysis does) and dot, loop bodies
multiplied by their trip counts. Elementwise work is left out (a few percent).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax


def _taps_on_input(n: int, k: int, m: int, stride: int, lo: int, lhs_dil: int,
                   rhs_dil: int) -> int:
  """(output position, kernel tap) pairs of one spatial axis that land on a real input element,
  not on padding or on the zeros of an input dilation (a strided convolution's input gradient)."""
  extent = (n - 1) * lhs_dil + 1
  hits = 0
  for o in range(m):
    for t in range(k):
      p = o * stride + t * rhs_dil - lo
      hits += 0 <= p < extent and p % lhs_dil == 0
  return hits


def _conv_flops(eqn) -> float:
  lhs = eqn.invars[0].aval.shape
  rhs = eqn.invars[1].aval.shape
  out = eqn.outvars[0].aval.shape
  dn, params = eqn.params["dimension_numbers"], eqn.params
  lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec  # (batch/features, ...)
  taps = 1
  for i in range(len(rhs_spec) - 2):
    taps *= _taps_on_input(
        lhs[lhs_spec[2 + i]], rhs[rhs_spec[2 + i]], out[out_spec[2 + i]],
        params["window_strides"][i], params["padding"][i][0], params["lhs_dilation"][i],
        params["rhs_dilation"][i])
  return 2.0 * out[out_spec[0]] * out[out_spec[1]] * rhs[rhs_spec[1]] * taps


def _dot_flops(eqn) -> float:
  lhs = eqn.invars[0].aval.shape
  (lhs_contract, _), _ = eqn.params["dimension_numbers"]
  return 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lhs_contract)


def _sub_jaxprs(value: Any):
  """The jaxprs held by one equation parameter (a jaxpr, a closed jaxpr, or a tuple of them)."""
  if isinstance(value, (tuple, list)):
    for v in value:
      yield from _sub_jaxprs(v)
  elif hasattr(value, "eqns"):
    yield value
  elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
    yield value.jaxpr


def jaxpr_flops(jaxpr) -> float:
  """FLOPs of the convolutions and dots of a jaxpr, nested jaxprs and scans included."""
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "conv_general_dilated":
      total += _conv_flops(eqn)
    elif name == "dot_general":
      total += _dot_flops(eqn)
    if name == "cond":  # one branch runs: count the costliest
      total += max((jaxpr_flops(j) for j in _sub_jaxprs(eqn.params["branches"])), default=0.0)
      continue
    inner = sum(jaxpr_flops(j) for v in eqn.params.values() for j in _sub_jaxprs(v))
    total += inner * (eqn.params["length"] if name == "scan" else 1)
  return total


def count(fn: Callable, *args: Any) -> float:
  """FLOPs of convolutions and matrix products in one call of fn(*args) (arrays or shapes)."""
  return jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr)
