"""PNG fixtures and preprocessing goldens for PromptTune's `Imaging` target.

What it makes (all under Goldens/preprocess/):
  <name>.png          small deterministic PNG fixtures (numpy, fixed seeds; smooth gradients, a
                      low-frequency random field, hard edges, a checkerboard patch, a little noise),
                      written by the minimal PNG encoder below so that every colour type, bit depth,
                      tRNS, gAMA/cHRM and Adam7 interlacing can be produced (Pillow cannot write
                      16-bit RGB(A) or interlaced PNGs).
  <name>.rgb.bin      Pillow's `Image.open(png).convert("RGB")` as raw uint8, HWC.
                      Exception: 16-bit grayscale. Pillow opens it as mode "I;16" and convert("RGB")
                      clamps every value to 255 (min(v, 255)), which turns an ordinary 16-bit photo
                      white; PromptTune's default keeps the high byte instead (v >> 8, what Pillow
                      does for 16-bit RGB, RGBA and LA). For that fixture `.rgb.bin` holds the high
                      byte and `<name>.pil.rgb.bin` holds Pillow's clamped result, which the Swift
                      decoder reproduces with `gray16: .clampLikePillow`.
  <name>.<n>.f32      openai/CLIP's `_transform(n)` as raw little-endian float32, shape [3, n, n],
                      applied to the `.rgb.bin` image: Resize(n, BICUBIC) (shorter side -> n, longer
                      -> int(n * long / short), Pillow's resample; since Pillow 13 its vertical pass
                      runs first when the height shrinks by more than twice the width's shrink, which
                      for this transform means portraits taller than 2:1, see rgb8_230x520),
                      CenterCrop(n) (top/left =
                      int(round((size - n) / 2.0)), Python's round-half-even), convert("RGB"),
                      ToTensor (/255 in float32), Normalize(CLIP mean, std) in float32. n = 32 (the
                      tiny model) for every fixture and n = 224 for the main ones; 288 and 448 (the
                      RN50x4 and RN50x64 resolutions) for two (RESNET_RESOLUTIONS). torchvision is not
                      installed here, so its transforms are reproduced from their definitions.
  index.json          every file with its size, shape and dtype, and per fixture the PNG's colour
                      type, bit depth, interlacing, Pillow's mode, and how far openai's `preprocess`
                      applied to the *unconverted* image (resize in mode RGBA/LA -> premultiplied,
                      P -> NEAREST, I;16 -> clamped) lands from the convert-first pipeline above
                      (the one PromptTune implements, and what CoOp/Dassl's loaders do).

Rerun (from the repository root; Pillow, numpy and torch needed; deterministic, so the files only
change if Pillow's resampling changes):
    python3 reference/preprocess_goldens.py
"""
import json
import os
import struct
import warnings
import zlib

import numpy as np
import PIL
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Goldens", "preprocess")

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


# ----------------------------------------------------------------------------------------------
# Minimal PNG encoder: any colour type / bit depth, PLTE, tRNS, extra chunks, Adam7, adaptive filters.

CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def _chunk(ctype, data):
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def _row_bytes(row, bit_depth):
    """One scanline (W x C samples) as PNG bytes: sub-byte depths packed MSB first, 16-bit big-endian."""
    flat = row.reshape(-1)
    if bit_depth == 16:
        return flat.astype(">u2").tobytes()
    if bit_depth == 8:
        return flat.astype(np.uint8).tobytes()
    per = 8 // bit_depth
    pad = (-len(flat)) % per
    v = np.concatenate([flat.astype(np.uint8), np.zeros(pad, np.uint8)]).reshape(-1, per)
    shifts = (8 - bit_depth * (np.arange(per) + 1)).astype(np.uint8)
    return (v << shifts).sum(axis=1).astype(np.uint8).tobytes()


def _filter_rows(rows, bpp):
    """Adaptive filtering (minimum sum of absolute differences), all five filter types in play."""
    out = bytearray()
    prior = np.zeros(len(rows[0]), np.int32) if rows else None
    for raw_b in rows:
        raw = np.frombuffer(raw_b, np.uint8).astype(np.int32)
        left = np.concatenate([np.zeros(bpp, np.int32), raw[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int32), prior[:-bpp]])
        p = left + prior - upleft
        pa, pb, pc = np.abs(p - left), np.abs(p - prior), np.abs(p - upleft)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prior, upleft))
        cands = [raw, raw - left, raw - prior, raw - (left + prior) // 2, raw - paeth]
        cands = [(c & 0xFF).astype(np.uint8) for c in cands]
        cost = [np.abs(c.astype(np.int8).astype(np.int32)).sum() for c in cands]
        f = int(np.argmin(cost))
        out.append(f)
        out += cands[f].tobytes()
        prior = raw
    return bytes(out)


def encode_png(arr, color_type, bit_depth, interlace=False, palette=None, trns=None, extra=()):
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    h, w, c = arr.shape
    assert c == CHANNELS[color_type]
    bpp = max(1, c * bit_depth // 8)
    if interlace:
        data = b""
        for x0, y0, dx, dy in ADAM7:
            sub = arr[y0::dy, x0::dx]
            if sub.shape[0] and sub.shape[1]:
                data += _filter_rows([_row_bytes(r, bit_depth) for r in sub], bpp)
    else:
        data = _filter_rows([_row_bytes(r, bit_depth) for r in arr], bpp)
    z = zlib.compress(data, 9)
    png = b"\x89PNG\r\n\x1a\n"
    png += _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, int(interlace)))
    for ctype, payload in extra:  # ancillary chunks that go before PLTE (gAMA, cHRM, ...)
        png += _chunk(ctype, payload)
    if palette is not None:
        png += _chunk(b"PLTE", np.asarray(palette, np.uint8).tobytes())
    if trns is not None:
        png += _chunk(b"tRNS", trns)
    for i in range(0, len(z), 8192):  # several IDAT chunks
        png += _chunk(b"IDAT", z[i:i + 8192])
    png += _chunk(b"IEND", b"")
    return png


# ----------------------------------------------------------------------------------------------
# Deterministic content.

def field(h, w, c, seed, block=1):
    """Float content in [0, 1]: gradients and waves, a bilinearly upsampled random field, hard-edged
    rectangles at 0 and 1 (clipping, negative lobes), a 1-pixel checkerboard patch and a noisy patch.
    With block > 1 the smooth part is computed at 1/block resolution and repeated (much smaller PNGs)."""
    rng = np.random.default_rng(seed)
    bh, bw = -(-h // block), -(-w // block)
    yy, xx = np.meshgrid(np.linspace(0, 1, bh), np.linspace(0, 1, bw), indexing="ij")
    out = np.empty((bh, bw, c))
    for ch in range(c):
        fx, fy, ph = rng.uniform(1, 4), rng.uniform(1, 4), rng.uniform(0, 6.28)
        v = 0.35 * (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)) + 0.5
        v += 0.15 * np.sin(2 * np.pi * (fx * xx + fy * yy) + ph)
        lo = rng.uniform(0, 1, (5, 6))  # low-frequency random field
        gy, gx = yy * 4, xx * 5
        iy, ix = np.minimum(gy.astype(int), 3), np.minimum(gx.astype(int), 4)
        ty, tx = gy - iy, gx - ix
        v += 0.2 * ((lo[iy, ix] * (1 - tx) + lo[iy, ix + 1] * tx) * (1 - ty)
                    + (lo[iy + 1, ix] * (1 - tx) + lo[iy + 1, ix + 1] * tx) * ty - 0.5)
        out[:, :, ch] = v
    out = np.repeat(np.repeat(out, block, axis=0), block, axis=1)[:h, :w]
    for _ in range(3):  # hard edges
        y0, x0 = rng.integers(0, max(1, h - 8)), rng.integers(0, max(1, w - 8))
        out[y0:y0 + rng.integers(3, max(4, h // 4)), x0:x0 + rng.integers(3, max(4, w // 4))] = rng.integers(0, 2)
    ch_h, ch_w = min(24, h // 3), min(24, w // 3)  # checkerboard patch
    cy, cx = h // 2, w // 3
    chk = (np.add.outer(np.arange(ch_h), np.arange(ch_w)) % 2).astype(float)
    out[cy:cy + ch_h, cx:cx + ch_w] = chk[:, :, None]
    ny, nx = min(h // 5, 40), min(w // 5, 40)  # a small noisy patch (noise everywhere would bloat the files)
    out[h - ny:, w - nx:] += rng.normal(0, 0.03, (ny, nx, c))
    return np.clip(out, 0, 1)


def quant(v, bits, seed=0):
    """Quantize [0,1] floats; 16-bit values get random low bytes so high byte != rounded value."""
    if bits == 16:
        rng = np.random.default_rng(seed + 1000)
        hi = np.round(v * 255).astype(np.uint16)
        return (hi << 8) | rng.integers(0, 256, v.shape, dtype=np.uint16)
    return np.round(v * (2 ** bits - 1)).astype(np.uint8)


def make_fixtures():
    fx = {}
    fx["rgb8_500x375"] = (encode_png(quant(field(375, 500, 3, 1, block=3), 8), 2, 8), True, "8-bit RGB, downscaled")
    fx["rgb8_100x80"] = (encode_png(quant(field(80, 100, 3, 2), 8), 2, 8), True, "8-bit RGB, upscaled")
    a = quant(field(120, 160, 4, 3), 8)
    a[:30, :40, 3] = 0  # fully transparent corner whose colour must survive (PIL drops alpha)
    fx["rgba8_160x120"] = (encode_png(a, 6, 8), True, "8-bit RGBA with alpha 0..255")
    fx["gray8_150x200"] = (encode_png(quant(field(200, 150, 1, 4), 8), 0, 8), True, "8-bit gray, portrait")
    rng = np.random.default_rng(5)
    pal = rng.integers(0, 256, (40, 3))
    idx = np.minimum((field(90, 120, 1, 5)[:, :, 0] * 40).astype(np.uint8), 39)
    trns = bytes(int(x) for x in rng.integers(0, 256, 12))
    fx["palette8_trns_120x90"] = (encode_png(idx, 3, 8, palette=pal, trns=trns), True,
                                  "8-bit palette (40 entries) with tRNS")
    rgb16 = quant(field(48, 64, 3, 6), 16, 6)
    fx["rgb16_64x48"] = (encode_png(rgb16, 2, 16, trns=struct.pack(">HHH", *[int(v) for v in rgb16[0, 0]])),
                         True, "16-bit RGB with tRNS")
    fx["gray16_80x60"] = (encode_png(quant(field(60, 80, 1, 7), 16, 7), 0, 16), True,
                          "16-bit gray (Pillow I;16)")
    fx["interlaced_rgb8_123x77"] = (encode_png(quant(field(77, 123, 3, 8), 8), 2, 8, interlace=True), True,
                                    "Adam7-interlaced 8-bit RGB, odd sizes")
    fx["rgb8_224x224"] = (encode_png(quant(field(224, 224, 3, 9, block=2), 8), 2, 8), True, "8-bit RGB, no resize")
    fx["rgb8_900x120"] = (encode_png(quant(field(120, 900, 3, 10, block=3), 8), 2, 8), True, "8-bit RGB, very wide")
    fx["rgb8_230x520"] = (encode_png(quant(field(520, 230, 3, 18, block=3), 8), 2, 8), True,
                          "8-bit RGB, tall: Pillow 13 resamples vertically first (height shrinks > 2x width)")
    # Decode coverage (golden only at 32).
    r16 = quant(field(47, 61, 4, 11), 16, 11)
    r16[:10, :12, 3] = 0
    fx["rgba16_interlaced_61x47"] = (encode_png(r16, 6, 16, interlace=True), False,
                                     "Adam7 16-bit RGBA, alpha 0 pixels keep their colour")
    fx["la8_50x40"] = (encode_png(quant(field(40, 50, 2, 12), 8), 4, 8), False, "8-bit gray+alpha")
    fx["la16_50x40"] = (encode_png(quant(field(40, 50, 2, 13), 16, 13), 4, 16), False, "16-bit gray+alpha")
    fx["gray2_trns_45x33"] = (encode_png(quant(field(33, 45, 1, 14), 2), 0, 2, trns=struct.pack(">H", 1)),
                              False, "2-bit gray with tRNS")
    fx["gray1_37x19"] = (encode_png(quant(field(19, 37, 1, 15), 1), 0, 1), False, "1-bit gray")
    pal4 = np.random.default_rng(16).integers(0, 256, (16, 3))
    idx4 = np.minimum((field(21, 33, 1, 16)[:, :, 0] * 16).astype(np.uint8), 15)
    fx["palette4_interlaced_33x21"] = (encode_png(idx4, 3, 4, interlace=True, palette=pal4), False,
                                       "4-bit palette, interlaced")
    gama = [(b"gAMA", struct.pack(">I", 100000)),  # gamma 1.0: libpng would gamma-correct; PIL does not
            (b"cHRM", struct.pack(">8I", 31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000))]
    fx["rgb8_gamma_64x48"] = (encode_png(quant(field(48, 64, 3, 17), 8), 2, 8, extra=gama), False,
                              "8-bit RGB with gAMA 1.0 and cHRM chunks (ignored, as by PIL)")
    return fx


# ----------------------------------------------------------------------------------------------
# openai/CLIP's _transform(n), without torchvision.

def resized_size(w, h, n):
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = n, int(n * long / short)
    return (new_short, new_long) if w <= h else (new_long, new_short)


def clip_transform(img, n):
    new_w, new_h = resized_size(*img.size, n)
    if (new_w, new_h) != img.size:
        img = img.resize((new_w, new_h), Image.BICUBIC)
    w, h = img.size
    assert w >= n and h >= n
    top, left = int(round((h - n) / 2.0)), int(round((w - n) / 2.0))
    img = img.crop((left, top, left + n, top + n)).convert("RGB")
    t = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()
    t = t.to(dtype=torch.float32).div(255)
    mean = torch.as_tensor(MEAN, dtype=torch.float32).view(-1, 1, 1)
    std = torch.as_tensor(STD, dtype=torch.float32).view(-1, 1, 1)
    return t.sub_(mean).div_(std).numpy(), (new_w, new_h), (top, left)


# The ResNet CLIPs' resolutions (RN50x4 288, RN50x64 448) on two fixtures: a portrait past 2:1 and a
# photo whose shorter side (375) 448 enlarges.
RESNET_RESOLUTIONS = {"rgb8_230x520": [288], "rgb8_500x375": [288, 448]}


def main():
    warnings.simplefilter("ignore")  # Pillow's "Palette images with Transparency ..." advice
    os.makedirs(OUT, exist_ok=True)
    index = {"generator": "reference/preprocess_goldens.py", "pillow": PIL.__version__,
             "numpy": np.__version__, "torch": torch.__version__.split("+")[0],
             "mean": MEAN, "std": STD, "fixtures": []}

    def write(name, data):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        return {"file": name, "bytes": len(data)}

    for name, (png, full, what) in make_fixtures().items():
        entry = {"name": name, "what": what, **write(f"{name}.png", png)}
        ihdr = struct.unpack(">IIBBBBB", png[16:29])
        entry.update(width=ihdr[0], height=ihdr[1], bit_depth=ihdr[2], color_type=ihdr[3],
                     interlaced=bool(ihdr[6]))
        src = Image.open(os.path.join(OUT, f"{name}.png"))
        src.load()
        entry["pil_mode"] = src.mode
        pil_rgb = np.array(src.convert("RGB"))
        if src.mode.startswith("I;16"):
            raw = np.array(src).astype(np.uint16)
            rgb = np.repeat((raw >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
            entry["rgb_source"] = "high byte of the 16-bit samples (Pillow's convert('RGB') clamps to 255)"
            entry["pil_rgb"] = {**write(f"{name}.pil.rgb.bin", pil_rgb.tobytes()),
                                "shape": list(pil_rgb.shape), "dtype": "uint8"}
            assert np.array_equal(pil_rgb[:, :, 0], np.minimum(raw, 255))
        else:
            rgb = pil_rgb
            entry["rgb_source"] = "Image.open(png).convert('RGB')"
        entry["rgb"] = {**write(f"{name}.rgb.bin", np.ascontiguousarray(rgb).tobytes()),
                        "shape": list(rgb.shape), "dtype": "uint8"}
        base = Image.fromarray(rgb, "RGB")
        entry["preprocess"] = []
        for n in ([224, 32] if full else [32]) + RESNET_RESOLUTIONS.get(name, []):
            t, size, (top, left) = clip_transform(base, n)
            rec = write(f"{name}.{n}.f32", t.astype("<f4").tobytes())
            rec.update(resolution=n, shape=list(t.shape), dtype="float32-le", resized_wh=list(size),
                       crop_top_left=[top, left])
            # openai's preprocess on the unconverted image, for the record
            native, _, _ = clip_transform(src, n)
            rec["max_abs_diff_if_resized_in_native_mode"] = float(np.abs(native - t).max())
            entry["preprocess"].append(rec)
        index["fixtures"].append(entry)

    pngs = sum(e["bytes"] for e in index["fixtures"])
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT) if f != "index.json")
    index["png_bytes_total"] = pngs
    with open(os.path.join(OUT, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")
    print(f"{len(index['fixtures'])} fixtures: PNGs {pngs} bytes, all files {total} bytes -> {OUT}")


if __name__ == "__main__":
    main()
