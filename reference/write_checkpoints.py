"""Write one CLIP model in every checkpoint format PromptTune's Swift loader reads.

    python3 reference/write_checkpoints.py --config tiny --seed 0 --out Goldens/tiny/checkpoints

Writes into OUT:
  openai.pt                     TorchScript archive in fp16, laid out as openai's ViT-B-16.pt
                                (<top>/data.pkl, <top>/data/N, code/, constants.pkl, version)
  state_dict.pt                 torch.save(model.state_dict()), fp32, zip format
  open_clip_model.safetensors   open_clip's safetensors: OpenAI key names, fp16
  hf/config.json                Hugging Face transformers CLIPModel config
  hf/model.safetensors          ... and its weights (fp32), converted from the openai model
  tensor_views.pt, dtypes.safetensors
                                small fixtures for TensorIO's tests (strided views, every dtype)

Every weight of the model from `common.build_random_clip` is fp16-representable, so all four files
hold exactly the same numbers. The script checks each file by reading it back with torch.
"""
import argparse
import copy
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def model_config(model):
    """The architecture of an openai CLIP model, as openai's build_model infers it."""
    sd = model.state_dict()
    vision_width = sd["visual.conv1.weight"].shape[0]
    text_width = sd["ln_final.weight"].shape[0]
    patch = sd["visual.conv1.weight"].shape[-1]
    grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    return dict(
        embed_dim=sd["text_projection"].shape[1],
        image_resolution=patch * grid,
        patch_size=patch,
        vision_width=vision_width,
        vision_layers=len([k for k in sd if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")]),
        vision_heads=vision_width // 64,
        context_length=sd["positional_embedding"].shape[0],
        vocab_size=sd["token_embedding.weight"].shape[0],
        text_width=text_width,
        text_layers=len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks")}),
        text_heads=text_width // 64,
    )


def example_inputs(cfg, batch=2, seed=1234):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 3, cfg["image_resolution"], cfg["image_resolution"], generator=g)
    vocab, ctx = cfg["vocab_size"], cfg["context_length"]
    text = torch.zeros(batch, ctx, dtype=torch.long)
    for i in range(batch):
        n = 3 + 4 * i
        body = torch.randint(1, vocab - 2, (n,), generator=g)
        ids = torch.cat([torch.tensor([vocab - 2]), body, torch.tensor([vocab - 1])])  # SOT ... EOT
        text[i, : len(ids)] = ids
    return image, text


def _assert_same(name, expected: dict, found: dict, what):
    missing = [k for k in expected if k not in found]
    if missing:
        raise SystemExit(f"{what}: missing tensors {missing[:5]}")
    for k, v in expected.items():
        w = found[k]
        if tuple(v.shape) != tuple(w.shape) or not torch.equal(v.float(), w.float()):
            raise SystemExit(f"{what}: tensor {k} differs from the model")
    print(f"  {name}: {len(expected)} tensors verified")


# --------------------------------------------------------------------------------------------------
# (a) TorchScript, fp16


def write_torchscript(model, path):
    cfg = model_config(model)
    m = copy.deepcopy(model).half().eval()
    # openai's archives carry these three int64 attributes as tensors (build_model deletes them).
    for name in ("input_resolution", "context_length", "vocab_size"):
        if hasattr(m, name):
            delattr(m, name)  # plain int attributes in the Python model; tensors in openai's archive
    m.register_buffer("input_resolution", torch.tensor(cfg["image_resolution"]))
    m.register_buffer("context_length", torch.tensor(cfg["context_length"]))
    m.register_buffer("vocab_size", torch.tensor(cfg["vocab_size"]))
    image, text = example_inputs(cfg)
    with torch.no_grad():
        try:
            traced = torch.jit.trace(m, (image.half(), text), check_trace=False)
        except RuntimeError:
            # CPU builds without some fp16 kernel: trace in fp32, then convert the traced module.
            m32 = copy.deepcopy(m).float()
            traced = torch.jit.trace(m32, (image, text), check_trace=False).half()
    torch.jit.save(traced, path)

    loaded = torch.jit.load(path, map_location="cpu").state_dict()
    expected = {k: v.half() for k, v in model.state_dict().items()}
    for k, v in loaded.items():
        if k in expected and v.dtype != torch.float16:
            raise SystemExit(f"{path}: {k} is {v.dtype}, expected float16")
    _assert_same("openai.pt", expected, loaded, path)


# --------------------------------------------------------------------------------------------------
# (b) torch.save(state_dict), fp32


def write_state_dict(model, path):
    torch.save(model.state_dict(), path)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    _assert_same("state_dict.pt", model.state_dict(), loaded, path)


# --------------------------------------------------------------------------------------------------
# (c) open_clip safetensors, fp16


def write_open_clip_safetensors(model, path):
    from safetensors.torch import load_file, save_file

    tensors = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, path, metadata={"format": "pt"})
    _assert_same("open_clip_model.safetensors", tensors, load_file(path), path)


# --------------------------------------------------------------------------------------------------
# (d) Hugging Face transformers CLIPModel


def hf_config_dict(cfg):
    return dict(
        projection_dim=cfg["embed_dim"],
        logit_scale_init_value=2.6592,
        text_config=dict(
            hidden_size=cfg["text_width"], intermediate_size=4 * cfg["text_width"],
            num_hidden_layers=cfg["text_layers"], num_attention_heads=cfg["text_heads"],
            max_position_embeddings=cfg["context_length"], vocab_size=cfg["vocab_size"],
            hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=cfg["embed_dim"],
            bos_token_id=cfg["vocab_size"] - 2, eos_token_id=cfg["vocab_size"] - 1, pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=cfg["vision_width"], intermediate_size=4 * cfg["vision_width"],
            num_hidden_layers=cfg["vision_layers"], num_attention_heads=cfg["vision_heads"],
            image_size=cfg["image_resolution"], patch_size=cfg["patch_size"], num_channels=3,
            hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=cfg["embed_dim"],
        ),
    )


def openai_to_hf(sd, cfg):
    """openai CLIP state dict -> transformers CLIPModel state dict."""
    out = {}

    def block(src, dst, i):
        s, d = f"{src}.{i}", f"{dst}.{i}"
        w, b = sd[f"{s}.attn.in_proj_weight"], sd[f"{s}.attn.in_proj_bias"]
        for j, name in enumerate(["q_proj", "k_proj", "v_proj"]):
            out[f"{d}.self_attn.{name}.weight"] = w.chunk(3, dim=0)[j]
            out[f"{d}.self_attn.{name}.bias"] = b.chunk(3, dim=0)[j]
        for a, b_ in [("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                      ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")]:
            out[f"{d}.{b_}.weight"] = sd[f"{s}.{a}.weight"]
            out[f"{d}.{b_}.bias"] = sd[f"{s}.{a}.bias"]

    for i in range(cfg["text_layers"]):
        block("transformer.resblocks", "text_model.encoder.layers", i)
    for i in range(cfg["vision_layers"]):
        block("visual.transformer.resblocks", "vision_model.encoder.layers", i)

    out["text_model.embeddings.token_embedding.weight"] = sd["token_embedding.weight"]
    out["text_model.embeddings.position_embedding.weight"] = sd["positional_embedding"]
    out["text_model.final_layer_norm.weight"] = sd["ln_final.weight"]
    out["text_model.final_layer_norm.bias"] = sd["ln_final.bias"]
    out["text_projection.weight"] = sd["text_projection"].t()
    out["vision_model.embeddings.class_embedding"] = sd["visual.class_embedding"]
    out["vision_model.embeddings.patch_embedding.weight"] = sd["visual.conv1.weight"]
    out["vision_model.embeddings.position_embedding.weight"] = sd["visual.positional_embedding"]
    out["vision_model.pre_layrnorm.weight"] = sd["visual.ln_pre.weight"]
    out["vision_model.pre_layrnorm.bias"] = sd["visual.ln_pre.bias"]
    out["vision_model.post_layernorm.weight"] = sd["visual.ln_post.weight"]
    out["vision_model.post_layernorm.bias"] = sd["visual.ln_post.bias"]
    out["visual_projection.weight"] = sd["visual.proj"].t()
    out["logit_scale"] = sd["logit_scale"]
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def _features(x):
    """transformers 4 returns a tensor from get_*_features; some 5.x versions return an output object."""
    if isinstance(x, torch.Tensor):
        return x
    for attr in ("pooler_output", "text_embeds", "image_embeds"):
        v = getattr(x, attr, None)
        if isinstance(v, torch.Tensor):
            return v
    raise SystemExit(f"unexpected get_*_features result {type(x)}")


def write_hf(model, outdir):
    try:
        import transformers
        from transformers import CLIPConfig, CLIPModel
    except ImportError as e:
        raise SystemExit(
            f"the Hugging Face format needs `transformers` ({e}); install it with `pip install transformers` "
            "and run this script again") from e

    cfg = model_config(model)
    hf_cfg = CLIPConfig(**hf_config_dict(cfg))
    hf = CLIPModel(hf_cfg).float().eval()
    sd = openai_to_hf(model.state_dict(), cfg)
    own = hf.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith("position_ids")]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise SystemExit(f"HF conversion: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for k, v in sd.items():
        if tuple(own[k].shape) != tuple(v.shape):
            raise SystemExit(f"HF conversion: {k} has shape {tuple(v.shape)}, CLIPModel expects {tuple(own[k].shape)}")
    hf.load_state_dict(sd, strict=False)

    image, text = example_inputs(cfg)
    with torch.no_grad():
        ref_t, ref_i = model.encode_text(text), model.encode_image(image)
        hf_t = _features(hf.get_text_features(input_ids=text))
        hf_i = _features(hf.get_image_features(pixel_values=image))
    dt, di = (hf_t - ref_t).abs().max().item(), (hf_i - ref_i).abs().max().item()
    print(f"  hf (transformers {transformers.__version__}): text features max abs diff {dt:.3g}, "
          f"image features max abs diff {di:.3g}")
    assert dt < 1e-4 and di < 1e-4, "HF model does not reproduce openai's features"

    os.makedirs(outdir, exist_ok=True)
    hf.save_pretrained(outdir, safe_serialization=True)
    for stray in os.listdir(outdir):
        if stray not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(outdir, stray))  # generation_config.json etc.: not needed

    from safetensors.torch import load_file
    saved = load_file(os.path.join(outdir, "model.safetensors"))
    for k, v in saved.items():
        if v.dtype != torch.float32:
            raise SystemExit(f"hf/model.safetensors: {k} saved as {v.dtype}, expected float32")
    _assert_same("hf/model.safetensors", sd, saved, outdir)


# --------------------------------------------------------------------------------------------------
# Small fixtures for TensorIO's tests: strided views and every dtype, written by torch / safetensors.


def view_base():
    """arange(24) / 4 - 3 as a [2, 3, 4] float32 tensor; every value exact in fp16 and bf16."""
    return (torch.arange(24, dtype=torch.float32) / 4 - 3).reshape(2, 3, 4)


def write_io_fixtures(outdir):
    from safetensors.torch import load_file, save_file

    base = view_base()
    views = {
        "base": base,
        "permuted": base.permute(2, 0, 1),            # [4, 2, 3], strides (1, 12, 4)
        "slice": base[1, :, 1:3],                     # [3, 2], storage offset 13, strides (4, 1)
        "half_t": base.half()[0].t(),                 # [4, 3] fp16, strides (1, 4)
        "bf16_t": base.bfloat16()[1].t(),             # [4, 3] bf16, strides (1, 4), offset 12
        "int64": torch.arange(5, dtype=torch.int64) - 2,
        "scalar": torch.tensor(3.5),
        "step": base.reshape(-1)[1::5],               # [5], stride 5, offset 1
    }
    path = os.path.join(outdir, "tensor_views.pt")
    torch.save(views, path)
    loaded = torch.load(path, weights_only=True)
    for k, v in views.items():
        assert torch.equal(loaded[k], v) and loaded[k].stride() == v.stride(), k
    print(f"  tensor_views.pt: {len(views)} strided / typed tensors verified")

    flat = (torch.arange(6, dtype=torch.float32) / 4 - 0.5).reshape(2, 3)
    dtypes = {
        "f32": flat, "f16": flat.half(), "bf16": flat.bfloat16(), "f64": flat.double(),
        "i64": torch.arange(6, dtype=torch.int64).reshape(2, 3) - 3, "i32": torch.arange(6, dtype=torch.int32).reshape(2, 3),
        "u8": torch.arange(6, dtype=torch.uint8).reshape(2, 3), "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.25),
    }
    path = os.path.join(outdir, "dtypes.safetensors")
    save_file(dtypes, path, metadata={"written_by": "write_checkpoints.py"})
    loaded = load_file(path)
    for k, v in dtypes.items():
        assert torch.equal(loaded[k], v), k
    print(f"  dtypes.safetensors: {len(dtypes)} tensors verified")


# --------------------------------------------------------------------------------------------------


def write_all_formats(model, outdir):
    try:
        import transformers  # noqa: F401  (checked first, so that nothing is written without it)
    except ImportError as e:
        raise SystemExit(f"the Hugging Face format needs `transformers` ({e}); install it with "
                         "`pip install transformers` and run this script again") from e
    os.makedirs(outdir, exist_ok=True)
    model = model.float().eval()
    write_torchscript(model, os.path.join(outdir, "openai.pt"))
    write_state_dict(model, os.path.join(outdir, "state_dict.pt"))
    write_open_clip_safetensors(model, os.path.join(outdir, "open_clip_model.safetensors"))
    write_hf(model, os.path.join(outdir, "hf"))
    write_io_fixtures(outdir)
    for root, _, files in sorted(os.walk(outdir)):
        for f in sorted(files):
            p = os.path.join(root, f)
            print(f"  {os.path.relpath(p, outdir):32s} {os.path.getsize(p):>12,d} bytes")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny", choices=sorted(common.CONFIGS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None,
                    help="output folder (default Goldens/tiny/checkpoints for --config tiny; required otherwise)")
    args = ap.parse_args()
    if args.out is None:
        if args.config != "tiny":
            ap.error(f"--config {args.config} writes large files: pass --out (e.g. goldens-vitb16/checkpoints, git-ignored)")
        args.out = "Goldens/tiny/checkpoints"
    torch.set_num_threads(2)
    print(f"writing {args.config} (seed {args.seed}) to {args.out}")
    write_all_formats(common.build_random_clip(args.config, args.seed), args.out)


if __name__ == "__main__":
    main()
