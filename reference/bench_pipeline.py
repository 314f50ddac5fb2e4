"""PyTorch side of `prompttune bench pipeline`: image loading, preprocessing and encoding as a
PyTorch user runs them.

    python3 reference/bench_pipeline.py --images DIR --threads 2 [--limit N] [--batch 32] [--repeat 1] [--json]

The JPEG/PNG files directly in DIR (sorted by name, dotfiles skipped, --limit keeps the first N)
are read by a `torch.utils.data.DataLoader(num_workers=threads, batch_size=batch)` over a Dataset
of paths. Each item is `Image.open(p).convert("RGB")` followed by openai/CLIP's `_transform`
(Resize(224, BICUBIC) of the shorter side, CenterCrop(224), ToTensor, Normalize) written out with
PIL and torch, as torchvision does it (torchvision is not installed beside the CPU torch wheel).
  preprocess: one pass of the DataLoader over all images (batches collated and dropped);
  encode:     the same pass, each batch fed to openai's ViT-B/16 `encode_image` (random weights)
              under `torch.inference_mode()` with `torch.set_num_threads(threads)`.
Workers are started for each pass (persistent_workers=False, the DataLoader default), and during
encode they run beside the forward pass (prefetching), as they do in training scripts. Each pass
is timed after a warm-up pass; the best of --repeat runs is reported as images per second.
"""
import argparse
import json
import os
import sys

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

N_PX = 224
EXTENSIONS = (".jpg", ".jpeg", ".png")


def list_images(folder, limit=None):
    if not os.path.isdir(folder):
        raise SystemExit(f"image folder {folder} does not exist")
    names = sorted(n for n in os.listdir(folder)
                   if not n.startswith(".") and n.lower().endswith(EXTENSIONS)
                   and os.path.isfile(os.path.join(folder, n)))
    if not names:
        raise SystemExit(f"no JPEG or PNG files in {folder}")
    if limit is not None:
        names = names[:limit]
    return [os.path.join(folder, n) for n in names]


class ImagePaths(Dataset):
    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return common.clip_transform(Image.open(self.paths[i]).convert("RGB"), N_PX)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", required=True, help="folder of JPEG/PNG files")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    paths = list_images(args.images, args.limit)
    dataset = ImagePaths(paths)

    def loader():
        return DataLoader(dataset, batch_size=args.batch, shuffle=False, num_workers=args.threads)

    model = common.random_vitb16()

    def preprocess():
        for batch in loader():
            pass

    def encode():
        for batch in loader():
            model.encode_image(batch)

    with torch.inference_mode():
        t_pre = common.best_time(preprocess, args.repeat)
        t_enc = common.best_time(encode, args.repeat)
    n = len(paths)
    out = {"preprocess_images_per_s": n / t_pre, "encode_images_per_s": n / t_enc,
           "preprocess_s": t_pre, "encode_s": t_enc, "images": n, "batch": args.batch,
           "threads": args.threads, "num_workers": args.threads, "torch": torch.__version__}
    print(json.dumps(out) if args.json else out)


if __name__ == "__main__":
    main()
