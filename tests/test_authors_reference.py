"""segan_jax's Segmentor and Critic against the SegAN authors' own PyTorch networks, NetS and NetC.

tests/fixtures/authors_reference.npz holds their weights (width 2), inputs and every block's output,
computed from their code by experiments/authors_reference_fixture.py (docs/authors_reference.md).
Their weights are mapped into segan_jax's parameter trees and every block must reproduce their
output. The deliberate deviations (DEVIATIONS) are each neutralised in the mapping or the call, and
measured on their own, so that any other difference between the two fails a test.
"""

import contextlib
import re
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segan_jax import layers, models
from segan_jax.layers import GlobalConvBlock, leaky_relu
from segan_jax.losses import multiscale_l1
from segan_jax.models import Critic, Segmentor, mask_images
from segan_jax.train_state import clip_params

FIXTURE = Path(__file__).parent / "fixtures" / "authors_reference.npz"

# What segan_jax deliberately does differently from NetS / NetC, and how these tests handle it.
DEVIATIONS = {
    "e1_out_c1_biases": "segan_jax's e1, out and c1 convolutions have a bias, the authors' none: "
                        "mapped to zero",
    "global_conv_biases": "the authors' global-convolution convs have biases (initialised to "
                          "zero), segan_jax's none: the fixture's are checked to be zero",
    "residual_batch_norm": "the authors build BatchNorm in the residual blocks but never call it, "
                           "segan_jax applies it by default: compared with "
                           "model.residual_batchnorm=False, which leaves it out as they do",
    "upsampling": "the authors' 2017 F.upsample(bilinear) had align_corners=True, segan_jax uses "
                  "half-pixel centres (today's align_corners=False): swapped in to compare",
    "running_var": "PyTorch updates the running variance with the unbiased batch variance, Flax "
                   "with the biased one: corrected by n / (n - 1) to compare",
    "batch_variance": "Flax's BatchNorm computes the batch variance in one pass, E[x^2] - E[x]^2, "
                      "PyTorch in two: Flax loses precision where |mean| >> std (the 1x1 "
                      "bottleneck at batch 2): the two-pass form is swapped in to compare",
    "concat_order": "the authors concatenate [encoder, decoder], segan_jax [decoder, encoder]: "
                    "the next convolution's input channels are permuted (no functional change)",
}

# The authors' top-level blocks of NetS, with the segan_jax module that computes each and the
# activation that the authors' block applies after it (None: the module's output is theirs).
SEGMENTOR_BLOCKS = {
    "convblock1": ("e1_conv", leaky_relu),
    **{f"convblock{i}_1": (f"e{i}_res", None) for i in range(1, 6)},
    **{f"convblock{i}": (f"e{i}_conv", None) for i in range(2, 9)},
    "convblock6_1": ("e6_side", None),
    "deconvblock1": ("d1_conv", None),
    "deconvblock2": ("d2_conv", None),
    "deconvblock2_1": ("d2_side", None),
    "deconvblock3": ("d3_conv", None),
    "deconvblock3_1": ("d3_res", None),
    **{f"deconvblock{i}": (f"d{i}_bn", nn.relu) for i in range(4, 9)},
    **{f"deconvblock{i}_1": (f"d{i}_res", None) for i in range(4, 9)},
    "deconvblock9": ("out_conv", None),
}
# NetS's blocks in the order of its forward pass.
SEGMENTOR_ORDER = (
    "convblock1", "convblock1_1", "convblock2", "convblock2_1", "convblock3", "convblock3_1",
    "convblock4", "convblock4_1", "convblock5", "convblock5_1", "convblock6", "convblock6_1",
    "convblock7", "convblock8", "deconvblock1", "deconvblock2", "deconvblock2_1", "deconvblock3",
    "deconvblock3_1", "deconvblock4", "deconvblock4_1", "deconvblock5", "deconvblock5_1",
    "deconvblock6", "deconvblock6_1", "deconvblock7", "deconvblock7_1", "deconvblock8",
    "deconvblock8_1", "deconvblock9")
# The map side of each of segan_jax's segmentor stages (for the values per BatchNorm channel).
SIDE = {**{f"e{i}": 128 >> i for i in range(1, 8)}, "e8": 1, "d1": 1,
        **{f"d{i}": 1 << (i - 1) for i in range(2, 9)}}
FIRST_UPSAMPLING_THAT_DIFFERS = "deconvblock3"  # the 2x2 -> 4x4 one (1x1 -> 2x2 is a copy)
CRITIC_WEIGHTS = (1, 1, 2, 2, 2, 2, 4)  # the authors' scaling of [input, c1..c6] in NetC.forward
RTOL = 2e-5  # every comparison: max |difference| <= RTOL * max |the authors' values|


@pytest.fixture(scope="module")
def ref():
  with np.load(FIXTURE) as f:
    return {k: f[k] for k in f.files}


def _nhwc(a):
  return np.moveaxis(np.asarray(a, np.float32), 1, -1)


def _assert_close(actual, expected, what):
  actual, expected = np.asarray(actual, np.float32), np.asarray(expected, np.float32)
  assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
  scale = float(np.abs(expected).max())
  err = float(np.abs(actual - expected).max())
  assert err <= RTOL * scale, f"{what}: max |diff| {err:.3g} vs max |value| {scale:.3g}"


def _rel_err(actual, expected):
  return float(np.abs(np.asarray(actual) - expected).max() / np.abs(expected).max())


class _Torch:
  """The fixture's state_dict of one network; records which entries were mapped."""

  def __init__(self, ref, prefix):
    self.ref, self.prefix, self.used = ref, prefix, set()

  def __call__(self, name):
    self.used.add(name)
    return np.asarray(self.ref[f"{self.prefix}/{name}"], np.float32)

  def names(self):
    n = len(self.prefix) + 1
    return {k[n:] for k in self.ref if k.startswith(self.prefix + "/")}

  def kernel(self, name, encoder_channels=0):
    """A Conv2d weight (out, in, kh, kw) as HWIO. With encoder_channels, the input is the
    authors' concatenation [encoder, decoder]: reordered to segan_jax's [decoder, encoder]."""
    w = self(name).transpose(2, 3, 1, 0)
    if encoder_channels:  # DEVIATIONS["concat_order"]
      w = np.concatenate([w[:, :, encoder_channels:], w[:, :, :encoder_channels]], axis=2)
    return w

  def batch_norm(self, name):
    return ({"scale": self(f"{name}.weight"), "bias": self(f"{name}.bias")},
            {"mean": self(f"{name}.running_mean"), "var": self(f"{name}.running_var")})

  def conv_bn(self, conv, bn, encoder_channels=0):
    params, stats = self.batch_norm(bn)
    return ({"conv": {"kernel": self.kernel(conv, encoder_channels)}, "bn": params},
            {"bn": stats})

  def residual(self, block, batchnorm):
    """A residual block's convs; with `batchnorm`, also the BatchNorm the authors never call."""
    params, stats = {}, {}
    for j in range(3):
      if batchnorm:
        params[f"conv{j}"], stats[f"conv{j}"] = self.conv_bn(f"{block}.conv{j + 1}.weight",
                                                             f"{block}.norm{j + 1}")
      else:
        params[f"conv{j}"] = {"conv": {"kernel": self.kernel(f"{block}.conv{j + 1}.weight")}}
    return params, stats if batchnorm else None

  def global_conv(self, block, encoder_channels):
    gcn = {}
    for ours, theirs, first in (("left_kx1", "conv_l1", True), ("left_1xk", "conv_l2", False),
                                ("right_1xk", "conv_r1", True), ("right_kx1", "conv_r2", False)):
      gcn[ours] = {"kernel": self.kernel(f"{block}.{theirs}.weight",
                                         encoder_channels if first else 0)}
      bias = self(f"{block}.{theirs}.bias")
      assert not bias.any(), "DEVIATIONS['global_conv_biases']: segan_jax has no such bias"
    return gcn


def segmentor_variables(ref, residual_batchnorm=False):
  """NetS's weights as a variable tree of Segmentor(width=ndf, residual_batchnorm), and the
  _Torch that mapped them. Without residual_batchnorm (NetS's forward pass) the residual blocks'
  BatchNorm tensors, which NetS never uses, stay unmapped."""
  t, w = _Torch(ref, "S"), int(ref["ndf"])
  params, stats = {}, {}

  def residual(name, block):
    params[name], block_stats = t.residual(block, residual_batchnorm)
    if block_stats is not None:
      stats[name] = block_stats
  # DEVIATIONS["e1_out_c1_biases"]: segan_jax's bias, absent in NetS.
  params["e1_conv"] = {"kernel": t.kernel("convblock1.0.weight"), "bias": np.zeros(w, np.float32)}
  for i in range(1, 6):
    residual(f"e{i}_res", f"convblock{i}_1")
  for i in range(2, 9):
    params[f"e{i}_conv"], stats[f"e{i}_conv"] = t.conv_bn(f"convblock{i}.0.weight",
                                                          f"convblock{i}.1")
  params["e6_side"], stats["e6_side"] = t.conv_bn("convblock6_1.0.weight", "convblock6_1.1")
  # deconvblock1 is a 1x1 ConvTranspose2d: weight (in, out, 1, 1).
  bn, bn_stats = t.batch_norm("deconvblock1.1")
  params["d1_conv"] = {"conv": {"kernel": t("deconvblock1.0.weight").transpose(2, 3, 0, 1)},
                       "bn": bn}
  stats["d1_conv"] = {"bn": bn_stats}
  params["d2_conv"], stats["d2_conv"] = t.conv_bn("deconvblock2.0.weight", "deconvblock2.1",
                                                  32 * w)  # [e7, d1]
  params["d2_side"], stats["d2_side"] = t.conv_bn("deconvblock2_1.0.weight", "deconvblock2_1.1")
  params["d3_conv"], stats["d3_conv"] = t.conv_bn("deconvblock3.0.weight", "deconvblock3.1",
                                                  16 * w)  # [e6, d2]
  residual("d3_res", "deconvblock3_1")
  skip_channels = {4: 8 * w, 5: 8 * w, 6: 4 * w, 7: 2 * w, 8: w}  # e5, e4, e3, e2, e1
  for i, c in skip_channels.items():
    params[f"d{i}_gcn"] = t.global_conv(f"deconvblock{i}.0", c)
    params[f"d{i}_bn"], stats[f"d{i}_bn"] = t.batch_norm(f"deconvblock{i}.1")
    residual(f"d{i}_res", f"deconvblock{i}_1")
  params["out_conv"] = {"kernel": t.kernel("deconvblock9.0.weight"),
                        "bias": np.zeros(1, np.float32)}  # DEVIATIONS["e1_out_c1_biases"]
  return {"params": params, "batch_stats": stats}, t


def critic_variables(ref):
  """NetC's weights as a Critic(width=ndf) variable tree; and the _Torch that mapped them."""
  t, w = _Torch(ref, "C"), int(ref["ndf"])
  params = {"c1_conv": {"kernel": t.kernel("convblock1.0.weight"),
                        "bias": np.zeros(w, np.float32)}}  # DEVIATIONS["e1_out_c1_biases"]
  stats = {}
  for i in range(2, 7):
    params[f"c{i}_conv"] = {"kernel": t.kernel(f"convblock{i}.0.weight")}
    params[f"c{i}_bn"], stats[f"c{i}_bn"] = t.batch_norm(f"convblock{i}.1")
  return {"params": params, "batch_stats": stats}, t


def _same_structure(variables, module):
  """The mapped tree has exactly the module's variables, with their shapes."""
  expected = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 128, 128, 3)),
                                                train=False))
  got = jax.tree.map(lambda a: a.shape, variables)
  assert got == jax.tree.map(lambda a: a.shape, expected)


def _align_corners_up(x):
  """Bilinear x2 with align_corners=True (the authors' 2017 F.upsample), NHWC."""
  def matrix(n):
    pos = np.arange(2 * n) * ((n - 1) / (2 * n - 1) if n > 1 else 0.0)
    lo = np.minimum(np.floor(pos).astype(int), n - 1)
    hi = np.minimum(lo + 1, n - 1)
    m = np.zeros((2 * n, n), np.float32)
    np.add.at(m, (np.arange(2 * n), lo), 1 - (pos - lo))
    np.add.at(m, (np.arange(2 * n), hi), pos - lo)
    return jnp.asarray(m)
  return jnp.einsum("ih,jw,nhwc->nijc", matrix(x.shape[1]), matrix(x.shape[2]), x)


_BatchNorm = nn.BatchNorm


class _TwoPassBatchNorm(_BatchNorm):
  """flax.linen.BatchNorm with PyTorch's two-pass batch variance."""
  use_fast_variance: bool = False


@contextlib.contextmanager
def _as_authors(record=None, align_corners=True, one_pass_variance=False):
  """Runs segan_jax's modules as NetS / NetC compute with the 2017 upsampling (if align_corners)
  and the two-pass batch variance (unless one_pass_variance); each top-level module's output
  stored in `record` under its name. (DEVIATIONS["residual_batch_norm"] is the model's own
  option: Segmentor(residual_batchnorm=False).)"""

  def interceptor(next_fun, args, kwargs, context):
    m = context.module
    if context.method_name != "__call__":
      return next_fun(*args, **kwargs)
    if align_corners and isinstance(m, GlobalConvBlock) and m.upsample:
      plain = GlobalConvBlock(m.features, m.k, dtype=m.dtype, conv_impl=m.conv_impl)
      out = plain.apply({"params": m.variables["params"]}, _align_corners_up(args[0]))
    else:
      out = next_fun(*args, **kwargs)
    if record is not None and len(m.path) == 1:
      record[m.path[0]] = out
    return out

  with pytest.MonkeyPatch.context() as mp, nn.intercept_methods(interceptor):
    if align_corners:  # DEVIATIONS["upsampling"]: d1, d2 (d4-d8: the interceptor)
      mp.setattr(models, "upsample2x_bilinear", _align_corners_up)
    if not one_pass_variance:  # DEVIATIONS["batch_variance"]
      mp.setattr(layers.nn, "BatchNorm", _TwoPassBatchNorm)  # what layers.batch_norm builds
    yield


def _run(module, variables, x, train, **authors):
  """module.apply as the authors' networks compute it: (output, {module name: output},
  new batch_stats or None)."""
  def fn(variables, x):
    record = {}
    with _as_authors(record, **authors):
      if train:
        out, updates = module.apply(variables, x, train=True, mutable=["batch_stats"])
        return out, record, updates["batch_stats"]
      return module.apply(variables, x, train=False), record, None
  return jax.jit(fn)(variables, x)


def _segmentor_blocks(record):
  """NetS's block outputs from segan_jax's recorded module outputs (NHWC)."""
  return {theirs: np.asarray(act(record[ours]) if act else record[ours])
          for theirs, (ours, act) in SEGMENTOR_BLOCKS.items()}


def _x(ref):
  return jnp.asarray(_nhwc(ref["x"]))


# -- The mapping --------------------------------------------------------------------------------


def test_every_weight_is_mapped_and_only_the_named_deviations_are_left_out(ref):
  assert int(ref["ndf"]) == 2
  s_vars, s = segmentor_variables(ref)
  _same_structure(s_vars, _authors_segmentor())
  # Every NetS tensor NetS uses has its place in the authors' variant of segan_jax's segmentor;
  # what is left is exactly the residual blocks' BatchNorm (built, never called), which has its
  # place in segan_jax's default segmentor.
  unused = s.names() - s.used
  residual_norm = re.compile(r"(conv|deconv)block\d_1\.norm[123]\."
                             r"(weight|bias|running_mean|running_var)")
  assert all(residual_norm.fullmatch(k) for k in unused), sorted(unused)
  assert len(unused) == 11 * 3 * 4  # e1-e5, d3-d8 x norm1-3 x (weight, bias, mean, var)
  with_bn, s_bn = segmentor_variables(ref, residual_batchnorm=True)
  _same_structure(with_bn, Segmentor(width=2))
  assert s_bn.names() == s_bn.used
  c_vars, c = critic_variables(ref)
  _same_structure(c_vars, Critic(width=2))
  assert c.names() == c.used
  # NetC's global-convolution blocks (convblock1_1 .. convblock5_1) are built but commented out
  # of its forward pass (segan_jax's model.critic_global_conv is the paper's version of them).
  assert {k.split(".")[0] for k in ref["C_unused"]} == {f"convblock{i}_1" for i in range(1, 6)}


# -- The segmentor ------------------------------------------------------------------------------


def _authors_segmentor():
  """segan_jax's segmentor as NetS runs it: model.residual_batchnorm=False."""
  return Segmentor(width=2, residual_batchnorm=False)


def test_segmentor_every_block_equals_the_authors_in_eval_mode(ref):
  variables, _ = segmentor_variables(ref)
  out, record, _ = _run(_authors_segmentor(), variables, _x(ref), False)
  got = _segmentor_blocks(record)
  assert set(got) == set(SEGMENTOR_ORDER) == {k.split("/")[1] for k in ref
                                              if k.startswith("S_eval_ac/")}
  for name in SEGMENTOR_ORDER:
    _assert_close(got[name][:1], _nhwc(ref[f"S_eval_ac/{name}"]), name)
  # NetS returns logits (its nn.Sigmoid is commented out; train.py applies F.sigmoid), as
  # segan_jax does (its adaptive logistic is applied by the steps).
  _assert_close(out[:1], _nhwc(ref["S_eval_ac/deconvblock9"]), "logits")


def test_segmentor_equals_the_authors_half_pixel_upsampling(ref):
  """With today's F.upsample (align_corners=False), NetS computes what segan_jax computes as is."""
  variables, _ = segmentor_variables(ref)
  out, _, _ = _run(_authors_segmentor(), variables, _x(ref), False, align_corners=False)
  _assert_close(out[:1], _nhwc(ref["S_eval_hp/deconvblock9"]), "logits")


def test_deviation_upsampling_changes_the_decoder_from_the_first_2x2_to_4x4(ref):
  """DEVIATIONS["upsampling"]: segan_jax as it is against the authors' 2017 network. The encoder,
  d1 and d2 agree; from d3 on (after the first upsampling that is not a copy) the blocks differ
  (width 2, these weights: 13% of the block's range at d3, 29% at the logits)."""
  variables, _ = segmentor_variables(ref)
  _, record, _ = _run(_authors_segmentor(), variables, _x(ref), False, align_corners=False)
  got = _segmentor_blocks(record)
  first = SEGMENTOR_ORDER.index(FIRST_UPSAMPLING_THAT_DIFFERS)
  for name in SEGMENTOR_ORDER[:first]:
    _assert_close(got[name][:1], _nhwc(ref[f"S_eval_ac/{name}"]), name)
  for name in SEGMENTOR_ORDER[first:]:
    assert _rel_err(got[name][:1], _nhwc(ref[f"S_eval_ac/{name}"])) > 0.05, name


def test_deviation_residual_batch_norm_at_identity_equals_leaving_it_out(ref):
  """DEVIATIONS["residual_batch_norm"] in segan_jax's default segmentor (residual BatchNorm
  applied): its residual BatchNorm layers set to identity (scale 1, bias 0, mean 0, var 1 - eps)
  give NetS's eval-mode output; with the authors' never-used BatchNorm parameters they do not."""
  variables, _ = segmentor_variables(ref, residual_batchnorm=True)
  identity = jax.tree.map(np.copy, variables)
  for name in identity["params"]:
    if name.endswith("_res"):
      for j in range(3):
        bn, stats = identity["params"][name][f"conv{j}"]["bn"], identity["batch_stats"][name][
            f"conv{j}"]["bn"]
        bn["scale"], bn["bias"] = np.ones_like(bn["scale"]), np.zeros_like(bn["bias"])
        stats["mean"], stats["var"] = np.zeros_like(stats["mean"]), np.full_like(stats["var"],
                                                                                  1 - 1e-5)
  expected = _nhwc(ref["S_eval_ac/deconvblock9"])
  out, _, _ = _run(Segmentor(width=2), identity, _x(ref), False)
  _assert_close(out[:1], expected, "logits, residual BatchNorm at identity")
  out, _, _ = _run(Segmentor(width=2), variables, _x(ref), False)
  assert _rel_err(out[:1], expected) > 0.1


def test_segmentor_equals_the_authors_in_training_mode(ref):
  """Batch statistics in every BatchNorm, and the running statistics they update."""
  variables, _ = segmentor_variables(ref)
  out, _, stats = _run(_authors_segmentor(), variables, _x(ref), True)
  _assert_close(out[:1], _nhwc(ref["S_train_ac/deconvblock9"]), "training-mode logits")
  _assert_running_stats(stats, [variables["batch_stats"]], _trained_stats(ref, "S"),
                        lambda name: 2 * SIDE[name[:2]] ** 2)


def _running_stats_errors(new, passes, expected, count):
  """Relative error of each of Flax's running statistics `new`, after len(passes) training passes
  (passes[i]: the statistics before pass i), against PyTorch's `expected`.

  DEVIATIONS["running_var"]: where PyTorch adds 0.1 * var * n / (n - 1), Flax adds 0.1 * var
  (n = count(top-level module name) values per channel); each pass's batch variance is recovered
  from Flax's own updates and made unbiased.
  """
  errors = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(new):
    keys = [p.key for p in path]
    got, want = np.asarray(leaf), _get(expected, keys)
    if keys[-1] == "var":
      n = count(keys[0])
      olds = [_get(p, keys) for p in passes] + [got]
      got = olds[0]
      for before, after in zip(olds, olds[1:]):
        got = 0.9 * got + 0.1 * (after - 0.9 * before) / 0.1 * n / (n - 1)
    errors["/".join(keys)] = _rel_err(got, want)
  return errors


def _assert_running_stats(new, passes, expected, count):
  errors = _running_stats_errors(new, passes, expected, count)
  bad = {k: e for k, e in errors.items() if e > RTOL}
  assert not bad, bad


def _get(tree, keys):
  for k in keys:
    tree = tree[k]
  return np.asarray(tree)


def test_deviation_one_pass_batch_variance_loses_precision_in_the_bottleneck(ref):
  """DEVIATIONS["batch_variance"]: with Flax's own one-pass variance, d1's running variance (1x1
  maps at batch 2: 2 values per channel, |mean| >> std) is off by about 1e-4 (relative); the
  logits and every statistic of a larger map still agree."""
  variables, _ = segmentor_variables(ref)
  out, _, stats = _run(_authors_segmentor(), variables, _x(ref), True, one_pass_variance=True)
  _assert_close(out[:1], _nhwc(ref["S_train_ac/deconvblock9"]), "training-mode logits")
  count = lambda name: 2 * SIDE[name[:2]] ** 2
  errors = _running_stats_errors(stats, [variables["batch_stats"]], _trained_stats(ref, "S"),
                                 count)
  assert max(errors.values()) < 1e-3
  assert errors["d1_conv/bn/var"] > 1e-5
  assert all(e <= RTOL for k, e in errors.items() if count(k.split("/")[0]) >= 32), errors


def _trained_stats(ref, net):
  """The fixture's running statistics after the authors' training-mode pass(es), mapped."""
  prefix = f"{net}_train_stats/"
  renamed = {f"{net}/{k[len(prefix):]}": v for k, v in ref.items() if k.startswith(prefix)}
  mapping = segmentor_variables if net == "S" else critic_variables
  return mapping({**ref, **renamed})[0]["batch_stats"]


# -- The critic ---------------------------------------------------------------------------------


def _critic_inputs(ref):
  """The image masked by the probability map (the authors' fake pass) and by the mask (real)."""
  x = _x(ref)
  return {name: mask_images(x, jnp.asarray(_nhwc(ref[key]))) for name, key in
          (("fake", "prob"), ("real", "mask"))}


def _flat_output(features):
  """NetC.forward's output from segan_jax's feature maps: [input, c1..c6], each flattened in
  NCHW order and scaled by CRITIC_WEIGHTS, concatenated."""
  return np.concatenate([w * np.moveaxis(np.asarray(f), -1, 1).reshape(f.shape[0], -1)
                         for w, f in zip(CRITIC_WEIGHTS, features)], axis=1)


def test_critic_equals_the_authors_two_training_mode_passes_and_loss(ref):
  """One critic step's forward passes as the authors run them: training-mode BatchNorm, the fake
  pass then the real one, each updating the running statistics; then their loss."""
  variables, _ = critic_variables(ref)
  (every_key,) = [k for k in ref if k.startswith("C_train_fake/output_every_")]
  every = int(every_key.rsplit("_", 1)[1])
  stats, passes, features = variables["batch_stats"], [], {}
  for name, masked in _critic_inputs(ref).items():
    passes.append(stats)
    features[name], _, stats = _run(Critic(width=2), {**variables, "batch_stats": stats}, masked,
                                    True)
    assert len(features[name]) == 7
    for i in range(1, 7):
      _assert_close(features[name][i], _nhwc(ref[f"C_train_{name}/convblock{i}"]), f"{name} c{i}")
    _assert_close(_flat_output(features[name])[:, ::every],
                  ref[f"C_train_{name}/output_every_{every}"], f"{name} flattened output")
  _assert_running_stats(stats, passes, _trained_stats(ref, "C"),
                        lambda name: 2 * (128 >> int(name[1])) ** 2)
  # Their loss, mean |NetC(fake) - NetC(real)| over the flattened outputs, is segan_jax's
  # "concatenated" reduction with their layer weights.
  loss = multiscale_l1(features["fake"], features["real"], CRITIC_WEIGHTS, "concatenated")
  assert float(loss) == pytest.approx(float(ref["C_loss"]), rel=RTOL)


def test_critic_equals_the_authors_in_eval_mode(ref):
  variables, _ = critic_variables(ref)
  features, _, _ = _run(Critic(width=2), variables, _critic_inputs(ref)["fake"], False)
  for i in range(1, 7):
    _assert_close(features[i][:1], _nhwc(ref[f"C_eval/convblock{i}"]), f"c{i}")


def test_critic_clipping_covers_the_authors_parameters_and_not_their_running_statistics(ref):
  """The authors clamp every NetC.parameters() entry to [-0.05, 0.05] after a critic step: the
  convolution weights and BatchNorm's scale and bias, not its running statistics (buffers).
  segan_jax's step clips the critic's `params` with clip_params and leaves its `batch_stats`:
  the same set, once NetC's weights are mapped."""
  bound = 0.05
  variables, t = critic_variables(ref)
  parameters = set(ref["C_parameters"]) & t.used
  assert parameters and t.used - parameters  # both kinds are mapped
  for name in t.used:  # every tensor has values that clipping would change
    assert np.abs(ref[f"C/{name}"]).max() > bound, name
  clamped = {f"C/{k}": np.clip(ref[f"C/{k}"], -bound, bound) if k in parameters else ref[f"C/{k}"]
             for k in t.used}
  expected, _ = critic_variables({**ref, **clamped})
  clipped = {"params": clip_params(variables["params"], bound),
             "batch_stats": variables["batch_stats"]}
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, clipped), expected)
