#!/usr/bin/env python3
"""A tiny random TAESD (diffusers AutoencoderTiny) for tests, and diffusers' outputs for it.

    /work/venv/bin/python tools/make_taesd_goldens.py [--out Tests/Fixtures]

Writes, under --out:
  tiny-taesd/                      diffusers AutoencoderTiny folder (config.json, fp32 safetensors),
                                   3 levels like tiny-sd-b's VAE (4x up-sampling), 16 channels
  tiny-taesd-original/             the same weights in the original madebyollin/taesd layout:
                                   taesd_decoder.safetensors (Sequential index + 1: its clamp is
                                   layer 0) and taesd_encoder.safetensors
  golden/taesd/decode-latents.npy, decode-image.npy      AutoencoderTiny.decode(latents).sample
  golden/taesd/encode-image.npy, encode-latents.npy      AutoencoderTiny.encode(image).latents
  golden/taesd/pipeline/latents.npy, image.npy           StableDiffusionPipeline(tiny-sd-b) with
                                   pipe.vae = the tiny TAESD: final latents and 8-bit image
  golden/taesd/cases.json          shapes, the request, versions

Built from the config below with a fixed torch seed, never from a hub id.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from make_goldens import Writer, load_pipeline  # noqa: E402

CONFIG = dict(in_channels=3, out_channels=3, encoder_block_out_channels=(16, 16, 16),
              decoder_block_out_channels=(16, 16, 16), num_encoder_blocks=(1, 2, 1), num_decoder_blocks=(2, 1, 1),
              latent_channels=4, upsampling_scaling_factor=2, act_fn="relu", upsample_fn="nearest",
              scaling_factor=1.0)
REQUEST = dict(prompt=["a small house by a lake"], negative_prompt=None, num_inference_steps=4, guidance_scale=5.0,
               width=64, height=64, seed=3)


def spread_decoder_output(taesd):
    """Centres each output channel of a random AutoencoderTiny (its last conv's bias) and
    spreads it, so the decoded image spans [-1, 1] instead of saturating: the 8-bit
    comparisons then see every layer."""
    with torch.no_grad():
        probe = taesd.decode(torch.randn((4, 4, 8, 8), generator=torch.Generator("cpu").manual_seed(1)) * 1.5).sample
        last = taesd.decoder.layers[-1]
        std = probe.std(dim=(0, 2, 3))
        last.weight.mul_((0.5 / std).view(-1, 1, 1, 1))
        last.bias.mul_(0.5 / std)
        probe = taesd.decode(torch.randn((4, 4, 8, 8), generator=torch.Generator("cpu").manual_seed(1)) * 1.5).sample
        last.bias.sub_(probe.mean(dim=(0, 2, 3)) / 2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "Tests/Fixtures"))
    args = ap.parse_args()
    import diffusers
    from diffusers import AutoencoderTiny, EulerDiscreteScheduler

    torch.manual_seed(7)
    taesd = AutoencoderTiny(**CONFIG).eval()
    spread_decoder_output(taesd)
    folder = os.path.join(args.out, "tiny-taesd")
    taesd.save_pretrained(folder, safe_serialization=True)
    sd = taesd.state_dict()
    original = os.path.join(args.out, "tiny-taesd-original")
    os.makedirs(original, exist_ok=True)
    for part, shift in (("decoder", 1), ("encoder", 0)):
        out = {}
        for k, v in sd.items():
            if k.startswith(part + ".layers."):
                n, rest = k[len(part) + 8:].split(".", 1)
                out[f"{int(n) + shift}.{rest}"] = v.contiguous()
        save_file(out, os.path.join(original, f"taesd_{part}.safetensors"))

    w = Writer(os.path.join(args.out, "golden/taesd"))
    g = torch.Generator("cpu").manual_seed(5)
    latents = torch.randn((2, 4, 6, 10), generator=g) * 1.5
    image = torch.rand((1, 3, 24, 40), generator=g) * 2 - 1
    with torch.no_grad():
        decoded = taesd.decode(latents).sample
        encoded = taesd.encode(image).latents
    w.npy("decode-latents.npy", latents.numpy(), np.float32)
    w.npy("decode-image.npy", decoded.numpy(), np.float32)
    w.npy("encode-image.npy", image.numpy(), np.float32)
    w.npy("encode-latents.npy", encoded.numpy(), np.float32)

    pipe = load_pipeline(os.path.join(REPO, "Tests/Fixtures/tiny-sd-b"))
    pipe.vae = AutoencoderTiny.from_pretrained(folder, local_files_only=True).eval()
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    r = REQUEST
    call = dict(prompt=r["prompt"], num_inference_steps=r["num_inference_steps"], guidance_scale=r["guidance_scale"],
                width=r["width"], height=r["height"])
    final = pipe(**call, generator=torch.Generator("cpu").manual_seed(r["seed"]), output_type="latent").images
    pixels = pipe(**call, generator=torch.Generator("cpu").manual_seed(r["seed"]), output_type="np").images
    w.npy("pipeline/latents.npy", final.numpy(), np.float32)
    w.npy("pipeline/image.npy", (pixels * 255).round().astype(np.uint8), np.uint8)
    w.json("cases.json", dict(
        reference=f"diffusers {diffusers.__version__} AutoencoderTiny, torch {torch.__version__} CPU fp32",
        config=CONFIG, decode=dict(latents=list(latents.shape), image=list(decoded.shape)),
        encode=dict(image=list(image.shape), latents=list(encoded.shape)),
        pipeline=dict(REQUEST, model="tiny-sd-b", scheduler="euler", vae_scale_factor=pipe.vae_scale_factor,
                      latents=list(final.shape))))
    print(f"decode {tuple(decoded.shape)} range [{decoded.min():.3f}, {decoded.max():.3f}]; "
          f"encode {tuple(encoded.shape)}; pipeline latents {tuple(final.shape)}")


if __name__ == "__main__":
    main()
