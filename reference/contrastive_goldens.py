"""Golden file for CLIP's contrastive loss and every parameter gradient (PromptTune's pretraining).

    python3 reference/contrastive_goldens.py      # into Goldens/pretrain/ (committed)

openai's CLIP is built from the committed tiny state dict (Goldens/tiny/checkpoints/state_dict.pt)
with openai's own `build_model`, run in fp32. A batch of 4 random images and 4 captions goes through
`model(image, text)` (logits = exp(logit_scale) * cosine similarities), and the symmetric InfoNCE
loss of CLIP's training, (CE(logits_per_image, i) + CE(logits_per_text, i)) / 2, is
back-propagated. Saved (`contrastive.safetensors` + `contrastive.json`): the pixels, the loss, the
image and text features, and the gradient of every parameter under its state-dict name
(`grad.<name>`); the token embedding's gradient only at the rows of the tokens used
(`grad_rows.token_embedding.weight`, with the row ids in the json), since the rest is zero and the
full tensor would be 12 MB.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

CAPTIONS = ["a photo of a cat.", "a picture of a trouser.", "a sneaker item of clothing.", "a black and white photo of a bag."]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.join(here, "..")
    out = os.path.join(root, "Goldens", "pretrain")
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    sd = torch.load(os.path.join(root, "Goldens", "tiny", "checkpoints", "state_dict.pt"), weights_only=True)
    # build_model deletes these three entries of OpenAI's released state dicts; a plain one lacks them.
    sd = dict(sd, input_resolution=torch.tensor(0), context_length=torch.tensor(0), vocab_size=torch.tensor(0))
    model = common.clip_model_module().build_model(sd).float().train()

    torch.manual_seed(7)
    r = model.visual.input_resolution
    pixels = torch.randn(len(CAPTIONS), 3, r, r)
    tokens = common.tokenize(CAPTIONS)
    logits_per_image, logits_per_text = model(pixels, tokens)
    labels = torch.arange(len(CAPTIONS))
    loss = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
    loss.backward()

    g = {"pixels": pixels, "loss": loss.detach().reshape(1), "logits": logits_per_image.detach()}
    with torch.no_grad():
        g["image_features"] = model.encode_image(pixels)
        g["text_features"] = model.encode_text(tokens)
    used = sorted(set(tokens.flatten().tolist()))
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        if name == "token_embedding.weight":
            nonzero = set(torch.nonzero(p.grad.abs().sum(1)).flatten().tolist())
            assert nonzero <= set(used), "token embedding gradient outside the used rows"
            g["grad_rows." + name] = p.grad[used]
        else:
            g["grad." + name] = p.grad.reshape(p.shape)
    save_file({k: v.detach().float().contiguous() for k, v in g.items()}, os.path.join(out, "contrastive.safetensors"))
    meta = dict(checkpoint="Goldens/tiny/checkpoints/state_dict.pt", captions=CAPTIONS, tokens=tokens.tolist(),
                token_rows=used, loss=loss.item(), parameters=[n for n, _ in model.named_parameters()],
                torch=torch.__version__)
    with open(os.path.join(out, "contrastive.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"loss {loss.item():.6f}; {len(meta['parameters'])} parameter gradients into {out}")


if __name__ == "__main__":
    main()
