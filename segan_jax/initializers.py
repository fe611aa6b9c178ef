"""How the networks' parameters start: Flax's defaults, or as the authors' PyTorch code draws them.

`lecun` (default): every convolution kernel from LeCun-normal (variance 1 / fan-in, truncated),
BatchNorm scales 1, biases and BatchNorm offsets 0 (Flax's initialisers).
`authors`: what the authors' net.py does after building NetS and NetC: every convolution kernel
from N(0, 2 / (kh * kw * c_out)) (He-normal over the fan-out, as `m.weight.data.normal_(0,
sqrt(2. / n))` with n = kernel area x output channels), every BatchNorm scale from N(1, 0.02),
biases and BatchNorm offsets 0.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp

INITS = ("lecun", "authors")


def authors_init(params: Any, rng: jax.Array) -> Any:
  """`params` redrawn as the authors' code initialises its networks (same tree, shapes, dtypes).

  Kernels (4-D leaves named 'kernel', HWIO) and BatchNorm scales (leaves named 'scale') are
  redrawn; every other leaf (biases, BatchNorm offsets) is kept, since Flax already starts them
  at zero as the authors do.
  """
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  keys = jax.random.split(rng, max(len(leaves), 1))
  drawn = []
  for (path, leaf), key in zip(leaves, keys):
    name = getattr(path[-1], "key", None)
    if name == "kernel":
      if leaf.ndim != 4:
        raise ValueError(f"authors_init expects 4-D (HWIO) convolution kernels; "
                         f"{jax.tree_util.keystr(path)} has shape {leaf.shape}.")
      kh, kw, _, c_out = leaf.shape
      std = math.sqrt(2.0 / (kh * kw * c_out))
      leaf = (std * jax.random.normal(key, leaf.shape, jnp.float32)).astype(leaf.dtype)
    elif name == "scale":
      leaf = (1.0 + 0.02 * jax.random.normal(key, leaf.shape, jnp.float32)).astype(leaf.dtype)
    drawn.append(leaf)
  return jax.tree_util.tree_unflatten(treedef, drawn)


def initialize(params: Any, init: str, rng: jax.Array) -> Any:
  """`params` as Flax initialised them (`lecun`), or redrawn by `authors_init` (`authors`)."""
  if init == "lecun":
    return params
  if init == "authors":
    return authors_init(params, rng)
  raise ValueError(f"Unknown initialisation {init!r}; choose from {INITS}.")
