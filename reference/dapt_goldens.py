"""Golden files for DAPT's training: 20 steps on the tiny CLIP with DAPT's own model code, in fp32.

    swift test --filter DAPTParityTests/testWriteInputs   # with PROMPTTUNE_WRITE_DAPT_INPUTS=1:
                                                          #   Goldens/dapt/inputs.safetensors
    python3 reference/dapt_goldens.py                     # Goldens/dapt/dapt.{json,safetensors}

The model is mlvlab/DAPT `trainers/dapt.py` (commit cacb311eee17acb0781e9c0aec628b57c112cd5e):
`ImageEncoder`, `TextEncoder`, `PromptLearner` (text context + visual prompt tokens inserted after
ln_pre between the class token and the patches), `CustomCLIP`, the loss of `DAPT.forward_backward`
(CE + VIS_BETA * mse(image features, prototype[label]) + TXT_BETA * pdist RBF of the text
features) and the prototype computation of `prototype_generator` (normalised features of the
unprompted image encoder, averaged per label). The classes are copied below as DAPT has them;
the only edits: no `.to('cuda')`, the config is a small namespace, `clip.tokenize` and the
tokenizer come from openai's CLIP code (reference/common.py), and the learnable tensors are set
to PromptTune's initial values after construction (DAPT draws them with torch's generator).
Optimiser and schedule are Dassl's (SGD momentum 0.9, weight decay 5e-4; constant warm-up epoch at
1e-5, then cosine), as in reference/engine_goldens.py.

Inputs (made by PromptTune and committed): the initial text context and visual prompt, the pixels
of the one augmented view per image the prototypes are made from, and the pixels of every step's
batch (PromptTune's RandomResizedCrop + flip; bit-exact with torchvision + Pillow for the same crop,
see Goldens/jpeg). The reference consumes exactly those pixels.
"""
import json
import math
import os
import sys
from functools import reduce
from operator import mul
from types import SimpleNamespace

import torch
import torch.nn as nn
from torch.nn import Dropout
from torch.nn import functional as F
from torch.nn.modules.utils import _pair
from safetensors import safe_open
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402
from engine_goldens import ConstantWarmupScheduler, compact_json  # noqa: E402
from torch.optim.lr_scheduler import CosineAnnealingLR  # noqa: E402

_tokenizer = common.clip_tokenizer()


class clip:  # noqa: N801  (DAPT calls clip.tokenize)
    @staticmethod
    def tokenize(text):
        return common.tokenize([text] if isinstance(text, str) else text)


# ---- mlvlab/DAPT trainers/dapt.py (verbatim but for the edits named above) ----

class ImageEncoder(nn.Module):
    def __init__(self, clip_model):
        super().__init__()
        self.visual = clip_model.visual

    def forward(self, x, prompts):
        x = self.visual.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1)
        x = x.permute(0, 2, 1)
        x = torch.cat([self.visual.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype, device=x.device), x], dim=1)  # shape = [*, grid ** 2 + 1, width]
        x = x + self.visual.positional_embedding.to(x.dtype)
        x = self.visual.ln_pre(x)                       # [B, cls+patches, dim]

        x = prompts(x)

        x = x.permute(1, 0, 2)                          # [B, cls+patches+prompt, dim] NLD -> LND
        x = self.visual.transformer(x)                  # [cls+patches+prompt, B, dim]
        x = x.permute(1, 0, 2)                          # LND -> NLD

        x = self.visual.ln_post(x[:, 0, :])

        if self.visual.proj is not None:
            x = x @ self.visual.proj

        return x


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
        x = x[torch.arange(x.shape[0]), tokenized_prompts.argmax(dim=-1)] @ self.text_projection
        return x


class PromptLearner(nn.Module):
    def __init__(self, cfg, classnames, clip_model):
        super().__init__()
        n_cls = len(classnames)
        n_vis_ctx = cfg.TRAINER.DAPT.VIS_NUM_TOKENS
        n_txt_ctx = cfg.TRAINER.DAPT.TXT_NUM_TOKENS
        dtype = clip_model.dtype
        txt_ctx_dim = clip_model.ln_final.weight.shape[0]
        vis_ctx_dim = clip_model.visual.conv1.weight.shape[0]
        clip_imsize = clip_model.visual.input_resolution
        cfg_imsize = cfg.INPUT.SIZE[0]
        patch_size = clip_model.visual.conv1.weight.shape[-1]
        assert cfg_imsize == clip_imsize, f"cfg_imsize ({cfg_imsize}) must equal to clip_imsize ({clip_imsize})"

        self.vpt_dropout = Dropout(cfg.TRAINER.DAPT.VIS_DROPOUT)
        vpt_dim = vis_ctx_dim
        clip_patchsize = _pair(patch_size)
        val = math.sqrt(6. / float(3 * reduce(mul, clip_patchsize, 1) + vpt_dim))
        self.vis_ctx = nn.Parameter(torch.zeros(1, n_vis_ctx, vpt_dim, dtype=dtype))  # [1, n_ctx, dim] = [1, 16, 768]
        nn.init.uniform_(self.vis_ctx.data, -val, val)
        self.init_bound = val

        txt_ctx_vectors = torch.empty(n_txt_ctx, txt_ctx_dim, dtype=dtype)
        nn.init.normal_(txt_ctx_vectors, std=0.02)
        prompt_prefix = " ".join(["X"] * n_txt_ctx)
        self.txt_ctx = nn.Parameter(txt_ctx_vectors)

        classnames = [name.replace("_", " ") for name in classnames]
        name_lens = [len(_tokenizer.encode(name)) for name in classnames]
        text_prompts = [prompt_prefix + " " + name + "." for name in classnames]

        tokenized_prompts = torch.cat([clip.tokenize(p) for p in text_prompts])

        with torch.no_grad():
            txt_embedding = clip_model.token_embedding(tokenized_prompts).type(dtype)

        self.register_buffer("token_prefix", txt_embedding[:, :1, :])  # SOS
        self.register_buffer("token_suffix", txt_embedding[:, 1 + n_txt_ctx:, :])  # CLS, EOS

        self.n_cls = n_cls
        self.n_txt_ctx = n_txt_ctx
        self.tokenized_prompts = tokenized_prompts
        self.name_lens = name_lens

    def forward_vis(self, x):
        vis_ctx = self.vis_ctx
        B = x.shape[0]
        ctx = self.vpt_dropout(vis_ctx.expand(B, -1, -1)).to(x.dtype)
        prefix = x[:, :1, :]
        suffix = x[:, 1:, :]
        prompt = torch.cat([prefix, ctx, suffix], dim=1)
        return prompt

    def forward_txt(self):
        ctx = self.txt_ctx
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        prefix = self.token_prefix
        suffix = self.token_suffix
        prompts = torch.cat([prefix, ctx, suffix], dim=1)
        return prompts


class CustomCLIP(nn.Module):
    def __init__(self, cfg, classnames, clip_model):
        super().__init__()
        self.prompt_learner = PromptLearner(cfg, classnames, clip_model)
        self.tokenized_prompts = self.prompt_learner.tokenized_prompts
        self.image_encoder = ImageEncoder(clip_model)
        self.text_encoder = TextEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale
        self.dtype = clip_model.dtype
        self.cfg = cfg

    def forward(self, image):
        visual_prompts = self.prompt_learner.forward_vis
        image_features = self.image_encoder(image.type(self.dtype), visual_prompts)
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)

        text_prompts = self.prompt_learner.forward_txt()
        text_features = self.text_encoder(text_prompts, self.tokenized_prompts)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)

        logit_scale = self.logit_scale.exp()
        logits = logit_scale * image_features @ text_features.t()

        return logits, image_features, text_features


def dapt_loss(cfg, prototype, output, image_features, text_features, label):
    """DAPT.forward_backward's loss."""
    loss_orig = F.cross_entropy(output, label)
    batch_p = prototype[label]
    p = batch_p
    loss_dist_i = F.mse_loss(image_features, p)
    loss_dist_t = torch.pdist(text_features.to(torch.float), p=2).pow(2.0).mul(-cfg.TRAINER.DAPT.TXT_RBF_T).exp().mean()
    bi = cfg.TRAINER.DAPT.VIS_BETA
    bt = cfg.TRAINER.DAPT.TXT_BETA
    loss = loss_orig + bi * loss_dist_i + bt * loss_dist_t
    return loss, {"ce": loss_orig.item(), "intra": loss_dist_i.item(), "inter": loss_dist_t.item()}


def prototypes_of(clip_model, pixels, labels, n_cls):
    """prototype_generator: the unprompted image encoder, normalised, averaged per label."""
    clip_image_encoder = clip_model.visual
    prototype = torch.zeros(n_cls, clip_image_encoder.output_dim).to(clip_model.dtype)
    with torch.no_grad():
        image_features = clip_image_encoder(pixels.type(clip_model.dtype))
    image_features /= image_features.norm(dim=-1, keepdim=True)
    for one_label in labels.unique():
        prototype[one_label] = image_features[labels == one_label].mean(dim=0)
    return prototype

# ---- end of DAPT's code ----


def write_prototype_pickle(out):
    """A prototype file as DAPT's prototype_generator writes it (pickle.dump of an fp16 K x D
    tensor), and its values as Float32 safetensors, for PromptTune's reader."""
    import pickle
    torch.manual_seed(0)
    p = torch.nn.functional.normalize(torch.randn(5, 32), dim=-1).half()
    with open(os.path.join(out, "shot_4-seed_1_prototype.pkl"), "wb") as ff:
        pickle.dump(p, ff)
    save_file({"prototypes": p.float().contiguous()}, os.path.join(out, "shot_4-seed_1_prototype.safetensors"))


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Goldens", "dapt")
    torch.set_num_threads(2)
    write_prototype_pickle(out)
    with safe_open(os.path.join(out, "inputs.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["inputs"])
        inp = {k: f.get_tensor(k) for k in f.keys()}

    clip_model = common.build_random_clip("tiny", 0)
    for prm in clip_model.parameters():
        prm.requires_grad_(False)
    # The golden checkpoint the Swift test loads holds these very weights.
    sd = torch.load(os.path.join(out, "..", "tiny", "checkpoints", "state_dict.pt"), map_location="cpu")
    for k, v in clip_model.state_dict().items():
        assert torch.equal(v.float(), sd[k].float()), f"tiny checkpoint differs at {k}"

    cfg = SimpleNamespace(
        TRAINER=SimpleNamespace(DAPT=SimpleNamespace(VIS_NUM_TOKENS=16, TXT_NUM_TOKENS=16, VIS_DROPOUT=0.0,
                                                     VIS_BETA=meta["beta_v"], TXT_BETA=meta["beta_t"], TXT_RBF_T=meta["tau"])),
        INPUT=SimpleNamespace(SIZE=(clip_model.visual.input_resolution,) * 2))
    torch.manual_seed(0)
    model = CustomCLIP(cfg, meta["classnames"], clip_model)
    pl = model.prompt_learner
    assert inp["visual.prompt"].abs().max().item() <= pl.init_bound, "PromptTune's visual prompt exceeds DAPT's uniform bound"
    with torch.no_grad():
        pl.txt_ctx.copy_(inp["text.context"])
        pl.vis_ctx.copy_(inp["visual.prompt"].unsqueeze(0))

    labels_all = torch.tensor(meta["image_labels"])
    prototype = prototypes_of(clip_model, inp["prototype_pixels"], labels_all, len(meta["classnames"]))

    params = [p for n, p in model.named_parameters() if "prompt_learner" in n and p.requires_grad]
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"prompt_learner.vis_ctx", "prompt_learner.txt_ctx"}
    opt = torch.optim.SGD(params, lr=meta["lr0"], momentum=0.9, weight_decay=5e-4, dampening=0, nesterov=False)
    sched = ConstantWarmupScheduler(opt, CosineAnnealingLR(opt, float(meta["max_epoch"])), 1, 1e-5)

    steps = len(meta["indices"])
    per_epoch = steps // meta["max_epoch"]
    log = dict(losses=[], terms=[], lrs=[], accuracy=[])
    txt_steps, vis_steps = [], []
    for s in range(steps):
        image = inp["pixels"][s]
        label = torch.tensor(meta["labels"][s])
        output, image_features, text_features = model(image)
        loss, terms = dapt_loss(cfg, prototype, output, image_features, text_features, label)
        log["lrs"].append(opt.param_groups[0]["lr"])
        log["losses"].append(loss.item())
        log["terms"].append(terms)
        log["accuracy"].append((output.argmax(dim=1) == label).float().mean().item())
        opt.zero_grad()
        loss.backward()
        opt.step()
        txt_steps.append(pl.txt_ctx.detach().clone())
        vis_steps.append(pl.vis_ctx.detach()[0].clone())
        if (s + 1) % per_epoch == 0:
            sched.step()
    assert log["losses"][0] != log["losses"][-1]
    moved = (vis_steps[-1] - inp["visual.prompt"]).abs().max().item()
    assert moved > 1e-3, f"the visual prompt hardly moved ({moved})"

    tensors = {"prototypes": prototype.float().contiguous(), "text.context": torch.stack(txt_steps).contiguous(),
               "visual.prompt": torch.stack(vis_steps).contiguous()}
    save_file(tensors, os.path.join(out, "dapt.safetensors"))
    doc = dict(log, steps=steps, moved_visual_prompt=moved, torch=torch.__version__,
               model="mlvlab/DAPT trainers/dapt.py @ cacb311 (fp32), tiny CLIP (reference/common.py, seed 0)",
               tensors=dict(prototypes="K x D", **{"text.context": "after each step", "visual.prompt": "after each step"}),
               command="python3 reference/dapt_goldens.py")
    with open(os.path.join(out, "dapt.json"), "w") as f:
        f.write(compact_json(doc) + "\n")
    print(f"dapt: loss {log['losses'][0]:.6f} -> {log['losses'][-1]:.6f}, terms {log['terms'][0]} -> {log['terms'][-1]}, "
          f"visual prompt moved {moved:.3g}")


if __name__ == "__main__":
    main()
