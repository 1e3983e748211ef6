#!/usr/bin/env python3
"""Times the reference stack (diffusers on CPU PyTorch, float32) phase by phase on a local
diffusers folder, for comparison with `pocketsd bench` on the same machine (docs/BENCHMARKS.md).

    /work/venv/bin/python tools/bench_diffusers.py [FOLDER] [--threads T] [--width 512 --height 512]
        [--unet-runs 2] [--vae-runs 1] [--json]

FOLDER        a diffusers Stable Diffusion or SDXL folder, default models/sd15-random
              (tools/make_sd15_random.py, tools/make_sdxl_random.py); loaded from disk only,
              never from a hub id
--threads T   torch.set_num_threads(T); default: all cores (as pocketsd)
--unet-runs   guided UNet steps (batch 2) to time; the first one is reported as such
--json        print one JSON object instead of the markdown table

Phases, each under torch.inference_mode():
  load           the three components with torch_dtype=float32 (fp16 files are upcast),
                 all resident at once as StableDiffusionPipeline holds them
  text encoder   batch 2 (negative + prompt, 77 tokens), median of 3 after one warm-up; for
                 SDXL both encoders (penultimate hidden states concatenated, the second's
                 projected pooled output), as StableDiffusionXLPipeline.encode_prompt
  UNet step      batch 2 at the latent size (64x64 for 512x512) plus the guidance combine;
                 for SDXL with the text_time conditions (pooled embeddings, size ids)
  VAE decode     one latent to a width x height image
Each phase's peak RSS is VmHWM from /proc/self/status after resetting it with
/proc/self/clear_refs (the same method as pocketsd); the whole-process peak is the largest of
those and resource.getrusage(RUSAGE_SELF).ru_maxrss (which the reset lowers too).

Environment: nothing is set globally here. The OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE
variables mentioned in the machine notes concern numpy's OpenBLAS; PyTorch's CPU kernels
use their own oneDNN/MKL-style code paths, so they do not affect these timings.
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def vm_hwm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def timed(fn, runs, warmup):
    if warmup:
        fn()
    times, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return times, cpu


def phase(name, runs_text, measured):
    times, cpu = measured
    # CPU time includes OpenMP's spin-waiting, so it is an upper bound on useful work.
    return {"name": name, "runs": runs_text, "seconds": times, "median_seconds": statistics.median(times),
            "min_seconds": min(times), "max_seconds": max(times), "median_cpu_seconds": statistics.median(cpu),
            "peak_rss_bytes": vm_hwm_bytes()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", nargs="?", default=os.path.join(REPO, "models", "sd15-random"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--unet-runs", type=int, default=2)
    ap.add_argument("--vae-runs", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not os.path.isfile(os.path.join(args.folder, "model_index.json")):
        sys.exit(f"bench_diffusers: {args.folder} is not a diffusers folder (no model_index.json)")

    import diffusers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.set_num_threads(args.threads)
    load_avg = os.getloadavg()
    phases = []

    reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    sub = lambda name: os.path.join(args.folder, name)  # noqa: E731

    def variant(component):
        # Folders written with fp16 variant names only (model.fp16.safetensors) need the variant.
        names = os.listdir(sub(component))
        has_plain = any(n.endswith((".safetensors", ".bin")) and ".fp16" not in n for n in names)
        return None if has_plain or not any(".fp16" in n for n in names) else "fp16"

    def load(cls, component):
        return cls.from_pretrained(sub(component), torch_dtype=torch.float32, variant=variant(component)).eval()

    with open(sub("model_index.json")) as f:
        sdxl = "XL" in json.load(f).get("_class_name", "")
    tokenizer = CLIPTokenizer.from_pretrained(sub("tokenizer"))
    text_encoder = load(CLIPTextModel, "text_encoder")
    if sdxl:
        tokenizer_2 = CLIPTokenizer.from_pretrained(sub("tokenizer_2"))
        text_encoder_2 = load(CLIPTextModelWithProjection, "text_encoder_2")
    unet = load(UNet2DConditionModel, "unet")
    vae = load(AutoencoderKL, "vae")
    phases.append(phase("load (fp16 files -> fp32)", "1", ([time.perf_counter() - t0], [time.process_time() - c0])))

    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    h, w = args.height // factor, args.width // factor
    with torch.inference_mode():
        prompts = ["", "a photograph of an astronaut riding a horse"]

        def token_ids(tok):
            return tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                       return_tensors="pt").input_ids

        ids = token_ids(tokenizer)
        ids_2 = token_ids(tokenizer_2) if sdxl else None
        reset_peak()
        holder = {}

        def encode():
            if sdxl:
                # encode_prompt's rule: each encoder's penultimate hidden states, concatenated
                # per token; the pooled projection from the second.
                first = text_encoder(ids, output_hidden_states=True)
                second = text_encoder_2(ids_2, output_hidden_states=True)
                holder["context"] = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
                holder["pooled"] = second.text_embeds
            else:
                holder["context"] = text_encoder(ids)[0]

        phases.append(phase("text encoder (batch 2)", "3 after warm-up", timed(encode, 3, warmup=True)))
        context = holder["context"]

        generator = torch.Generator().manual_seed(0)
        latents = torch.randn((1, unet.config.in_channels, h, w), generator=generator)
        timestep = torch.tensor(981)
        added = None
        if sdxl:
            # add_time_ids: original size, crop top-left, target size (diffusers' defaults).
            size_ids = torch.tensor([[args.height, args.width, 0, 0, args.height, args.width]] * 2, dtype=torch.float32)
            added = {"text_embeds": holder["pooled"], "time_ids": size_ids}

        def unet_step():
            noise = unet(torch.cat([latents, latents]), timestep, encoder_hidden_states=context,
                         added_cond_kwargs=added).sample
            uncond, cond = noise.chunk(2)
            holder["noise"] = uncond + 7.5 * (cond - uncond)

        reset_peak()
        measured = timed(unet_step, args.unet_runs, warmup=False)
        first = measured[0][0]
        runs = "1 (first)" if args.unet_runs == 1 else f"{args.unet_runs}, first {first:.2f} s"
        phases.append(phase("UNet step, guided (batch 2)", runs, measured))
        assert torch.isfinite(holder["noise"]).all()

        def decode():
            holder["image"] = vae.decode(latents / vae.config.scaling_factor).sample

        reset_peak()
        phases.append(phase(f"VAE decode {args.width}x{args.height}", str(args.vae_runs),
                            timed(decode, args.vae_runs, warmup=False)))
        assert torch.isfinite(holder["image"]).all()

    result = {
        "tool": "diffusers", "sdxl": sdxl, "diffusers": diffusers.__version__, "torch": torch.__version__, "folder": args.folder, "dtype": "float32",
        "threads": torch.get_num_threads(), "width": args.width, "height": args.height,
        "load_average": list(load_avg), "load_average_end": list(os.getloadavg()), "phases": phases,
        # ru_maxrss follows the same high-water mark that reset_peak() lowers, so take the
        # phases' peaks too.
        "peak_rss_bytes": max([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024]
                              + [p["peak_rss_bytes"] for p in phases]),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"diffusers {result['diffusers']} (torch {result['torch']}) fp32, {result['threads']} threads, {args.width}x{args.height}, "
          f"load average {' '.join(f'{x:.2f}' for x in load_avg)} at start\n")
    print("| phase | runs | median s | min s | max s | CPU s (median) | peak RSS |")
    print("|---|---|--:|--:|--:|--:|--:|")
    for p in phases:
        print(f"| {p['name']} | {p['runs']} | {p['median_seconds']:.2f} | {p['min_seconds']:.2f} | "
              f"{p['max_seconds']:.2f} | {p['median_cpu_seconds']:.2f} | {p['peak_rss_bytes'] / 2**30:.2f} GiB |")
    print(f"| whole process | | | | | | {result['peak_rss_bytes'] / 2**30:.2f} GiB |")


if __name__ == "__main__":
    main()
