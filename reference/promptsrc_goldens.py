"""Golden files for PromptSRC's training: 20 steps on the tiny CLIP with PromptSRC's own code, in fp32.

    python3 reference/promptsrc_goldens.py     # Goldens/promptsrc/promptsrc.{json,safetensors}

The model is muzairkhattak/PromptSRC (commit bb95c77, `trainers/promptsrc.py`, `clip/model.py`,
`trainers/imagenet_templates.py`): `VLPromptLearner`, `TextEncoder`, `CustomCLIP`, the loss of
`PromptSRC.forward_backward` and its Gaussian prompt aggregation (`get_gauss`,
`state_dict_weighting`, `state_dict_add`, the load of the aggregate after the last epoch), and the
IVLP blocks of clip/model.py (`ResidualAttentionBlock_IVLP`, the IVLP branch of `Transformer`,
`VisionTransformer`), copied below. The edits, each marked `# EDIT`:

- fp32 throughout: the `.half()` casts of the prompts in the blocks and of the fixed embeddings
  in the zero-shot logits are removed (`PREC` fp32 keeps the rest fp32), no `.cuda()`.
- `load_clip_to_cpu` is replaced by openai's tiny CLIP (reference/common.py, seed 0, the weights
  of Goldens/tiny/checkpoints/state_dict.pt): its text transformer and visual tower are rebuilt as
  IVLP classes holding the same weights (the prompts drawn at construction, as `build_model` draws
  them), and the frozen teacher (`load_clip_to_cpu(cfg, True)`, depth 0: the plain model) is a
  deep copy of the unmodified tiny CLIP.
- prompt depths 2/2 (the tiny CLIP has 2 blocks per tower), 4 text and 4 vision tokens; the
  60 templates are the reference's; the config is a small namespace.
- GPA over 5 epochs with mean 3, std 1 (the configs use 15/1 over 20 epochs, 30/30, 45/5, 6/10),
  so that every epoch weighs in. The reference aggregates the whole state dict (the frozen weights
  too, which come back as sum_e w_e x, equal to x up to float rounding); PromptTune aggregates the
  trained tensors only.

Pixel batches are random normal tensors (20 steps of batch 4 at 32 x 32); SGD and the schedule
are Dassl's (momentum 0.9, weight decay 5e-4, a constant warm-up epoch at 1e-5, cosine), 5 epochs
of 4 steps, as reference/maple_goldens.py.

Written (PromptTune's parameter names, F32): `init.<name>`, `grad0.<name>`, `<name>` [steps, ...]
after every step's SGD update (before GPA), `aggregate.<name>` [epochs, ...] after each epoch,
`final.<name>` (the loaded aggregate), `pixels`, `eval_pixels`, `eval_logits` (eval mode, final
prompts); promptsrc.json: losses and their terms, lrs, labels, class names, GPA weights, settings.
"""
import copy
import json
import os
import sys
from collections import OrderedDict
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402
from engine_goldens import ConstantWarmupScheduler, compact_json  # noqa: E402
from torch.optim.lr_scheduler import CosineAnnealingLR  # noqa: E402

_tokenizer = common.clip_tokenizer()


class clip:  # noqa: N801  (PromptSRC calls clip.tokenize)
    @staticmethod
    def tokenize(text):
        return common.tokenize([text] if isinstance(text, str) else text)


# ---- muzairkhattak/PromptSRC trainers/imagenet_templates.py ----
IMAGENET_TEMPLATES = [
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
]


# ---- muzairkhattak/PromptSRC clip/model.py (verbatim but for the edits named above) ----

class LayerNorm(nn.LayerNorm):
    """Subclass torch's LayerNorm to handle fp16."""

    def forward(self, x: torch.Tensor):
        orig_type = x.dtype
        ret = super().forward(x.type(torch.float32))
        return ret.type(orig_type)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock_IVLP(nn.Module):
    def __init__(self, d_model: int, n_head: int, attn_mask: torch.Tensor = None, add_prompt=False,
                 text_layer=False, i=0, design_details=None):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, d_model * 4)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(d_model * 4, d_model))
        ]))
        self.ln_2 = LayerNorm(d_model)
        # Only add learnable tokens if flag is set True
        # For the first iteration i, we should not add the learnable parameters
        # as it is already been taken care of in the very start, for both text
        # and the visual branch
        self.text_layer = text_layer
        self.attn_mask = attn_mask
        if i != 0:
            self.add_prompt = add_prompt
            if self.add_prompt:
                if self.text_layer:
                    self.n_ctx_text = design_details["language_ctx"]  # hyperparameter
                    ctx_vectors = torch.empty(self.n_ctx_text, d_model)
                else:
                    self.n_ctx_visual = design_details["vision_ctx"]  # hyperparameter
                    ctx_vectors = torch.empty(self.n_ctx_visual, d_model)
                # Code snippet for per layer visual prompts
                nn.init.normal_(ctx_vectors, std=0.02)
                self.VPT_shallow = nn.Parameter(ctx_vectors)
        else:
            self.add_prompt = False

    def attention(self, x: torch.Tensor):
        self.attn_mask = self.attn_mask.to(dtype=x.dtype, device=x.device) if self.attn_mask is not None else None
        return self.attn(x, x, x, need_weights=False, attn_mask=self.attn_mask)[0]

    def forward(self, x: torch.Tensor):
        # Will need to append the learnable tokens for this layer here
        # Check if flag was set for this layer or not
        if self.add_prompt:
            # Also see if this is textual transformer layer or not
            if not self.text_layer:
                # Remove the outputs produced by learnable tokens of previous layer
                prefix = x[0:x.shape[0] - self.n_ctx_visual, :, :]
                # Create/configure learnable tokens of this layer
                visual_context = self.VPT_shallow.expand(x.shape[1], -1, -1).permute(1, 0, 2)  # EDIT: no .half()
                # Add the learnable tokens of this layer with the input, by replacing the previous
                # layer learnable tokens
                x = torch.cat([prefix, visual_context], dim=0)
            else:
                # Appending the learnable tokens in different way
                # x -> [77, NCLS, DIM]
                # First remove the learnable tokens from previous layer
                prefix = x[:1, :, :]
                suffix = x[1 + self.n_ctx_text:, :, :]
                # Create/configure learnable tokens of this layer
                textual_context = self.VPT_shallow.expand(x.shape[1], -1, -1).permute(1, 0, 2)  # EDIT: no .half()
                # Add the learnable tokens of this layer with the input, replaced by previous
                # layer learnable tokens
                x = torch.cat([prefix, textual_context, suffix], dim=0)

        x = x + self.attention(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, attn_mask: torch.Tensor = None, prompts_needed=0,
                 text_layer=False, design_details=None):
        super().__init__()
        self.width = width
        self.layers = layers
        # Implements respective encoder blocks for a given design choice
        current_trainer = design_details['trainer']
        assert current_trainer == 'IVLP'  # EDIT: only the IVLP branch is copied
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock_IVLP(width, heads, attn_mask, True,
                                                                     text_layer, i,
                                                                     design_details) if prompts_needed > i
                                         else ResidualAttentionBlock_IVLP(width, heads, attn_mask, False,
                                                                          text_layer, i, design_details)
                                         for i in range(layers)])

    def forward(self, x: torch.Tensor):
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int, heads: int,
                 output_dim: int, design_details):
        super().__init__()
        self.input_resolution = input_resolution
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(in_channels=3, out_channels=width, kernel_size=patch_size, stride=patch_size, bias=False)
        if design_details["vision_depth"] == 0:
            self.VPT_shallow = False
        else:
            self.VPT_shallow = True
        if self.VPT_shallow:
            # Add visual prompt tokens here
            n_ctx = design_details["vision_ctx"]  # hyperparameter
            ctx_vectors = torch.empty(n_ctx, width)
            nn.init.normal_(ctx_vectors, std=0.02)
            self.VPT = nn.Parameter(ctx_vectors)
            # self.VPT.half()
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((input_resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = LayerNorm(width)
        # hyper-parameter if need to add prompt embeddings inside to the input
        # of transformer block or not:
        self.prompt_till_layer_visual = design_details["vision_depth"]
        self.transformer = Transformer(width, layers, heads, prompts_needed=self.prompt_till_layer_visual,
                                       design_details=design_details)

        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x: torch.Tensor):
        x = self.conv1(x)  # shape = [*, width, grid, grid]
        x = x.reshape(x.shape[0], x.shape[1], -1)  # shape = [*, width, grid ** 2]
        x = x.permute(0, 2, 1)  # shape = [*, grid ** 2, width]
        x = torch.cat(
            [self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype,
                                                            device=x.device),
             x], dim=1)  # shape = [*, grid ** 2 + 1, width]
        x = x + self.positional_embedding.to(x.dtype)

        # After positional embeddings, we will attach prompts with the model, remember only those
        # are trainable parameters here in whole image encoder.
        if self.VPT_shallow:
            visual_ctx = self.VPT.expand(x.shape[0], -1, -1)  # EDIT: no .half()
            x = torch.cat([x, visual_ctx], dim=1)
        else:
            assert self.prompt_till_layer_visual == 0

        # Normal code as before
        x = self.ln_pre(x)

        x = x.permute(1, 0, 2)  # NLD -> LND
        x = self.transformer(x)
        x = x.permute(1, 0, 2)  # LND -> NLD

        x = self.ln_post(x[:, 0, :])

        if self.proj is not None:
            x = x @ self.proj

        return x

# ---- end of clip/model.py ----


# ---- muzairkhattak/PromptSRC trainers/promptsrc.py (verbatim but for the edits named above) ----

CLIP_MODEL = None  # EDIT: the CLIP that load_clip_to_cpu returns (the tiny one here, ViT-B/16 in the bench)
CLIP_CONFIG = "tiny"


def load_clip_to_cpu(cfg, zero_shot_model=False):  # EDIT: the tiny CLIP instead of a download
    if zero_shot_model:
        # Return original CLIP model for generating frozen VL features
        return copy.deepcopy(CLIP_MODEL)
    return ivlp_clip(copy.deepcopy(CLIP_MODEL), cfg)


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


class VLPromptLearner(nn.Module):
    def __init__(self, cfg, classnames, clip_model):
        super().__init__()
        n_cls = len(classnames)
        # Make sure Language depth >= 1
        assert cfg.TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT >= 1, "In Independent VL prompting, Language prompt depth should be >=1" \
                                                        "\nPlease use VPT trainer if you want to learn only vision " \
                                                        "branch"
        n_ctx = cfg.TRAINER.PROMPTSRC.N_CTX_TEXT
        ctx_init = cfg.TRAINER.PROMPTSRC.CTX_INIT
        dtype = clip_model.dtype
        ctx_dim = clip_model.ln_final.weight.shape[0]

        if ctx_init and n_ctx <= 4:
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
        self.ctx = nn.Parameter(ctx_vectors)
        classnames = [name.replace("_", " ") for name in classnames]
        name_lens = [len(_tokenizer.encode(name)) for name in classnames]
        prompts = [prompt_prefix + " " + name + "." for name in classnames]
        tokenized_prompts = torch.cat([clip.tokenize(p) for p in prompts])  # (n_cls, n_tkn)
        # Also create frozen CLIP
        clip_model_temp = load_clip_to_cpu(cfg, True).float()  # EDIT: no .cuda()
        clip_model_temp_image = load_clip_to_cpu(cfg, True)
        with torch.no_grad():
            embedding = clip_model.token_embedding(tokenized_prompts).type(dtype)
            self.ZS_image_encoder = clip_model_temp_image.visual
            # Now pre-compute the frozen VL embeddings
            all_teacher_features = []
            # Using multiple text templates to ensure textual diversity during training
            for single_template in IMAGENET_TEMPLATES:
                x = [single_template.replace("{}", name) for name in classnames]
                x_tokenized = torch.cat([clip.tokenize(p) for p in x])
                text_features = clip_model_temp.encode_text(x_tokenized)  # EDIT: no .cuda()
                all_teacher_features.append(text_features.unsqueeze(1))

        self.fixed_embeddings = torch.cat(all_teacher_features, dim=1).mean(dim=1)
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
        return prompts


class CustomCLIP(nn.Module):
    def __init__(self, cfg, classnames, clip_model):
        super().__init__()
        self.prompt_learner = VLPromptLearner(cfg, classnames, clip_model)
        self.tokenized_prompts = self.prompt_learner.tokenized_prompts
        self.image_encoder = clip_model.visual
        self.text_encoder = TextEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale
        self.dtype = clip_model.dtype
        self.total_epochs = cfg.OPTIM.MAX_EPOCH
        self.n_cls = len(classnames)

    def forward(self, image, label=None):
        tokenized_prompts = self.tokenized_prompts
        logit_scale = self.logit_scale.exp()
        prompts = self.prompt_learner()
        # Compute the prompted image and text features
        text_features = self.text_encoder(prompts, tokenized_prompts)
        image_features = self.image_encoder(image.type(self.dtype))
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        # Compute the prompted logits
        logits = logit_scale * image_features @ text_features.t()
        if self.prompt_learner.training:
            # Now calculate the frozen pre-trained features
            fixed_embeddings = self.prompt_learner.fixed_embeddings  # precomputed pre-trained frozen textual features
            fixed_embeddings = fixed_embeddings / fixed_embeddings.norm(dim=-1, keepdim=True)
            with torch.no_grad():
                zero_shot_features = self.prompt_learner.ZS_image_encoder(image.type(self.dtype))
                zero_shot_features = zero_shot_features / zero_shot_features.norm(dim=-1, keepdim=True)
                # Compute pre-trained frozen visual features
                zero_shot_logits = logit_scale * zero_shot_features @ fixed_embeddings.t()  # EDIT: no .half(), .cuda()
            return F.cross_entropy(logits,
                                   label), text_features, fixed_embeddings, zero_shot_features, \
                image_features, zero_shot_logits, logits
        else:
            return logits


def promptsrc_loss(cfg, outputs):
    """`PromptSRC.forward_backward`'s loss (its non-amp branch), verbatim; the terms returned too."""
    loss_ce, normalized_text_features, zs_clip_text_embeddings, zs_image_embedd, image_ft, \
        zero_shot_logits, logits = outputs
    # Calculate the L_SCL_text loss
    loss_scl_text = F.l1_loss(normalized_text_features, zs_clip_text_embeddings,
                              reduction='mean') * cfg.TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT
    # Calculate the L_SCL_image loss
    loss_scl_image = F.l1_loss(image_ft, zs_image_embedd,
                               reduction='mean') * cfg.TRAINER.PROMPTSRC.IMAGE_LOSS_WEIGHT
    # Now calculate L_SCL_logits
    L_SCL_logits = F.kl_div(
        F.log_softmax(logits / 1, dim=1),
        F.log_softmax(zero_shot_logits / 1, dim=1),
        reduction='sum',
        log_target=True
    ) * (1 * 1) / logits.numel()
    L_SCL = (L_SCL_logits + loss_scl_text + loss_scl_image)
    loss = (loss_ce + L_SCL)
    terms = dict(ce=loss_ce.item(), src_text=loss_scl_text.item() / cfg.TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT,
                 src_image=loss_scl_image.item() / cfg.TRAINER.PROMPTSRC.IMAGE_LOSS_WEIGHT, src_kl=L_SCL_logits.item())
    return loss, terms


def state_dict_weighting(main_dict, weightage, prompt_only=False):
    # Average all parameters
    updated_dict = copy.deepcopy(main_dict)
    if not prompt_only:
        for key in main_dict:
            updated_dict[key] = main_dict[key] * weightage
        return updated_dict
    else:
        return main_dict * weightage


def state_dict_add(dict1, dict2, prompt_only=False):
    # Average all parameters
    if not prompt_only:
        modified_dict = dict2
        for key in dict1:
            modified_dict[key] = (modified_dict[key] + dict1[key])
        return modified_dict
    else:
        return dict1 + dict2


def get_gauss(mu, sigma):
    gauss = lambda x: (1 / (sigma * np.sqrt(2 * np.pi))) * np.exp(-0.5 * ((x - mu) / sigma) ** 2)
    return gauss

# ---- end of trainers/promptsrc.py ----


DEPTH, N_CTX, BATCH, STEPS, EPOCHS, LR0, GPA_MEAN, GPA_STD = 2, 4, 4, 20, 5, 0.05, 3.0, 1.0
CLASSNAMES = ["cat", "golden_retriever", "sunflower", "Boeing 747-400", "apple pie"]


def ivlp_clip(clip_model, cfg):
    """`build_model` with design_details trainer 'IVLP': the text transformer and visual tower as
    IVLP classes (their prompts drawn at construction) holding the tiny CLIP's weights."""
    c = common.CONFIGS[CLIP_CONFIG]
    p = cfg.TRAINER.PROMPTSRC
    design = {"trainer": 'IVLP', "vision_depth": p.PROMPT_DEPTH_VISION, "language_depth": p.PROMPT_DEPTH_TEXT,
              "vision_ctx": p.N_CTX_VISION, "language_ctx": p.N_CTX_TEXT}
    visual = VisionTransformer(c["image_resolution"], c["vision_patch_size"], c["vision_width"], c["vision_layers"],
                               c["vision_width"] // 64, c["embed_dim"], design)
    missing, unexpected = visual.load_state_dict(clip_model.visual.state_dict(), strict=False)
    assert not unexpected and all("VPT" in k for k in missing), (missing, unexpected)
    text = Transformer(c["transformer_width"], c["transformer_layers"], c["transformer_heads"],
                       attn_mask=clip_model.build_attention_mask(), prompts_needed=p.PROMPT_DEPTH_TEXT, text_layer=True,
                       design_details=design)
    missing, unexpected = text.load_state_dict(clip_model.transformer.state_dict(), strict=False)
    assert not unexpected and all("VPT" in k for k in missing), (missing, unexpected)
    clip_model.visual = visual
    clip_model.transformer = text
    return clip_model


def names_of(depth):
    """PromptTune's parameter names -> the reference's trainable parameters."""
    m = {"text.context": "prompt_learner.ctx", "promptsrc.visual": "image_encoder.VPT"}
    for i in range(1, depth):
        m[f"promptsrc.deep_visual.{i}"] = f"image_encoder.transformer.resblocks.{i}.VPT_shallow"
    for i in range(1, depth):
        m[f"promptsrc.deep_text.{i}"] = f"text_encoder.transformer.resblocks.{i}.VPT_shallow"
    return m


def main():
    global CLIP_MODEL
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Goldens", "promptsrc")
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    clip_model = common.build_random_clip("tiny", 0).float()
    sd = torch.load(os.path.join(out, "..", "tiny", "checkpoints", "state_dict.pt"), map_location="cpu")
    for k, v in clip_model.state_dict().items():
        assert torch.equal(v.float(), sd[k].float()), f"tiny checkpoint differs at {k}"
    CLIP_MODEL = clip_model.eval()

    cfg = SimpleNamespace(
        TRAINER=SimpleNamespace(PROMPTSRC=SimpleNamespace(
            N_CTX_TEXT=N_CTX, N_CTX_VISION=N_CTX, CTX_INIT="a photo of a", PROMPT_DEPTH_TEXT=DEPTH,
            PROMPT_DEPTH_VISION=DEPTH, TEXT_LOSS_WEIGHT=25, IMAGE_LOSS_WEIGHT=10, GPA_MEAN=GPA_MEAN, GPA_STD=GPA_STD)),
        OPTIM=SimpleNamespace(MAX_EPOCH=EPOCHS))
    torch.manual_seed(0)
    model = CustomCLIP(cfg, CLASSNAMES, load_clip_to_cpu(cfg))
    # `build_model`'s freezing: only the prompt learner (not its ZS encoder) and the VPT prompts train.
    for name, param in model.named_parameters():
        if "prompt_learner" not in name:
            param.requires_grad_("VPT" in name)
        elif "ZS_image_encoder" in name:
            param.requires_grad_(False)
    names = names_of(DEPTH)
    named = dict(model.named_parameters())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert set(trainable) == set(names.values()), trainable

    r = CLIP_MODEL.visual.input_resolution
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(STEPS, BATCH, 3, r, r, generator=g)
    labels = torch.randint(0, len(CLASSNAMES), (STEPS, BATCH), generator=g)
    eval_pixels = torch.randn(8, 3, r, r, generator=g)

    gauss = get_gauss(GPA_MEAN, GPA_STD)
    weights = np.array([gauss(a) for a in range(1, EPOCHS + 1)])
    weights = weights / sum(weights)

    tensors = {f"init.{k}": named[v].detach().clone() for k, v in names.items()}
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=LR0, momentum=0.9, weight_decay=5e-4, dampening=0, nesterov=False)
    sched = ConstantWarmupScheduler(opt, CosineAnnealingLR(opt, float(EPOCHS)), 1, 1e-5)
    per_epoch = STEPS // EPOCHS
    log = dict(losses=[], terms=[], lrs=[])
    after = {k: [] for k in names}
    aggregates = {k: [] for k in names}
    previous_model_gpa = None
    step_counter = 1
    model.train()
    for s in range(STEPS):
        loss, terms = promptsrc_loss(cfg, model(pixels[s], labels[s]))
        log["lrs"].append(opt.param_groups[0]["lr"])
        log["losses"].append(loss.item())
        log["terms"].append(terms)
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
            # GPA, as forward_backward does at an epoch's last batch.
            step_counter = step_counter + 1
            current_epoch_weight = weights[step_counter - 2]
            current_model_weights = copy.deepcopy(model.state_dict())
            weighted_state_dict = state_dict_weighting(current_model_weights, current_epoch_weight)
            if previous_model_gpa is None:
                previous_model_gpa = weighted_state_dict
            else:
                previous_model_gpa = state_dict_add(weighted_state_dict, previous_model_gpa)
            for k, v in names.items():
                aggregates[k].append(previous_model_gpa[v].detach().clone())
            if step_counter == model.total_epochs + 1:
                model.load_state_dict(previous_model_gpa)
    final = {k: named[v].detach().clone() for k, v in names.items()}
    for k in names:
        assert torch.equal(final[k], aggregates[k][-1])
    model.eval()
    with torch.no_grad():
        eval_logits = model(eval_pixels)
    moved = {k: (after[k][-1] - tensors[f"init.{k}"]).abs().max().item() for k in names}
    assert all(v > 1e-4 for v in moved.values()), moved
    for k in names:
        tensors[k] = torch.stack(after[k])
        tensors[f"aggregate.{k}"] = torch.stack(aggregates[k])
        tensors[f"final.{k}"] = final[k]
    tensors.update(pixels=pixels, eval_pixels=eval_pixels, eval_logits=eval_logits)
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, os.path.join(out, "promptsrc.safetensors"))
    doc = dict(log, labels=labels.tolist(), classnames=CLASSNAMES, depth=DEPTH, n_ctx=N_CTX, ctx_init="a photo of a",
               batch_size=BATCH, steps=STEPS, max_epoch=EPOCHS, lr0=LR0, gpa_mean=GPA_MEAN, gpa_std=GPA_STD,
               gpa_weights=weights.tolist(), moved=moved, torch=torch.__version__, names=names,
               model="muzairkhattak/PromptSRC trainers/promptsrc.py + clip/model.py @ bb95c77 (fp32), "
                     "tiny CLIP (reference/common.py, seed 0)",
               command="python3 reference/promptsrc_goldens.py")
    with open(os.path.join(out, "promptsrc.json"), "w") as f:
        f.write(compact_json(doc) + "\n")
    print(f"promptsrc: loss {log['losses'][0]:.6f} -> {log['losses'][-1]:.6f}, moved {moved}")


if __name__ == "__main__":
    main()
