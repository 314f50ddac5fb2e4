"""Golden files for CoCoOp's training on the tiny CLIP, with CoOp's own CoCoOp model code, in fp32.

    python3 reference/cocoop_goldens.py                 # into Goldens/cocoop (committed)

The model is KaiyangZhou/CoOp `trainers/cocoop.py` (commit ff61507c790454bce7c5052c3ac39e60772f1f89):
`TextEncoder`, `PromptLearner` (ctx from CTX_INIT's token embeddings, or N(0, 0.02); the meta-net
Linear(vis_dim, vis_dim // 16) - ReLU(inplace=True) - Linear(vis_dim // 16, ctx_dim) whose output is
added as a bias to every ctx vector; `construct_prompts` = [SOS prefix, ctx, class-name suffix]) and
`CustomCLIP` (image features normalised, per image the text encoder over its K prompts, normalised,
logits = logit_scale.exp() * imf_i @ text.T, `F.cross_entropy` of the stacked B x K logits in training,
the logits otherwise). The classes are copied below as CoOp has them; the only edits:
  - no `.to(device)` / `clip._download`; the config is a small namespace; `clip.tokenize` and the
    tokenizer come from openai's CLIP code (reference/common.py);
  - `CustomCLIP.image_encoder` is `nn.Identity()` instead of `clip_model.visual`: the "images" given
    to CustomCLIP are the image encoder's outputs (the synthetic features of
    Goldens/engine/features.safetensors), which CustomCLIP then normalises exactly as after the tower.
PREC is "fp32" (CoCoOp's build_model calls clip_model.float(); the meta-net stays fp32). The
reference's configs default to PREC "fp16", where CLIP stays half (ctx and prefix/suffix in fp16) and
`self.meta_net.half()` halves the meta-net too, so PromptTune's fp32 equals the reference's fp32 path.

Optimiser and schedule are Dassl's (KaiyangZhou/Dassl.pytorch c61a1b5 dassl/optim):
`build_optimizer(model.prompt_learner, OPTIM)` = torch SGD over prompt_learner.parameters() (ctx and
the meta-net's weights and biases, one group, momentum 0.9, weight decay 5e-4 on every one of them,
dampening 0, no Nesterov); ConstantWarmupScheduler (1 epoch at 1e-5) over CosineAnnealingLR(T_max =
max_epoch) with WARMUP_RECOUNT, stepped when the epoch's last batch is done (CoCoOp.forward_backward's
update_lr), as in reference/engine_goldens.py. The meta-net is initialised by PyTorch's default Linear
init: torch.manual_seed(seed) right before CustomCLIP is built, so the draws come in the reference's
order (ctx N(0, 0.02) first when there is no CTX_INIT, then linear1, then linear2; seed per case,
see CASES); the values are recorded.

Inputs: the engine goldens' features (Goldens/engine/features.safetensors: 40 features of width E = 32,
5 classes, read with safetensors), class names and template. Batches are fixed and recorded as in
engine_goldens: epoch e uses numpy.random.RandomState(100 + e).permutation(N) cut into N // batch_size
batches (Dassl drops the last partial batch). The template is recorded for reference only: CoCoOp's
prompts are "<ctx> <name>." (the ctx_init words or "X X X X" stand in the tokenised text).

Cases (lr0 0.05, 3 epochs: epoch 0 at 1e-5, epoch 1 at 0.05, epoch 2 at 0.0375):
  cocoop     ctx_init "a photo of a" (n_ctx 4 from the phrase), batch 1, 120 steps, seed 5;
  cocoop_b4  random N(0, 0.02) context of 4, batch 4, 30 steps, seed 1.
On the tiny CLIP E = 32, D = 64, so the meta-net's hidden width E // 16 is 2 (32 for ViT-B/16).
Besides the reference's own run, step 0's text features and the eval logits are recomputed with our
own compact CoCoOp (independent_text_features + engine_goldens' text encoder) and must agree.

Outputs in Goldens/cocoop/, per case: <case>.json (config, prompts, batches, lrs, losses, accuracy,
meta-net activity) and <case>.safetensors (all F32), under PromptTune's parameter names
P = text.context [M, D], meta.linear1.weight [E/16, E], meta.linear1.bias [E/16],
meta.linear2.weight [D, E/16], meta.linear2.bias [D] (torch's out x in weight layout):
  <P>                 initial values
  steps.<P>           after every optimiser update, leading step axis [S, ...]
  final.<P>           after the last update (= steps.<P>[S - 1])
  grad_step_0.<P>     d(loss of step 0)/dP, before weight decay and momentum
  text_features_step_0  [K, E] the text encoder's output (unnormalised) for step 0's first image
  eval_logits         [8, K] CustomCLIP in eval mode (returns logits) on features 0..7, final params
"""
import argparse
import json
import math
import os
import sys
from collections import OrderedDict
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F
from safetensors import safe_open
from torch.optim.lr_scheduler import CosineAnnealingLR

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402
from engine_goldens import (CLASSNAMES, TEMPLATE, ConstantWarmupScheduler, compact_json,  # noqa: E402
                            save_f32_safetensors, text_encoder)

_tokenizer = common.clip_tokenizer()


class clip:  # noqa: N801  (cocoop.py calls clip.tokenize)
    @staticmethod
    def tokenize(text):
        return common.tokenize([text] if isinstance(text, str) else text)


# ---- KaiyangZhou/CoOp trainers/cocoop.py @ ff61507 (verbatim but for the edits named above) ----

class TextEncoder(nn.Module):
    def __init__(self, clip_model):
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.dtype = clip_model.dtype

    def forward(self, prompts, tokenized_prompts):
        x = prompts + self.positional_embedding.type(self.dtype)
        x = x.permute(1, 0, 2)  # NLD -> LND
        x = self.transformer(x)
        x = x.permute(1, 0, 2)  # LND -> NLD
        x = self.ln_final(x).type(self.dtype)

        # x.shape = [batch_size, n_ctx, transformer.width]
        # take features from the eot embedding (eot_token is the highest number in each sequence)
        x = x[torch.arange(x.shape[0]), tokenized_prompts.argmax(dim=-1)] @ self.text_projection

        return x


class PromptLearner(nn.Module):
    def __init__(self, cfg, classnames, clip_model):
        super().__init__()
        n_cls = len(classnames)
        n_ctx = cfg.TRAINER.COCOOP.N_CTX
        ctx_init = cfg.TRAINER.COCOOP.CTX_INIT
        dtype = clip_model.dtype
        ctx_dim = clip_model.ln_final.weight.shape[0]
        vis_dim = clip_model.visual.output_dim
        clip_imsize = clip_model.visual.input_resolution
        cfg_imsize = cfg.INPUT.SIZE[0]
        assert cfg_imsize == clip_imsize, f"cfg_imsize ({cfg_imsize}) must equal to clip_imsize ({clip_imsize})"

        if ctx_init:
            # use given words to initialize context vectors
            ctx_init = ctx_init.replace("_", " ")
            n_ctx = len(ctx_init.split(" "))
            prompt = clip.tokenize(ctx_init)
            with torch.no_grad():
                embedding = clip_model.token_embedding(prompt).type(dtype)
            ctx_vectors = embedding[0, 1 : 1 + n_ctx, :]
            prompt_prefix = ctx_init
        else:
            # random initialization
            ctx_vectors = torch.empty(n_ctx, ctx_dim, dtype=dtype)
            nn.init.normal_(ctx_vectors, std=0.02)
            prompt_prefix = " ".join(["X"] * n_ctx)

        print(f'Initial context: "{prompt_prefix}"')
        print(f"Number of context words (tokens): {n_ctx}")

        self.ctx = nn.Parameter(ctx_vectors)

        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(vis_dim, vis_dim // 16)),
            ("relu", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(vis_dim // 16, ctx_dim))
        ]))

        if cfg.TRAINER.COCOOP.PREC == "fp16":
            self.meta_net.half()

        classnames = [name.replace("_", " ") for name in classnames]
        name_lens = [len(_tokenizer.encode(name)) for name in classnames]
        prompts = [prompt_prefix + " " + name + "." for name in classnames]

        tokenized_prompts = torch.cat([clip.tokenize(p) for p in prompts])  # (n_cls, n_tkn)
        with torch.no_grad():
            embedding = clip_model.token_embedding(tokenized_prompts).type(dtype)

        # These token vectors will be saved when in save_model(),
        # but they should be ignored in load_model() as we want to use
        # those computed using the current class names
        self.register_buffer("token_prefix", embedding[:, :1, :])  # SOS
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx :, :])  # CLS, EOS

        self.n_cls = n_cls
        self.n_ctx = n_ctx
        self.tokenized_prompts = tokenized_prompts  # torch.Tensor
        self.name_lens = name_lens

    def construct_prompts(self, ctx, prefix, suffix, label=None):
        # dim0 is either batch_size (during training) or n_cls (during testing)
        # ctx: context tokens, with shape of (dim0, n_ctx, ctx_dim)
        # prefix: the sos token, with shape of (n_cls, 1, ctx_dim)
        # suffix: remaining tokens, with shape of (n_cls, *, ctx_dim)

        if label is not None:
            prefix = prefix[label]
            suffix = suffix[label]

        prompts = torch.cat(
            [
                prefix,  # (dim0, 1, dim)
                ctx,     # (dim0, n_ctx, dim)
                suffix,  # (dim0, *, dim)
            ],
            dim=1,
        )

        return prompts

    def forward(self, im_features):
        prefix = self.token_prefix
        suffix = self.token_suffix
        ctx = self.ctx                     # (n_ctx, ctx_dim)
        bias = self.meta_net(im_features)  # (batch, ctx_dim)
        bias = bias.unsqueeze(1)           # (batch, 1, ctx_dim)
        ctx = ctx.unsqueeze(0)             # (1, n_ctx, ctx_dim)
        ctx_shifted = ctx + bias           # (batch, n_ctx, ctx_dim)

        # Use instance-conditioned context tokens for all classes
        prompts = []
        for ctx_shifted_i in ctx_shifted:
            ctx_i = ctx_shifted_i.unsqueeze(0).expand(self.n_cls, -1, -1)
            pts_i = self.construct_prompts(ctx_i, prefix, suffix)  # (n_cls, n_tkn, ctx_dim)
            prompts.append(pts_i)
        prompts = torch.stack(prompts)

        return prompts


class CustomCLIP(nn.Module):
    def __init__(self, cfg, classnames, clip_model):
        super().__init__()
        self.prompt_learner = PromptLearner(cfg, classnames, clip_model)
        self.tokenized_prompts = self.prompt_learner.tokenized_prompts
        self.image_encoder = nn.Identity()  # edit: was clip_model.visual; the inputs are its outputs
        self.text_encoder = TextEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale
        self.dtype = clip_model.dtype

    def forward(self, image, label=None):
        tokenized_prompts = self.tokenized_prompts
        logit_scale = self.logit_scale.exp()

        image_features = self.image_encoder(image.type(self.dtype))
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)

        prompts = self.prompt_learner(image_features)

        logits = []
        for pts_i, imf_i in zip(prompts, image_features):
            text_features = self.text_encoder(pts_i, tokenized_prompts)
            text_features = text_features / text_features.norm(dim=-1, keepdim=True)
            l_i = logit_scale * imf_i @ text_features.t()
            logits.append(l_i)
        logits = torch.stack(logits)

        if self.prompt_learner.training:
            return F.cross_entropy(logits, label)

        return logits

# ---- end of CoOp's code ----


N_EVAL = 8
NAMES = OrderedDict([  # prompt_learner.named_parameters() -> PromptTune's names (same order)
    ("ctx", "text.context"),
    ("meta_net.linear1.weight", "meta.linear1.weight"),
    ("meta_net.linear1.bias", "meta.linear1.bias"),
    ("meta_net.linear2.weight", "meta.linear2.weight"),
    ("meta_net.linear2.bias", "meta.linear2.bias"),
])
RECIPE = dict(lr0=0.05, max_epoch=3, momentum=0.9, weight_decay=5e-4, dampening=0.0, nesterov=False,
              warmup=dict(type="constant", epochs=1, lr=1e-5, recount=True), lr_scheduler="cosine")
CASES = {
    # seed: torch.manual_seed right before CustomCLIP is built. 5 for `cocoop`: both hidden units of
    # the 2-wide meta-net are active for step 0's image and stay in use (seeds 1 and 3 start with both
    # dead, so step 0 gives linear1 and linear2.weight no gradient). 1 for `cocoop_b4`: the random
    # context is then engine_goldens' (CTX_SEED 1, same first draw), checked against Goldens/engine.
    "cocoop": dict(n_ctx=4, ctx_init="a photo of a", batch_size=1, seed=5),
    "cocoop_b4": dict(n_ctx=4, ctx_init="", batch_size=4, seed=1),
}


def closed_form_lr(e, r):
    if e < r["warmup"]["epochs"]:
        return r["warmup"]["lr"]
    return 0.5 * r["lr0"] * (1 + math.cos(math.pi * (e - r["warmup"]["epochs"]) / r["max_epoch"]))


def independent_text_features(clip_model, pl, params, feature):
    """Our own compact CoCoOp for one image (not CoOp's code): normalise, meta-net, bias on every ctx
    vector, [SOS, ctx + bias, suffix] for the K classes, engine_goldens' text encoder; unnormalised."""
    f = feature / feature.norm()
    h = torch.relu(params["meta.linear1.weight"] @ f + params["meta.linear1.bias"])
    bias = params["meta.linear2.weight"] @ h + params["meta.linear2.bias"]
    ctx = (params["text.context"] + bias).unsqueeze(0).expand(pl.n_cls, -1, -1)
    prompts = torch.cat([pl.token_prefix, ctx, pl.token_suffix], dim=1)
    return text_encoder(clip_model, prompts, pl.tokenized_prompts)


def snapshot(pl):
    return {NAMES[n]: p.detach().clone() for n, p in pl.named_parameters()}


def run_case(name, clip_model, feats, labels, case, engine_dir):
    r = dict(RECIPE, batch_size=case["batch_size"])
    cfg = SimpleNamespace(TRAINER=SimpleNamespace(COCOOP=SimpleNamespace(
                              N_CTX=case["n_ctx"], CTX_INIT=case["ctx_init"], PREC="fp32")),
                          INPUT=SimpleNamespace(SIZE=(clip_model.visual.input_resolution,) * 2))
    torch.manual_seed(case["seed"])
    model = CustomCLIP(cfg, CLASSNAMES, clip_model)
    # CoCoOp.build_model: only prompt_learner trains.
    for n, p in model.named_parameters():
        if "prompt_learner" not in n:
            p.requires_grad_(False)
    pl = model.prompt_learner
    assert [n for n, _ in pl.named_parameters()] == list(NAMES), "unexpected prompt_learner parameters"
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"prompt_learner." + n for n in NAMES}
    init = snapshot(pl)
    if not case["ctx_init"]:
        # Same seed and first draw as engine_goldens' coop case: the same initial context.
        with safe_open(os.path.join(engine_dir, "coop.safetensors"), "pt") as f:
            assert torch.equal(f.get_tensor("ctx_init"), init["text.context"]), "random ctx differs from Goldens/engine/coop"
    # Dassl build_optimizer(self.model.prompt_learner, cfg.OPTIM): SGD over model.parameters().
    opt = torch.optim.SGD(pl.parameters(), lr=r["lr0"], momentum=r["momentum"], weight_decay=r["weight_decay"],
                          dampening=r["dampening"], nesterov=r["nesterov"])
    sched = ConstantWarmupScheduler(opt, CosineAnnealingLR(opt, float(r["max_epoch"])),
                                    r["warmup"]["epochs"], r["warmup"]["lr"])

    # Observe (without changing anything) the text encoder's outputs, one call per image, and the
    # meta-net's hidden activations (after the in-place ReLU) to report how many units are active.
    seen = dict(text=[], hidden=[])
    h1 = model.text_encoder.register_forward_hook(lambda m, a, o: seen["text"].append(o.detach().clone()))
    h2 = pl.meta_net.relu.register_forward_hook(lambda m, a, o: seen["hidden"].append(o.detach().clone()))

    scale = model.logit_scale.exp().detach()
    n = feats.shape[0]
    nb = n // r["batch_size"]  # drop_last
    log = dict(batches=[], lrs=[], losses=[], accuracy=[], meta_hidden_active=[])
    steps, out = [], {}
    model.train()
    for epoch in range(r["max_epoch"]):
        perm = np.random.RandomState(100 + epoch).permutation(n)
        for bi in range(nb):
            idx = torch.from_numpy(perm[bi * r["batch_size"]:(bi + 1) * r["batch_size"]].copy())
            image, label = feats[idx], labels[idx]
            seen["text"].clear()
            seen["hidden"].clear()
            # CoCoOp.forward_backward (PREC fp32): loss = model(image, label); zero_grad; backward; step.
            loss = model(image, label)
            lr = opt.param_groups[0]["lr"]
            opt.zero_grad()
            loss.backward()
            if not steps:
                out.update({f"grad_step_0.{NAMES[k]}": p.grad.detach().clone() for k, p in pl.named_parameters()})
                out["text_features_step_0"] = seen["text"][0]
            opt.step()
            steps.append(snapshot(pl))
            # Accuracy from the logits CustomCLIP formed (recomputed from the observed features).
            imf = image / image.norm(dim=-1, keepdim=True)
            logits = torch.stack([scale * imf[i] @ (t / t.norm(dim=-1, keepdim=True)).t()
                                  for i, t in enumerate(seen["text"])])
            assert abs(F.cross_entropy(logits, label).item() - loss.item()) <= 1e-6 * max(1.0, loss.item())
            log["batches"].append(idx.tolist())
            log["lrs"].append(lr)
            log["losses"].append(loss.item())
            log["accuracy"].append(100.0 * (logits.argmax(dim=1) == label).float().mean().item())
            log["meta_hidden_active"].append(int((seen["hidden"][0] > 0).sum().item()))
        sched.step()  # update_lr() after the epoch's last batch
    h1.remove()
    h2.remove()

    # SGD as torch/Dassl: the first update is p - lr * (grad + wd * p) for every parameter.
    for k, p0 in init.items():
        first = p0 - log["lrs"][0] * (out[f"grad_step_0.{k}"] + r["weight_decay"] * p0)
        assert torch.allclose(first, steps[0][k], rtol=0, atol=1e-9), f"first SGD update of {k} is not plain SGD"
    steps_lr = [closed_form_lr(e, r) for e in range(r["max_epoch"]) for _ in range(nb)]
    worst = max(abs(a - b) for a, b in zip(log["lrs"], steps_lr))
    assert worst <= 1e-12, f"lr schedule differs from the closed form by {worst}"
    assert all(math.isfinite(v) for v in log["losses"]) and log["losses"][0] != log["losses"][-1]
    moved = {k: (steps[-1][k] - init[k]).abs().max().item() for k in init}
    assert all(v > 1e-3 for v in moved.values()), f"a parameter hardly moved: {moved}"
    assert all(out[f"grad_step_0.{k}"].abs().max().item() > 0 for k in init), "a zero gradient at step 0"

    # Evaluation: CustomCLIP returns the logits when the prompt learner is not training.
    model.eval()
    with torch.no_grad():
        out["eval_logits"] = model(feats[:N_EVAL])
    assert out["eval_logits"].shape == (N_EVAL, len(CLASSNAMES))

    # Cross-checks with our own compact version: step 0's first text features and the eval logits.
    with torch.no_grad():
        tf = independent_text_features(clip_model, pl, init, feats[log["batches"][0][0]])
        d_tf = (tf - out["text_features_step_0"]).abs().max().item()
        assert d_tf <= 1e-5, f"text_features_step_0 differs from the compact version by {d_tf}"
        rows = []
        for i in range(N_EVAL):
            t = independent_text_features(clip_model, pl, steps[-1], feats[i])
            rows.append(scale * (feats[i] / feats[i].norm()) @ (t / t.norm(dim=-1, keepdim=True)).t())
        d_ev = (torch.stack(rows) - out["eval_logits"]).abs().max().item()
        assert d_ev <= 1e-4, f"eval_logits differ from the compact version by {d_ev}"

    out.update(init)
    for k in init:
        out[f"steps.{k}"] = torch.stack([s[k] for s in steps])
        out[f"final.{k}"] = steps[-1][k]
    out = {k: v.detach().float().contiguous() for k, v in out.items()}

    shapes = {k: list(v.shape) for k, v in sorted(out.items())}
    config = dict(n_ctx=pl.n_ctx, ctx_init=case["ctx_init"] or None, **r, prec="fp32",
                  template=TEMPLATE, classnames=CLASSNAMES, seed=case["seed"],
                  ctx_dim=int(pl.ctx.shape[1]), vis_dim=int(clip_model.visual.output_dim),
                  meta_hidden=int(clip_model.visual.output_dim // 16),
                  seed_note="torch.manual_seed(seed) right before CustomCLIP is built: ctx N(0, 0.02) "
                            "(no ctx_init) then linear1, linear2 default init",
                  loss="F.cross_entropy(B x K logits, labels), mean over the batch")
    texts = [(case["ctx_init"] or " ".join(["X"] * pl.n_ctx)) + " " + c.replace("_", " ") + "." for c in CLASSNAMES]
    eot = pl.tokenized_prompts.argmax(dim=-1)
    meta = dict(
        case=name, config=config,
        prompts=dict(texts=texts, name_lens=pl.name_lens, eot=eot.tolist(),
                     tokens=[row[:int(q) + 1] for row, q in zip(pl.tokenized_prompts.tolist(), eot.tolist())]),
        logit_scale=scale.item(), n_features=n, steps_per_epoch=nb, n_steps=len(steps),
        lr_check=f"torch CosineAnnealingLR + Dassl ConstantWarmupScheduler vs closed form: max |diff| = {worst:.3g}",
        moved={k: v for k, v in moved.items()},
        compact_check=dict(text_features_step_0=d_tf, eval_logits=d_ev),
        notes=dict(meta_hidden_active="per step: how many of the batch's B x E/16 meta-net hidden values are > 0 "
                                      "after the ReLU (0 = no gradient to linear1 and linear2.weight that step)",
                   accuracy="percent of the batch's images whose per-image logits argmax is the label",
                   lrs="the lr each step's update used",
                   batches="dataset indices (rows of Goldens/engine/features.safetensors) of each step's batch"),
        **log,
        eval=dict(features=list(range(N_EVAL)), mode="CustomCLIP.eval(): logits, final parameters"),
        tensors=shapes,
        model="KaiyangZhou/CoOp trainers/cocoop.py @ ff61507 (PREC fp32), tiny CLIP (reference/common.py, seed 0)",
        torch=torch.__version__, command="python3 reference/cocoop_goldens.py",
    )
    return meta, out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(here, "..", "Goldens", "cocoop"))
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(2)
    engine_dir = os.path.join(here, "..", "Goldens", "engine")

    clip_model = common.build_random_clip("tiny", 0)
    for prm in clip_model.parameters():
        prm.requires_grad_(False)
    # The golden checkpoint the Swift tests load holds these very weights.
    sd = torch.load(os.path.join(here, "..", "Goldens", "tiny", "checkpoints", "state_dict.pt"), map_location="cpu")
    for k, v in clip_model.state_dict().items():
        assert torch.equal(v.float(), sd[k].float()), f"tiny checkpoint differs at {k}"
    with safe_open(os.path.join(engine_dir, "features.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["classnames"]) == CLASSNAMES
        feats, labels = f.get_tensor("features")[0], f.get_tensor("labels").long()

    for name in args.cases:
        meta, tensors = run_case(name, clip_model, feats, labels, CASES[name], engine_dir)
        save_f32_safetensors(tensors, os.path.join(args.out, f"{name}.safetensors"),
                             metadata={"made_by": "reference/cocoop_goldens.py", "case": name})
        with open(os.path.join(args.out, f"{name}.json"), "w") as f:
            f.write(compact_json(meta) + "\n")
        print(f"{name:10s} {meta['n_steps']} steps  loss {meta['losses'][0]:.6f} -> {meta['losses'][-1]:.6f}  "
              f"acc(last epoch) {np.mean(meta['accuracy'][-meta['steps_per_epoch']:]):.1f}  "
              f"compact check {meta['compact_check']}")


if __name__ == "__main__":
    main()
