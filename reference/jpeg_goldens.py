"""JPEG fixtures and train-augmentation goldens for PromptTune's `Imaging` target.

What it makes (all under Goldens/jpeg/):
  <name>.jpg          small JPEG fixtures written by Pillow from crops of
                      Goldens/preprocess/rgb8_500x375.png (smooth colour field, hard edges, a
                      checkerboard patch) plus a little seeded noise: baseline 4:2:0, 4:2:2, 4:4:4,
                      grayscale, progressive (colour and gray), optimised Huffman tables, restart
                      intervals, odd sizes (37x19, 33x17), stored RGB without the YCbCr transform
                      (keep_rgb), an EXIF orientation tag, Adobe CMYK (Pillow writes CMYK inverted
                      with an Adobe APP14 marker), the same CMYK file with its APP14 marker removed,
                      and a YCCK file (Adobe transform 2; Pillow cannot write one, so the YCbCr+K
                      samples are computed here, written as "CMYK" and the transform byte patched).
  <name>.rgb.bin      Pillow's `Image.open(jpg).convert("RGB")` as raw uint8, HWC.
  photo_500x375.jpg   the whole 500x375 PNG as a quality-85 4:2:0 JPEG, for the decode +
                      preprocess timing; only the CRC-32 of Pillow's decode is stored (in index.json)
                      to keep the goldens small.
  <fixture>.rrc<k>.rgb.bin
                      torchvision's `F.resized_crop(img, i, j, h, w, [s, s], BICUBIC)` on the
                      decoded image for fixed (i, j, h, w, s), i.e. `img.crop((j, i, j + w, i + h))`
                      then `.resize((s, s), Image.BICUBIC)` (torchvision crops first, so the filter
                      never reads outside the box), then `transpose(FLIP_LEFT_RIGHT)` when `flip`.
                      Cases cover down- and up-scaling and both of Pillow 13's pass orders.
  <fixture>.train<k>.f32
                      the whole CoOp/Dassl train transform for fixed parameters: the crop above,
                      ToTensor, Normalize(CLIP mean, std), float32 little-endian, shape [3, s, s].
  index.json          every file with its size and shape, Pillow's mode and the JPEG's properties,
                      what Pillow does with each fixture cut at half ("image file is truncated"),
                      and the crop cases.

Rerun (from the repository root; Pillow and numpy needed; deterministic for a given Pillow, whose
bundled libjpeg-turbo encodes the fixtures):
    python3 reference/jpeg_goldens.py
"""
import io
import json
import os
import zlib

import numpy as np
import PIL
import PIL.features
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Goldens", "jpeg")
SOURCE = os.path.join(ROOT, "Goldens", "preprocess", "rgb8_500x375.png")

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def base_image():
    return np.array(Image.open(SOURCE).convert("RGB"))


def patch(base, x, y, w, h, seed, noise=6.0):
    """A crop of the base image with seeded Gaussian noise (so the DCT sees high frequencies)."""
    rng = np.random.default_rng(seed)
    a = base[y:y + h, x:x + w].astype(np.float64)
    a += rng.normal(0, noise, a.shape)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def encode(img, **kw):
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def find_app14(data):
    """Offset of the APP14 'Adobe' segment's marker, or None."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        length = data[pos + 2] << 8 | data[pos + 3]
        if marker == 0xEE and data[pos + 4:pos + 9] == b"Adobe":
            return pos
        if marker == 0xDA:
            return None
        pos += 2 + length
    return None


def ycck_samples(cmyk_out):
    """Stored Y, Cb, Cr, K samples whose libjpeg YCCK->CMYK decode is `cmyk_out` (up to rounding):
    libjpeg outputs C = 255 - R(Y, Cb, Cr) etc. (JFIF YCbCr->RGB), K unchanged."""
    rgb = 255.0 - cmyk_out[..., :3].astype(np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168735892 * r - 0.331264108 * g + 0.5 * b + 128
    cr = 0.5 * r - 0.418687589 * g - 0.081312411 * b + 128
    out = np.stack([y, cb, cr, cmyk_out[..., 3].astype(np.float64)], axis=-1)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def make_fixtures(base):
    """name -> (jpeg bytes, what)."""
    fx = {}
    rgb = lambda x, y, w, h, s: Image.fromarray(patch(base, x, y, w, h, s), "RGB")

    fx["baseline420_96x64"] = (encode(rgb(150, 80, 96, 64, 1), quality=90),
                               "baseline, 4:2:0 (Pillow's default), quality 90; covers the white box edge")
    fx["s422_70x50"] = (encode(rgb(300, 40, 70, 50, 2), quality=88, subsampling=1), "baseline 4:2:2")
    fx["s444_80x60"] = (encode(rgb(120, 30, 80, 60, 3), quality=95, subsampling=0),
                        "baseline 4:4:4, quality 95; the black bar")
    fx["gray_64x48"] = (encode(rgb(10, 200, 64, 48, 4).convert("L"), quality=85), "grayscale (1 component)")
    fx["progressive420_96x72"] = (encode(rgb(140, 160, 96, 72, 5), quality=80, progressive=True),
                                  "progressive 4:2:0; covers the checkerboard patch")
    fx["progressive_gray_33x17"] = (encode(rgb(40, 300, 33, 17, 6).convert("L"), quality=75, progressive=True),
                                    "progressive grayscale, odd size")
    fx["optimized_444_progressive_45x31"] = (
        encode(rgb(360, 60, 45, 31, 7), quality=92, subsampling=0, progressive=True, optimize=True),
        "progressive 4:4:4 with optimised Huffman tables, odd size")
    fx["restart_64x48"] = (encode(rgb(200, 250, 64, 48, 8), quality=85, restart_marker_blocks=3),
                           "baseline 4:2:0 with a restart interval of 3 MCUs (DRI + RSTn markers)")
    fx["restart_rows_progressive_50x40"] = (
        encode(rgb(60, 100, 50, 40, 9), quality=85, progressive=True, restart_marker_rows=1),
        "progressive with a restart interval of one MCU row")
    fx["odd_37x19"] = (encode(rgb(420, 330, 37, 19, 10), quality=90), "odd size 37x19, 4:2:0 (partial MCUs)")
    fx["odd422_33x17"] = (encode(rgb(5, 5, 33, 17, 11), quality=70, subsampling=1), "odd size 33x17, 4:2:2")
    fx["keep_rgb_40x30"] = (encode(rgb(250, 150, 40, 30, 12), quality=90, keep_rgb=True),
                            "3 components stored as RGB (Adobe transform 0), no YCbCr conversion")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    fx["exif_orient6_40x24"] = (encode(rgb(330, 200, 40, 24, 13), quality=90, exif=exif.tobytes()),
                                "EXIF orientation 6, which neither Pillow's open nor PromptTune applies")

    # CMYK: Pillow writes inverted samples ("Adobe polarity") with an APP14 Adobe marker, transform 0.
    c = patch(base, 230, 270, 48, 40, 14)
    k = np.clip(255 - c.max(axis=2).astype(np.int32) + 40, 0, 255).astype(np.uint8)
    cmyk = np.dstack([255 - c, k]).astype(np.uint8)
    cmyk[:8, :8] = [0, 0, 0, 255]  # full black, and a white corner, at the extremes of the conversion
    cmyk[-8:, -8:] = [0, 0, 0, 0]
    data = encode(Image.fromarray(cmyk, "CMYK"), quality=90)
    app14 = find_app14(data)
    assert app14 is not None and data[app14 + 15] == 0, "expected Pillow's Adobe marker with transform 0"
    fx["cmyk_adobe_48x40"] = (data, "CMYK as Pillow writes it: inverted samples, Adobe APP14 transform 0")
    seg = data[app14 + 2] << 8 | data[app14 + 3]
    fx["cmyk_no_adobe_48x40"] = (data[:app14] + data[app14 + 2 + seg:],
                                 "the CMYK file with its APP14 marker removed: Pillow still inverts")

    # YCCK: want libjpeg's CMYK output (the inverted, 'Adobe' samples) to be `stored_cmyk`.
    stored_cmyk = 255 - cmyk[::-1]  # a different picture: flipped vertically
    ycck = ycck_samples(stored_cmyk)
    data = bytearray(encode(Image.fromarray(255 - ycck, "CMYK"), quality=92))  # Pillow inverts on save
    app14 = find_app14(data)
    data[app14 + 15] = 2  # Adobe transform 2: YCCK
    fx["ycck_48x40"] = (bytes(data), "YCCK (Adobe transform 2), inverted like Adobe's files")
    return fx


def resized_crop(img, i, j, h, w, s, flip):
    out = img.crop((j, i, j + w, i + h)).resize((s, s), Image.BICUBIC)
    if flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return out


def to_normalized(img):
    a = np.asarray(img, dtype=np.uint8).astype(np.float32) / np.float32(255)
    a = (a - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return np.ascontiguousarray(a.transpose(2, 0, 1)).astype("<f4")


# (fixture, i, j, h, w, size, flip): torchvision get_params order (top, left, height, width).
CROPS = [
    ("baseline420_96x64", 5, 7, 50, 70, 32, False),    # downscale both, horizontal pass first
    ("baseline420_96x64", 0, 0, 64, 96, 48, True),     # the whole image, flipped
    ("baseline420_96x64", 10, 30, 40, 12, 64, True),   # upscale width, downscale... no: upscale both
    ("baseline420_96x64", 2, 40, 60, 9, 24, False),    # height shrinks much more: vertical pass first
    ("baseline420_96x64", 31, 3, 1, 1, 16, False),     # a single pixel
    ("progressive420_96x72", 3, 11, 69, 80, 112, False),  # upscale to 112
    ("progressive420_96x72", 20, 1, 52, 30, 32, True),    # vertical first (52->32 vs 30->32)
    ("progressive420_96x72", 0, 50, 72, 46, 40, False),
]
TRAIN = [  # full train transform goldens (crop + flip + ToTensor + Normalize)
    ("baseline420_96x64", 5, 7, 50, 70, 32, True),
    ("progressive420_96x72", 7, 9, 61, 47, 32, False),
]


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    index = {"generator": "reference/jpeg_goldens.py", "pillow": PIL.__version__,
             "pillow_libjpeg_turbo": PIL.features.version("libjpeg_turbo"), "numpy": np.__version__,
             "mean": MEAN, "std": STD, "fixtures": [], "crops": [], "train": []}

    def write(name, data):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        return {"file": name, "bytes": len(data)}

    base = base_image()
    decoded = {}
    for name, (data, what) in make_fixtures(base).items():
        entry = {"name": name, "what": what, **write(f"{name}.jpg", data)}
        im = Image.open(os.path.join(OUT, f"{name}.jpg"))
        im.load()
        rgb = np.array(im.convert("RGB"))
        decoded[name] = rgb
        entry.update(width=im.width, height=im.height, pil_mode=im.mode,
                     progressive=bool(im.info.get("progressive", 0)),
                     adobe_transform=im.info.get("adobe_transform"),
                     layers=im.layers, exif_orientation=im.getexif().get(0x0112))
        entry["rgb"] = {**write(f"{name}.rgb.bin", rgb.tobytes()), "shape": list(rgb.shape), "dtype": "uint8"}
        try:
            half = Image.open(io.BytesIO(data[:len(data) // 2]))
            half.load()
            entry["pil_half"] = "decoded"
        except Exception as e:  # noqa: BLE001 - we record what Pillow does
            entry["pil_half"] = f"{type(e).__name__}: {e}"
        index["fixtures"].append(entry)

    # The large one, for timing: CRC only.
    photo = encode(Image.fromarray(base, "RGB"), quality=85)
    entry = {"name": "photo_500x375", "what": "the 500x375 PNG as quality-85 4:2:0 JPEG (timing)",
             **write("photo_500x375.jpg", photo)}
    rgb = np.array(Image.open(io.BytesIO(photo)).convert("RGB"))
    entry.update(width=rgb.shape[1], height=rgb.shape[0], rgb_crc32=zlib.crc32(rgb.tobytes()),
                 rgb_sum=int(rgb.astype(np.int64).sum()))
    index["photo"] = entry

    for k, (name, i, j, h, w, s, flip) in enumerate(CROPS):
        img = Image.fromarray(decoded[name], "RGB")
        out = np.array(resized_crop(img, i, j, h, w, s, flip))
        vertical_first = (h - s) > 0 and (h - s) > (w - s) * 2
        index["crops"].append({"fixture": name, "top": i, "left": j, "height": h, "width": w, "size": s,
                               "flip": flip, "vertical_pass_first": vertical_first,
                               **write(f"{name}.rrc{k}.rgb.bin", out.tobytes()), "shape": list(out.shape)})
    for k, (name, i, j, h, w, s, flip) in enumerate(TRAIN):
        img = Image.fromarray(decoded[name], "RGB")
        t = to_normalized(resized_crop(img, i, j, h, w, s, flip))
        index["train"].append({"fixture": name, "top": i, "left": j, "height": h, "width": w, "size": s,
                               "flip": flip, **write(f"{name}.train{k}.f32", t.tobytes()),
                               "shape": list(t.shape), "dtype": "float32-le"})

    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    index["bytes_total_without_index"] = total
    with open(os.path.join(OUT, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")
    print(f"{len(index['fixtures'])} fixtures + photo, {len(index['crops'])} crops, "
          f"{len(index['train'])} train goldens: {total} bytes -> {OUT}")


if __name__ == "__main__":
    main()
