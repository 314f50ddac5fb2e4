"""Golden files for DeKg's training: 20 steps on the tiny CLIP with DeKg's own code, in fp32.

    python3 reference/dekg_goldens.py     # Goldens/dekg/{dekg,dekg_hsic}.{json,safetensors}

The model and loss are cnunlp/DeKg at commit b8f2f1c8247c427042a0ed1ecaf450925fe50ed0, copied below
from `trainers/loss.py` (`HSICLoss`, verbatim) and `trainers/DeKg.py` (`CUSTOM_TEMPLATES`,
`TextEncoder`, `PromptLearner`, `CustomCLIP`, the fp32 branch of `DeKg.forward_backward`, the
weights as `DeKg.build_model` reads them: w1 = cfg.TRAINER.COOP.W, w2 = cfg.LOSS.WEIGHT), under
DeKg's MIT licence (its LICENSE.md). The edits, each marked `# EDIT`:

- `load_clip_to_cpu` returns openai's tiny CLIP (reference/common.py, seed 0, the weights of
  Goldens/tiny/checkpoints/state_dict.pt) in fp32, for both CLIPs DeKg builds (the trained
  model's and the second one `PromptLearner` encodes the zero-shot prompts with). DeKg's own
  `load_clip_to_cpu` returns `build_model`'s fp16 weights, and the second CLIP is never cast to
  fp32, so even under PREC fp32 DeKg's zero-shot features are fp16 computations; PromptTune fp32
  computes them in fp32 (see docs/PARITY.md).
- no `.cuda()`; `clip.tokenize` / `_tokenizer` are openai's (reference/common.py).
- the image encoder is the identity on cached image features (engine goldens' synthetic
  features, Goldens/engine/features.safetensors), as PromptTune trains text prompts from cached
  features; `CustomCLIP.forward` normalises them as it normalises encoder outputs.
- Dassl's trainer around it: `model_backward_and_update` (zero_grad, backward, step), SGD
  (momentum 0.9, weight decay 5e-4) over `prompt_learner`'s parameters (only `ctx` trains: DeKg
  freezes every parameter without "ctx" in its name), the constant warm-up epoch at 1e-5 then
  cosine, stepped after each epoch's last batch (reference/engine_goldens.py's scheduler).

Settings: 5 classes (the engine goldens'), DATASET.NAME "OxfordPets" (DeKg's template "a photo of
a {}, a type of pet.", so the initial prompt "a photo of a {}." differs from the zero-shot one and
the kg term is not 0 at the start), N_CTX 4 from "a photo of a", w1 = 8, w2 = 6 (`scripts/run.sh`),
lr0 0.05 (DeKg's 0.002 barely moves 20 steps), batch 8, 4 epochs of 5 steps; epoch e's batches are
numpy.random.RandomState(100 + e).permutation(40) cut in 5.

Cases: `dekg` (w2 = 6) and `dekg_hsic` (w2 = 20000: the tiny CLIP's zero-shot features are nearly
collinear, so HSIC is about 1e-5 and only a large weight makes its gradient count in the update).

Written per case: <case>.json (config, batches, lrs, losses, terms ce/kg/hsic per step, accuracy) and
<case>.safetensors (ctx_init, zero_shot, text_features_init, grad_ctx_step_0, ctx_steps [20, 4, D],
ctx_final).
"""
import json
import os
import sys
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch.optim.lr_scheduler import CosineAnnealingLR

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402
from engine_goldens import CLASSNAMES, ConstantWarmupScheduler, closed_form_lr, compact_json, make_features  # noqa: E402

DEKG_COMMIT = "b8f2f1c8247c427042a0ed1ecaf450925fe50ed0"


class clip:  # noqa: N801  # EDIT: DeKg calls clip.tokenize; openai's tokenizer from reference/common.py
    @staticmethod
    def tokenize(text):
        return common.tokenize([text] if isinstance(text, str) else text)


_tokenizer = common.clip_tokenizer()  # EDIT: DeKg's `_Tokenizer()`, the same BPE


def load_clip_to_cpu(cfg):  # EDIT: the tiny CLIP (fp32) instead of a download
    return common.build_random_clip("tiny", 0)


# ---- cnunlp/DeKg trainers/loss.py (verbatim) ----
class HSICLoss(nn.Module):
    def __init__(self):
        super(HSICLoss, self).__init__()

    def forward(self, W_t, W_clip):
        norm = torch.norm(W_t)
        W_t = W_t / norm
        norm = torch.norm(W_clip)
        W_clip = W_clip / norm

        n_cls = W_t.size(0)
        device = W_t.device
        dtype = W_t.dtype
        # Computing the H-matrix
        # H = torch.eye(n_cls).to(W_t.device) - (1 / n_cls) * torch.ones(n_cls, n_cls).to(W_t.device)
        H = torch.eye(n_cls, device=device, dtype=dtype) - (1 / n_cls) * torch.ones(n_cls, n_cls, device=device, dtype=dtype)
        # Calculate K_t and K_clip
        K_t = torch.mm(W_t, W_t.t())
        K_clip = torch.mm(W_clip, W_clip.t())
        HSIC = torch.trace(torch.mm(H, torch.mm(K_t, torch.mm(H, K_clip))))

        return HSIC


# ---- cnunlp/DeKg trainers/DeKg.py ----
CUSTOM_TEMPLATES = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "a photo of a {}, a type of texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    #"EuroSAT": "a photo of a {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
}


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
        n_ctx = cfg.TRAINER.COOP.N_CTX
        ctx_init = cfg.TRAINER.COOP.CTX_INIT
        dtype = clip_model.dtype
        ctx_dim = clip_model.ln_final.weight.shape[0]
        clip_imsize = clip_model.visual.input_resolution
        cfg_imsize = cfg.INPUT.SIZE[0]
        self.device = torch.device("cpu")  # EDIT: no CUDA

        assert cfg_imsize == clip_imsize, f"cfg_imsize ({cfg_imsize}) must equal to clip_imsize ({clip_imsize})"

        if ctx_init:
            # use given words to initialize context vectors
            temp = 'a photo of a'
            ctx_init = temp.replace("_", " ")
            n_ctx = len(ctx_init.split(" "))
            prompt = clip.tokenize(ctx_init)
            with torch.no_grad():
                embedding = clip_model.token_embedding(prompt).type(dtype)

            ctx_vectors = embedding[0, 1 : 1 + n_ctx, :]
            prompt_prefix = ctx_init

        else:
            # random initialization
            if cfg.TRAINER.COOP.CSC:
                print("Initializing class-specific contexts")
                ctx_vectors = torch.empty(n_cls, n_ctx, ctx_dim, dtype=dtype)
            else:
                print("Initializing a generic context")
                ctx_vectors = torch.empty(n_ctx, ctx_dim, dtype=dtype)
            nn.init.normal_(ctx_vectors, std=0.02)
            prompt_prefix = " ".join(["X"] * n_ctx)

        print(f'Initial context: "{prompt_prefix}"')
        print(f"Number of context words (tokens): {n_ctx}")

        self.ctx = nn.Parameter(ctx_vectors)  # to be optimized

        bias_vectors = torch.empty(1, 512, dtype=dtype)
        nn.init.normal_(bias_vectors, std=0.02)
        self.bias_vectors = nn.Parameter(bias_vectors)

        classnames = [name.replace("_", " ") for name in classnames]
        name_lens = [len(_tokenizer.encode(name)) for name in classnames]
        prompts = [prompt_prefix + " " + name + "." for name in classnames]

        #print(f"Loading CLIP (backbone: {cfg.MODEL.BACKBONE.NAME})")
        clip_model_ = load_clip_to_cpu(cfg)
        # EDIT: clip_model_.cuda() removed
        self.dtype = clip_model_.dtype
        self.image_encoder = clip_model_.visual

        #prompts_ = [prompt_prefix + " " + name + "." for name in classnames]
        temp = CUSTOM_TEMPLATES[cfg.DATASET.NAME]
        prompts_ = [temp.format(c.replace("_", " ")) for c in classnames]
        print(f"Prompts: {prompts_}")
        prompts_ = torch.cat([clip.tokenize(p) for p in prompts_])
        # EDIT: prompts_.cuda() removed

        with torch.no_grad():
            text_features = clip_model_.encode_text(prompts_)
            text_features = text_features / text_features.norm(dim=-1, keepdim=True)

        self.text_features = text_features

        tokenized_prompts = torch.cat([clip.tokenize(p) for p in prompts])
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
        self.class_token_position = cfg.TRAINER.COOP.CLASS_TOKEN_POSITION

    def forward(self):
        # print("image_feather:",image_features.shape)
        ctx = self.ctx
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(self.n_cls, -1, -1)

        prefix = self.token_prefix
        suffix = self.token_suffix

        prompts = torch.cat(
            [
                prefix,  # (n_cls, 1, dim)
                ctx,
                suffix,  # (n_cls, *, dim)
            ],
            dim=1,
        )

        return prompts


class CustomCLIP(nn.Module):
    def __init__(self, cfg, classnames, clip_model):
        super().__init__()
        self.prompt_learner = PromptLearner(cfg, classnames, clip_model)
        self.tokenized_prompts = self.prompt_learner.tokenized_prompts
        self.ori_embedding = self.prompt_learner.text_features
        self.image_encoder = nn.Identity()  # EDIT: cached image features instead of clip_model.visual
        self.text_encoder = TextEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale
        self.dtype = clip_model.dtype

        self.hsic_loss = HSICLoss()

        self.latent_norm = torch.nn.Parameter(data=torch.ones(1),
                                              requires_grad=True)
        self.isVisual = False
        self.ori = False

    def forward(self, image):
        prompts = self.prompt_learner()
        image_features = self.image_encoder(image.type(self.dtype))

        tokenized_prompts = self.tokenized_prompts
        text_features = self.text_encoder(prompts, tokenized_prompts)
        text_features_old = self.ori_embedding

        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        logit_scale = self.logit_scale.exp()

        logits = logit_scale * image_features @ text_features.t()
        cos = torch.nn.CosineSimilarity(dim=1,eps=1e-07)
        text_features_old = text_features_old / text_features_old.norm(dim=-1, keepdim=True)
        # print("text_dim",text_features.shape)
        score_kg = cos(text_features,text_features_old)
        score_kg = 1.0-torch.mean(score_kg)

        score_kd = self.hsic_loss(text_features,text_features_old)

        return logits, score_kg, score_kd


class DeKgTrainer:
    """`DeKg.build_model` and the fp32 branch of `DeKg.forward_backward`; Dassl's
    `model_backward_and_update` and scheduler step inlined (EDIT: no Dassl TrainerX)."""

    def __init__(self, cfg, classnames):
        clip_model = load_clip_to_cpu(cfg)
        if cfg.TRAINER.COOP.PREC == "fp32" or cfg.TRAINER.COOP.PREC == "amp":
            clip_model.float()
        self.model = CustomCLIP(cfg, classnames, clip_model)
        self.w1 = cfg.TRAINER.COOP.W
        self.w2 = cfg.LOSS.WEIGHT
        for name, param in self.model.named_parameters():
            if "ctx" not in name:
                param.requires_grad_(False)
        o = cfg.OPTIM
        self.optim = torch.optim.SGD(self.model.prompt_learner.parameters(), lr=o.LR, momentum=0.9, weight_decay=5e-4,
                                     dampening=0.0, nesterov=False)
        self.sched = ConstantWarmupScheduler(self.optim, CosineAnnealingLR(self.optim, float(o.MAX_EPOCH)),
                                             o.WARMUP_EPOCH, o.WARMUP_CONS_LR)

    def forward_backward(self, image, label):
        output, score_kg, score_kd = self.model(image)
        loss = F.cross_entropy(output, label) + self.w1 * score_kg + self.w2 * score_kd
        # Dassl TrainerX.model_backward_and_update:
        self.optim.zero_grad()
        loss.backward()
        grad = self.model.prompt_learner.ctx.grad.detach().clone()
        self.optim.step()
        terms = {"ce": F.cross_entropy(output, label).item(), "kg": score_kg.item(), "hsic": score_kd.item()}
        acc = 100.0 * (output.argmax(dim=1) == label).float().mean().item()
        return loss.item(), terms, acc, grad


# The script's weights, and w2 raised until HSIC's gradient is a sizeable part of the update: the
# tiny CLIP's zero-shot features are nearly collinear (pairwise cosines about 0.99), so HSIC of the
# centred Grams is about 1e-5 and at w2 = 6 its gradient is 1e-4 of cross-entropy's.
CASES = {"dekg": dict(w1=8.0, w2=6.0), "dekg_hsic": dict(w1=8.0, w2=20000.0)}


def run_case(name, out_dir, w1, w2):
    cfg = SimpleNamespace(
        TRAINER=SimpleNamespace(COOP=SimpleNamespace(N_CTX=4, CTX_INIT=True, CSC=False, W=w1, PREC="fp32",
                                                     CLASS_TOKEN_POSITION="end")),
        LOSS=SimpleNamespace(WEIGHT=w2),
        INPUT=SimpleNamespace(SIZE=(32, 32)),
        DATASET=SimpleNamespace(NAME="OxfordPets"),
        OPTIM=SimpleNamespace(LR=0.05, MAX_EPOCH=4, WARMUP_EPOCH=1, WARMUP_CONS_LR=1e-5),
        BATCH_SIZE=8,
    )
    feats, labels = make_features(len(CLASSNAMES), common.CONFIGS["tiny"]["embed_dim"])
    with safe_open(os.path.join(out_dir, "..", "engine", "features.safetensors"), "pt") as f:
        assert torch.equal(f.get_tensor("features")[0], feats), "features differ from Goldens/engine/features.safetensors"

    trainer = DeKgTrainer(cfg, CLASSNAMES)
    pl = trainer.model.prompt_learner
    out = {"ctx_init": pl.ctx.detach().clone(), "zero_shot": trainer.model.ori_embedding.clone()}
    with torch.no_grad():
        out["text_features_init"] = trainer.model.text_encoder(pl(), pl.tokenized_prompts)
    n, bs = feats.shape[0], cfg.BATCH_SIZE
    nb = n // bs
    log = dict(batches=[], lrs=[], losses=[], terms=[], accuracy=[])
    steps = []
    for epoch in range(cfg.OPTIM.MAX_EPOCH):
        perm = np.random.RandomState(100 + epoch).permutation(n)
        for bi in range(nb):
            idx = torch.from_numpy(perm[bi * bs:(bi + 1) * bs].copy())
            log["batches"].append(idx.tolist())
            log["lrs"].append(trainer.optim.param_groups[0]["lr"])
            loss, terms, acc, grad = trainer.forward_backward(feats[idx], labels[idx])
            if not steps:
                out["grad_ctx_step_0"] = grad
            log["losses"].append(loss)
            log["terms"].append(terms)
            log["accuracy"].append(acc)
            steps.append(pl.ctx.detach().clone())
        trainer.sched.step()  # DeKg.forward_backward: sched.step() after the epoch's last batch
    out["ctx_steps"] = torch.stack(steps)
    out["ctx_final"] = pl.ctx.detach().clone()

    worst = max(abs(a - closed_form_lr_for(cfg, e)) for e, a in zip([s // nb for s in range(len(steps))], log["lrs"]))
    assert worst <= 1e-12, f"lr schedule differs from the closed form by {worst}"
    assert log["terms"][0]["kg"] > 1e-4 and log["terms"][0]["hsic"] > 1e-7, "kg and hsic should both be non-zero"
    assert len(set(log["losses"])) > 1, "losses did not change"

    meta = dict(
        case=name, dekg_commit=DEKG_COMMIT,
        config=dict(n_ctx=pl.n_ctx, ctx_init="a photo of a", w1=cfg.TRAINER.COOP.W, w2=cfg.LOSS.WEIGHT,
                    template=CUSTOM_TEMPLATES[cfg.DATASET.NAME], dataset_name=cfg.DATASET.NAME, classnames=CLASSNAMES,
                    lr0=cfg.OPTIM.LR, max_epoch=cfg.OPTIM.MAX_EPOCH, batch_size=bs, prec=cfg.TRAINER.COOP.PREC,
                    loss="F.cross_entropy + w1 * score_kg + w2 * score_kd (DeKg.forward_backward)"),
        logit_scale=trainer.model.logit_scale.exp().item(), n_features=n, steps_per_epoch=nb, **log,
        torch=torch.__version__, command="python3 reference/dekg_goldens.py",
    )
    save_file({k: v.detach().float().contiguous() for k, v in out.items()}, os.path.join(out_dir, f"{name}.safetensors"))
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        f.write(compact_json(meta) + "\n")
    print(f"{name} loss {log['losses'][0]:.6f} -> {log['losses'][-1]:.6f}  kg {log['terms'][0]['kg']:.6f} "
          f"hsic {log['terms'][0]['hsic']:.6f} -> {log['terms'][-1]['hsic']:.6f}  acc {log['accuracy'][0]:.1f} -> {log['accuracy'][-1]:.1f}")


def main():
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Goldens", "dekg")
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(2)
    for name, w in CASES.items():
        run_case(name, out_dir, **w)


def closed_form_lr_for(cfg, e):
    o = cfg.OPTIM
    if e < o.WARMUP_EPOCH:
        return o.WARMUP_CONS_LR
    import math
    return 0.5 * o.LR * (1 + math.cos(math.pi * (e - o.WARMUP_EPOCH) / o.MAX_EPOCH))


if __name__ == "__main__":
    main()
