#!/usr/bin/env python3
"""Writes the tiny SDXL diffusers folder (tools/make_tiny_sdxl.py) as one single-file checkpoint
in Stability's original ("sgm") key layout, the layout SDXL and SDXL-Turbo are shared in, and
proves the file with diffusers' own single-file loader.

    /work/venv/bin/python tools/make_tiny_sdxl_single.py [--fixtures Tests/Fixtures]

Reads   <fixtures>/tiny-sdxl/                 (the folder's fp16 weights, exactly the goldens' values)
Writes  <fixtures>/tiny-sdxl-single.safetensors (fp16, ~6 MB: the two token embeddings dominate)

Then loads the file with StableDiffusionXLPipeline.from_single_file(file, config=<tiny-sdxl>,
local_files_only=True) — offline: config= points at the local folder, so no hub id is used — and
checks that every tensor of text_encoder, text_encoder_2, unet and vae equals the folder's
(from_pretrained). The tiny text encoder 2 has 3 blocks, so diffusers' own model-type sniffing
(which looks for resblocks.9) would not call it SDXL; config= makes the question moot.

The mapping, diffusers key -> single-file key (the Swift converter applies the inverse):

UNet (UNet2DConditionModel), prefix "model.diffusion_model.": tools/diffusers_to_ldm.py's
unet_key (SD 1.x's LDM rules; per-block depths change nothing in the names), plus SDXL's
added embedding:
  add_embedding.linear_1.*   -> label_emb.0.0.*
  add_embedding.linear_2.*   -> label_emb.0.2.*
VAE (AutoencoderKL), prefix "first_stage_model.": diffusers_to_ldm.py's vae_key (attention
  weights as 1x1 convs).
Text encoder 1 (CLIPTextModel, CLIP ViT-L's transformers layout), prefix
  "conditioner.embedders.0.transformer.": text_model.X -> text_model.X (a flattened key X from
  transformers >= 5.6 gets "text_model." first), plus embeddings.position_ids (int64, as real
  files carry it; a converter ignores it).
Text encoder 2 (CLIPTextModelWithProjection as OpenCLIP ViT-bigG's layout), prefix
  "conditioner.embedders.1.model.":
  text_model.embeddings.token_embedding.weight    -> token_embedding.weight
  text_model.embeddings.position_embedding.weight -> positional_embedding
  text_model.final_layer_norm.*                   -> ln_final.*
  text_projection.weight [P, W]                   -> text_projection [W, P] (transposed: OpenCLIP
                                                     computes x @ text_projection)
  text_model.encoder.layers.i.self_attn.{q,k,v}_proj.{weight,bias}
                                                  -> transformer.resblocks.i.attn.in_proj_{weight,bias}
                                                     (q, k, v stacked along the first axis)
  text_model.encoder.layers.i.self_attn.out_proj.* -> transformer.resblocks.i.attn.out_proj.*
  text_model.encoder.layers.i.layer_norm1.*        -> transformer.resblocks.i.ln_1.*
  text_model.encoder.layers.i.layer_norm2.*        -> transformer.resblocks.i.ln_2.*
  text_model.encoder.layers.i.mlp.fc1.*            -> transformer.resblocks.i.mlp.c_fc.*
  text_model.encoder.layers.i.mlp.fc2.*            -> transformer.resblocks.i.mlp.c_proj.*
  plus logit_scale (a scalar OpenCLIP keeps for its contrastive loss; a converter ignores it).

Requirements: /work/venv (torch, safetensors, diffusers, transformers).
"""
import argparse
import os
import re
import sys

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import diffusers_to_ldm  # noqa: E402

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT1_PREFIX = "conditioner.embedders.0.transformer."
TEXT2_PREFIX = "conditioner.embedders.1.model."
COMPONENTS = ("text_encoder", "text_encoder_2", "unet", "vae")

TEXT2_FIXED = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}
TEXT2_LAYER = [("self_attn.out_proj.", "attn.out_proj."), ("layer_norm1.", "ln_1."), ("layer_norm2.", "ln_2."),
               ("mlp.fc1.", "mlp.c_fc."), ("mlp.fc2.", "mlp.c_proj.")]


def with_text_model(key):
    """transformers >= 5.6 saves CLIPTextModel without the text_model. level; checkpoints have it."""
    return key if key.startswith("text_model.") or key == "text_projection.weight" else "text_model." + key


def load_folder(folder):
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline.from_pretrained(folder, variant="fp16", dtype=torch.float16,
                                                     local_files_only=True, add_watermarker=False)


def unet_single_file_key(key, config):
    m = re.match(r"add_embedding\.linear_([12])\.(.+)", key)
    if m:
        return f"label_emb.0.{0 if m[1] == '1' else 2}.{m[2]}"
    return diffusers_to_ldm.unet_key(key, config)


def text2_state(state):
    """The CLIPTextModelWithProjection state dict (text_model.-prefixed keys) in OpenCLIP's layout."""
    out = {}
    for key, name in TEXT2_FIXED.items():
        out[name] = state.pop(key)
    out["text_projection"] = state.pop("text_projection.weight").t()
    layers = sorted({int(m[1]) for k in state for m in [re.match(r"text_model\.encoder\.layers\.(\d+)\.", k)] if m})
    for i in layers:
        src, dst = f"text_model.encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for part in ("weight", "bias"):
            out[dst + "attn.in_proj_" + part] = torch.cat(
                [state.pop(f"{src}self_attn.{p}_proj.{part}") for p in ("q", "k", "v")], 0)
        for k in [k for k in state if k.startswith(src)]:
            rest = k[len(src):]
            new = next((n + rest[len(o):] for o, n in TEXT2_LAYER if rest.startswith(o)), None)
            if new is None:
                raise KeyError(f"no text encoder 2 rule for {k}")
            out[dst + new] = state.pop(k)
    if state:
        raise KeyError(f"text encoder 2 keys left unmapped: {sorted(state)[:8]}")
    out["logit_scale"] = torch.tensor(4.6052, dtype=torch.float16)  # log(100), OpenCLIP's trained value
    return out


def single_file_state(pipe):
    out = {}

    def put(key, tensor):
        assert key not in out, f"duplicate key {key}"
        out[key] = tensor.detach().contiguous()

    for k, v in pipe.text_encoder.state_dict().items():
        put(TEXT1_PREFIX + with_text_model(k), v)
    put(TEXT1_PREFIX + "text_model.embeddings.position_ids", torch.arange(77, dtype=torch.int64)[None])
    text2 = {with_text_model(k): v for k, v in pipe.text_encoder_2.state_dict().items()}
    for k, v in text2_state(text2).items():
        put(TEXT2_PREFIX + k, v)
    unet_config = dict(pipe.unet.config)
    for k, v in pipe.unet.state_dict().items():
        put(UNET_PREFIX + unet_single_file_key(k, unet_config), v)
    vae_config = dict(pipe.vae.config)
    for k, v in pipe.vae.state_dict().items():
        new, to_conv = diffusers_to_ldm.vae_key(k, vae_config)
        put(VAE_PREFIX + new, v[:, :, None, None] if to_conv else v)
    return out


@torch.no_grad()
def verify(folder, path, ref):
    """diffusers' own single-file loader must give back every tensor of the folder."""
    from diffusers import StableDiffusionXLPipeline

    got = StableDiffusionXLPipeline.from_single_file(path, config=folder, local_files_only=True,
                                                     dtype=torch.float16, add_watermarker=False)
    total = 0
    for name in COMPONENTS:
        a, b = getattr(ref, name).state_dict(), getattr(got, name).state_dict()
        assert a.keys() == b.keys(), f"{name}: key sets differ: {sorted(set(a) ^ set(b))[:8]}"
        for k in a:
            assert a[k].shape == b[k].shape, f"{name}.{k}: shape {tuple(a[k].shape)} vs {tuple(b[k].shape)}"
            assert torch.equal(a[k].float(), b[k].float()), f"{name}.{k} differs"
        total += len(a)
    for name in ("scheduler", "tokenizer", "tokenizer_2"):
        assert type(getattr(got, name)) is type(getattr(ref, name)), name
    assert got.tokenizer_2.pad_token_id == ref.tokenizer_2.pad_token_id
    print(f"  verified {path}: {total} tensors equal the folder's after from_single_file(config=folder)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", default=os.path.join(REPO, "Tests", "Fixtures"))
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    folder = os.path.join(args.fixtures, "tiny-sdxl")
    out = os.path.join(args.fixtures, "tiny-sdxl-single.safetensors")
    pipe = load_folder(folder)
    state = single_file_state(pipe)
    tmp = out + ".tmp"
    save_file(state, tmp, metadata={"format": "pt"})
    os.replace(tmp, out)
    print(f"  wrote {out}: {len(state)} tensors, {os.path.getsize(out)} bytes")
    verify(folder, out, pipe)


if __name__ == "__main__":
    sys.exit(main())
