#!/usr/bin/env python3
"""Writes the recipe of the mid-size parity model and its diffusers goldens at 512x512.

    /work/venv/bin/python tools/make_midsize_model.py [--fixtures Tests/Fixtures] [--json]

The mid-size model is an SD 1.x-shaped network with random weights at real channel widths:
a UNet whose 3x3 convolutions reach 384 input channels at 64x64 latents (Winograd F(4x4,3x3)
runs from 256 input channels) and whose self-attention attends over all 4096 tokens of a 512x512
image, and SD's own VAE decoder widths (128/256/512/512). Its weights are not stored: every
value comes from a counter-based generator (splitmix64 of seed, tensor number and element
index, below), so the Swift tests rebuild the same model from the recipe alone
(Tests/SDPipelineTests/MidSizeModel.swift) and check each tensor against the CRC-32 recorded here.

Writes, under FIXTURES/mid-sd/:
  weights.json          the recipe: generator, seed, each component's config.json, and per tensor
                        key, shape, offset, scale and the CRC-32 of its little-endian float32 bytes
  golden/case.json      the generation request, timesteps, token ids, how each file was made
  golden/latents.npy    final latents f32 [1,4,64,64] (diffusers, output_type="latent")
  golden/image.npy      uint8 [1,512,512,3]: vae.decode(latents / scaling_factor) whole, as
                        StableDiffusionPipeline post-processes it ((x/2+0.5).clamp(0,1)*255, rounded)
  golden/image_tiled.npy  the same latents through diffusers' enable_vae_tiling() tiled decode with
                        160 px tiles (pocketsd's `--memory stream` tile size) and its 1/4 overlap

Requirements: the reference stack in /work/venv (torch CPU, diffusers 0.42, transformers 5.x, numpy).
"""
import argparse
import json
import os
import sys
import tempfile
import time
import zlib

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import make_tiny_models as tiny  # noqa: E402  (SD 1.5 scheduler config)

SEED = 20261206

TEXT_ENCODER = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                    pad_token_id=49407, hidden_size=128, intermediate_size=512, num_hidden_layers=2,
                    num_attention_heads=4, hidden_act="quick_gelu", projection_dim=128)

# SD 1.x's block structure at smaller widths: level 0 keeps 4096 tokens at 512x512 with attention,
# its up block's first resnet convolves 128 + 256 = 384 channels at 64x64 (Winograd F(4,3)), and
# level 1 has 256-channel 3x3 convolutions at 32x32.
UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    block_out_channels=(128, 256, 256),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=128,
    attention_head_dim=8,  # SD 1.x naming: the number of heads (16 channels each at level 0)
    norm_num_groups=32,
    use_linear_projection=False,
)

# SD 1.x's VAE widths and groups; one resnet per encoder level (two per decoder level) instead
# of two (three) to keep the test's decode time moderate.
VAE = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    latent_channels=4,
    norm_num_groups=32,
    layers_per_block=1,
    sample_size=512,
    scaling_factor=0.18215,
)

REQUEST = dict(prompt="A photo of an astronaut, riding a horse on Mars!", negative_prompt=None, steps=2,
               guidance_scale=7.5, seed=42, width=512, height=512, scheduler="euler",
               scheduler_class="EulerDiscreteScheduler")

# diffusers' tiling at pocketsd's `stream` tile: 160 px tiles (20 latent pixels); diffusers keeps
# its own overlap factor (1/4) and blending.
DIFFUSERS_TILE_PIXELS = 160

GOLDEN = 0x9E3779B97F4A7C15
MASK = (1 << 64) - 1


def splitmix64(z):
    """The splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def tensor_values(seed, number, count, offset, scale):
    """Element i of tensor `number`: u = top 24 bits of splitmix64(base + (i+1)*GOLDEN) mapped
    exactly to [-1, 1) as bits/2^23 - 1; value = float32(offset + scale*u) computed in float64.
    base = splitmix64(seed XOR number*GOLDEN)."""
    base = splitmix64(np.array([(seed ^ (number * GOLDEN)) & MASK], dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        counters = base + (np.arange(1, count + 1, dtype=np.uint64) * np.uint64(GOLDEN))
        bits = splitmix64(counters) >> np.uint64(40)
    u = bits.astype(np.float64) / float(1 << 23) - 1.0
    return (np.float64(offset) + np.float64(scale) * u).astype(np.float32)


def init_rule(key, shape, shapes):
    """(offset, scale) like a real initialisation: weights uniform in ±1/sqrt(fan_in) (PyTorch's
    default for Linear and Conv2d), their biases likewise; norm scales 1 ± 0.1 and shifts ±0.1 so
    that a wrong gamma/beta shows; embeddings ±0.05. The attention's query projections get 4x the
    default so that softmax is far from uniform over 4096 tokens."""
    if len(shape) >= 2:
        if "embedding" in key:
            return 0.0, 0.05
        fan_in = int(np.prod(shape[1:]))
        gain = 4.0 if key.endswith("to_q.weight") or key.endswith("q_proj.weight") or key.endswith("query.weight") else 1.0
        return 0.0, gain / float(np.sqrt(fan_in))
    sibling = key[: -len("bias")] + "weight" if key.endswith("bias") else None
    if key.endswith("weight"):
        return 1.0, 0.1  # a norm's scale
    if sibling in shapes and len(shapes[sibling]) >= 2:
        return 0.0, 1.0 / float(np.sqrt(int(np.prod(shapes[sibling][1:]))))
    return 0.0, 0.1  # a norm's shift


def fill(module, component, first_number, seed):
    """Overwrites every parameter of `module` from the generator; returns the tensor entries."""
    params = dict(module.named_parameters())
    state_keys = set(module.state_dict().keys())
    assert state_keys == set(params), f"{component}: buffers in the state dict: {sorted(state_keys - set(params))}"
    shapes = {k: list(p.shape) for k, p in params.items()}
    entries = []
    with torch.no_grad():
        for i, key in enumerate(sorted(params)):
            number = first_number + i
            offset, scale = init_rule(key, shapes[key], shapes)
            values = tensor_values(seed, number, int(np.prod(shapes[key])), offset, scale)
            params[key].copy_(torch.from_numpy(values.reshape(shapes[key])))
            entries.append(dict(key=key, number=number, shape=shapes[key], offset=offset, scale=scale,
                                crc32=zlib.crc32(values.astype("<f4").tobytes())))
    return entries


def saved_config(model, name="config.json"):
    """The config file exactly as save_pretrained writes it."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_config(tmp) if hasattr(model, "save_config") else model.config.save_pretrained(tmp)
        with open(os.path.join(tmp, name)) as f:
            return json.load(f)


def to_u8(pipe, image):
    return (pipe.image_processor.postprocess(image, output_type="np") * 255).round().astype(np.uint8)


def save_npy(path, array):
    array = np.ascontiguousarray(array)
    if array.dtype.kind == "f":
        assert np.isfinite(array).all(), f"{path}: NaN or inf"
    np.save(path, array)


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", default=os.path.join(REPO, "Tests", "Fixtures"))
    ap.add_argument("--json", action="store_true", help="print a JSON summary on stdout (progress on stderr)")
    args = ap.parse_args()
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (lambda *a: print(*a, flush=True))

    import diffusers
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    started = time.time()
    root = os.path.join(args.fixtures, "mid-sd")
    golden = os.path.join(root, "golden")
    os.makedirs(golden, exist_ok=True)

    torch.manual_seed(0)  # construction only; every parameter is overwritten below
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER)).eval()
    unet = UNet2DConditionModel(**UNET).eval()
    vae = AutoencoderKL(**VAE).eval()
    components = {}
    number = 0
    for name, model, weights_file in (("text_encoder", text_encoder, "model.safetensors"),
                                      ("unet", unet, "diffusion_pytorch_model.safetensors"),
                                      ("vae", vae, "diffusion_pytorch_model.safetensors")):
        entries = fill(model, name, number, SEED)
        number += len(entries)
        count = sum(int(np.prod(e["shape"])) for e in entries)
        log(f"  {name}: {len(entries)} tensors, {count} parameters")
        components[name] = dict(config=saved_config(model), weights_file=weights_file, parameters=count,
                                tensors=entries)

    scheduler_config = saved_config(diffusers.PNDMScheduler(**tiny.SD15_SCHEDULER), "scheduler_config.json")
    scheduler_config.update(tiny.SD15_SCHEDULER_FILE_ONLY)
    tokenizer_folder = os.path.join(args.fixtures, "tiny-sd-b", "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_folder, local_files_only=True)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=diffusers.PNDMScheduler(**tiny.SD15_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)

    recipe = dict(
        description="Mid-size SD 1.x-like parity model, random weights (tools/make_midsize_model.py)",
        generator="tensor number n (running over text_encoder, unet, vae; keys sorted within each): "
                  "base = splitmix64(seed ^ n*0x9E3779B97F4A7C15); element i (0-based, C order): "
                  "bits = splitmix64(base + (i+1)*0x9E3779B97F4A7C15) >> 40; u = bits/2^23 - 1; "
                  "value = float32(offset + scale*u) in float64 arithmetic; all uint64 arithmetic wraps",
        splitmix64="z = (z ^ z>>30) * 0xBF58476D1CE4E5B9; z = (z ^ z>>27) * 0x94D049BB133111EB; z ^ z>>31",
        seed=SEED, crc32="zlib CRC-32 of the tensor's little-endian float32 bytes",
        tokenizer="Tests/Fixtures/tiny-sd-b/tokenizer (the SD 1.x CLIP BPE)",
        scheduler_config=scheduler_config,
        components=components)
    with open(os.path.join(root, "weights.json"), "w") as f:
        json.dump(recipe, f, indent=1)
        f.write("\n")

    # The generation: one prompt, guidance on (a UNet batch of 2), 512x512.
    r = REQUEST
    t0 = time.time()
    latents = pipe(prompt=[r["prompt"]], negative_prompt=r["negative_prompt"], num_inference_steps=r["steps"],
                   guidance_scale=r["guidance_scale"], width=r["width"], height=r["height"],
                   generator=torch.Generator("cpu").manual_seed(r["seed"]), output_type="latent").images
    log(f"  pipeline: {r['steps']} steps in {time.time() - t0:.1f} s, latents std {latents.std().item():.4f}")
    timesteps = pipe.scheduler.timesteps.tolist()
    scaled = latents / vae.config.scaling_factor
    t0 = time.time()
    whole = to_u8(pipe, vae.decode(scaled).sample)
    log(f"  whole decode: {time.time() - t0:.1f} s")
    vae.enable_tiling()
    vae.tile_sample_min_size = DIFFUSERS_TILE_PIXELS
    vae.tile_latent_min_size = DIFFUSERS_TILE_PIXELS // 8
    t0 = time.time()
    tiled = to_u8(pipe, vae.decode(scaled).sample)
    vae.disable_tiling()
    log(f"  tiled decode: {time.time() - t0:.1f} s")
    diff = np.abs(tiled.astype(np.int32) - whole.astype(np.int32))
    saturated = float(np.mean((whole == 0) | (whole == 255)))
    log(f"  diffusers tiled vs whole: mean {diff.mean():.3f} max {diff.max()} levels; saturated pixels {saturated:.3f}")

    ids = pipe.tokenizer([r["prompt"]], padding="max_length", max_length=77, truncation=True,
                         return_tensors="np").input_ids
    save_npy(os.path.join(golden, "latents.npy"), latents.numpy().astype("<f4"))
    save_npy(os.path.join(golden, "image.npy"), whole)
    save_npy(os.path.join(golden, "image_tiled.npy"), tiled)
    save_npy(os.path.join(golden, "ids.npy"), ids.astype("<i4"))
    case = dict(r, timesteps=timesteps, init_noise_sigma=float(pipe.scheduler.init_noise_sigma),
                scheduler_construction="EulerDiscreteScheduler.from_config(PNDMScheduler(**SD 1.5 config).config)",
                reference=f"diffusers {diffusers.__version__}, torch {torch.__version__}, CPU fp32; "
                          "generator=torch.Generator('cpu').manual_seed(seed); latents from output_type='latent'",
                image="vae.decode(latents / scaling_factor) in one piece, image_processor.postprocess "
                      "(output_type='np'), (x*255).round() as uint8 [1,H,W,3]",
                image_tiled=f"the same after vae.enable_tiling() with tile_sample_min_size="
                            f"{DIFFUSERS_TILE_PIXELS}, tile_latent_min_size={DIFFUSERS_TILE_PIXELS // 8}, "
                            f"tile_overlap_factor={vae.tile_overlap_factor}",
                diffusers_tiled_vs_whole=dict(mean_levels=float(diff.mean()), max_levels=int(diff.max())),
                saturated_fraction=saturated)
    with open(os.path.join(golden, "case.json"), "w") as f:
        json.dump(case, f, indent=2)
        f.write("\n")
    summary = dict(recipe=os.path.relpath(os.path.join(root, "weights.json"), REPO),
                   parameters={k: v["parameters"] for k, v in components.items()},
                   latents_std=float(latents.std()), tiled_vs_whole=case["diffusers_tiled_vs_whole"],
                   saturated_fraction=saturated, seconds=round(time.time() - started, 1))
    if args.json:
        print(json.dumps(summary))
    else:
        log(f"  done in {summary['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
