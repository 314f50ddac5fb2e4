"""PyTorch side of `prompttune bench coop-step`: one CoOp training step, as the reference runs it.

    python3 reference/bench_coop_step.py --threads 2 [--classes 100] [--json]

openai's CLIP text tower at ViT-B/16 size with random frozen weights; CoOp's prompt learner with 16
shared context vectors and the class at the end; class names of 1-5 tokens; a batch of 32 random
image features; cross-entropy with CLIP's logit scale; backward to the context; SGD (momentum 0.9,
weight decay 5e-4). Timed two ways:
  full: all 77 positions, as CoOp's TextEncoder runs;
  cut:  rows cut after the batch's last EOT (exact under the causal mask).
"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

M = 16


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    names = [" ".join(["cat"] * (1 + i % 5)) for i in range(args.classes)]
    tokens = common.tokenize([" ".join(["X"] * M) + " " + n + "." for n in names])  # K, 77
    eot = tokens.argmax(dim=-1)
    cut = int(eot.max()) + 1
    image = F.normalize(torch.randn(args.batch, 512), dim=-1)
    labels = torch.randint(0, args.classes, (args.batch,))

    def run(context_length):
        model = common.random_vitb16(context_length)
        with torch.no_grad():
            emb = model.token_embedding(tokens[:, :context_length])
        prefix, suffix = emb[:, :1], emb[:, 1 + M:]
        ctx = torch.nn.Parameter(torch.randn(M, 512) * 0.02)
        opt = torch.optim.SGD([ctx], lr=0.002, momentum=0.9, weight_decay=5e-4)
        scale = model.logit_scale.exp()

        def step():
            prompts = torch.cat([prefix, ctx.unsqueeze(0).expand(args.classes, -1, -1), suffix], dim=1)
            x = (prompts + model.positional_embedding).permute(1, 0, 2)
            x = model.transformer(x).permute(1, 0, 2)
            t = model.ln_final(x)[torch.arange(args.classes), eot] @ model.text_projection
            logits = scale * image @ F.normalize(t, dim=-1).t()
            loss = F.cross_entropy(logits, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()

        return common.best_time(step, args.repeat)

    out = {"full_step_s": run(77), "cut_step_s": run(cut), "cut_positions": cut, "classes": args.classes,
           "threads": args.threads, "torch": torch.__version__}
    print(json.dumps(out) if args.json else out)


if __name__ == "__main__":
    main()
