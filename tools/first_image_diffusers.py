#!/usr/bin/env python3
"""The reference for tools/bench_first_image.py: one whole diffusers text-to-image run on CPU
PyTorch (float32), timed inside the process, printed as one JSON line.

    /work/venv/bin/python tools/first_image_diffusers.py FOLDER --steps N --guidance G
        [--scheduler lcm] [--taesd DIR] [--threads T] [--size 512]

FOLDER is a local diffusers Stable Diffusion folder (tools/make_sd15_random.py,
tools/make_sd_turbo_random.py); it is loaded from disk only, never from a hub id. `--taesd`
swaps the pipeline's VAE for a local AutoencoderTiny folder. The scheduler is the folder's
own unless `--scheduler lcm`. Phases: "import" (torch + diffusers), "load" (from_pretrained),
"generate" (the pipeline call: text encoder, UNet loop, decode). The caller measures the
process's wall time and peak RSS from outside.
"""
import argparse
import json
import time

start = time.monotonic()
import torch  # noqa: E402
import diffusers  # noqa: E402

imported = time.monotonic()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--guidance", type=float, required=True)
    ap.add_argument("--scheduler", choices=["lcm"])
    ap.add_argument("--taesd")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--size", type=int, default=512)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(
        a.folder, torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False,
        local_files_only=True)
    if a.scheduler == "lcm":
        pipe.scheduler = diffusers.LCMScheduler.from_config(pipe.scheduler.config)
    if a.taesd:
        pipe.vae = diffusers.AutoencoderTiny.from_pretrained(a.taesd, torch_dtype=torch.float32,
                                                             local_files_only=True)
    loaded = time.monotonic()
    with torch.inference_mode():
        pipe("a photo of a cat", num_inference_steps=a.steps, guidance_scale=a.guidance,
             width=a.size, height=a.size, generator=torch.Generator().manual_seed(1))
    done = time.monotonic()
    print(json.dumps({"import": imported - start, "load": loaded - imported, "generate": done - loaded,
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
