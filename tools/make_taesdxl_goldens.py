#!/usr/bin/env python3
"""TAESDXL's role on the tiny SDXL model: diffusers' StableDiffusionXLPipeline with an
AutoencoderTiny as its VAE, the way madebyollin/taesdxl is used with SDXL.

    /work/venv/bin/python tools/make_taesdxl_goldens.py [--fixtures Tests/Fixtures]

Reads <fixtures>/tiny-sdxl (tools/make_tiny_sdxl.py) and <fixtures>/tiny-taesd
(tools/make_taesd_goldens.py: 3 levels, 4x up-sampling, 4 latent channels, the shape of the
tiny SDXL VAE; TAESD and TAESDXL share the architecture and differ only in trained weights).
Writes <fixtures>/golden/taesd-sdxl/:
  latents.npy, image.npy   the pipeline's final latents (output_type="latent") and its 8-bit image
                           (output_type="np") with pipe.vae = the tiny AutoencoderTiny
  cases.json               the request and versions
CPU fp32, never a hub id.
"""
import argparse
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from make_goldens import Writer  # noqa: E402
from make_tiny_sdxl import load  # noqa: E402

REQUEST = dict(prompt=["a small house by a lake"], negative_prompt=None, num_inference_steps=3, guidance_scale=5.0,
               width=64, height=48, seed=17, scheduler="euler")


@torch.no_grad()
def main():
    import diffusers
    from diffusers import AutoencoderTiny, EulerDiscreteScheduler

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", default=os.path.join(REPO, "Tests", "Fixtures"))
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    pipe = load(os.path.join(args.fixtures, "tiny-sdxl"))
    pipe.vae = AutoencoderTiny.from_pretrained(os.path.join(args.fixtures, "tiny-taesd"), local_files_only=True).eval()
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    # The pipeline's vae_scale_factor was set from the tiny SDXL VAE (3 levels: 4), which is
    # also the tiny TAESD's up-sampling; assert it so a changed fixture cannot skew sizes.
    assert pipe.vae_scale_factor == 4
    r = REQUEST
    call = dict(prompt=r["prompt"], negative_prompt=r["negative_prompt"], num_inference_steps=r["num_inference_steps"],
                guidance_scale=r["guidance_scale"], width=r["width"], height=r["height"])
    final = pipe(**call, generator=torch.Generator("cpu").manual_seed(r["seed"]), output_type="latent").images
    pixels = pipe(**call, generator=torch.Generator("cpu").manual_seed(r["seed"]), output_type="np").images
    w = Writer(os.path.join(args.fixtures, "golden", "taesd-sdxl"))
    w.npy("latents.npy", final.numpy(), np.float32)
    w.npy("image.npy", (pixels * 255).round().astype(np.uint8), np.uint8)
    w.json("cases.json", dict(
        reference=f"diffusers {diffusers.__version__} StableDiffusionXLPipeline(tiny-sdxl, add_watermarker=False) with "
                  "pipe.vae = AutoencoderTiny(tiny-taesd), EulerDiscreteScheduler, CPU fp32, "
                  "generator=torch.Generator('cpu').manual_seed(seed)",
        request=r, latents_shape=list(final.shape), image_shape=list(pixels.shape)))
    print(f"  latents {tuple(final.shape)} std {final.std().item():.4f}; image {pixels.shape}")


if __name__ == "__main__":
    main()
