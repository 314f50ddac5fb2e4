"""PyTorch side of `prompttune bench promptsrc-step`: one PromptSRC training step with PromptSRC's own code.

    python3 reference/bench_promptsrc_step.py --threads 2 [--classes 100] [--batch 4] [--depth 9] [--json]

openai's CLIP at ViT-B/16 size with random frozen weights (reference/common.py), rebuilt with
PromptSRC's IVLP classes holding the same weights, and PromptSRC's VLPromptLearner, CustomCLIP and
loss (the classes of reference/promptsrc_goldens.py) in fp32: 4 context vectors from "a photo of a",
4 vision tokens, depths 9/9, class names of 1-5 tokens, a batch of random 224 x 224 pixels. The
step: both prompted towers forward, the frozen unprompted image tower forward without gradient
(the image teacher), CE + 25 L1 text + 10 L1 image + KL, backward to the context, the visual tokens
and the 16 deep prompts, SGD (momentum 0.9, weight decay 5e-4). The 60-template text teacher is
computed once, before timing. The text tower runs all 77 positions, as PromptSRC's does.
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
import promptsrc_goldens as ps  # noqa: E402


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

    ps.CLIP_MODEL = common.random_vitb16().float().eval()
    ps.CLIP_CONFIG = "vit-b-16"
    names = [" ".join(["cat"] * (1 + i % 5)) for i in range(args.classes)]
    cfg = SimpleNamespace(
        TRAINER=SimpleNamespace(PROMPTSRC=SimpleNamespace(
            N_CTX_TEXT=4, N_CTX_VISION=4, CTX_INIT="a photo of a", PROMPT_DEPTH_TEXT=args.depth,
            PROMPT_DEPTH_VISION=args.depth, TEXT_LOSS_WEIGHT=25, IMAGE_LOSS_WEIGHT=10, GPA_MEAN=15, GPA_STD=1)),
        OPTIM=SimpleNamespace(MAX_EPOCH=20))
    torch.manual_seed(0)
    model = ps.CustomCLIP(cfg, names, ps.load_clip_to_cpu(cfg))
    for name, param in model.named_parameters():
        if "prompt_learner" not in name:
            param.requires_grad_("VPT" in name)
        elif "ZS_image_encoder" in name:
            param.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.0025, momentum=0.9, weight_decay=5e-4)
    image = torch.randn(args.batch, 3, 224, 224)
    label = torch.randint(0, args.classes, (args.batch,))
    model.train()

    def step():
        loss, _ = ps.promptsrc_loss(cfg, model(image, label))
        opt.zero_grad()
        loss.backward()
        opt.step()

    s = common.best_time(step, args.repeat)
    out = {"step_s": s, "classes": args.classes, "batch": args.batch, "depth": args.depth, "threads": args.threads,
           "torch": torch.__version__, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(json.dumps(out) if args.json else out)


if __name__ == "__main__":
    main()
