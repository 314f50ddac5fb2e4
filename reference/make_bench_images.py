"""Photo-like JPEG files for `prompttune bench pipeline` (not committed; generate them when needed).

    python3 reference/make_bench_images.py --out /tmp/bench-images [--count 64] [--seed 0]

Each image is 500x375 RGB (the size of a typical Caltech101 / Pascal photo), saved as
`img_NNNN.jpg` with quality 90: a smooth gradient between random colours, a few soft
low-frequency blobs, and per-pixel Gaussian noise, so that it compresses like a photo (tens of
KB) rather than like a flat image. Seeded, so the same command writes the same files.
"""
import argparse
import os

import numpy as np
from PIL import Image

W, H = 500, 375


def make_image(rng):
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    u, v = xx / W, yy / H
    c0, c1, c2 = (rng.uniform(0, 255, 3).astype(np.float32) for _ in range(3))
    a = rng.uniform(0, 2 * np.pi)
    t = np.clip(0.5 + (u - 0.5) * np.cos(a) + (v - 0.5) * np.sin(a), 0, 1)[..., None]
    img = c0 * (1 - t) + c1 * t + c2 * (0.25 * (u * v)[..., None])
    for _ in range(rng.integers(3, 7)):  # soft blobs
        cx, cy = rng.uniform(0, W), rng.uniform(0, H)
        r = rng.uniform(20, 120)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
        img += blob * rng.uniform(-90, 90, 3).astype(np.float32)
    img += rng.normal(0, 10, img.shape).astype(np.float32)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for i in range(args.count):
        make_image(rng).save(os.path.join(args.out, f"img_{i:04d}.jpg"), quality=90)
    print(f"wrote {args.count} images ({W}x{H}, JPEG quality 90) to {args.out}")


if __name__ == "__main__":
    main()
