#!/usr/bin/env python3
"""Writes the full-size SDXL base 1.0 architecture with random weights as a diffusers folder
(fp16 variant names, the UNet sharded), for memory and speed measurements without real weights.

    /work/venv/bin/python tools/make_sdxl_random.py [OUT_DIR] [--turbo] [--seed N]

OUT_DIR   default models/sdxl-random (gitignored), about 6.9 GB
--turbo   store SDXL-Turbo's scheduler (Euler ancestral, trailing) instead of SDXL base's Euler

The configs below are SDXL base 1.0's own (SDXL-Turbo has the same architecture). Each
component is instantiated on torch's meta device (no memory), and its tensors are drawn one
at a time in float16 and written in shards of at most 1 GB, so the script needs about 2 GB of
RAM. Values follow torch's default initialisation in spirit (matrices uniform in
±1/sqrt(fan_in), embeddings N(0, 0.02), norms 1, biases 0): they are for measuring, not
for pictures. Tokenizer folders are copied from Tests/Fixtures/tiny-sdxl (the CLIP BPE
tables; tokenizer_2 pads with "!").
"""
import argparse
import json
import math
import os
import shutil
import sys

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from make_tiny_sdxl import SDXL_SCHEDULER  # noqa: E402

TEXT_ENCODER = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                    num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
                    bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
TEXT_ENCODER_2 = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                      num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu", projection_dim=1280,
                      bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
UNET = dict(sample_size=128, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280), layers_per_block=2,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10), use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
            cross_attention_dim=2048, norm_num_groups=32)
VAE = dict(in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512),
           down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4,
           norm_num_groups=32, layers_per_block=2, sample_size=1024, scaling_factor=0.13025, force_upcast=True)
SHARD_BYTES = 1 << 30


def random_tensor(key, shape, g):
    if len(shape) == 1:
        is_norm_weight = key.endswith(".weight") and ("norm" in key)
        return torch.ones(shape, dtype=torch.float16) if is_norm_weight else torch.zeros(shape, dtype=torch.float16)
    if "embedding" in key and "time_embedding" not in key and "add_embedding" not in key:
        return (torch.randn(shape, generator=g) * 0.02).half()
    fan_in = math.prod(shape[1:])
    bound = 1 / math.sqrt(fan_in)
    return ((torch.rand(shape, generator=g) * 2 - 1) * bound).half()


def write_component(model, folder, base, g, key_prefix=lambda k: k):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        if hasattr(model.config, "to_json_string"):  # transformers
            config = json.loads(model.config.to_json_string())
            config["architectures"] = [type(model).__name__]
        else:
            config = {k: v for k, v in dict(model.config).items() if not k.startswith("_")}
            config["_class_name"] = type(model).__name__
        json.dump(config, f, indent=2, sort_keys=True, default=str)
    shapes = [(key_prefix(k), tuple(v.shape)) for k, v in model.state_dict().items()
              if v.dtype.is_floating_point]
    shards, current, size = [], {}, 0
    for key, shape in shapes:
        t = random_tensor(key, shape, g)
        current[key] = t
        size += t.numel() * 2
        if size >= SHARD_BYTES:
            shards.append(current)
            current, size = {}, 0
            write_shard(folder, base, shards)
    if current:
        shards.append(current)
        write_shard(folder, base, shards)
    if len(shards) == 1:
        os.rename(os.path.join(folder, shard_name(base, 1)), os.path.join(folder, f"{base}.fp16.safetensors"))
        return
    count = len(shards)
    weight_map = {}
    for i in range(1, count + 1):
        final = f"{base}.fp16-{i:05d}-of-{count:05d}.safetensors"
        os.rename(os.path.join(folder, shard_name(base, i)), os.path.join(folder, final))
        weight_map.update({k: final for k in shards[i - 1]})
    with open(os.path.join(folder, f"{base}.safetensors.index.fp16.json"), "w") as f:
        json.dump(dict(metadata={}, weight_map=weight_map), f, indent=2, sort_keys=True)


def shard_name(base, i):
    return f"{base}.part{i}.tmp"


def write_shard(folder, base, shards):
    i = len(shards)
    save_file(shards[-1], os.path.join(folder, shard_name(base, i)), metadata={"format": "pt"})
    # Keep only the keys (for the index) of written shards: free their tensors.
    shards[-1] = {k: None for k in shards[-1]}
    print(f"  {os.path.basename(folder)}: shard {i} written", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", default=os.path.join(REPO, "models", "sdxl-random"))
    ap.add_argument("--turbo", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    g = torch.Generator().manual_seed(args.seed)
    with torch.device("meta"):
        te = CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**TEXT_ENCODER_2))
        unet = UNet2DConditionModel(**UNET)
        vae = AutoencoderKL(**VAE)
    legacy = lambda k: k if k.startswith("text_model.") or k == "text_projection.weight" else "text_model." + k  # noqa: E731
    write_component(te, os.path.join(args.out, "text_encoder"), "model", g, legacy)
    write_component(te2, os.path.join(args.out, "text_encoder_2"), "model", g, legacy)
    write_component(unet, os.path.join(args.out, "unet"), "diffusion_pytorch_model", g)
    write_component(vae, os.path.join(args.out, "vae"), "diffusion_pytorch_model", g)
    for name in ("tokenizer", "tokenizer_2"):
        shutil.copytree(os.path.join(REPO, "Tests", "Fixtures", "tiny-sdxl", name), os.path.join(args.out, name))
    os.makedirs(os.path.join(args.out, "scheduler"))
    scheduler = dict(SDXL_SCHEDULER, _class_name="EulerDiscreteScheduler")
    if args.turbo:
        scheduler.update(_class_name="EulerAncestralDiscreteScheduler", timestep_spacing="trailing")
    with open(os.path.join(args.out, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(scheduler, f, indent=2, sort_keys=True)
    index = dict(_class_name="StableDiffusionXLPipeline", force_zeros_for_empty_prompt=not args.turbo,
                 text_encoder=["transformers", "CLIPTextModel"],
                 text_encoder_2=["transformers", "CLIPTextModelWithProjection"], unet=["diffusers", "UNet2DConditionModel"],
                 vae=["diffusers", "AutoencoderKL"], scheduler=["diffusers", scheduler["_class_name"]],
                 tokenizer=["transformers", "CLIPTokenizer"], tokenizer_2=["transformers", "CLIPTokenizer"])
    with open(os.path.join(args.out, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
