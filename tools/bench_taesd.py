#!/usr/bin/env python3
"""TAESD decode time at a given size: pocketsd against diffusers' AutoencoderTiny, same machine, one run.

    /work/venv/bin/python tools/bench_taesd.py [--size 512] [--runs 5] [--threads T] [--json]
        [--pocketsd .build/release/pocketsd] [--work /tmp/pocketsd-taesd-bench]

Builds (once, under --work, never from a hub id):
  taesd/       a full-size random TAESD: diffusers AutoencoderTiny with its default config (the one
               madebyollin/taesd publishes: 64 channels, blocks 1,3,3,3 / 3,3,3,1), fp32
  carrier/     a tiny random SD 1.x diffusers folder whose VAE has 4 levels (8x, like SD's), only
               so that `pocketsd generate --vae taesd` decodes SD-sized latents through the TAESD
Then times
  diffusers    AutoencoderTiny.decode on one [1, 4, size/8, size/8] latent, torch fp32 under
               inference_mode, torch.set_num_threads(T); median of --runs after one warm-up
  pocketsd     `generate --steps 1 --vae taesd --stats --json` on the converted carrier (fp32 and
               int8 files), the "vae decode" phase (binding + decode + 8-bit conversion);
               median of --runs processes
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def build(work):
    from diffusers import AutoencoderKL, AutoencoderTiny, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    taesd_dir = os.path.join(work, "taesd")
    if not os.path.exists(os.path.join(taesd_dir, "config.json")):
        torch.manual_seed(0)
        AutoencoderTiny().save_pretrained(taesd_dir, safe_serialization=True)
    carrier = os.path.join(work, "carrier")
    if not os.path.exists(os.path.join(carrier, "model_index.json")):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                    layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                    attention_head_dim=8, norm_num_groups=32)
        vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(32,) * 4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            latent_channels=4, norm_num_groups=32, layers_per_block=1)
        text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                            num_attention_heads=4, projection_dim=32, max_position_embeddings=77,
                                            hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407,
                                            pad_token_id=49407))
        tokenizer = CLIPTokenizer.from_pretrained(os.path.join(REPO, "Tests/Fixtures/tiny-sd-a/tokenizer"),
                                                  local_files_only=True)
        scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
        StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                safety_checker=None, feature_extractor=None,
                                requires_safety_checker=False).save_pretrained(carrier, safe_serialization=True)
    return taesd_dir, carrier


def time_diffusers(taesd_dir, size, runs):
    from diffusers import AutoencoderTiny

    model = AutoencoderTiny.from_pretrained(taesd_dir, local_files_only=True).eval()
    latents = torch.randn((1, 4, size // 8, size // 8), generator=torch.Generator("cpu").manual_seed(0))
    times = []
    with torch.inference_mode():
        model.decode(latents)
        for _ in range(runs):
            t = time.perf_counter()
            model.decode(latents)
            times.append(time.perf_counter() - t)
    return times


def time_pocketsd(binary, model, size, runs, threads):
    times = []
    for i in range(runs):
        cmd = [binary, "generate", "-m", model, "-p", "a photo", "--steps", "1", "--seed", str(i), "--width", str(size),
               "--height", str(size), "--vae", "taesd", "--stats", "--json", "-o", model + f".{i}.png"]
        if threads:
            cmd += ["--threads", str(threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        phases = {p["name"]: p for p in json.loads(out)["phases"]}
        times.append(phases["vae decode"]["seconds"])
        os.remove(model + f".{i}.png")
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--pocketsd", default=os.path.join(REPO, ".build/release/pocketsd"))
    ap.add_argument("--work", default="/tmp/pocketsd-taesd-bench")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.size % 8 or not 64 <= args.size <= 4096:
        ap.error("--size must be a multiple of 8 from 64 to 4096")
    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    os.makedirs(args.work, exist_ok=True)
    print("building models…", file=sys.stderr)
    taesd_dir, carrier = build(args.work)
    rows = {}
    for weights in ("fp32", "int8"):
        model = os.path.join(args.work, f"carrier-{weights}.pdm")
        if not os.path.exists(model):
            subprocess.run([args.pocketsd, "convert", carrier, "-o", model, "--weights", weights, "--taesd", taesd_dir],
                           check=True, capture_output=True)
        print(f"timing pocketsd ({weights})…", file=sys.stderr)
        rows[f"pocketsd {weights}"] = time_pocketsd(args.pocketsd, model, args.size, args.runs, args.threads)
    print("timing diffusers…", file=sys.stderr)
    rows["diffusers fp32"] = time_diffusers(taesd_dir, args.size, args.runs)
    result = dict(cpu=cpu_name(), threads=threads, size=args.size, runs=args.runs, torch=torch.__version__,
                  median_seconds={k: statistics.median(v) for k, v in rows.items()},
                  seconds={k: v for k, v in rows.items()})
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"TAESD decode {args.size}x{args.size}, {result['cpu']}, {threads} threads, median of {args.runs}")
    print("| decoder | median s | min s | max s |")
    print("|---|---|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {statistics.median(v):.3f} | {min(v):.3f} | {max(v):.3f} |")


if __name__ == "__main__":
    main()
