#!/usr/bin/env python3
"""Writes the full-size Stable Diffusion 1.5 architecture with random weights as a diffusers
folder, for benchmarks (no real weights needed; the configs below are SD 1.5's own).

    /work/venv/bin/python tools/make_sd15_random.py [OUT_DIR] [--fp32] [--fp16-variant-names]
        [--single-file OUT.safetensors] [--seed N] [--no-check]

OUT_DIR              default models/sd15-random (gitignored), about 2.1 GB in fp16
--fp32               store float32 weights (about 4.3 GB) instead of float16
--fp16-variant-names use model.fp16.safetensors / diffusion_pytorch_model.fp16.safetensors
                     (the diffusers "fp16" variant) instead of the plain names
--single-file OUT    also write the CompVis/LDM single-file checkpoint (tools/diffusers_to_ldm.py)
--no-check           skip the final check (reload with diffusers, one UNet/VAE pass, all finite)

Components are built one at a time from fixed torch seeds with the libraries' default
initialisation (activations stay finite and O(1)), saved, and freed before the next one.
The text encoder keys use the "text_model.*" layout of the published SD 1.5 repo; the tokenizer
folder is the SD 1.x layout made from tools/make_clip_bpe.py.

Requirements: the reference stack in /work/venv (torch CPU, diffusers 0.42, transformers 5.x,
safetensors, open_clip for make_clip_bpe.py); about 8 GB of free RAM.
"""
import argparse
import gc
import json
import os
import shutil
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import make_tiny_models as tiny  # noqa: E402  (tokenizer + scheduler helpers)

# text_encoder/config.json of runwayml/stable-diffusion-v1-5 (CLIP ViT-L/14's text tower). The
# bos/eos/pad ids 0/2/1 are what that file says; they only affect pooler_output, which SD ignores.
TEXT_ENCODER = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    attention_dropout=0.0,
    dropout=0.0,
    initializer_range=0.02,
    initializer_factor=1.0,
    projection_dim=768,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)

UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    center_input_sample=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-5,
    cross_attention_dim=768,
    attention_head_dim=8,
    use_linear_projection=False,
)

VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)

MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "feature_extractor": [None, None],
    "image_encoder": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def finish(model, fp32):
    model.eval()
    if not fp32:
        model.half()
    return model


def file_size_gb(folder):
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs)
    return total / 1e9


@torch.no_grad()
def build(out, seed, fp32, variant):
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel, __version__
    from transformers import CLIPTextConfig, CLIPTextModel

    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)

    torch.manual_seed(seed)
    model = finish(CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER)), fp32)
    path = os.path.join(out, "text_encoder")
    model.save_pretrained(path, safe_serialization=True)
    del model
    gc.collect()
    # transformers >= 5.6 writes flattened keys; SD 1.5's file has them under "text_model.".
    plain = os.path.join(path, "model.safetensors")
    state = tiny.flatten_text_keys(load_file(plain))
    os.remove(plain)
    name = "model.fp16.safetensors" if variant else "model.safetensors"
    save_file({"text_model." + k: v for k, v in state.items()}, os.path.join(path, name), metadata={"format": "pt"})
    del state
    print(f"  text_encoder written ({file_size_gb(path):.2f} GB)")

    torch.manual_seed(seed)
    model = finish(UNet2DConditionModel(**UNET), fp32)
    model.save_pretrained(os.path.join(out, "unet"), safe_serialization=True, variant=variant)
    del model
    gc.collect()
    print(f"  unet written ({file_size_gb(os.path.join(out, 'unet')):.2f} GB)")

    torch.manual_seed(seed)
    model = finish(AutoencoderKL(**VAE), fp32)
    model.save_pretrained(os.path.join(out, "vae"), safe_serialization=True, variant=variant)
    del model
    gc.collect()
    print(f"  vae written ({file_size_gb(os.path.join(out, 'vae')):.2f} GB)")

    PNDMScheduler(**tiny.SD15_SCHEDULER).save_pretrained(os.path.join(out, "scheduler"))
    tiny.add_scheduler_file_keys(os.path.join(out, "scheduler", "scheduler_config.json"))
    tmp = tempfile.mkdtemp(prefix="sd15-bpe-")
    try:
        vocab, merges = tiny.clip_bpe_files(tmp)
        tiny.write_tokenizer(os.path.join(out, "tokenizer"), vocab, merges, legacy_style=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with open(os.path.join(out, "model_index.json"), "w") as f:
        json.dump(dict(MODEL_INDEX, _diffusers_version=__version__), f, indent=2, sort_keys=True)
        f.write("\n")


@torch.no_grad()
def check(out, variant):
    """Loads the folder like a user would and runs each component once at a small size."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(out, variant=variant, dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False, local_files_only=True)
    ids = pipe.tokenizer(["a photo of an astronaut riding a horse on mars"], padding="max_length", max_length=77,
                         truncation=True, return_tensors="pt").input_ids
    hidden = pipe.text_encoder(ids)[0]
    g = torch.Generator("cpu").manual_seed(0)
    latents = torch.randn(1, 4, 16, 16, generator=g)
    eps = pipe.unet(latents, torch.tensor(981), encoder_hidden_states=hidden).sample
    image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    for label, t in (("text_encoder", hidden), ("unet", eps), ("vae", image)):
        assert torch.isfinite(t).all(), f"{label} output is not finite"
        print(f"  check {label}: shape {tuple(t.shape)} std {t.std().item():.4f} max|x| {t.abs().max().item():.4f}")
    counts = {n: sum(p.numel() for p in getattr(pipe, n).parameters()) for n in ("text_encoder", "unet", "vae")}
    print("  parameters:", counts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", default=os.path.join(REPO, "models", "sd15-random"))
    ap.add_argument("--fp32", action="store_true")
    ap.add_argument("--fp16-variant-names", action="store_true")
    ap.add_argument("--single-file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-check", action="store_true")
    args = ap.parse_args()
    if args.fp32 and args.fp16_variant_names:
        ap.error("--fp16-variant-names needs fp16 weights")
    variant = "fp16" if args.fp16_variant_names else None

    build(args.out, args.seed, args.fp32, variant)
    print(f"  wrote {args.out} ({file_size_gb(args.out):.2f} GB)")
    if not args.no_check:
        check(args.out, variant)
    if args.single_file:
        import diffusers_to_ldm

        state = diffusers_to_ldm.convert(args.out, half=not args.fp32)
        tmp = args.single_file + ".tmp"
        save_file(state, tmp, metadata={"format": "pt"})
        os.replace(tmp, args.single_file)
        print(f"  wrote {args.single_file}: {len(state)} tensors ({os.path.getsize(args.single_file) / 1e9:.2f} GB)")


if __name__ == "__main__":
    main()
