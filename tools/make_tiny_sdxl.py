#!/usr/bin/env python3
"""Builds the tiny random-weight SDXL-like model and its pipeline goldens.

    /work/venv/bin/python tools/make_tiny_sdxl.py [--fixtures Tests/Fixtures]

Writes, under --fixtures:
  tiny-sdxl/      diffusers StableDiffusionXLPipeline folder: text_encoder (CLIPTextModel),
                  text_encoder_2 (CLIPTextModelWithProjection, gelu, its own width), tokenizer and
                  tokenizer_2 (pad token "!", as SDXL's OpenCLIP tokenizer), a UNet with
                  addition_embed_type "text_time", per-block transformer depths and no attention in
                  the first block, an SDXL-style VAE (scaling_factor 0.13025) and SDXL base's
                  EulerDiscreteScheduler config. fp16 weights under the variant names, the UNet
                  sharded (index + two files), so the converter's SDXL paths are all exercised.
  golden-sdxl/    cases.json + <case>/{ids,ids_2,latents,image}.npy from diffusers'
                  StableDiffusionXLPipeline on CPU fp32 (add_watermarker=False).

Every model is built from the configs below with fixed torch seeds, never from a hub id.
Parameters are rounded through float16 before saving, so the fp16 files hold exactly the
values the fp32 goldens are computed from.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from make_tiny_models import clip_bpe_files, round_to_half, write_tokenizer  # noqa: E402
from make_goldens import Writer, json_value, tokenize  # noqa: E402

TEXT_COMMON = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407)
TEXT_ENCODER = dict(TEXT_COMMON, pad_token_id=49407, hidden_size=16, intermediate_size=37, num_hidden_layers=3,
                    num_attention_heads=2, hidden_act="quick_gelu", projection_dim=16)
# OpenCLIP bigG's shape in miniature: gelu, its own width, a projection of another width.
TEXT_ENCODER_2 = dict(TEXT_COMMON, pad_token_id=1, hidden_size=24, intermediate_size=48, num_hidden_layers=3,
                      num_attention_heads=4, hidden_act="gelu", projection_dim=20)
ADDITION_TIME_EMBED_DIM = 8
UNET = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=(16, 32, 32),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(1, 2, 4),  # SDXL's naming: heads per block (num_attention_heads null)
    transformer_layers_per_block=(1, 1, 2),
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=ADDITION_TIME_EMBED_DIM,
    projection_class_embeddings_input_dim=6 * ADDITION_TIME_EMBED_DIM + TEXT_ENCODER_2["projection_dim"],
    cross_attention_dim=TEXT_ENCODER["hidden_size"] + TEXT_ENCODER_2["hidden_size"],
    norm_num_groups=8,
)
VAE = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(8, 16, 16),
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    latent_channels=4,
    norm_num_groups=8,
    layers_per_block=1,
    sample_size=64,
    scaling_factor=0.13025,
    force_upcast=True,
)
# stabilityai/stable-diffusion-xl-base-1.0's scheduler_config.json.
SDXL_SCHEDULER = dict(beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, clip_sample=False,
                      interpolation_type="linear", num_train_timesteps=1000, prediction_type="epsilon",
                      sample_max_value=1.0, set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1,
                      timestep_spacing="leading", trained_betas=None, use_karras_sigmas=False)
SEED = 3

SCHEDULERS = {
    "euler": ("EulerDiscreteScheduler", {}),
    "dpm++2m": ("DPMSolverMultistepScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    # SDXL-Turbo's own scheduler: Euler ancestral with trailing timesteps.
    "euler-a-trailing": ("EulerAncestralDiscreteScheduler", {"timestep_spacing": "trailing"}),
}

P1 = "A photo of an astronaut, riding a horse on Mars!"
P2 = "a red cube (on a table); 3 cats -- sleeping?!"


def case(name, scheduler, prompt, seed, steps=4, guidance=5.0, negative=None, width=64, height=64,
         original_size=None, crops_coords_top_left=None, target_size=None):
    return dict(name=name, scheduler=scheduler, prompt=prompt, negative_prompt=negative, steps=steps,
                guidance_scale=guidance, seed=seed, width=width, height=height, original_size=original_size,
                crops_coords_top_left=crops_coords_top_left, target_size=target_size)


CASES = [
    # No negative prompt: force_zeros_for_empty_prompt makes the negative embeddings zeros.
    case("euler", "euler", P1, seed=42),
    case("dpm-negative", "dpm++2m", P2, seed=7, negative="blurry, low quality (ugly)!", steps=5),
    # An explicit "" is encoded like any prompt (not zeroed).
    case("ddim-empty-negative", "ddim", P1, seed=5, negative=""),
    case("euler-48x80", "euler", P2, seed=13, width=48, height=80, steps=3),
    # diffusers' sizes are (height, width) and the crop (top, left).
    case("euler-sizes", "euler", P1, seed=21, steps=3, original_size=(96, 128), crops_coords_top_left=(8, 4),
         target_size=(80, 64)),
    case("turbo-1step", "euler-a-trailing", P2, seed=99, steps=1, guidance=0.0),
]


def set_pad_token(folder, token):
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = os.path.join(folder, name)
        with open(path) as f:
            config = json.load(f)
        config["pad_token"] = token
        with open(path, "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
            f.write("\n")


def build(folder):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(SEED)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER)).eval()
    torch.manual_seed(SEED + 1)
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**TEXT_ENCODER_2)).eval()
    torch.manual_seed(SEED + 2)
    unet = UNet2DConditionModel(**UNET).eval()
    torch.manual_seed(SEED + 3)
    vae = AutoencoderKL(**VAE).eval()
    for m in (text_encoder, text_encoder_2, unet, vae):
        round_to_half(m)

    tmp = tempfile.mkdtemp(prefix="tiny-sdxl-")
    try:
        vocab, merges = clip_bpe_files(os.path.join(tmp, "bpe"))
        for name in ("tokenizer", "tokenizer_2"):
            write_tokenizer(os.path.join(tmp, name), vocab, merges, legacy_style=False)
        set_pad_token(os.path.join(tmp, "tokenizer_2"), "!")
        tokenizer = CLIPTokenizer.from_pretrained(os.path.join(tmp, "tokenizer"))
        tokenizer_2 = CLIPTokenizer.from_pretrained(os.path.join(tmp, "tokenizer_2"))
        assert tokenizer_2.pad_token_id == 0 and tokenizer.pad_token_id == 49407
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                         tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet,
                                         scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER),
                                         force_zeros_for_empty_prompt=True, add_watermarker=False)
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        pipe.to(torch.float16)  # the fp16 variant files hold float16 (exactly the rounded values)
        pipe.save_pretrained(folder, variant="fp16", safe_serialization=True)
        # The file keys EulerDiscreteScheduler does not take (clip_sample, ...), as SDXL's file has them.
        path = os.path.join(folder, "scheduler", "scheduler_config.json")
        with open(path) as f:
            config = json.load(f)
        config.update(SDXL_SCHEDULER)
        with open(path, "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
            f.write("\n")
        # transformers 5 writes tokenizer.json only; use the vocab.json + merges.txt layout of SDXL's repo.
        for name in ("tokenizer", "tokenizer_2"):
            shutil.rmtree(os.path.join(folder, name))
            shutil.copytree(os.path.join(tmp, name), os.path.join(folder, name))
        # The UNet as two shards with an index (the layout of SDXL's large fp32 UNet files).
        unet_dir = os.path.join(folder, "unet")
        for f in os.listdir(unet_dir):
            if f.endswith(".safetensors"):
                os.remove(os.path.join(unet_dir, f))
        state = {k: v.half().contiguous() for k, v in unet.state_dict().items()}
        keys = sorted(state)
        half = len(keys) // 2
        weight_map = {}
        for i, part in enumerate((keys[:half], keys[half:])):
            name = f"diffusion_pytorch_model.fp16-0000{i + 1}-of-00002.safetensors"
            save_file({k: state[k] for k in part}, os.path.join(unet_dir, name), metadata={"format": "pt"})
            weight_map.update({k: name for k in part})
        with open(os.path.join(unet_dir, "diffusion_pytorch_model.safetensors.index.fp16.json"), "w") as f:
            json.dump(dict(metadata=dict(total_size=sum(v.numel() * 2 for v in state.values())),
                           weight_map=weight_map), f, indent=2, sort_keys=True)
            f.write("\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load(folder):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(folder, variant="fp16", dtype=torch.float32,
                                                     local_files_only=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def goldens(pipe, out):
    import diffusers

    w = Writer(out)
    base = pipe.scheduler.config
    index = []
    for c in CASES:
        class_name, kwargs = SCHEDULERS[c["scheduler"]]
        pipe.scheduler = getattr(diffusers, class_name).from_config(base, **kwargs)
        args = dict(prompt=c["prompt"], negative_prompt=c["negative_prompt"], num_inference_steps=c["steps"],
                    guidance_scale=c["guidance_scale"], width=c["width"], height=c["height"])
        for key in ("original_size", "crops_coords_top_left", "target_size"):
            if c[key] is not None:
                args[key] = tuple(c[key])
        latents = pipe(**args, generator=torch.Generator("cpu").manual_seed(c["seed"]), output_type="latent").images
        timesteps = pipe.scheduler.timesteps.tolist()
        image = pipe(**args, generator=torch.Generator("cpu").manual_seed(c["seed"]), output_type="np").images
        image_u8 = (image * 255).round().astype(np.uint8)
        d = f"{c['name']}/"
        entry = dict(c)
        entry["scheduler_class"] = class_name
        entry["scheduler_kwargs"] = kwargs
        entry["scheduler_config"] = json_value(dict(pipe.scheduler.config))
        if c["name"].startswith("turbo"):
            # SDXL-Turbo ships this scheduler as its own: the tests convert the model with it.
            w.json(d + "scheduler_config.json", dict(entry["scheduler_config"], _class_name=class_name))
            entry["stored_scheduler_config"] = "scheduler_config.json"
        entry["timesteps"] = timesteps
        entry["ids"] = w.npy(d + "ids.npy", tokenize(pipe.tokenizer, [c["prompt"]]).numpy(), np.int32)
        entry["ids_2"] = w.npy(d + "ids_2.npy", tokenize(pipe.tokenizer_2, [c["prompt"]]).numpy(), np.int32)
        entry["latents"] = w.npy(d + "latents.npy", latents.numpy(), np.float32)
        entry["image"] = w.npy(d + "image.npy", image_u8, np.uint8)
        entry["latents_shape"] = list(latents.shape)
        entry["image_shape"] = list(image_u8.shape)
        index.append(entry)
        print(f"  {c['name']}: latents {tuple(latents.shape)} std {latents.std().item():.4f} "
              f"timesteps {[round(t, 3) for t in timesteps]}")
    w.json("cases.json", dict(
        reference=f"diffusers {diffusers.__version__} StableDiffusionXLPipeline (add_watermarker=False), CPU fp32, "
                  "generator=torch.Generator('cpu').manual_seed(seed); latents from output_type='latent' (before "
                  "VAE scaling), image from output_type='np' as (image*255).round().astype(uint8)",
        negative_prompt="null: not given, so force_zeros_for_empty_prompt zeroes the negative embeddings; "
                        "a string (also \"\") is encoded by both text encoders",
        sizes="original_size and target_size are diffusers' (height, width), crops_coords_top_left (top, left); "
              "null means the default (the image's (height, width), and (0, 0))",
        scheduler="diffusers.<scheduler_class>.from_config(the model's scheduler config, **scheduler_kwargs)",
        cases=index))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", default=os.path.join(REPO, "Tests", "Fixtures"))
    ap.add_argument("--goldens-only", action="store_true", help="keep the model folder, remake the goldens")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    folder = os.path.join(args.fixtures, "tiny-sdxl")
    if not args.goldens_only:
        build(folder)
    out = os.path.join(args.fixtures, "golden-sdxl")
    if os.path.isdir(out):
        shutil.rmtree(out)
    goldens(load(folder), out)


if __name__ == "__main__":
    main()
