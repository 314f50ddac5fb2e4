"""PyTorch side of `prompttune bench cocoop-step`: one CoCoOp training step with CoOp's own model code.

    python3 reference/bench_cocoop_step.py --threads 2 [--classes 100] [--batch 1] [--json]

openai's CLIP at ViT-B/16 size with random frozen weights (reference/common.py), CoOp's
`trainers/cocoop.py` PromptLearner, TextEncoder and CustomCLIP (the classes of
reference/cocoop_goldens.py) in fp32 with the real image encoder put back (`clip_model.visual`),
"a photo of a" as the 4 context vectors, class names of 1-5 tokens, a batch of random 224 x 224
pixels; the image encoder runs forward without gradient, the text encoder over all 77 positions of
every image's K prompts, cross-entropy, backward to the context and the meta-net, SGD (momentum
0.9, weight decay 5e-4): what a CoCoOp step costs in the reference.
"""
import argparse
import json
import os
import resource
import sys
from types import SimpleNamespace

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402
from cocoop_goldens import CustomCLIP  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    clip_model = common.random_vitb16()
    names = [" ".join(["cat"] * (1 + i % 5)) for i in range(args.classes)]
    cfg = SimpleNamespace(TRAINER=SimpleNamespace(COCOOP=SimpleNamespace(N_CTX=4, CTX_INIT="a photo of a", PREC="fp32")),
                          INPUT=SimpleNamespace(SIZE=(224, 224)))
    model = CustomCLIP(cfg, names, clip_model)
    model.image_encoder = clip_model.visual  # the reference's own image encoder (the goldens feed its outputs instead)
    for n, p in model.named_parameters():
        p.requires_grad_("prompt_learner" in n)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.002, momentum=0.9, weight_decay=5e-4)
    image = torch.randn(args.batch, 3, 224, 224)
    label = torch.randint(0, args.classes, (args.batch,))
    model.prompt_learner.train()

    def step():
        loss = model(image, label)
        opt.zero_grad()
        loss.backward()
        opt.step()

    s = common.best_time(step, args.repeat)
    out = {"step_s": s, "classes": args.classes, "batch": args.batch, "threads": args.threads, "torch": torch.__version__,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(json.dumps(out) if args.json else out)


if __name__ == "__main__":
    main()
