"""Golden files for MaPLe's training: 20 steps on the tiny CLIP with MaPLe's own model code, in fp32.

    python3 reference/maple_goldens.py     # Goldens/maple/maple.{json,safetensors}

The model is muzairkhattak/multimodal-prompt-learning (commit 69bce21, `trainers/maple.py` and
`clip/model.py`): `MultiModalPromptLearner`, `TextEncoder`, `CustomCLIP`, `_get_clones` and the
compound-prompt CLIP blocks (`ResidualAttentionBlock_MaPLe`, the MaPLe branch of `Transformer`,
`VisionTransformer_MaPLe`), copied below. The edits, each marked `# EDIT` where it is made:

- 512 and 768 are hard-coded in the reference (ViT-B/16's text and image widths: the deep text
  prompts are `n_ctx x 512`, `proj` and the deep projections `Linear(ctx_dim, 768)`); here they are
  the tiny CLIP's text width (64) and image width (128).
- fp32 throughout. The reference calls `.half()` on `proj` (in `MultiModalPromptLearner.__init__`)
  and on the shallow and deep prompts in the blocks; with PREC "fp32" that cannot even run (an fp16
  `proj` applied to the fp32 context). Those casts are removed. Under the reference's default PREC
  "fp16" the shallow context and `proj` are fp16 parameters while the deep text prompts and the deep
  projections are fp32 masters cast to fp16 in the blocks: a mix PromptTune's fp32 does not have
  (its `--precision fp16-reference` rounds CLIP's activations only, not this per-tensor mix).
- no `.to('cuda')`, the config is a small namespace, `clip.tokenize` and the tokenizer come from
  openai's CLIP code (reference/common.py); the frozen CLIP is openai's tiny model (seed 0, the
  weights of Goldens/tiny/checkpoints/state_dict.pt) with its text transformer and visual tower
  replaced by MaPLe's classes holding the same weights.
- prompt depth 2 (the tiny CLIP has 2 blocks per tower: the shallow prompts before block 0, one
  deep prompt before block 1); MaPLe's configs use 9 (3 cross-dataset) on ViT-B/16's 12 blocks.
  A depth past the blocks is checked too (`unused_deep_prompts_get_no_gradient`, an assertion
  only): the prompts of missing blocks get no gradient and SGD leaves them as they are, which is
  what PromptTune's MaPLeArchitecture does.

The learnable tensors keep the reference's own initial values (torch.manual_seed(0) before
`CustomCLIP`); the Swift test gives them to PromptTune as its initial parameters and checks that
PromptTune's own initialisation agrees where it is deterministic (the context is the embedding of
"a photo", the deep projections are equal copies). The pixel batches are random normal tensors
drawn here (20 steps of batch 4 at 32 x 32), as preprocessed pixels would be; labels are drawn too.
Optimiser and schedule are Dassl's (SGD momentum 0.9, weight decay 5e-4; constant warm-up epoch at
1e-5, then cosine), as in reference/engine_goldens.py; 5 epochs of 4 steps.

Written (under PromptTune's parameter names, F32): `init.<name>`, `grad0.<name>` (step 0's
gradients), `<name>` [steps, ...] after every step, `pixels` [steps, B, 3, R, R], `eval_pixels`
[8, 3, R, R] and `eval_logits` [8, K] (CustomCLIP in eval mode with the final parameters);
maple.json: losses, lrs, labels, class names, settings.
"""
import copy
import json
import os
import sys
from collections import OrderedDict
from types import SimpleNamespace

import torch
import torch.nn as nn
from torch.nn import functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402
from engine_goldens import ConstantWarmupScheduler, compact_json  # noqa: E402
from torch.optim.lr_scheduler import CosineAnnealingLR  # noqa: E402

_tokenizer = common.clip_tokenizer()


class clip:  # noqa: N801  (MaPLe calls clip.tokenize)
    @staticmethod
    def tokenize(text):
        return common.tokenize([text] if isinstance(text, str) else text)


# ---- muzairkhattak/multimodal-prompt-learning clip/model.py (verbatim but for the edits named above) ----

class LayerNorm(nn.LayerNorm):
    """Subclass torch's LayerNorm to handle fp16."""

    def forward(self, x: torch.Tensor):
        orig_type = x.dtype
        ret = super().forward(x.type(torch.float32))
        return ret.type(orig_type)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock_MaPLe(nn.Module):
    def __init__(self, d_model: int, n_head: int, attn_mask: torch.Tensor = None, design_details=None,
                 text_layer=False, i=0):
        super().__init__()

        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, d_model * 4)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(d_model * 4, d_model))
        ]))
        self.ln_2 = LayerNorm(d_model)
        # For the first iteration i, we do not need to add the learnable parameters here
        # as it will be added in the beginning, for both text and the vision branch
        self.text_layer = text_layer
        self.attn_mask = attn_mask
        # This must be consistent with the config file prompt
        self.compound_prompt_nctx = design_details['maple_length']
        if i == 0:
            self.first_layer = True
        else:
            self.first_layer = False

    def attention(self, x: torch.Tensor):
        self.attn_mask = self.attn_mask.to(dtype=x.dtype, device=x.device) if self.attn_mask is not None else None
        return self.attn(x, x, x, need_weights=False, attn_mask=self.attn_mask)[0]

    def forward(self, inputs):
        # For the first layer, we do not need to add any duplicate, as it is already added
        # as the shallow version
        x = inputs[0]
        compound_prompts_deeper = inputs[1]
        counter = inputs[2]
        if not self.first_layer:
            if len(compound_prompts_deeper) > 0:
                # This means that deeper compound prompts are turned on
                # Here it behaves differently for text and visual side
                # Forward function is same for both

                if not self.text_layer:
                    # First check if the ith layer needs compound prompts or not
                    if not (counter > len(compound_prompts_deeper) - 1):
                        # Remove the outputs produced by learnable tokens of previous layer
                        prefix = x[0:x.shape[0] - self.compound_prompt_nctx, :, :]
                        # Create/configure learnable tokens of this layer
                        visual_context = compound_prompts_deeper[counter]  # extract the correct index
                        visual_context = visual_context.expand(x.shape[1], -1, -1).permute(1, 0, 2)  # EDIT: no .half()
                        # Add the learnable tokens of this layer with the input, by replacing previous
                        # layer learnable tokens
                        x = torch.cat([prefix, visual_context], dim=0)

                        # Once done, update the counter, so that the next time, it does not use same learnable tokens
                        counter += 1
                else:
                    # First check if the ith layer needs compound prompts or not
                    if not (counter > len(compound_prompts_deeper) - 1):
                        # Appending the learnable tokens in different way
                        # x -> [77, NCLS, DIM]
                        # First remove the learnable tokens from previous layer
                        prefix = x[:1, :, :]
                        suffix = x[1 + self.compound_prompt_nctx:, :, :]
                        # Create/configure learnable tokens of this layer
                        textual_context = compound_prompts_deeper[counter]
                        textual_context = textual_context.expand(x.shape[1], -1, -1).permute(1, 0, 2)  # EDIT: no .half()
                        # Add the learnable tokens of this layer with the input, replaced by previous
                        # layer learnable tokens
                        x = torch.cat([prefix, textual_context, suffix], dim=0)
                        # Once done, update the counter, so that the next time, it does not use same learnable tokens
                        counter += 1
        x = x + self.attention(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return [x, compound_prompts_deeper, counter]  # return again as a list, so that nn.seq can work


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, attn_mask: torch.Tensor = None, prompts_needed=0,
                 text_layer=False, design_details=None):
        super().__init__()
        self.width = width
        self.layers = layers
        # Implements respective encoder blocks for a given design choice
        current_trainer = design_details['trainer']
        assert current_trainer == 'MaPLe'  # EDIT: only the MaPLe branch is copied
        self.resblocks = nn.Sequential(
            *[ResidualAttentionBlock_MaPLe(width, heads, attn_mask, design_details, text_layer, i)
              for i in range(layers)])

    def forward(self, x: torch.Tensor):
        return self.resblocks(x)


class VisionTransformer_MaPLe(nn.Module):
    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int, heads: int, output_dim: int,
                 design_details):
        super().__init__()
        self.input_resolution = input_resolution
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(in_channels=3, out_channels=width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.VPT_shallow = True
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((input_resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = LayerNorm(width)
        # hyper-parameter if need to add prompt embeddings inside to the input
        # of transformer block or not:
        self.prompt_till_layer_visual = 0
        self.transformer = Transformer(width, layers, heads, design_details=design_details)

        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x: torch.Tensor, shared_ctx, compound_deeper_prompts):
        x = self.conv1(x)  # shape = [*, width, grid, grid]
        x = x.reshape(x.shape[0], x.shape[1], -1)  # shape = [*, width, grid ** 2]
        x = x.permute(0, 2, 1)  # shape = [*, grid ** 2, width]
        x = torch.cat(
            [self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype, device=x.device),
             x], dim=1)  # shape = [*, grid ** 2 + 1, width]
        x = x + self.positional_embedding.to(x.dtype)

        # After positional embeddings, we will attach prompts with the model, remember only those
        # are trainable parameters here in whole image encoder.
        if self.VPT_shallow:
            visual_ctx = shared_ctx.expand(x.shape[0], -1, -1)  # EDIT: no .half()
            x = torch.cat([x, visual_ctx], dim=1)
        else:
            assert self.prompt_till_layer_visual == 0

        # Normal code as before
        x = self.ln_pre(x)

        x = x.permute(1, 0, 2)  # NLD -> LND
        # Again combine the inputs, so nn.sequential can work
        outputs = self.transformer([x, compound_deeper_prompts, 0])  # third argument is counter
        x = outputs[0]
        x = x.permute(1, 0, 2)  # LND -> NLD

        x = self.ln_post(x[:, 0, :])

        if self.proj is not None:
            x = x @ self.proj

        return x

# ---- end of clip/model.py ----


# ---- muzairkhattak/multimodal-prompt-learning trainers/maple.py (verbatim but for the edits named above) ----

class TextEncoder(nn.Module):
    def __init__(self, clip_model):
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.dtype = clip_model.dtype

    def forward(self, prompts, tokenized_prompts, compound_prompts_deeper_text):
        x = prompts + self.positional_embedding.type(self.dtype)
        x = x.permute(1, 0, 2)  # NLD -> LND
        # Pass as the list, as nn.sequential cannot process multiple arguments in the forward pass
        combined = [x, compound_prompts_deeper_text, 0]  # third argument is the counter which denotes depth of prompt
        outputs = self.transformer(combined)
        x = outputs[0]  # extract the x back from here
        x = x.permute(1, 0, 2)  # LND -> NLD
        x = self.ln_final(x).type(self.dtype)

        # x.shape = [batch_size, n_ctx, transformer.width]
        # take features from the eot embedding (eot_token is the highest number in each sequence)
        x = x[torch.arange(x.shape[0]), tokenized_prompts.argmax(dim=-1)] @ self.text_projection

        return x


class MultiModalPromptLearner(nn.Module):
    def __init__(self, cfg, classnames, clip_model):
        super().__init__()
        n_cls = len(classnames)
        n_ctx = cfg.TRAINER.MAPLE.N_CTX
        ctx_init = cfg.TRAINER.MAPLE.CTX_INIT
        dtype = clip_model.dtype
        ctx_dim = clip_model.ln_final.weight.shape[0]
        vis_dim = clip_model.visual.conv1.weight.shape[0]  # EDIT: the reference hard-codes 768
        clip_imsize = clip_model.visual.input_resolution
        cfg_imsize = cfg.INPUT.SIZE[0]
        # Default is 1, which is compound shallow prompting
        assert cfg.TRAINER.MAPLE.PROMPT_DEPTH >= 1, "For MaPLe, PROMPT_DEPTH should be >= 1"
        self.compound_prompts_depth = cfg.TRAINER.MAPLE.PROMPT_DEPTH  # max=12, but will create 11 such shared prompts
        assert cfg_imsize == clip_imsize, f"cfg_imsize ({cfg_imsize}) must equal to clip_imsize ({clip_imsize})"

        if ctx_init and (n_ctx) <= 4:
            # use given words to initialize context vectors
            ctx_init = ctx_init.replace("_", " ")
            n_ctx = n_ctx
            prompt = clip.tokenize(ctx_init)
            with torch.no_grad():
                embedding = clip_model.token_embedding(prompt).type(dtype)
            ctx_vectors = embedding[0, 1: 1 + n_ctx, :]
            prompt_prefix = ctx_init
        else:
            # random initialization
            ctx_vectors = torch.empty(n_ctx, ctx_dim, dtype=dtype)
            nn.init.normal_(ctx_vectors, std=0.02)
            prompt_prefix = " ".join(["X"] * n_ctx)
        print('MaPLe design: Multi-modal Prompt Learning')
        print(f'Initial context: "{prompt_prefix}"')
        print(f"Number of MaPLe context words (tokens): {n_ctx}")
        # These below, related to the shallow prompts
        # Linear layer so that the tokens will project to 512 and will be initialized from 768
        self.proj = nn.Linear(ctx_dim, vis_dim)  # EDIT: 768 -> vis_dim
        # EDIT: no self.proj.half() (fp32)
        self.ctx = nn.Parameter(ctx_vectors)
        # These below parameters related to the shared prompts
        # Define the compound prompts for the deeper layers

        # Minimum can be 1, which defaults to shallow MaPLe
        # compound prompts
        self.compound_prompts_text = nn.ParameterList([nn.Parameter(torch.empty(n_ctx, ctx_dim))  # EDIT: 512 -> ctx_dim
                                                      for _ in range(self.compound_prompts_depth - 1)])
        for single_para in self.compound_prompts_text:
            nn.init.normal_(single_para, std=0.02)
        # Also make corresponding projection layers, for each prompt
        single_layer = nn.Linear(ctx_dim, vis_dim)  # EDIT: 768 -> vis_dim
        self.compound_prompt_projections = _get_clones(single_layer, self.compound_prompts_depth - 1)

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
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:, :])  # CLS, EOS

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
                ctx,  # (dim0, n_ctx, dim)
                suffix,  # (dim0, *, dim)
            ],
            dim=1,
        )

        return prompts

    def forward(self):
        ctx = self.ctx

        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(self.n_cls, -1, -1)

        prefix = self.token_prefix
        suffix = self.token_suffix
        prompts = self.construct_prompts(ctx, prefix, suffix)

        # Before returning, need to transform
        # prompts to 768 for the visual side
        visual_deep_prompts = []
        for index, layer in enumerate(self.compound_prompt_projections):
            visual_deep_prompts.append(layer(self.compound_prompts_text[index]))
        # Now the other way around
        # We will project the textual prompts from 512 to 768
        return prompts, self.proj(self.ctx), self.compound_prompts_text, visual_deep_prompts   # pass here original, as for visual 768 is required


class CustomCLIP(nn.Module):
    def __init__(self, cfg, classnames, clip_model):
        super().__init__()
        self.prompt_learner = MultiModalPromptLearner(cfg, classnames, clip_model)
        self.tokenized_prompts = self.prompt_learner.tokenized_prompts
        self.image_encoder = clip_model.visual
        self.text_encoder = TextEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale
        self.dtype = clip_model.dtype

    def forward(self, image, label=None):
        tokenized_prompts = self.tokenized_prompts
        logit_scale = self.logit_scale.exp()

        prompts, shared_ctx, deep_compound_prompts_text, deep_compound_prompts_vision = self.prompt_learner()
        text_features = self.text_encoder(prompts, tokenized_prompts, deep_compound_prompts_text)
        image_features = self.image_encoder(image.type(self.dtype), shared_ctx, deep_compound_prompts_vision)

        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        logits = logit_scale * image_features @ text_features.t()

        if self.prompt_learner.training:
            return F.cross_entropy(logits, label)

        return logits


def _get_clones(module, N):
    return nn.ModuleList([copy.deepcopy(module) for i in range(N)])

# ---- end of trainers/maple.py ----


DEPTH, N_CTX, BATCH, STEPS, EPOCHS, LR0 = 2, 2, 4, 20, 5, 0.05
CLASSNAMES = ["cat", "golden_retriever", "sunflower", "Boeing 747-400", "apple pie"]


def maple_clip(clip_model):
    """openai's tiny CLIP with its text transformer and visual tower replaced by MaPLe's classes
    (`clip.build_model` with design_details trainer 'MaPLe'), holding the same weights."""
    cfg = common.CONFIGS["tiny"]
    design = {"trainer": 'MaPLe', "vision_depth": 0, "language_depth": 0, "vision_ctx": 0, "language_ctx": 0,
              "maple_length": N_CTX}
    visual = VisionTransformer_MaPLe(cfg["image_resolution"], cfg["vision_patch_size"], cfg["vision_width"],
                                     cfg["vision_layers"], cfg["vision_width"] // 64, cfg["embed_dim"], design)
    visual.load_state_dict(clip_model.visual.state_dict())
    text = Transformer(cfg["transformer_width"], cfg["transformer_layers"], cfg["transformer_heads"],
                       attn_mask=clip_model.build_attention_mask(), text_layer=True, design_details=design)
    text.load_state_dict(clip_model.transformer.state_dict())
    clip_model.visual = visual.eval()
    clip_model.transformer = text.eval()
    for prm in clip_model.parameters():
        prm.requires_grad_(False)
    return clip_model


def names_of(depth):
    """PromptTune's parameter names -> the reference's `prompt_learner` parameters."""
    m = {"text.context": "ctx", "maple.proj.weight": "proj.weight", "maple.proj.bias": "proj.bias"}
    for i in range(1, depth):
        m[f"maple.deep_text.{i}"] = f"compound_prompts_text.{i - 1}"
        m[f"maple.deep_proj.{i}.weight"] = f"compound_prompt_projections.{i - 1}.weight"
        m[f"maple.deep_proj.{i}.bias"] = f"compound_prompt_projections.{i - 1}.bias"
    return m


def unused_deep_prompts_get_no_gradient(clip_model):
    """A depth past the blocks (4 on the tiny CLIP's 2): the prompts of blocks 2 and 3 are made,
    never read, and get no gradient, so PyTorch's SGD leaves them untouched (no weight decay)."""
    cfg = SimpleNamespace(TRAINER=SimpleNamespace(MAPLE=SimpleNamespace(N_CTX=N_CTX, CTX_INIT="a photo of a", PROMPT_DEPTH=4)),
                          INPUT=SimpleNamespace(SIZE=(clip_model.visual.input_resolution,) * 2))
    torch.manual_seed(0)
    model = CustomCLIP(cfg, CLASSNAMES, clip_model)
    r = clip_model.visual.input_resolution
    model(torch.randn(2, 3, r, r), torch.tensor([0, 1])).backward()
    pl = model.prompt_learner
    assert pl.compound_prompts_text[0].grad is not None and pl.compound_prompt_projections[0].weight.grad is not None
    for i in (1, 2):
        assert pl.compound_prompts_text[i].grad is None and pl.compound_prompt_projections[i].weight.grad is None
    before = pl.compound_prompts_text[2].detach().clone()
    opt = torch.optim.SGD(pl.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    opt.step()
    assert torch.equal(pl.compound_prompts_text[2], before)


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Goldens", "maple")
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    clip_model = common.build_random_clip("tiny", 0)
    # The golden checkpoint the Swift test loads holds these very weights.
    sd = torch.load(os.path.join(out, "..", "tiny", "checkpoints", "state_dict.pt"), map_location="cpu")
    for k, v in clip_model.state_dict().items():
        assert torch.equal(v.float(), sd[k].float()), f"tiny checkpoint differs at {k}"
    clip_model = maple_clip(clip_model)
    unused_deep_prompts_get_no_gradient(clip_model)

    cfg = SimpleNamespace(TRAINER=SimpleNamespace(MAPLE=SimpleNamespace(N_CTX=N_CTX, CTX_INIT="a photo of a", PROMPT_DEPTH=DEPTH)),
                          INPUT=SimpleNamespace(SIZE=(clip_model.visual.input_resolution,) * 2))
    torch.manual_seed(0)
    model = CustomCLIP(cfg, CLASSNAMES, clip_model)
    pl = model.prompt_learner
    names = names_of(DEPTH)
    named = dict(pl.named_parameters())
    assert set(named) == set(names.values()), sorted(named)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"prompt_learner." + v for v in names.values()}

    r = clip_model.visual.input_resolution
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(STEPS, BATCH, 3, r, r, generator=g)
    labels = torch.randint(0, len(CLASSNAMES), (STEPS, BATCH), generator=g)
    eval_pixels = torch.randn(8, 3, r, r, generator=g)

    tensors = {f"init.{k}": named[v].detach().clone() for k, v in names.items()}
    # Dassl's build_optimizer over the model's trainable parameters (the prompt learner's).
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=LR0, momentum=0.9, weight_decay=5e-4, dampening=0, nesterov=False)
    sched = ConstantWarmupScheduler(opt, CosineAnnealingLR(opt, float(EPOCHS)), 1, 1e-5)
    per_epoch = STEPS // EPOCHS
    log = dict(losses=[], lrs=[])
    after = {k: [] for k in names}
    model.train()
    for s in range(STEPS):
        loss = model(pixels[s], labels[s])
        log["lrs"].append(opt.param_groups[0]["lr"])
        log["losses"].append(loss.item())
        opt.zero_grad()
        loss.backward()
        if s == 0:
            for k, v in names.items():
                tensors[f"grad0.{k}"] = named[v].grad.detach().clone()
        opt.step()
        for k, v in names.items():
            after[k].append(named[v].detach().clone())
        if (s + 1) % per_epoch == 0:
            sched.step()
    model.eval()
    with torch.no_grad():
        eval_logits = model(eval_pixels)
    moved = {k: (after[k][-1] - tensors[f"init.{k}"]).abs().max().item() for k in names}
    assert all(v > 1e-4 for v in moved.values()), moved
    assert log["losses"][0] != log["losses"][-1]
    for k in names:
        tensors[k] = torch.stack(after[k])
    tensors.update(pixels=pixels, eval_pixels=eval_pixels, eval_logits=eval_logits)
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, os.path.join(out, "maple.safetensors"))
    doc = dict(log, labels=labels.tolist(), classnames=CLASSNAMES, depth=DEPTH, n_ctx=N_CTX, ctx_init="a photo of a",
               batch_size=BATCH, steps=STEPS, max_epoch=EPOCHS, lr0=LR0, moved=moved, torch=torch.__version__,
               names={k: "prompt_learner." + v for k, v in names.items()},
               model="muzairkhattak/multimodal-prompt-learning trainers/maple.py + clip/model.py @ 69bce21 (fp32), "
                     "tiny CLIP (reference/common.py, seed 0)",
               command="python3 reference/maple_goldens.py")
    with open(os.path.join(out, "maple.json"), "w") as f:
        f.write(compact_json(doc) + "\n")
    print(f"maple: loss {log['losses'][0]:.6f} -> {log['losses'][-1]:.6f}, moved {moved}")


if __name__ == "__main__":
    main()
