"""PyTorch side of `prompttune bench maple-step`: one MaPLe training step with MaPLe's own model code.

    python3 reference/bench_maple_step.py --threads 2 [--classes 100] [--batch 4] [--json]

openai's CLIP at ViT-B/16 size with random frozen weights (reference/common.py), its text
transformer and vision tower replaced by MaPLe's compound-prompt classes holding the same weights
(`clip.build_model` with design_details trainer 'MaPLe', as reference/maple_goldens.py does for the
tiny CLIP), muzairkhattak/multimodal-prompt-learning's MultiModalPromptLearner and CustomCLIP (the
classes of reference/maple_goldens.py) in fp32: 2 context vectors from "a photo of a", prompt depth
9, class names of 1-5 tokens, a batch of random 224 x 224 pixels; cross-entropy, backward to the
context, the 8 deep text prompts, `proj` and the 8 deep projections, SGD (momentum 0.9, weight
decay 5e-4). Both encoders run all their positions (77 text tokens), as MaPLe's do.
"""
import argparse
import json
import os
import resource
import sys
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402
from maple_goldens import CustomCLIP, Transformer, VisionTransformer_MaPLe  # noqa: E402


def maple_vitb16(clip_model, n_ctx):
    cfg = common.CONFIGS["vit-b-16"]
    design = {"trainer": 'MaPLe', "vision_depth": 0, "language_depth": 0, "vision_ctx": 0, "language_ctx": 0,
              "maple_length": n_ctx}
    visual = VisionTransformer_MaPLe(cfg["image_resolution"], cfg["vision_patch_size"], cfg["vision_width"],
                                     cfg["vision_layers"], cfg["vision_width"] // 64, cfg["embed_dim"], design)
    visual.load_state_dict(clip_model.visual.state_dict())
    text = Transformer(cfg["transformer_width"], cfg["transformer_layers"], cfg["transformer_heads"],
                       attn_mask=clip_model.build_attention_mask(), text_layer=True, design_details=design)
    text.load_state_dict(clip_model.transformer.state_dict())
    clip_model.visual = visual.eval()
    clip_model.transformer = text.eval()
    for p in clip_model.parameters():
        p.requires_grad_(False)
    return clip_model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--depth", type=int, default=9)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    clip_model = maple_vitb16(common.random_vitb16(), 2)
    names = [" ".join(["cat"] * (1 + i % 5)) for i in range(args.classes)]
    cfg = SimpleNamespace(TRAINER=SimpleNamespace(MAPLE=SimpleNamespace(N_CTX=2, CTX_INIT="a photo of a", PROMPT_DEPTH=args.depth)),
                          INPUT=SimpleNamespace(SIZE=(224, 224)))
    model = CustomCLIP(cfg, names, clip_model)
    for n, p in model.named_parameters():
        p.requires_grad_("prompt_learner" in n)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.0035, momentum=0.9, weight_decay=5e-4)
    image = torch.randn(args.batch, 3, 224, 224)
    label = torch.randint(0, args.classes, (args.batch,))
    model.train()

    def step():
        loss = model(image, label)
        opt.zero_grad()
        loss.backward()
        opt.step()

    s = common.best_time(step, args.repeat)
    out = {"step_s": s, "classes": args.classes, "batch": args.batch, "depth": args.depth, "threads": args.threads,
           "torch": torch.__version__, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(json.dumps(out) if args.json else out)


if __name__ == "__main__":
    main()
