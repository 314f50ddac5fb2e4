"""Golden files for the training engine: 25 steps of CoOp-family prompt tuning on the tiny CLIP.

    python3 reference/engine_goldens.py                 # into Goldens/engine (committed)

The reference computation, written after the public code (our own, compact version of it):
  - KaiyangZhou/CoOp trainers/coop.py: PromptLearner (random N(0, 0.02) or ctx_init context, CSC,
    class token at the end / middle / front), TextEncoder (the text tower on all 77 positions from
    token embeddings, feature at the EOT = argmax of the token ids), CustomCLIP (both features
    L2-normalised, logits = exp(logit_scale) * img @ txt.T), cross-entropy;
  - htyao89/KgCoOp trainers/kgcoop.py: + w * (1 - mean_k CosineSimilarity(dim=1, eps=1e-7)(t_k, t0_k)),
    t0 the normalised zero-shot features of the hand template, w = 8;
  - mlvlab/DAPT trainers/dapt.py: + beta_t * pdist(t, p=2)^2 .mul(-tau).exp().mean() (text part only);
  - NPT: PromptTune's documented reconstruction (../shared/docs/METHODS.md section 2): simplex-ETF
    anchors aligned to the zero-shot features by orthogonal Procrustes, + lambda_lc * L_lc + lambda_mi * L_mi;
  - KaiyangZhou/Dassl.pytorch dassl/optim: SGD (momentum 0.9, weight decay 5e-4, dampening 0, no
    Nesterov) and ConstantWarmupScheduler(1 epoch at 1e-5) over CosineAnnealingLR(T_max = max_epoch),
    stepped once at the end of each epoch; the train loader drops the last partial batch.

Image features are synthetic (no image tower): `features.safetensors` in PromptTune's FeatureSet
format, 8 per class around a random class direction. Batches are fixed and recorded: epoch e uses
numpy.random.RandomState(100 + e).permutation(N) cut into N // batch_size batches.

Outputs in Goldens/engine/: features.safetensors, and per case <case>.json (config, prompts, batches,
per-step lr / loss / loss terms / accuracy) and <case>.safetensors (ctx_init, ctx_after_step_1 = after
the first optimiser update, ctx_steps = after every update, ctx_final, text_features_init (unnormalised),
grad_ctx_step_0 (gradient of the first step's total loss, before weight decay), and where the method
uses them zero_shot, anchors (rows e_k), prototypes).
"""
import argparse
import functools
import json
import math
import os
import re
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

common.clip_tokenizer = functools.lru_cache(maxsize=None)(common.clip_tokenizer)  # build the BPE once

CLASSNAMES = ["cat", "golden_retriever", "sunflower", "Boeing 747-400", "apple pie"]
PER_CLASS = 8
FEATURE_SEED = 0
CTX_SEED = 1  # torch.manual_seed before the N(0, 0.02) context draw (same init for every shared case)
TEMPLATE = "a photo of a {}."

RECIPE = dict(lr0=0.05, max_epoch=5, batch_size=8, momentum=0.9, weight_decay=5e-4, dampening=0.0,
              nesterov=False, warmup=dict(type="constant", epochs=1, lr=1e-5, recount=True),
              lr_scheduler="cosine")

BASE = dict(n_ctx=4, csc=False, position="end", ctx_init=None,
            kg_w=0.0, lambda_lc=0.0, lambda_mi=0.0, beta_t=0.0, tau=2.0, anchors=None)
CASES = {
    "coop": dict(),
    "coop_csc": dict(csc=True),
    "coop_middle": dict(position="middle"),
    "coop_front": dict(position="front"),
    "kgcoop": dict(ctx_init="a photo of a", kg_w=8.0),
    "npt": dict(lambda_lc=1.0, lambda_mi=1.0, anchors="aligned"),
    "dapt_text": dict(beta_t=0.5),
}


class ConstantWarmupScheduler(LRScheduler):
    """Dassl's ConstantWarmupScheduler: `cons_lr` while last_epoch < warmup_epoch, then the
    successor's schedule (the successor keeps its own count: WARMUP_RECOUNT = True)."""

    def __init__(self, optimizer, successor, warmup_epoch, cons_lr):
        self.successor, self.warmup_epoch, self.cons_lr = successor, warmup_epoch, cons_lr
        super().__init__(optimizer)

    def get_lr(self):
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        return [self.cons_lr for _ in self.base_lrs]

    def step(self, epoch=None):
        if self.last_epoch >= self.warmup_epoch:
            self.successor.step(epoch)
            self._last_lr = self.successor.get_last_lr()
        else:
            super().step(epoch)


def closed_form_lr(e):
    r = RECIPE
    if e < r["warmup"]["epochs"]:
        return r["warmup"]["lr"]
    return 0.5 * r["lr0"] * (1 + math.cos(math.pi * (e - r["warmup"]["epochs"]) / r["max_epoch"]))


def make_features(k, d):
    rng = np.random.RandomState(FEATURE_SEED)
    means = rng.randn(k, d)
    means = 2.0 * means / np.linalg.norm(means, axis=1, keepdims=True)
    labels = rng.permutation(np.repeat(np.arange(k), PER_CLASS))
    feats = means[labels] + rng.randn(len(labels), d)
    return torch.from_numpy(feats.astype(np.float32)), torch.from_numpy(labels.astype(np.int64))


class Prompts:
    """CoOp's PromptLearner: frozen [SOS] prefix and [name . EOT pad] suffix around the context."""

    def __init__(self, model, tokenizer, cfg):
        names = [n.replace("_", " ") for n in CLASSNAMES]
        k, d = len(names), model.ln_final.weight.shape[0]
        n_ctx = cfg["n_ctx"]
        if cfg["ctx_init"]:
            # CoOp: n_ctx = word count, ctx = the embeddings of the first n_ctx tokens; CSC is ignored.
            init = cfg["ctx_init"].replace("_", " ")
            n_ctx = len(init.split(" "))
            assert len(tokenizer.encode(init)) == n_ctx, "each ctx_init word must be one token"
            with torch.no_grad():
                ctx = model.token_embedding(common.tokenize([init]))[0, 1:1 + n_ctx].clone()
            prefix_text = init
        else:
            torch.manual_seed(CTX_SEED)
            ctx = torch.empty(k, n_ctx, d) if cfg["csc"] else torch.empty(n_ctx, d)
            torch.nn.init.normal_(ctx, std=0.02)
            prefix_text = " ".join(["X"] * n_ctx)
        self.texts = [prefix_text + " " + n + "." for n in names]
        self.name_lens = [len(tokenizer.encode(n)) for n in names]
        self.tokens = common.tokenize(self.texts)
        self.eot = self.tokens.argmax(dim=-1)
        with torch.no_grad():
            emb = model.token_embedding(self.tokens)
        self.prefix, self.suffix = emb[:, :1], emb[:, 1 + n_ctx:]
        self.ctx = torch.nn.Parameter(ctx)
        self.n_cls, self.n_ctx, self.position = k, n_ctx, cfg["position"]

    def __call__(self):
        ctx = self.ctx if self.ctx.dim() == 3 else self.ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        if self.position == "end":
            return torch.cat([self.prefix, ctx, self.suffix], dim=1)
        rows = []
        h = self.n_ctx // 2
        for i, nl in enumerate(self.name_lens):
            cls_i, rest_i = self.suffix[i:i + 1, :nl], self.suffix[i:i + 1, nl:]
            if self.position == "middle":
                parts = [self.prefix[i:i + 1], ctx[i:i + 1, :h], cls_i, ctx[i:i + 1, h:], rest_i]
            elif self.position == "front":
                parts = [self.prefix[i:i + 1], cls_i, ctx[i:i + 1], rest_i]
            else:
                raise ValueError(self.position)
            rows.append(torch.cat(parts, dim=1))
        return torch.cat(rows, dim=0)


def text_encoder(model, prompts, tokens):
    """CoOp's TextEncoder (fp32, all 77 positions, causal mask of the CLIP transformer)."""
    x = prompts + model.positional_embedding
    x = model.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
    x = model.ln_final(x)
    return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ model.text_projection


def zero_shot(model):
    texts = [TEMPLATE.format(n.replace("_", " ")) for n in CLASSNAMES]
    with torch.no_grad():
        t = model.encode_text(common.tokenize(texts))
    return t / t.norm(dim=-1, keepdim=True)


def aligned_etf(t0):
    """Simplex ETF E (d x K) = sqrt(K/(K-1)) W B, W the Procrustes rotation closest to T0^T; float64."""
    t0 = t0.double().numpy()
    k, d = t0.shape
    # Orthonormal basis of the sum-zero subspace (rows): eigenvectors of I - 11^T/K with eigenvalue 1.
    w_, v = np.linalg.eigh(np.eye(k) - np.ones((k, k)) / k)
    b = v[:, np.abs(w_ - 1) < 1e-9].T  # (K-1) x K
    assert b.shape == (k - 1, k)
    a = t0.T @ b.T  # d x (K-1)
    p, _, qt = np.linalg.svd(a, full_matrices=False)
    e = math.sqrt(k / (k - 1)) * (p @ qt) @ b  # d x K
    g = e.T @ e
    assert np.allclose(np.diag(g), 1.0, atol=1e-12), "anchors are not unit vectors"
    off = g[~np.eye(k, dtype=bool)]
    assert np.allclose(off, -1.0 / (k - 1), atol=1e-12), "anchors are not equiangular at -1/(K-1)"
    return torch.from_numpy(e.T.copy()).float()  # K x d, rows e_k


def check_prompt_assembly(model):
    """With every context vector set to the embedding of "X", each class-token position must give
    exactly the embeddings of the tokenised text, and the TextEncoder must match encode_text."""
    tokenizer = common.clip_tokenizer()
    names = [n.replace("_", " ") for n in CLASSNAMES]
    texts = dict(end=[f"X X X X {n}." for n in names], middle=[f"X X {n} X X." for n in names],
                 front=[f"{n} X X X X." for n in names])
    x = model.token_embedding.weight[tokenizer.encode("X")[0]]
    for pos, tx in texts.items():
        for csc in (False, True):
            pl = Prompts(model, tokenizer, dict(BASE, position=pos, csc=csc))
            with torch.no_grad():
                pl.ctx.copy_(x.expand_as(pl.ctx))
                want = model.token_embedding(common.tokenize(tx))
                assert torch.equal(pl(), want), f"prompt assembly differs ({pos}, csc={csc})"
                a = text_encoder(model, pl(), pl.tokens)
                b = model.encode_text(common.tokenize(tx))
                assert torch.allclose(a, b, rtol=0, atol=1e-5), "TextEncoder differs from encode_text"


def run_case(name, model, feats, labels, overrides):
    cfg = dict(BASE, **overrides)
    r = RECIPE
    tokenizer = common.clip_tokenizer()
    pl = Prompts(model, tokenizer, cfg)
    k = pl.n_cls
    n = feats.shape[0]
    scale = model.logit_scale.exp().detach()
    img = feats / feats.norm(dim=-1, keepdim=True)
    out = {"ctx_init": pl.ctx.detach().clone()}
    with torch.no_grad():
        out["text_features_init"] = text_encoder(model, pl(), pl.tokens)
    t0 = e = p = None
    if cfg["kg_w"] or cfg["anchors"]:
        t0 = out["zero_shot"] = zero_shot(model)
    if cfg["anchors"]:
        e = out["anchors"] = aligned_etf(t0)
    if cfg["lambda_mi"]:
        p = torch.stack([img[labels == c].mean(dim=0) for c in range(k)])
        out["prototypes"] = p

    opt = torch.optim.SGD([pl.ctx], lr=r["lr0"], momentum=r["momentum"], weight_decay=r["weight_decay"],
                          dampening=r["dampening"], nesterov=r["nesterov"])
    sched = ConstantWarmupScheduler(opt, CosineAnnealingLR(opt, float(r["max_epoch"])),
                                    r["warmup"]["epochs"], r["warmup"]["lr"])
    cos = torch.nn.CosineSimilarity(dim=1, eps=1e-07)
    log = dict(batches=[], lrs=[], losses=[], terms=[], accuracy=[])
    ctx_steps = []
    nb = n // r["batch_size"]  # drop_last
    for epoch in range(r["max_epoch"]):
        perm = np.random.RandomState(100 + epoch).permutation(n)
        for bi in range(nb):
            idx = torch.from_numpy(perm[bi * r["batch_size"]:(bi + 1) * r["batch_size"]].copy())
            y = labels[idx]
            tf = text_encoder(model, pl(), pl.tokens)
            t = tf / tf.norm(dim=-1, keepdim=True)
            logits = scale * img[idx] @ t.t()
            terms = {"ce": F.cross_entropy(logits, y)}
            loss = terms["ce"]
            if cfg["kg_w"]:
                terms["kg"] = 1.0 - torch.mean(cos(t, t0))
                loss = loss + cfg["kg_w"] * terms["kg"]
            if cfg["lambda_lc"]:
                terms["lc"] = (1.0 - (t * e).sum(dim=-1)).mean()
                loss = loss + cfg["lambda_lc"] * terms["lc"]
            if cfg["lambda_mi"]:
                c = (t * p).sum(dim=-1) / (t.norm(dim=-1) * p.norm(dim=-1))
                terms["mi"] = (1.0 - c).mean()
                loss = loss + cfg["lambda_mi"] * terms["mi"]
            if cfg["beta_t"]:
                terms["inter"] = torch.pdist(t, p=2).pow(2.0).mul(-cfg["tau"]).exp().mean()
                loss = loss + cfg["beta_t"] * terms["inter"]
            log["batches"].append(idx.tolist())
            log["lrs"].append(opt.param_groups[0]["lr"])
            log["losses"].append(loss.item())
            log["terms"].append({kk: v.item() for kk, v in terms.items()})
            log["accuracy"].append(100.0 * (logits.argmax(dim=1) == y).float().mean().item())
            opt.zero_grad()
            loss.backward()
            if not ctx_steps:
                out["grad_ctx_step_0"] = pl.ctx.grad.detach().clone()
            opt.step()
            ctx_steps.append(pl.ctx.detach().clone())
        sched.step()
    # SGD as torch/Dassl: first update = ctx - lr * (grad + wd * ctx) (momentum buffer starts at d_p).
    first = out["ctx_init"] - log["lrs"][0] * (out["grad_ctx_step_0"] + r["weight_decay"] * out["ctx_init"])
    assert torch.allclose(first, ctx_steps[0], rtol=0, atol=1e-9), "first SGD update is not plain SGD"
    out["ctx_after_step_1"] = ctx_steps[0]
    out["ctx_steps"] = torch.stack(ctx_steps)
    out["ctx_final"] = pl.ctx.detach().clone()

    # Faithfulness checks: the schedule against the closed form, and that training moved.
    steps_lr = [closed_form_lr(e_) for e_ in range(r["max_epoch"]) for _ in range(nb)]
    worst = max(abs(a - b) for a, b in zip(log["lrs"], steps_lr))
    assert worst <= 1e-12, f"lr schedule differs from the closed form by {worst}"
    assert len(set(log["losses"])) > 1 and log["losses"][0] != log["losses"][-1], "losses did not change"

    config = dict(cfg, n_ctx=pl.n_ctx, **r, template=TEMPLATE, classnames=CLASSNAMES,
                  ctx_seed=None if cfg["ctx_init"] else CTX_SEED,
                  loss="ce + kg_w*kg + lambda_lc*lc + lambda_mi*mi + beta_t*inter (terms absent = unused)")
    meta = dict(
        case=name, config=config,
        prompts=dict(texts=pl.texts, name_lens=pl.name_lens, eot=pl.eot.tolist(),
                     tokens=[row[:int(q) + 1] for row, q in zip(pl.tokens.tolist(), pl.eot.tolist())]),
        logit_scale=scale.item(), n_features=n, steps_per_epoch=nb,
        lr_check=f"torch CosineAnnealingLR + Dassl ConstantWarmupScheduler vs closed form: max |diff| = {worst:.3g}",
        **log,
        tensors=dict(ctx_after_step_1="ctx after the first optimiser update (step index 0)",
                     ctx_steps="ctx after each of the 25 updates",
                     grad_ctx_step_0="d(total loss of step 0)/d ctx, before weight decay and momentum",
                     text_features_init="text features of the initial prompts, unnormalised"),
        torch=torch.__version__, command="python3 reference/engine_goldens.py",
    )
    return meta, {kk: v.detach().float().contiguous() for kk, v in out.items()}


def save_f32_safetensors(tensors, path, metadata):
    """safetensors with the metadata in a fixed order (safe_open-compatible): the safetensors library
    writes `__metadata__` in hash-map order, which changes from run to run."""
    header, blobs, offset = {"__metadata__": dict(sorted(metadata.items()))}, [], 0
    for name in sorted(tensors):
        b = tensors[name].contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    with safe_open(path, "pt") as f:  # read back with the library
        assert f.metadata() == metadata and all(torch.equal(f.get_tensor(k), v) for k, v in tensors.items())


def compact_json(obj):
    """Indented JSON with every innermost list on one line."""
    text = json.dumps(obj, indent=1)
    return re.sub(r"\[\s*([^\[\]{}]*?)\s*\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Goldens", "engine"))
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(2)

    model = common.build_random_clip("tiny", 0)
    for prm in model.parameters():
        prm.requires_grad_(False)
    check_prompt_assembly(model)
    feats, labels = make_features(len(CLASSNAMES), model.text_projection.shape[1])
    save_f32_safetensors({"features": feats.unsqueeze(0), "labels": labels.float()},
                         os.path.join(args.out, "features.safetensors"),
                         metadata={"format": "prompttune.features", "version": "1", "classnames": json.dumps(CLASSNAMES),
                                   "dataset": "synthetic: 2 * unit class direction + N(0, 1), numpy RandomState(0)",
                                   "made_by": "reference/engine_goldens.py"})

    for name in args.cases:
        meta, tensors = run_case(name, model, feats, labels, CASES[name])
        save_file(tensors, os.path.join(args.out, f"{name}.safetensors"))
        with open(os.path.join(args.out, f"{name}.json"), "w") as f:
            f.write(compact_json(meta) + "\n")
        print(f"{name:12s} loss {meta['losses'][0]:.6f} -> {meta['losses'][-1]:.6f}  "
              f"acc {meta['accuracy'][0]:.1f} -> {meta['accuracy'][-1]:.1f}")


if __name__ == "__main__":
    main()
