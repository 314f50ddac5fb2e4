"""The references' default fp16 training, run on the CPU, for PromptTune's `--precision fp16-reference`.

    python3 reference/fp16_reference.py          # Goldens/fp16/{coop,dapt}.{json,safetensors}

CoOp and KgCoOp train with `PREC = "fp16"` by default and DAPT always in fp16: openai's
`build_model` converts CLIP's linear, convolution and attention weights and both projections to fp16
(`convert_weights`; LayerNorms and embeddings stay fp32 tensors holding fp16 values), the prompt
learners create their context (and DAPT its visual prompt) in the model's dtype, so the prompts are
fp16 parameters with fp16 gradients, updated by fp16 SGD. Every op computes in fp32 and stores its
result in fp16.

This script runs the same computation on the CPU (PyTorch supports fp16 tensors for every op here),
from the same initial parameters and on the same batches as the fp32 parity goldens:
  - coop: reference/engine_goldens.py's "coop" case (25 steps, Goldens/engine/coop.*), written as
    CoOp's fp16 code path: the fp16 prefix/suffix embeddings and context, CoOp's TextEncoder
    (`prompts + positional_embedding.type(dtype)`, `ln_final(x).type(dtype)`), the fp16 image
    features normalised in fp16, `logit_scale.exp() * image_features @ text_features.t()` and
    cross-entropy on the fp16 logits;
  - dapt: reference/dapt_goldens.py's model (DAPT's own classes) on the fp16 model (20 steps,
    Goldens/dapt/inputs.safetensors).

The optimiser is Dassl's SGD (momentum 0.9, weight decay 5e-4) computed as PyTorch computes it for
fp16 CUDA tensors (`_single_tensor_sgd` / `_multi_tensor_sgd`: each of grad.add(param, alpha=wd),
buf.mul_(m).add_(d), param.add_(buf, alpha=-lr) in fp32 with the scalar in fp32, a + alpha*b fused,
the result stored in fp16; `cuda_sgd_step` below). PyTorch's CPU kernels differ in one point: their
fp16 `add` rounds `alpha` (the learning rate, the weight decay) to fp16 first; the run with
`torch.optim.SGD` itself on the CPU is recorded too (`cpu_sgd_*`), to show what that changes.

Recorded per case (Goldens/fp16/<case>.{json,safetensors}): the parameters after every step (for
CoOp also the text features of the initial context and the first step's gradient),
losses, learning rates, the fraction of prompt elements whose update (lr * buf, nonzero) left the
fp16 parameter unchanged ("dropped"), and the final parameters of the torch.optim.SGD run
(`cpu_sgd_final_*`). Cases: coop and coop_lr002 (base rate 0.05 as Goldens/engine, and CoOp's own
0.002), dapt and dapt_lr002 (0.5 as Goldens/dapt, and 0.02).
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402
import engine_goldens as eg  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDENS = os.path.join(HERE, "..", "Goldens")
WD, MOMENTUM = 5e-4, 0.9


def fp16_clip():
    """The tiny CLIP as openai's build_model leaves it: convert_weights on the fp32 model."""
    model = common.build_random_clip("tiny", 0)
    common.clip_model_module().convert_weights(model)
    for p in model.parameters():
        p.requires_grad_(False)
    assert model.dtype == torch.float16
    return model


def _fma_half(a, alpha, b):
    """fp16(a + alpha * b) with alpha an fp32 scalar and one fp32 rounding of the fused sum (the
    product of an fp32 and an fp16 value is exact in fp64, so fp64 then fp32 is the fused result)."""
    alpha = float(np.float32(alpha))
    return (a.double() + alpha * b.double()).float().half()


@torch.no_grad()
def cuda_sgd_step(params, bufs, lr):
    """PyTorch's SGD (dampening 0, no Nesterov) on fp16 CUDA tensors; returns the dropped and
    attempted element counts of this step's updates."""
    dropped = attempted = 0
    for i, p in enumerate(params):
        d = _fma_half(p.grad, WD, p)                                        # grad.add(param, alpha=wd)
        if bufs[i] is None:
            bufs[i] = d.clone()
        else:
            bufs[i] = ((bufs[i].float() * np.float32(MOMENTUM)).half().float() + d.float()).half()  # mul_, add_
        new = _fma_half(p, -lr, bufs[i])                                    # param.add_(buf, alpha=-lr)
        wanted = bufs[i] != 0
        dropped += (wanted & (new == p)).sum().item()
        attempted += wanted.sum().item()
        p.copy_(new)
    return dropped, attempted


def coop_lrs(lr0, meta):
    """The engine recipe's per-step learning rates with another base rate (warm-up epoch at 1e-5,
    then cosine over max_epoch, stepped per epoch)."""
    r = meta["config"]
    warm = r["warmup"]["epochs"]

    def lr(e):
        return r["warmup"]["lr"] if e < warm else 0.5 * lr0 * (1 + math.cos(math.pi * (e - warm) / r["max_epoch"]))
    return [lr(s // meta["steps_per_epoch"]) for s in range(len(meta["batches"]))]


def coop_case(model, optimizer, lr0=None):
    """engine_goldens' "coop" case in CoOp's fp16 code path (with base rate lr0 when given);
    optimizer "cuda" or "cpu"."""
    meta = json.load(open(os.path.join(GOLDENS, "engine", "coop.json")))
    if lr0 is not None:
        meta["lrs"] = coop_lrs(lr0, meta)
    with safe_open(os.path.join(GOLDENS, "engine", "coop.safetensors"), "pt") as f:
        ctx_init = f.get_tensor("ctx_init")
    with safe_open(os.path.join(GOLDENS, "engine", "features.safetensors"), "pt") as f:
        feats, labels = f.get_tensor("features")[0], f.get_tensor("labels").long()
    fp32 = common.build_random_clip("tiny", 0)
    pl = eg.Prompts(fp32, common.clip_tokenizer(), dict(eg.BASE))  # the frozen prefix / suffix rows
    prefix, suffix = pl.prefix.half(), pl.suffix.half()             # CoOp: token_embedding(...).type(dtype)
    ctx = torch.nn.Parameter(ctx_init.half())                       # CoOp: torch.empty(..., dtype=dtype)
    tokens = pl.tokens
    k = prefix.shape[0]

    def text_features():
        # CoOp's TextEncoder
        prompts = torch.cat([prefix, ctx.unsqueeze(0).expand(k, -1, -1), suffix], dim=1)
        x = prompts + model.positional_embedding.type(model.dtype)
        x = model.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = model.ln_final(x).type(model.dtype)
        return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ model.text_projection

    image_features = feats.half()
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    first = {}
    sgd = torch.optim.SGD([ctx], lr=1.0, momentum=MOMENTUM, weight_decay=WD) if optimizer == "cpu" else None
    bufs = [None]
    log = dict(losses=[], lrs=meta["lrs"], dropped=[])
    steps = []
    for s, batch in enumerate(meta["batches"]):
        idx = torch.tensor(batch)
        t = text_features()
        if s == 0:
            # Taken from the training step: under no_grad nn.MultiheadAttention takes its fast path,
            # another kernel than training runs.
            first["text_features_init"] = t.detach().float().clone()
        t = t / t.norm(dim=-1, keepdim=True)
        logit_scale = model.logit_scale.exp()
        logits = logit_scale * image_features[idx] @ t.t()
        assert logits.dtype == torch.float16
        loss = F.cross_entropy(logits, labels[idx])
        ctx.grad = None
        loss.backward()
        assert ctx.grad.dtype == torch.float16
        if s == 0:
            first["grad_ctx_step_0"] = ctx.grad.float().clone()
        lr = meta["lrs"][s]
        if sgd is not None:
            before = ctx.detach().clone()
            for g in sgd.param_groups:
                g["lr"] = lr
            sgd.step()
            buf = sgd.state[ctx]["momentum_buffer"]
            wanted = buf != 0
            dropped, attempted = (wanted & (ctx.detach() == before)).sum().item(), wanted.sum().item()
        else:
            dropped, attempted = cuda_sgd_step([ctx], bufs, lr)
        log["losses"].append(loss.item())
        log["dropped"].append(dropped / max(1, attempted))
        steps.append(ctx.detach().float().clone())
    return log, dict(first, ctx_init=ctx_init.half().float(), ctx_steps=torch.stack(steps))


def dapt_case(model, optimizer, lr0=None):
    """dapt_goldens' run with DAPT's classes on the fp16 model (with base rate lr0 when given);
    optimizer "cuda" or "cpu"."""
    import dapt_goldens as dg
    from types import SimpleNamespace
    with safe_open(os.path.join(GOLDENS, "dapt", "inputs.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["inputs"])
        inp = {k: f.get_tensor(k) for k in f.keys()}
    golden = json.load(open(os.path.join(GOLDENS, "dapt", "dapt.json")))
    if lr0 is not None:
        per_epoch = len(meta["indices"]) // meta["max_epoch"]
        golden["lrs"] = [1e-5 if s < per_epoch else 0.5 * lr0 * (1 + math.cos(math.pi * (s // per_epoch - 1) / meta["max_epoch"]))
                         for s in range(len(meta["indices"]))]
    cfg = SimpleNamespace(
        TRAINER=SimpleNamespace(DAPT=SimpleNamespace(VIS_NUM_TOKENS=16, TXT_NUM_TOKENS=16, VIS_DROPOUT=0.0,
                                                     VIS_BETA=meta["beta_v"], TXT_BETA=meta["beta_t"], TXT_RBF_T=meta["tau"])),
        INPUT=SimpleNamespace(SIZE=(model.visual.input_resolution,) * 2))
    torch.manual_seed(0)
    net = dg.CustomCLIP(cfg, meta["classnames"], model)
    pl = net.prompt_learner
    assert pl.txt_ctx.dtype == torch.float16 and pl.vis_ctx.dtype == torch.float16
    with torch.no_grad():
        pl.txt_ctx.copy_(inp["text.context"])
        pl.vis_ctx.copy_(inp["visual.prompt"].unsqueeze(0))
    labels_all = torch.tensor(meta["image_labels"])
    prototype = dg.prototypes_of(model, inp["prototype_pixels"], labels_all, len(meta["classnames"]))
    params = [pl.txt_ctx, pl.vis_ctx]
    sgd = torch.optim.SGD(params, lr=1.0, momentum=MOMENTUM, weight_decay=WD) if optimizer == "cpu" else None
    bufs = [None, None]
    log = dict(losses=[], lrs=golden["lrs"], dropped=[])
    txt, vis = [], []
    for s in range(len(meta["indices"])):
        output, image_features, text_features = net(inp["pixels"][s])
        loss, _ = dg.dapt_loss(cfg, prototype, output, image_features, text_features, torch.tensor(meta["labels"][s]))
        for p in params:
            p.grad = None
        loss.backward()
        lr = golden["lrs"][s]
        if sgd is not None:
            before = [p.detach().clone() for p in params]
            for g in sgd.param_groups:
                g["lr"] = lr
            sgd.step()
            dropped = attempted = 0
            for p, b in zip(params, before):
                wanted = sgd.state[p]["momentum_buffer"] != 0
                dropped += (wanted & (p.detach() == b)).sum().item()
                attempted += wanted.sum().item()
        else:
            dropped, attempted = cuda_sgd_step(params, bufs, lr)
        log["losses"].append(loss.item())
        log["dropped"].append(dropped / max(1, attempted))
        txt.append(pl.txt_ctx.detach().float().clone())
        vis.append(pl.vis_ctx.detach()[0].float().clone())
    return log, {"prototypes": prototype.float(), "text.context": torch.stack(txt), "visual.prompt": torch.stack(vis)}


def main():
    out = os.path.join(GOLDENS, "fp16")
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    model = fp16_clip()
    # "coop" at the engine golden's base rate 0.05, "coop_lr002" at CoOp's own 0.002; "dapt" at the
    # DAPT golden's 0.5, "dapt_lr002" at 0.02, where fp16 drops far more of the updates.
    cases = dict(coop=(coop_case, ["ctx_steps"]),
                 coop_lr002=(lambda m, o: coop_case(m, o, lr0=0.002), ["ctx_steps"]),
                 dapt=(dapt_case, ["text.context", "visual.prompt"]),
                 dapt_lr002=(lambda m, o: dapt_case(m, o, lr0=0.02), ["text.context", "visual.prompt"]))
    for name, (run, stepped) in cases.items():
        log, tensors = run(model, "cuda")
        cpu_log, cpu_tensors = run(model, "cpu")
        for key in stepped:
            tensors["cpu_sgd_final_" + key] = cpu_tensors[key][-1]
        save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out, f"{name}.safetensors"))
        doc = dict(log, lrs=log["lrs"], cpu_sgd_losses=cpu_log["losses"], cpu_sgd_dropped=cpu_log["dropped"], steps=len(log["losses"]),
                   torch=torch.__version__, command="python3 reference/fp16_reference.py",
                   optimizer="SGD momentum 0.9, weight decay 5e-4, as PyTorch computes it on fp16 CUDA tensors "
                             "(cpu_sgd_*: torch.optim.SGD on the CPU, whose fp16 add rounds alpha to fp16)",
                   dropped_means="per step: the fraction of prompt elements with lr * momentum buffer != 0 whose fp16 "
                                 "value did not change")
        with open(os.path.join(out, f"{name}.json"), "w") as f:
            f.write(eg.compact_json(doc) + "\n")
        print(f"{name}: loss {log['losses'][0]:.5f} -> {log['losses'][-1]:.5f}, dropped updates per step "
              f"{min(log['dropped']):.3f}..{max(log['dropped']):.3f}")


if __name__ == "__main__":
    main()
