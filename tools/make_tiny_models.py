#!/usr/bin/env python3
"""Builds the two tiny random-weight Stable Diffusion 1.x models used as test fixtures.

    /work/venv/bin/python tools/make_tiny_models.py [--out Tests/Fixtures]

Writes, under --out:
  tiny-sd-a/               diffusers folder, fp16 weights under the variant names
                           (model.fp16.safetensors, diffusion_pytorch_model.fp16.safetensors);
                           text encoder keys in the legacy "text_model.*" layout that every
                           published SD 1.x repo uses; tokenizer_config with AddedToken dicts.
  tiny-sd-b/               diffusers folder, fp32 weights under the plain names; text encoder
                           keys flattened ("embeddings.*", "encoder.*") as transformers >= 5.6
                           writes them; plain-string tokenizer_config.
  tiny-sd-a.safetensors    model A as one CompVis/LDM single-file fp16 checkpoint
                           (tools/diffusers_to_ldm.py), with the extra keys real checkpoints carry.

Every model is built from the configs below with fixed torch seeds, never from a hub id.
Model A's parameters are rounded through float16 before saving, so the fp16 files hold exactly
the values that the fp32 goldens (tools/make_goldens.py) are computed from.

Tokenizer folders use the SD 1.x layout (vocab.json, merges.txt, tokenizer_config.json,
special_tokens_map.json; no tokenizer.json), made from tools/make_clip_bpe.py's output.

Requirements: the reference stack in /work/venv (torch CPU, diffusers 0.42, transformers 5.x,
safetensors, numpy, open_clip for make_clip_bpe.py).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# The scheduler config of runwayml/stable-diffusion-v1-5 (PNDM, PLMS without the PRK warm-up).
# PNDMScheduler takes no clip_sample, but SD 1.5's file carries "clip_sample": false and it matters:
# DDIMScheduler.from_config(pipe.scheduler.config) would otherwise default to clip_sample=True.
SD15_SCHEDULER_FILE_ONLY = dict(clip_sample=False)
SD15_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    skip_prk_steps=True,
    steps_offset=1,
    set_alpha_to_one=False,
    prediction_type="epsilon",
    trained_betas=None,
)

TEXT_COMMON = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                   pad_token_id=49407)

MODELS = {
    "tiny-sd-a": dict(
        seed=0,
        fp16=True,
        legacy_text_keys=True,
        text_encoder=dict(TEXT_COMMON, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                          num_attention_heads=4, hidden_act="quick_gelu", projection_dim=32),
        unet=dict(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,  # SD 1.x naming: this is the number of heads
            norm_num_groups=32,
            use_linear_projection=False,
        ),
        vae=dict(
            in_channels=3,
            out_channels=3,
            block_out_channels=(32, 64),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            latent_channels=4,
            norm_num_groups=32,
            layers_per_block=1,
            sample_size=64,
            scaling_factor=0.18215,
        ),
    ),
    "tiny-sd-b": dict(
        seed=1,
        fp16=False,
        legacy_text_keys=False,
        text_encoder=dict(TEXT_COMMON, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                          num_attention_heads=2, hidden_act="gelu", projection_dim=32),
        unet=dict(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 48, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=(2, 4, 4),  # heads per block
            norm_num_groups=16,
            use_linear_projection=True,
            transformer_layers_per_block=1,
        ),
        vae=dict(
            in_channels=3,
            out_channels=3,
            block_out_channels=(16, 32, 32),
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            latent_channels=4,
            norm_num_groups=8,
            layers_per_block=2,
            sample_size=64,
            scaling_factor=0.18215,
        ),
    ),
}

SPECIAL_TOKENS = dict(bos_token="<|startoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                      unk_token="<|endoftext|>")


def clip_bpe_files(tmp):
    """Regenerates vocab.json + merges.txt with make_clip_bpe.py so this script is self-contained."""
    subprocess.run([sys.executable, os.path.join(HERE, "make_clip_bpe.py"), "--hf-dir", tmp], check=True)
    return os.path.join(tmp, "vocab.json"), os.path.join(tmp, "merges.txt")


def added_token(content):
    # The form published SD 1.x tokenizer configs use for bos/eos/unk.
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True, "rstrip": False,
            "single_word": False}


def write_tokenizer(folder, vocab, merges, legacy_style):
    """SD 1.x tokenizer folder: vocab.json, merges.txt and the two small configs."""
    os.makedirs(folder, exist_ok=True)
    shutil.copyfile(vocab, os.path.join(folder, "vocab.json"))
    shutil.copyfile(merges, os.path.join(folder, "merges.txt"))
    if legacy_style:
        config = {"add_prefix_space": False, "bos_token": added_token(SPECIAL_TOKENS["bos_token"]),
                  "do_lower_case": True, "eos_token": added_token(SPECIAL_TOKENS["eos_token"]), "errors": "replace",
                  "model_max_length": 77, "pad_token": SPECIAL_TOKENS["pad_token"],
                  "tokenizer_class": "CLIPTokenizer", "unk_token": added_token(SPECIAL_TOKENS["unk_token"])}
    else:
        config = dict(SPECIAL_TOKENS, model_max_length=77, tokenizer_class="CLIPTokenizer")
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
        json.dump(SPECIAL_TOKENS, f, indent=2, sort_keys=True)
        f.write("\n")


def add_scheduler_file_keys(path):
    with open(path) as f:
        config = json.load(f)
    config.update(SD15_SCHEDULER_FILE_ONLY)
    with open(path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")


def round_to_half(module):
    with torch.no_grad():
        for p in module.parameters():
            p.data = p.data.half().float()


def build_components(spec):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    seed = spec["seed"]
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(**spec["text_encoder"])).eval()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**spec["unet"]).eval()
    torch.manual_seed(seed)
    vae = AutoencoderKL(**spec["vae"]).eval()
    if spec["fp16"]:
        for m in (text_encoder, unet, vae):
            round_to_half(m)
    return text_encoder, unet, vae


@torch.no_grad()
def sanity_check(name, text_encoder, unet, vae, tokenizer):
    """Activations must stay finite and O(1) with the default init."""
    ids = tokenizer(["a red cube, on a table."], padding="max_length", max_length=77, truncation=True,
                    return_tensors="pt").input_ids
    hidden = text_encoder(ids).last_hidden_state
    g = torch.Generator("cpu").manual_seed(0)
    sample = torch.randn(1, 4, 8, 8, generator=g)
    eps = unet(sample, 500, encoder_hidden_states=hidden).sample
    image = vae.decode(sample).sample
    for label, t in (("text", hidden), ("unet", eps), ("vae", image)):
        assert torch.isfinite(t).all(), f"{name}: {label} output is not finite"
        print(f"  {name} {label}: shape {tuple(t.shape)} std {t.std().item():.4f} max|x| {t.abs().max().item():.4f}")


def flatten_text_keys(state):
    return {k[len("text_model."):] if k.startswith("text_model.") else k: v for k, v in state.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "Tests", "Fixtures"))
    args = ap.parse_args()

    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    tmp = tempfile.mkdtemp(prefix="tiny-sd-")
    try:
        vocab, merges = clip_bpe_files(os.path.join(tmp, "bpe"))
        for name, spec in MODELS.items():
            folder = os.path.join(args.out, name)
            if os.path.isdir(folder):
                shutil.rmtree(folder)
            text_encoder, unet, vae = build_components(spec)
            write_tokenizer(os.path.join(tmp, name + "-tok"), vocab, merges, legacy_style=spec["legacy_text_keys"])
            tokenizer = CLIPTokenizer.from_pretrained(os.path.join(tmp, name + "-tok"))
            sanity_check(name, text_encoder, unet, vae, tokenizer)
            scheduler = PNDMScheduler(**SD15_SCHEDULER)
            pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                           scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                           requires_safety_checker=False)
            variant = "fp16" if spec["fp16"] else None
            if spec["fp16"]:
                pipe.to(torch.float16)
            pipe.save_pretrained(folder, safe_serialization=True, variant=variant)
            add_scheduler_file_keys(os.path.join(folder, "scheduler", "scheduler_config.json"))
            # transformers 5 writes tokenizer.json only; replace it with the SD 1.x file layout.
            shutil.rmtree(os.path.join(folder, "tokenizer"))
            write_tokenizer(os.path.join(folder, "tokenizer"), vocab, merges, legacy_style=spec["legacy_text_keys"])
            # Text encoder key layout: legacy "text_model.*" (A) or flattened (B).
            te_file = os.path.join(folder, "text_encoder", "model.fp16.safetensors" if variant else "model.safetensors")
            state = flatten_text_keys(load_file(te_file))
            if spec["legacy_text_keys"]:
                state = {"text_model." + k: v for k, v in state.items()}
            save_file(state, te_file, metadata={"format": "pt"})
            verify_folder(name, folder, variant, text_encoder, unet, vae)
            del pipe, text_encoder, unet, vae

        single = os.path.join(args.out, "tiny-sd-a.safetensors")
        subprocess.run([sys.executable, os.path.join(HERE, "diffusers_to_ldm.py"), os.path.join(args.out, "tiny-sd-a"),
                        single, "--half", "--verify"], check=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@torch.no_grad()
def verify_folder(name, folder, variant, text_encoder, unet, vae):
    """Reloads the folder with diffusers and checks every tensor equals the in-memory model."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, variant=variant, dtype=torch.float32,
                                                   safety_checker=None, requires_safety_checker=False,
                                                   local_files_only=True)
    for label, ref, got in (("text_encoder", text_encoder, pipe.text_encoder), ("unet", unet, pipe.unet),
                            ("vae", vae, pipe.vae)):
        a, b = ref.state_dict(), got.state_dict()
        assert a.keys() == b.keys(), f"{name}/{label}: key sets differ"
        for k in a:
            assert torch.equal(a[k].float(), b[k].float()), f"{name}/{label}: {k} differs after reload"
        print(f"  {name}/{label}: {len(a)} tensors, {sum(v.numel() for v in a.values())} parameters, reload exact")


if __name__ == "__main__":
    main()
