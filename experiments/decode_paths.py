"""Two ways to bring a JPEG to the network's input size, measured for speed and fidelity.

  python experiments/decode_paths.py --images='/data/isic2017/ISIC-2017_Training_Data/*.jpg' \
      [--count=40] [--upscale=1024x768] [--size=128]

* draft: libjpeg's DCT scaling decodes at 1/2, 1/4 or 1/8 scale (never below the target size),
  then PIL's antialiased bilinear resize (segan_jax.data.decode.network_image: what training,
  validation, evaluate and predict all use);
* full: the whole image decoded, then the same resize.
Fidelity is the mean and largest absolute difference (grey levels, 0-255) of each from a reference
made in float from the full decode by a Lanczos (antialiased) reduction. --upscale first re-encodes
each image at that size (JPEG quality 95), for folders whose images were already downscaled: the
original ISIC images are 1024x768 to 6688x4439.
"""

import argparse
import glob
import io
import time

import numpy as np
from PIL import Image

from segan_jax.data import arrays, decode


def _reference(data: bytes, size: int) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as im:
    rgb = im.convert("RGB")
  channels = [np.asarray(Image.fromarray(np.asarray(rgb)[..., c].astype(np.float32), "F")
                         .resize((size, size), Image.LANCZOS)) for c in range(3)]
  return np.stack(channels, axis=-1)


def _full(data: bytes, size: int) -> np.ndarray:
  image, _, _, _ = decode.decode_rgb(data)
  return arrays.resize_image(image, size, size)


def _draft(data: bytes, size: int) -> np.ndarray:
  return decode.network_image(data, (size, size))[0]


def _upscaled(data: bytes, size: tuple[int, int]) -> bytes:
  with Image.open(io.BytesIO(data)) as im:
    big = im.convert("RGB").resize(size, Image.LANCZOS)
  out = io.BytesIO()
  big.save(out, "JPEG", quality=95)
  return out.getvalue()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--images", required=True, help="glob of JPEG files")
  parser.add_argument("--count", type=int, default=40)
  parser.add_argument("--size", type=int, default=128, help="network input side")
  parser.add_argument("--upscale", default="", help="WxH to re-encode each image at first")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  paths = sorted(glob.glob(args.images))[:args.count]
  if not paths:
    parser.error(f"--images={args.images} matches no file")
  blobs = [open(p, "rb").read() for p in paths]
  if args.upscale:
    w, h = (int(v) for v in args.upscale.lower().split("x"))
    blobs = [_upscaled(b, (w, h)) for b in blobs]
  refs = [_reference(b, args.size) for b in blobs]
  print(f"{len(blobs)} JPEGs, {Image.open(io.BytesIO(blobs[0])).size[0]}x"
        f"{Image.open(io.BytesIO(blobs[0])).size[1]} (first), to {args.size}x{args.size}")
  for name, fn in (("draft", _draft), ("full", _full)):
    outs = [fn(b, args.size) for b in blobs]
    best = float("inf")
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      for b in blobs:
        fn(b, args.size)
      best = min(best, time.perf_counter() - t0)
    diffs = [np.abs(o.astype(np.float32) - r) for o, r in zip(outs, refs)]
    print(f"{name:5s}: {1000 * best / len(blobs):7.2f} ms/image | vs Lanczos reference: mean "
          f"{np.mean([d.mean() for d in diffs]):.3f}, largest {max(d.max() for d in diffs):.1f} "
          "grey levels")
  between = [np.abs(_draft(b, args.size).astype(np.float32) - _full(b, args.size)) for b in blobs]
  print(f"draft vs full: mean {np.mean([d.mean() for d in between]):.3f}, largest "
        f"{max(d.max() for d in between):.1f} grey levels")


if __name__ == "__main__":
  main()
