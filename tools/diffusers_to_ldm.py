#!/usr/bin/env python3
"""Writes a Stable Diffusion 1.x diffusers folder as one single-file checkpoint in the original
CompVis/LDM key layout, the format shared on model sites.

    /work/venv/bin/python tools/diffusers_to_ldm.py DIFFUSERS_DIR OUT.safetensors [--half]
        [--no-extras] [--verify]

--half       store floating weights as float16 (the extra buffers keep their own dtypes)
--no-extras  omit the keys a real checkpoint carries that no converter needs (see EXTRAS)
--verify     reload OUT with diffusers' StableDiffusionPipeline.from_single_file(OUT,
             config=DIFFUSERS_DIR, local_files_only=True) and check every tensor equals the folder's

Reads model.safetensors / diffusion_pytorch_model.safetensors, or the .fp16 variant names when
only those exist (sharded *.safetensors.index.json too).

Rename rules, diffusers key -> LDM key (the Swift converter applies the inverse). Each component
gets a prefix; inside it the first matching rule wins. Let L = unet layers_per_block and
N = number of VAE blocks.

Text encoder (CLIPTextModel), prefix "cond_stage_model.transformer.":
  text_model.X -> text_model.X   (a flattened key X from transformers >= 5.6 gets "text_model." first)

UNet, prefix "model.diffusion_model.":
  conv_in.*                               -> input_blocks.0.0.*
  time_embedding.linear_1.*               -> time_embed.0.*
  time_embedding.linear_2.*               -> time_embed.2.*
  down_blocks.b.resnets.l.R               -> input_blocks.{1 + b*(L+1) + l}.0.R'
  down_blocks.b.attentions.l.A            -> input_blocks.{1 + b*(L+1) + l}.1.A
  down_blocks.b.downsamplers.0.conv.*     -> input_blocks.{(b+1)*(L+1)}.0.op.*
  mid_block.resnets.0.R                   -> middle_block.0.R'
  mid_block.attentions.0.A                -> middle_block.1.A
  mid_block.resnets.1.R                   -> middle_block.2.R'
  up_blocks.b.resnets.l.R                 -> output_blocks.{b*(L+1) + l}.0.R'
  up_blocks.b.attentions.l.A              -> output_blocks.{b*(L+1) + l}.1.A
  up_blocks.b.upsamplers.0.conv.*         -> output_blocks.{b*(L+1) + L}.{2 if block b has attentions else 1}.conv.*
  conv_norm_out.*                         -> out.0.*
  conv_out.*                              -> out.2.*
  resnet part R -> R': norm1 -> in_layers.0, conv1 -> in_layers.2, time_emb_proj -> emb_layers.1,
                       norm2 -> out_layers.0, conv2 -> out_layers.3, conv_shortcut -> skip_connection
  attention part A: unchanged (norm, proj_in, transformer_blocks.k.{norm1,attn1.to_q|to_k|to_v,
                    attn1.to_out.0, norm2, attn2.*, norm3, ff.net.0.proj, ff.net.2}, proj_out);
                    shapes unchanged (proj_in/proj_out stay conv [C,C,1,1] or linear [C,C]
                    as the config's use_linear_projection says).

VAE (AutoencoderKL), prefix "first_stage_model.":
  quant_conv.*, post_quant_conv.*, encoder.conv_in.*, encoder.conv_out.*, decoder.conv_in.*,
  decoder.conv_out.*                      -> unchanged
  encoder.conv_norm_out.*                 -> encoder.norm_out.*
  decoder.conv_norm_out.*                 -> decoder.norm_out.*
  encoder.down_blocks.i.resnets.j.R       -> encoder.down.i.block.j.R'
  encoder.down_blocks.i.downsamplers.0.conv.* -> encoder.down.i.downsample.conv.*
  decoder.up_blocks.i.resnets.j.R         -> decoder.up.{N-1-i}.block.j.R'   (up order is reversed)
  decoder.up_blocks.i.upsamplers.0.conv.* -> decoder.up.{N-1-i}.upsample.conv.*
  {encoder,decoder}.mid_block.resnets.0.R -> {encoder,decoder}.mid.block_1.R'
  {encoder,decoder}.mid_block.resnets.1.R -> {encoder,decoder}.mid.block_2.R'
  {encoder,decoder}.mid_block.attentions.0.A -> {encoder,decoder}.mid.attn_1.A'
  resnet part R -> R': conv_shortcut -> nin_shortcut (norm1, conv1, norm2, conv2 unchanged)
  attention part A -> A': group_norm -> norm, to_q -> q, to_k -> k, to_v -> v, to_out.0 -> proj_out;
                    the four weights reshape from linear [C,C] to 1x1 conv [C,C,1,1].

EXTRAS (written unless --no-extras; a converter must ignore them and may list them as unused):
  alphas_cumprod [1000] float32 (from the scheduler config), model_ema.decay [] float32,
  model_ema.num_updates [] int32, cond_stage_model.transformer.text_model.embeddings.position_ids
  [1,77] int64.

Requirements: /work/venv (torch, safetensors; diffusers + transformers for --verify).
"""
import argparse
import json
import os
import re
import sys

import torch
from safetensors import safe_open
from safetensors.torch import save_file

TEXT_PREFIX = "cond_stage_model.transformer."
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."

UNET_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
               ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]
VAE_RESNET = [("conv_shortcut", "nin_shortcut")]
VAE_ATTENTION = [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]


def rename_part(rest, table):
    """Renames the leading module name of `rest` ('conv1.weight' -> 'in_layers.2.weight')."""
    for old, new in table:
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest


def per_block(value, count):
    return list(value) if isinstance(value, (list, tuple)) else [value] * count


def unet_key(key, config):
    blocks = len(config["block_out_channels"])
    layers = per_block(config["layers_per_block"], blocks)
    # input_blocks index of down block b's first layer; each block has L layers + 1 downsampler.
    start = [1 + sum(n + 1 for n in layers[:b]) for b in range(blocks)]
    up_layers = list(reversed(layers))
    up_start = [sum(n + 1 for n in up_layers[:b]) for b in range(blocks)]  # L+1 resnets per up block
    up_has_attention = ["CrossAttn" in t for t in config["up_block_types"]]

    fixed = {"conv_in.": "input_blocks.0.0.", "time_embedding.linear_1.": "time_embed.0.",
             "time_embedding.linear_2.": "time_embed.2.", "conv_norm_out.": "out.0.", "conv_out.": "out.2."}
    for old, new in fixed.items():
        if key.startswith(old):
            return new + key[len(old):]
    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key)
    if m:
        b, kind, l, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "resnets":
            return f"input_blocks.{start[b] + l}.0.{rename_part(rest, UNET_RESNET)}"
        return f"input_blocks.{start[b] + l}.1.{rest}"
    m = re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key)
    if m:
        b = int(m[1])
        return f"input_blocks.{start[b] + layers[b]}.0.op.{m[2]}"
    m = re.match(r"mid_block\.resnets\.(\d)\.(.+)", key)
    if m:
        return f"middle_block.{2 * int(m[1])}.{rename_part(m[2], UNET_RESNET)}"
    m = re.match(r"mid_block\.attentions\.0\.(.+)", key)
    if m:
        return f"middle_block.1.{m[1]}"
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key)
    if m:
        b, kind, l, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "resnets":
            return f"output_blocks.{up_start[b] + l}.0.{rename_part(rest, UNET_RESNET)}"
        return f"output_blocks.{up_start[b] + l}.1.{rest}"
    m = re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key)
    if m:
        b = int(m[1])
        slot = 2 if up_has_attention[b] else 1
        return f"output_blocks.{up_start[b] + up_layers[b]}.{slot}.conv.{m[2]}"
    raise KeyError(f"no UNet rule for {key}")


def vae_key(key, config):
    """Returns (ldm key, reshape_to_conv)."""
    blocks = len(config["block_out_channels"])
    m = re.match(r"(encoder|decoder)\.conv_norm_out\.(.+)", key)
    if m:
        return f"{m[1]}.norm_out.{m[2]}", False
    m = re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key)
    if m:
        return f"encoder.down.{m[1]}.block.{m[2]}.{rename_part(m[3], VAE_RESNET)}", False
    m = re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key)
    if m:
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}", False
    m = re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key)
    if m:
        return f"decoder.up.{blocks - 1 - int(m[1])}.block.{m[2]}.{rename_part(m[3], VAE_RESNET)}", False
    m = re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key)
    if m:
        return f"decoder.up.{blocks - 1 - int(m[1])}.upsample.conv.{m[2]}", False
    m = re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.+)", key)
    if m:
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{rename_part(m[3], VAE_RESNET)}", False
    m = re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key)
    if m:
        rest = rename_part(m[2], VAE_ATTENTION)
        return f"{m[1]}.mid.attn_1.{rest}", rest.endswith(".weight") and not rest.startswith("norm.")
    if re.match(r"(quant_conv|post_quant_conv|encoder\.conv_in|encoder\.conv_out|decoder\.conv_in|decoder\.conv_out)\.",
                key):
        return key, False
    raise KeyError(f"no VAE rule for {key}")


def text_key(key):
    return TEXT_PREFIX + (key if key.startswith("text_model.") else "text_model." + key)


def weights_file(folder, stem):
    """Plain name first, then the fp16 variant; returns a list of shard paths."""
    for name in (stem + ".safetensors", stem + ".fp16.safetensors"):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return [path]
        index = path + ".index.json"
        if os.path.exists(index):
            with open(index) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            return [os.path.join(folder, s) for s in shards]
    raise FileNotFoundError(f"no {stem}[.fp16].safetensors in {folder}")


def read_tensors(folder, stem):
    out = {}
    for path in weights_file(folder, stem):
        with safe_open(path, "pt") as f:
            for k in f.keys():
                out[k] = f.get_tensor(k)
    return out


def read_json(path):
    with open(path) as f:
        return json.load(f)


def alphas_cumprod(scheduler_config):
    n = scheduler_config.get("num_train_timesteps", 1000)
    b0, b1 = scheduler_config.get("beta_start", 0.00085), scheduler_config.get("beta_end", 0.012)
    if scheduler_config.get("beta_schedule", "scaled_linear") == "scaled_linear":
        betas = torch.linspace(b0 ** 0.5, b1 ** 0.5, n, dtype=torch.float64) ** 2
    else:
        betas = torch.linspace(b0, b1, n, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0).float()


def extras(folder):
    return {
        "alphas_cumprod": alphas_cumprod(read_json(os.path.join(folder, "scheduler", "scheduler_config.json"))),
        "model_ema.decay": torch.tensor(0.9999, dtype=torch.float32),
        "model_ema.num_updates": torch.tensor(470000, dtype=torch.int32),
        TEXT_PREFIX + "text_model.embeddings.position_ids": torch.arange(77, dtype=torch.int64)[None],
    }


def convert(folder, half=False, with_extras=True):
    """Returns the LDM state dict of the diffusers folder (tensors in the order written)."""
    out = {}

    def put(key, tensor):
        assert key not in out, f"duplicate LDM key {key}"
        if half and tensor.is_floating_point():
            tensor = tensor.half()
        out[key] = tensor.contiguous()

    for k, v in read_tensors(os.path.join(folder, "text_encoder"), "model").items():
        put(text_key(k), v)
    unet_config = read_json(os.path.join(folder, "unet", "config.json"))
    state = read_tensors(os.path.join(folder, "unet"), "diffusion_pytorch_model")
    for k in list(state):
        put(UNET_PREFIX + unet_key(k, unet_config), state.pop(k))
    vae_config = read_json(os.path.join(folder, "vae", "config.json"))
    state = read_tensors(os.path.join(folder, "vae"), "diffusion_pytorch_model")
    for k in list(state):
        new, to_conv = vae_key(k, vae_config)
        v = state.pop(k)
        put(VAE_PREFIX + new, v[:, :, None, None] if to_conv else v)
    if with_extras:
        out.update(extras(folder))
    return out


@torch.no_grad()
def verify(folder, path):
    """Loads `path` with diffusers' own single-file loader and compares with the folder."""
    from diffusers import StableDiffusionPipeline

    variant = None
    if not os.path.exists(os.path.join(folder, "unet", "diffusion_pytorch_model.safetensors")):
        variant = "fp16"
    ref = StableDiffusionPipeline.from_pretrained(folder, variant=variant, dtype=torch.float32,
                                                  safety_checker=None, requires_safety_checker=False,
                                                  local_files_only=True)
    got = StableDiffusionPipeline.from_single_file(path, config=folder, dtype=torch.float32,
                                                   safety_checker=None, requires_safety_checker=False,
                                                   local_files_only=True)
    total = 0
    for name in ("text_encoder", "unet", "vae"):
        a, b = getattr(ref, name).state_dict(), getattr(got, name).state_dict()
        assert a.keys() == b.keys(), f"{name}: key sets differ: {sorted(set(a) ^ set(b))[:8]}"
        for k in a:
            assert a[k].shape == b[k].shape, f"{name}.{k}: shape {tuple(a[k].shape)} vs {tuple(b[k].shape)}"
            assert torch.equal(a[k], b[k]), f"{name}.{k} differs"
        total += len(a)
    print(f"  verified {path}: {total} tensors equal the folder's after from_single_file")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("out")
    ap.add_argument("--half", action="store_true")
    ap.add_argument("--no-extras", action="store_true")
    ap.add_argument("--verify", action="store_true")
    args = ap.parse_args()
    state = convert(args.folder, half=args.half, with_extras=not args.no_extras)
    tmp = args.out + ".tmp"
    save_file(state, tmp, metadata={"format": "pt"})
    os.replace(tmp, args.out)
    print(f"  wrote {args.out}: {len(state)} tensors, {os.path.getsize(args.out)} bytes")
    del state
    if args.verify:
        verify(args.folder, args.out)


if __name__ == "__main__":
    sys.exit(main())
