"""Checks `prompttune embed` against PyTorch for every checkpoint format.

    python3 reference/check_embed.py --checkpoints DIR [--prompttune .build/release/prompttune]

DIR is what write_checkpoints.py wrote (openai.pt, state_dict.pt, open_clip_model.safetensors, hf/)
with clip_goldens.py's output in DIR/model (the PNGs, the texts, and PyTorch's unit-norm embeddings).
Prints the worst absolute difference per format and exits non-zero above --tolerance.
"""
import argparse
import json
import os
import subprocess
import sys

from safetensors.torch import load_file
import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoints", required=True)
    ap.add_argument("--prompttune", default=".build/release/prompttune")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args()
    gold_dir = os.path.join(args.checkpoints, "model")
    g = load_file(os.path.join(gold_dir, "goldens.safetensors"))
    meta = json.load(open(os.path.join(gold_dir, "meta.json")))
    worst_all = 0.0
    for fmt in ["openai.pt", "state_dict.pt", "open_clip_model.safetensors", "hf"]:
        cmd = [args.prompttune, "embed", "--model", os.path.join(args.checkpoints, fmt)]
        for t in meta["embed_texts"]:
            cmd += ["--text", t]
        for p in meta["embed_images"]:
            cmd += ["--image", os.path.join(gold_dir, p)]
        out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        dt = (torch.tensor(out["text"]) - g["embed_text"]).abs().max().item()
        di = (torch.tensor(out["image"]) - g["embed_image"]).abs().max().item()
        ds = abs(out["logit_scale"] - meta["logit_scale"])
        worst_all = max(worst_all, dt, di)
        print(f"{fmt:30s} text {dt:.3g}  image {di:.3g}  logit_scale {ds:.3g}")
    print(f"worst absolute difference of unit-norm embeddings: {worst_all:.3g}")
    sys.exit(0 if worst_all <= args.tolerance else 1)


if __name__ == "__main__":
    main()
