"""Procedural dermoscopy-like skin-lesion images with exact masks (the embedded default dataset).

Every example is a pure function of ``(seed, index)``: its own ``np.random.SeedSequence`` drives
independent child streams (geometry/skin, lesion, distractors, finish), so there is no global RNG
state and no dependence on call order, and switching distractors off leaves everything else
unchanged. Transcendental functions (exp, trig, pow, tanh) are evaluated in float64, whose
last-ulp differences between CPUs/SIMD paths would have to land within ~1e-13 of a uint8 rounding
edge or of the mask threshold to matter; the float32 image buffer only sees exactly-rounded
+, -, *, /, sqrt. So with the same numpy/Pillow versions the output is bit-identical across machines.

Image formation, in order:
  skin (tone, low-frequency texture, redness blotches)
  -> lesion (irregular Fourier-polar shape, optional fuzzy edge, variegated multiplicative pigment)
  -> distractors that are NOT in the mask (freckles, hairs, ruler / ink marks, gel bubbles, glare)
  -> lighting (illumination gradient, dermoscope vignette / dark circular frame)
  -> slight optical blur and sensor grain.
The mask is the lesion region (alpha >= 0.5, i.e. normalised distance d <= 1), computed before
any distractor is drawn.

Several classes (``num_classes`` N > 1): the kinds drawn become classes 1..N in the order of
CLASS_NAMES (lesion, hair, gel bubbles, marks = ruler ticks and surgical ink, freckles, glare), and
the mask is an index mask (0 background, c for class c). A distractor covers the pixels it is
blended into with weight >= LABEL_OPACITY (a gel bubble: its whole disc); each pixel takes the last
drawn class that covers it, the one on top (a hair across a lesion is hair). Classes above N are
not labelled and leave the class beneath. N = 1 is the lesion mask (0/255) as before: the same
draws, the same images.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["CLASS_NAMES", "MAX_CLASSES", "generate_example", "generate_split"]

# The classes of the multi-class mode, index mask values 1..6 in this order.
CLASS_NAMES = ("lesion", "hair", "bubbles", "marks", "freckles", "glare")
MAX_CLASSES = len(CLASS_NAMES)
LABEL_OPACITY = 0.25  # a distractor labels the pixels it is blended into at least this much

# Reference "pale skin" colour: lesion pigments are given as colours on this skin and applied as
# per-channel transmittance, so the same pigment looks darker on darker skin.
_REF_SKIN = np.array([0.90, 0.72, 0.62], np.float32)
_PIGMENTS = {
  "light_brown": np.array([0.66, 0.45, 0.32], np.float32),
  "mid_brown": np.array([0.47, 0.29, 0.19], np.float32),
  "dark_brown": np.array([0.27, 0.16, 0.10], np.float32),
  "black": np.array([0.13, 0.10, 0.09], np.float32),
  "blue_grey": np.array([0.42, 0.45, 0.55], np.float32),
  "reddish": np.array([0.72, 0.38, 0.36], np.float32),
  "pinkish": np.array([0.80, 0.50, 0.50], np.float32),
}
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
# Lower bound on a lesion's mean luminance drop (unless its pigment cannot reach it, e.g. pinkish
# amelanotic lesions), so that no lesion is invisible to a human.
_MIN_DARKENING = 0.25
_SKIN_TONES = np.array(
  [
    [0.95, 0.80, 0.72],  # very pale / pinkish
    [0.88, 0.68, 0.56],  # light
    [0.78, 0.56, 0.42],  # medium / olive
    [0.60, 0.41, 0.29],  # brown
    [0.42, 0.28, 0.20],  # dark
  ]
)


def _rngs(seed: int, index: int) -> list[np.random.Generator]:
  """Independent per-example generators: [scene, lesion, distractors, finish] (order is part of
  the dataset definition; changing it changes every example)."""
  children = np.random.SeedSequence([int(seed), int(index)]).spawn(4)
  return [np.random.default_rng(c) for c in children]


def _sample_size(rng: np.random.Generator) -> tuple[int, int]:
  """Original (height, width): mostly ~4:3 landscape, some portrait and square frames."""
  kind = rng.random()
  if kind < 0.75:
    w = int(rng.integers(160, 289))
    h = round(w * 0.75 * rng.uniform(0.96, 1.04))
  elif kind < 0.90:
    w = int(rng.integers(120, 217))
    h = round(w * 4.0 / 3.0 * rng.uniform(0.96, 1.04))
  else:
    w = int(rng.integers(144, 241))
    h = w
  return int(h), w


_Window = tuple[slice, slice]
_TABLE_SIZE = 1024  # samples of the lesion's polar radius profile r(theta)
_NOISE_GAIN = np.float32(1.0 / 0.82)  # bicubic upsampling of N(0, 1) leaves std ~0.82


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: float,
                  win: _Window | None = None) -> np.ndarray:
  """Low-frequency noise (~unit std): a coarse N(0,1) grid with ``cells`` cells across the image
  upsampled bicubically to HxW; with ``win`` only that window of the same field is rendered."""
  scale = cells / max(h, w)
  gh, gw = max(2, round(h * scale)) + 2, max(2, round(w * scale)) + 2
  coarse = Image.fromarray(rng.standard_normal((gh, gw)).astype(np.float32))
  if win is None:
    win = (slice(0, h), slice(0, w))
  ys, xs = win
  sx, sy = gw / w, gh / h  # source pixels per output pixel, as in a full-size resize
  box = (xs.start * sx, ys.start * sy, xs.stop * sx, ys.stop * sy)
  field = coarse.resize((xs.stop - xs.start, ys.stop - ys.start), Image.BICUBIC, box=box)
  return np.asarray(field, dtype=np.float32) * _NOISE_GAIN


def _fractal_noise(rng: np.random.Generator, h: int, w: int, cells: float, octaves: int) -> np.ndarray:
  """Sum of smooth-noise octaves (doubling frequency, halving amplitude), ~unit std."""
  out = np.zeros((h, w), np.float32)
  for o in range(octaves):
    out += np.float32(0.5**o) * _smooth_noise(rng, h, w, cells * 2**o)
  return out * np.float32(1.0 / np.sqrt(sum(0.25**o for o in range(octaves))))


def _blend(img: np.ndarray, colour: np.ndarray, t: np.ndarray) -> None:
  """In place: move float32 ``img`` (HxWx3) towards ``colour`` (3 or HxWx3) by weight ``t`` (HxW)."""
  rows = np.flatnonzero(t.any(axis=1))
  if rows.size == 0:  # empty distractor layers are common; skip the arithmetic
    return
  cols = np.flatnonzero(t.any(axis=0))
  box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))  # work on the bbox only
  c = colour[box] if np.ndim(colour) == 3 else colour
  img[box] += (np.asarray(c, np.float32) - img[box]) * np.asarray(t[box], np.float32)[..., None]


def _layer(image: Image.Image) -> np.ndarray:
  """An 'L' PIL drawing layer as float32 opacity in [0, 1]."""
  return np.asarray(image, dtype=np.float32) / np.float32(255.0)


def _skin(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
  """Skin background: random tone (pale to dark), mottled texture and reddish blotches."""
  tone = rng.beta(1.3, 2.2) * (len(_SKIN_TONES) - 1)  # skewed to paler skin, as in dermoscopy sets
  lo = int(np.floor(tone))
  hi = min(lo + 1, len(_SKIN_TONES) - 1)
  base = _SKIN_TONES[lo] + (_SKIN_TONES[hi] - _SKIN_TONES[lo]) * (tone - lo)
  base = (base * rng.uniform(0.94, 1.06, size=3)).astype(np.float32)
  lum = 1.0 + rng.uniform(0.02, 0.07) * _fractal_noise(rng, h, w, rng.uniform(3, 6), 4)
  img = base[None, None, :] * lum[..., None]
  redness = np.clip(_smooth_noise(rng, h, w, rng.uniform(1.5, 3.5)) - rng.uniform(0.0, 1.2), 0, None)
  red_amount = (rng.uniform(0.0, 0.1) * np.tanh(redness.astype(np.float64))).astype(np.float32)
  img[..., 1] *= 1.0 - red_amount
  img[..., 2] *= 1.0 - 0.8 * red_amount
  return img


def _lesion_geometry(rng: np.random.Generator, h: int, w: int) -> dict:
  """Lesion placement and shape parameters (centre, size, rotation, elongation, r(theta) table)."""
  frac = float(np.exp(rng.uniform(np.log(0.05), np.log(0.65))))  # target area fraction
  elong = 1.0 if rng.random() < 0.4 else rng.uniform(0.45, 1.0)
  ks = np.arange(2, 9)
  irregular = rng.uniform(0.03, 0.22)
  amps = irregular * rng.standard_normal(ks.size) / ks ** rng.uniform(0.6, 1.2)
  phases = rng.uniform(0, 2 * np.pi, ks.size)
  radius = np.sqrt(frac * h * w / (np.pi * elong * (1.0 + 0.5 * np.sum(amps**2))))
  if rng.random() < 0.12:  # pushed towards a border so the lesion is cut by the frame
    side = rng.integers(4)
    t = rng.uniform(0.15, 0.85)
    m = rng.uniform(0.1, 0.22)
    cx, cy = [(m, t), (1 - m, t), (t, m), (t, 1 - m)][side]
  else:
    cx, cy = 0.5 + rng.normal(0, 0.08), 0.5 + rng.normal(0, 0.08)
  # Polar radius profile r(theta) = 1 + sum_k a_k cos(k theta + phi_k), tabulated for lookup.
  theta = np.linspace(-np.pi, np.pi, _TABLE_SIZE + 1)
  table = np.maximum(1.0 + np.cos(np.outer(theta, ks) + phases) @ amps, 0.35)
  return {
    "cx": np.clip(cx, 0.08, 0.92) * (w - 1), "cy": np.clip(cy, 0.08, 0.92) * (h - 1),
    "radius": radius, "angle": rng.uniform(0, np.pi), "elong": elong,
    "table": table,
    "warp": rng.uniform(0.0, 0.12), "warp_cells": rng.uniform(4, 10),
    "softness": rng.choice([0.025, 0.05, 0.1, 0.2], p=[0.3, 0.3, 0.25, 0.15]),
  }


def _lesion_window(g: dict, h: int, w: int, warp_max: float) -> _Window:
  """Pixel window outside which alpha < 5e-5 and d > 1, so lesion work can be cropped to it.

  d = rho / r(theta) + warp * n >= rho / max(r) - warp * max|n|, and a pixel's distance from the
  centre is at most radius * rho (elong <= 1); solve d <= 1 + 10 * softness for that distance.
  """
  reach = g["radius"] * g["table"].max() * (1.0 + 10.0 * g["softness"] + g["warp"] * warp_max) + 2.0
  x0, x1 = max(0, int(np.floor(g["cx"] - reach))), min(w, int(np.ceil(g["cx"] + reach)) + 1)
  y0, y1 = max(0, int(np.floor(g["cy"] - reach))), min(h, int(np.ceil(g["cy"] + reach)) + 1)
  return slice(y0, y1), slice(x0, x1)


def _lesion_field(g: dict, win: _Window, warp: np.ndarray) -> np.ndarray:
  """Normalised distance d (float64) to the lesion centre within ``win``; the lesion is d <= 1."""
  dy = np.arange(win[0].start, win[0].stop, dtype=np.float64)[:, None] - g["cy"]
  dx = np.arange(win[1].start, win[1].stop, dtype=np.float64)[None, :] - g["cx"]
  ca, sa = np.cos(g["angle"]), np.sin(g["angle"])
  u = (dx * ca + dy * sa) / g["radius"]
  v = (-dx * sa + dy * ca) / (g["radius"] * g["elong"])
  # Linear lookup in the uniform r(theta) table (np.interp's binary search is ~30x slower here).
  pos = (np.arctan2(v, u) + np.pi) * (_TABLE_SIZE / (2 * np.pi))
  i0 = np.minimum(pos.astype(np.intp), _TABLE_SIZE - 1)
  frac = pos - i0
  shape = g["table"][i0] * (1.0 - frac) + g["table"][i0 + 1] * frac
  return np.sqrt(u * u + v * v) / shape + g["warp"] * warp.astype(np.float64)


def _lesion_transmittance(rng: np.random.Generator, d: np.ndarray,
                          noise: Callable[[float], np.ndarray], size: int) -> np.ndarray:
  """Per-pixel RGB transmittance (float32) of the pigment: variegated browns, blue-grey, red, network.

  ``noise(cells)`` returns smooth noise with ``cells`` cells across the full image (``size`` px),
  cropped to the lesion window (same shape as ``d``).
  """
  # Base pigment along light -> mid -> dark brown; ~10% are pinkish (hypo-/amelanotic) lesions
  # that differ from skin mostly in hue, not darkness.
  amelanotic = rng.random() < 0.1
  names = ["light_brown", "mid_brown", "dark_brown"]
  if amelanotic:
    names = ["pinkish", "reddish", "light_brown"]
  t = rng.uniform(0, 2)
  i = min(int(t), 1)
  col = np.empty(d.shape + (3,), np.float32)
  col[:] = _PIGMENTS[names[i]] + (_PIGMENTS[names[i + 1]] - _PIGMENTS[names[i]]) * np.float32(t - i)
  extras = ["light_brown", "mid_brown", "dark_brown", "black", "blue_grey", "reddish", "pinkish"]
  for _ in range(int(rng.integers(0, 4))):
    name = extras[int(rng.integers(len(extras)))]
    blob = noise(rng.uniform(3, 9))
    weight = np.clip((blob - rng.uniform(-0.3, 1.2)) / 0.5, 0, 1) * rng.uniform(0.5, 1.0)
    _blend(col, _PIGMENTS[name], weight)
  # Radial profile: often a darker core, sometimes a darker rim (thresholds then miss the rest).
  core = np.clip(1.0 - d, 0, 1).astype(np.float32)
  sharpness = int(rng.integers(3))
  centre = np.sqrt(core) if sharpness == 0 else core if sharpness == 1 else core * core
  _blend(col, _PIGMENTS["dark_brown"], rng.uniform(-0.3, 0.9) * centre)
  if rng.random() < 0.45:  # reticular pigment network: zero-crossing contours of fine noise
    mesh = noise(size / rng.uniform(5.0, 9.0))  # mesh holes ~5-9 px
    lines = np.clip((0.35 - np.abs(mesh)) / 0.35, 0, 1) * rng.uniform(0.3, 0.7)
    _blend(col, _PIGMENTS["dark_brown"], lines * np.clip(1.2 - d, 0, 1).astype(np.float32))
  texture = sum(0.5**o * noise(8 * 2**o) for o in range(3))
  col *= (1.0 + rng.uniform(0.04, 0.1) * texture)[..., None]
  return np.clip(col / _REF_SKIN, 0.05, 1.1)


def _globules(rng: np.random.Generator, h: int, w: int, g: dict) -> np.ndarray:
  """Soft dark dots/globules inside the lesion (part of the lesion, so inside the mask)."""
  layer = Image.new("L", (w, h), 0)
  n = int(rng.integers(0, 30)) if rng.random() < 0.5 else 0
  if n:
    draw = ImageDraw.Draw(layer)
    rad = np.sqrt(rng.uniform(0, 0.7, n)) * g["radius"]
    ang = rng.uniform(0, 2 * np.pi, n)
    ca, sa = np.cos(g["angle"]), np.sin(g["angle"])
    pu, pv = rad * np.cos(ang), rad * np.sin(ang) * g["elong"]
    xs, ys = g["cx"] + pu * ca - pv * sa, g["cy"] + pu * sa + pv * ca
    sizes = rng.uniform(0.8, 2.8, n)
    vals = rng.integers(120, 256, n)
    for x, y, s, val in zip(xs, ys, sizes, vals):
      draw.ellipse([x - s, y - s, x + s, y + s], fill=int(val))
    layer = layer.filter(ImageFilter.GaussianBlur(0.7))
  return _layer(layer)


def _render_lesion(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
  """Composite one lesion onto the skin ``img`` in place; returns the exact mask (bool HxW).

  All per-pixel work is restricted to the window that can contain the lesion; noise fields are
  rendered only inside it but sampled from full-image fields, so they do not depend on it.
  """
  h, w = img.shape[:2]
  g = _lesion_geometry(rng, h, w)
  warp = _smooth_noise(rng, h, w, g["warp_cells"])
  win = _lesion_window(g, h, w, float(np.abs(warp).max()))
  d = _lesion_field(g, win, warp[win])
  trans = _lesion_transmittance(rng, d, lambda cells: _smooth_noise(rng, h, w, cells, win), max(h, w))
  alpha = (1.0 / (1.0 + np.exp(np.clip((d - 1.0) / g["softness"], -50, 50)))).astype(np.float32)
  dots = _globules(rng, h, w, g)[win] * alpha
  _blend(trans, _PIGMENTS["black"] / _REF_SKIN, dots * rng.uniform(0.4, 0.9))
  contrast = 0.3 + 0.7 * rng.beta(1.8, 1.3)  # some lesions are faint ...
  darkening = 1.0 - float(trans[d <= 1.0].mean(axis=0) @ _LUMA)
  contrast = min(1.0, max(contrast, _MIN_DARKENING / max(darkening, 1e-3)))  # ... but not invisible
  img[win] *= 1.0 + (trans - 1.0) * (alpha * np.float32(contrast))[..., None]
  mask = np.zeros((h, w), bool)
  mask[win] = d <= 1.0
  return mask


def _bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int) -> list[tuple[float, float]]:
  """Points along a quadratic Bezier curve (used for hairs and ink strokes)."""
  t = np.linspace(0, 1, n)[:, None]
  pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
  return [(float(x), float(y)) for x, y in pts]


def _hair_layer(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
  """Thin curved hairs as an opacity layer, drawn at 2x and box-downsampled for anti-aliasing."""
  r = rng.random()
  n = 0 if r < 0.3 else int(rng.integers(1, 8)) if r < 0.8 else int(rng.integers(8, 35))
  if n == 0:
    return np.zeros((h, w), np.float32)
  layer = Image.new("L", (2 * w, 2 * h), 0)
  draw = ImageDraw.Draw(layer)
  diag = np.hypot(h, w) * 2
  for _ in range(n):
    p0 = rng.uniform([0, 0], [2 * w, 2 * h])
    ang = rng.uniform(0, 2 * np.pi)
    length = rng.uniform(0.2, 1.0) * diag
    p2 = p0 + length * np.array([np.cos(ang), np.sin(ang)])
    mid = (p0 + p2) / 2 + rng.normal(0, 0.15 * length, 2)
    width = int(rng.choice([1, 2, 2, 3, 4]))
    draw.line(_bezier(p0, mid, p2, 24), fill=int(rng.integers(150, 256)), width=width, joint="curve")
  return _layer(layer.resize((w, h), Image.BOX))


def _marks_layer(rng: np.random.Generator, h: int, w: int, g_cx: float,
                 g_cy: float) -> tuple[np.ndarray, np.ndarray]:
  """Ruler ticks (dark) and surgical-marker ink (purple) opacity layers."""
  ruler = Image.new("L", (w, h), 0)
  if rng.random() < 0.2:
    draw = ImageDraw.Draw(ruler)
    side = int(rng.integers(4))
    off = rng.uniform(0.04, 0.2)
    step = rng.uniform(3.5, 7.0)
    along = w if side < 2 else h
    across = (h if side < 2 else w) * (off if side % 2 == 0 else 1 - off)
    sign = 1 if side % 2 == 0 else -1
    start, stop = rng.uniform(0, 0.3) * along, rng.uniform(0.7, 1.0) * along
    for j, a in enumerate(np.arange(start, stop, step)):
      ln = (10 if j % 10 == 0 else 6 if j % 5 == 0 else 3) * sign
      seg = [(a, across), (a, across + ln)] if side < 2 else [(across, a), (across + ln, a)]
      draw.line(seg, fill=230, width=1)
    base = [(start, across), (stop, across)] if side < 2 else [(across, start), (across, stop)]
    draw.line(base, fill=230, width=1)
  ink = Image.new("L", (w, h), 0)
  if rng.random() < 0.15:
    draw = ImageDraw.Draw(ink)
    rad = rng.uniform(0.3, 0.5) * min(h, w)
    a0 = rng.uniform(0, 360)
    for _ in range(int(rng.integers(1, 4))):
      span = rng.uniform(20, 120)
      box = [g_cx - rad, g_cy - rad, g_cx + rad, g_cy + rad]
      draw.arc(box, a0, a0 + span, fill=int(rng.integers(150, 240)), width=int(rng.integers(2, 5)))
      a0 += span + rng.uniform(30, 90)
    ink = ink.filter(ImageFilter.GaussianBlur(0.8))
  return _layer(ruler), _layer(ink)


def _spots_layers(rng: np.random.Generator, h: int,
                  w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Freckles (small brown spots), gel-bubble rims, specular glints and the bubbles' discs (their
  label, drawn without a draw of its own) as opacity layers."""
  freckles = Image.new("L", (w, h), 0)
  if rng.random() < 0.55:
    draw = ImageDraw.Draw(freckles)
    for _ in range(int(rng.integers(1, 15))):
      x, y = rng.uniform(0, w), rng.uniform(0, h)
      rx, ry = rng.uniform(0.8, 4.0), rng.uniform(0.8, 4.0)
      draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=int(rng.integers(60, 200)))
    freckles = freckles.filter(ImageFilter.GaussianBlur(rng.uniform(0.6, 1.5)))
  rims, glints = Image.new("L", (w, h), 0), Image.new("L", (w, h), 0)
  discs = Image.new("L", (w, h), 0)
  if rng.random() < 0.4:
    draw_r, draw_g, draw_d = ImageDraw.Draw(rims), ImageDraw.Draw(glints), ImageDraw.Draw(discs)
    for _ in range(int(rng.integers(1, 10))):
      x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(2.5, 0.09 * min(h, w))
      draw_r.ellipse([x - r, y - r, x + r, y + r], outline=int(rng.integers(90, 180)), width=1)
      draw_d.ellipse([x - r, y - r, x + r, y + r], fill=255)
      gx, gy, gr = x - 0.4 * r, y - 0.4 * r, max(0.8, 0.2 * r)
      draw_g.ellipse([gx - gr, gy - gr, gx + gr, gy + gr], fill=int(rng.integers(160, 256)))
  if rng.random() < 0.3:  # scattered glare / specular reflections
    draw_g = ImageDraw.Draw(glints)
    for _ in range(int(rng.integers(1, 12))):
      x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.7, 2.5)
      draw_g.ellipse([x - r, y - r, x + r, y + r], fill=int(rng.integers(140, 256)))
  if glints.getbbox():
    glints = glints.filter(ImageFilter.GaussianBlur(0.6))
  return _layer(freckles), _layer(rims), _layer(glints), _layer(discs)


def _render_distractors(rng: np.random.Generator, img: np.ndarray,
                        lesion_centre: tuple[float, float]) -> list[tuple[int, np.ndarray]]:
  """In place, draw everything that is NOT lesion: freckles, hairs, ruler/ink marks, bubbles, glare.

  Returns (class index, coverage) of each layer in drawing order, for the multi-class labels.
  """
  h, w = img.shape[:2]
  freckles, rims, glints, discs = _spots_layers(rng, h, w)
  if freckles.any():  # same multiplicative pigment model as the lesion
    _blend(img, img * (_PIGMENTS["mid_brown"] / _REF_SKIN), 0.8 * freckles)
  hair_colour = np.array([0.10, 0.07, 0.05]) * rng.uniform(0.6, 2.5)  # drawn before the hairs
  hair = _hair_layer(rng, h, w)
  _blend(img, hair_colour, hair)
  ruler, ink = _marks_layer(rng, h, w, *lesion_centre)
  _blend(img, np.array([0.08, 0.08, 0.09]), ruler)
  _blend(img, np.array([0.42, 0.22, 0.52]) * rng.uniform(0.7, 1.2), ink)
  if rims.any():  # bubble edges refract darker
    _blend(img, img * np.float32(0.75), rims)
  _blend(img, np.ones(3), glints)
  cls = {name: i + 1 for i, name in enumerate(CLASS_NAMES)}
  return [(cls["freckles"], 0.8 * freckles), (cls["hair"], hair), (cls["marks"], ruler),
          (cls["marks"], ink), (cls["bubbles"], discs), (cls["glare"], glints)]


def _index_mask(lesion: np.ndarray, layers: list[tuple[int, np.ndarray]],
                num_classes: int) -> np.ndarray:
  """The index mask (uint8 HxW, 0..num_classes): the lesion, then each layer on top of it."""
  out = lesion.astype(np.uint8)
  for cls, coverage in layers:
    if cls <= num_classes:
      out[coverage >= LABEL_OPACITY] = cls
  return out


def _lighting(rng: np.random.Generator, img: np.ndarray) -> None:
  """In place: uneven illumination plus dermoscope vignetting (from none to a black circular frame)."""
  h, w = img.shape[:2]
  # float32 is safe here: only +, -, *, /, sqrt touch the arrays (trig is on scalars).
  xx, yy = np.arange(w, dtype=np.float32)[None, :], np.arange(h, dtype=np.float32)[:, None]
  ang = rng.uniform(0, 2 * np.pi)
  strength = rng.uniform(0.0, 0.35)
  ramp_x, ramp_y = np.float32(np.cos(ang) * strength / w), np.float32(np.sin(ang) * strength / h)
  ramp = (xx - np.float32(w / 2)) * ramp_x + (yy - np.float32(h / 2)) * ramp_y
  cx, cy = w / 2 + rng.normal(0, 0.04 * w), h / 2 + rng.normal(0, 0.04 * h)
  dx2, dy2 = (xx - np.float32(cx)) ** 2, (yy - np.float32(cy)) ** 2
  r2 = (dx2 + dy2) * np.float32(4.0 / (h * h + w * w))  # squared radius, in half-diagonals
  gain = (1.0 + ramp) * (1.0 - np.float32(rng.uniform(0.0, 0.35)) * r2)
  kind = rng.random()
  if kind < 0.6:  # dark circular frame of the dermoscope
    radius = rng.uniform(0.68, 1.05)  # in half-diagonals: 1.0 just darkens corners
    edge = rng.choice([0.02, 0.06, 0.15])
    t = np.clip((np.sqrt(r2) - np.float32(radius)) / np.float32(edge), 0, 1)
    gain *= 1.0 - np.float32(rng.uniform(0.6, 0.97)) * t * t * (3 - 2 * t)
  img *= gain[..., None]


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
  """Separable 5-tap Gaussian blur of an HxWxC float32 image (edge-replicated); cheaper than PIL's."""
  k = np.exp(-0.5 * (np.arange(3) / sigma) ** 2)
  k = (k / (k[0] + 2 * k[1] + 2 * k[2])).astype(np.float32)
  out = img
  for axis in (0, 1):
    x = np.moveaxis(out, axis, 0)
    acc = k[0] * x
    for off in (1, 2):
      acc[off:] += k[off] * x[:-off]
      acc[:-off] += k[off] * x[off:]
      acc[:off] += k[off] * x[:1]  # replicate the edge pixel beyond the border
      acc[-off:] += k[off] * x[-1:]
    out = np.moveaxis(acc, 0, axis)
  return out


def _finish(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
  """Quantise to uint8 after a slight optical blur and (luminance) sensor grain."""
  out = _gaussian_blur(img * np.float32(255.0), rng.uniform(0.3, 0.9))
  sigma = np.float32(rng.uniform(1.0, 4.0))
  out += sigma * rng.standard_normal(out.shape[:2], dtype=np.float32)[..., None]
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def generate_example(seed: int, index: int, *, distractors: bool = True,
                     num_classes: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """Return (image uint8 HxWx3 RGB, mask uint8 HxW) for example ``index`` of ``seed``.

  num_classes=1: the lesion mask in {0, 255}. num_classes=N in 2..MAX_CLASSES: an index mask in
  0..N of classes CLASS_NAMES[:N] (see the module docstring); the image is the same either way.
  The size varies per index (mostly ~4:3 landscape). ``distractors=False`` renders the same
  example without hairs/marks/spots/bubbles (used to check they never enter the lesion mask).
  """
  if seed < 0 or index < 0:
    raise ValueError("seed and index must be non-negative")
  if not 1 <= num_classes <= MAX_CLASSES:
    raise ValueError(f"The synthetic data draws {MAX_CLASSES} kinds {CLASS_NAMES}: num_classes "
                     f"must be 1..{MAX_CLASSES} (got {num_classes}).")
  scene, lesion, distract, finish = _rngs(seed, index)
  h, w = _sample_size(scene)
  img = _skin(scene, h, w)
  mask = _render_lesion(lesion, img)
  layers = []
  if distractors:
    ys, xs = np.nonzero(mask)
    layers = _render_distractors(distract, img, (float(xs.mean()), float(ys.mean())))
  _lighting(scene, img)
  if num_classes > 1:
    return _finish(finish, img), _index_mask(mask, layers, num_classes)
  return _finish(finish, img), mask.astype(np.uint8) * 255


def generate_split(seed: int, start: int, count: int,
                   num_classes: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
  """Examples ``start .. start+count-1`` of ``seed`` (e.g. train = 0..N-1, val = N..N+M-1)."""
  return [generate_example(seed, i, num_classes=num_classes) for i in range(start, start + count)]
