"""Golden files for CLIP parity: PromptTune's Swift towers are compared with openai's PyTorch code.

    python3 reference/clip_goldens.py                               # tiny, into Goldens/tiny/model (committed)
    python3 reference/clip_goldens.py --config vit-b-16 --out DIR   # ViT-B/16 (not committed; ~30 MB)

The model is `common.build_random_clip(config, seed)`, the same one `write_checkpoints.py` writes in
every checkpoint format. Outputs (`goldens.safetensors` + `meta.json`):
  text:  token ids (meta), input token embeddings, every block's hidden state (B, 77, C), the pooled
         (ln_final at EOT) and projected features;
  image: pixels, every block's hidden state (B, T, W), pooled and projected features;
  logits of images x texts;
  grad:  a cross-entropy loss over the logits of images carrying 3 extra tokens (inserted after
         ln_pre, as DAPT's visual prompt) against texts given as input embeddings; its gradient with
         respect to the text input embeddings and to the extra tokens;
  embed: two PNG files and the unit-norm embeddings `prompttune embed` must print for them and for
         two texts (preprocessing done with PIL as openai's `_transform`).
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

TEXTS = ["a photo of a cat.", "A photo of a Yorkshire Terrier, a type of pet.", "sunflower"]
EMBED_TEXTS = ["a photo of a cat.", "a diagram"]


def encode_text_from_embeddings(model, x, eot, hidden=None):
    """CoOp's TextEncoder: the text tower from token embeddings (B, L, C)."""
    x = x + model.positional_embedding
    x = x.permute(1, 0, 2)  # NLD -> LND
    for blk in model.transformer.resblocks:
        x = blk(x)
        if hidden is not None:
            hidden.append(x.permute(1, 0, 2).detach().clone())
    x = x.permute(1, 0, 2)  # LND -> NLD
    pooled = model.ln_final(x)[torch.arange(x.shape[0]), eot]
    return pooled, pooled @ model.text_projection


def encode_image_with_tokens(model, pixels, extra=None, hidden=None):
    """The ViT with optional extra tokens after ln_pre, between the class token and the patches."""
    v = model.visual
    x = v.conv1(pixels)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # B, G*G, W
    cls = v.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1])
    x = torch.cat([cls, x], dim=1) + v.positional_embedding
    x = v.ln_pre(x)
    if extra is not None:
        x = torch.cat([x[:, :1], extra.expand(x.shape[0], -1, -1), x[:, 1:]], dim=1)
    x = x.permute(1, 0, 2)
    for blk in v.transformer.resblocks:
        x = blk(x)
        if hidden is not None:
            hidden.append(x.permute(1, 0, 2).detach().clone())
    x = x.permute(1, 0, 2)
    pooled = v.ln_post(x[:, 0, :])
    return pooled, pooled @ v.proj


def clip_preprocess(path, n_px):
    return common.clip_transform(Image.open(path), n_px)


def write_pngs(out, seed):
    rng = np.random.default_rng(seed)
    paths = []
    for i, (w, h) in enumerate([(64, 48), (40, 50)]):
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], axis=-1)
        img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        p = os.path.join(out, f"embed_{i}.png")
        Image.fromarray(img, "RGB").save(p)
        paths.append(p)
    return paths


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="tiny", choices=sorted(common.CONFIGS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = args.out or os.path.join(os.path.dirname(__file__), "..", "Goldens", args.config, "model")
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)

    model = common.build_random_clip(args.config, args.seed)
    cfg = common.CONFIGS[args.config]
    g = {}
    torch.manual_seed(1000 + args.seed)

    tokens = common.tokenize(TEXTS)
    eot = tokens.argmax(dim=-1)
    with torch.no_grad():
        emb = model.token_embedding(tokens)
        hidden = []
        pooled, feats = encode_text_from_embeddings(model, emb, eot, hidden)
        ref = model.encode_text(tokens)
        assert torch.allclose(ref, feats, atol=1e-5), "embedding path differs from encode_text"
    g["text_embeddings"] = emb
    for i, h in enumerate(hidden):
        g[f"text_block_{i}"] = h
    g["text_pooled"], g["text_features"] = pooled, feats

    r = cfg["image_resolution"]
    pixels = torch.randn(2, 3, r, r)
    with torch.no_grad():
        hidden = []
        ipooled, ifeats = encode_image_with_tokens(model, pixels, None, hidden)
        assert torch.allclose(model.encode_image(pixels), ifeats, atol=1e-5), "image path differs"
    g["pixels"] = pixels
    for i, h in enumerate(hidden):
        g[f"image_block_{i}"] = h
    g["image_pooled"], g["image_features"] = ipooled, ifeats
    scale = model.logit_scale.exp().detach()
    g["logits"] = scale * F.normalize(ifeats, dim=-1) @ F.normalize(feats, dim=-1).t()

    # Gradient of a scalar loss w.r.t. the text input embeddings and the extra image tokens.
    extra = (torch.randn(3, cfg["vision_width"]) * 0.5).requires_grad_(True)
    temb = emb.clone().requires_grad_(True)
    _, tf = encode_text_from_embeddings(model, temb, eot)
    _, imf = encode_image_with_tokens(model, pixels, extra)
    logits = scale * F.normalize(imf, dim=-1) @ F.normalize(tf, dim=-1).t()
    labels = torch.tensor([i % len(TEXTS) for i in range(pixels.shape[0])])
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    g["grad_extra_tokens_input"] = extra.detach()
    g["grad_image_features"] = imf.detach()
    g["grad_loss"] = loss.detach().reshape(1)
    g["grad_text_embeddings"] = temb.grad
    g["grad_extra_tokens"] = extra.grad

    # What `prompttune embed` prints.
    pngs = write_pngs(out, args.seed)
    with torch.no_grad():
        imgs = torch.stack([clip_preprocess(p, r) for p in pngs])
        g["embed_pixels"] = imgs
        g["embed_image"] = F.normalize(model.encode_image(imgs), dim=-1)
        g["embed_text"] = F.normalize(model.encode_text(common.tokenize(EMBED_TEXTS)), dim=-1)

    save_file({k: v.detach().float().contiguous() for k, v in g.items()}, os.path.join(out, "goldens.safetensors"))
    meta = dict(config=args.config, seed=args.seed, texts=TEXTS, tokens=tokens.tolist(), eot=eot.tolist(),
                labels=labels.tolist(), logit_scale=scale.item(), embed_texts=EMBED_TEXTS,
                embed_images=[os.path.basename(p) for p in pngs], torch=torch.__version__)
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"wrote {len(g)} tensors to {out}; loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
