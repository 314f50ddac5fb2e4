"""PyTorch side of `prompttune bench dapt-step`: one DAPT training step with DAPT's own model code.

    python3 reference/bench_dapt_step.py --threads 2 [--classes 100] [--batch 32] [--json]

openai's CLIP at ViT-B/16 size with random frozen weights (reference/common.py), mlvlab/DAPT's
CustomCLIP (PromptLearner with 16 text and 16 visual tokens, ImageEncoder, TextEncoder; the classes
of reference/dapt_goldens.py) in fp32, class names of 1-5 tokens, a batch of random 224 x 224
pixels; loss CE + beta_v * mse(image features, prototypes[label]) + beta_t * text RBF dispersion;
backward to both prompts; SGD (momentum 0.9, weight decay 5e-4). The text encoder runs all 77
positions, as DAPT's does.
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
from dapt_goldens import CustomCLIP, dapt_loss  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    clip_model = common.random_vitb16()
    names = [" ".join(["cat"] * (1 + i % 5)) for i in range(args.classes)]
    cfg = SimpleNamespace(
        TRAINER=SimpleNamespace(DAPT=SimpleNamespace(VIS_NUM_TOKENS=16, TXT_NUM_TOKENS=16, VIS_DROPOUT=0.0,
                                                     VIS_BETA=100.0, TXT_BETA=0.01, TXT_RBF_T=2.0)),
        INPUT=SimpleNamespace(SIZE=(224, 224)))
    model = CustomCLIP(cfg, names, clip_model)
    for n, p in model.named_parameters():
        p.requires_grad_("prompt_learner" in n)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.002, momentum=0.9, weight_decay=5e-4)
    image = torch.randn(args.batch, 3, 224, 224)
    label = torch.randint(0, args.classes, (args.batch,))
    prototype = torch.nn.functional.normalize(torch.randn(args.classes, 512), dim=-1)

    def step():
        output, f, t = model(image)
        loss, _ = dapt_loss(cfg, prototype, output, f, t, label)
        opt.zero_grad()
        loss.backward()
        opt.step()

    s = common.best_time(step, args.repeat)
    out = {"step_s": s, "classes": args.classes, "batch": args.batch, "threads": args.threads, "torch": torch.__version__,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(json.dumps(out) if args.json else out)


if __name__ == "__main__":
    main()
