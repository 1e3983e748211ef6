#!/usr/bin/env python3
"""Writes the full-size SD-Turbo architecture (SD 2.1: OpenCLIP ViT-H text tower as
CLIPTextModel, 23 layers, gelu; UNet with 1024-wide context, per-block heads of 64, linear
projections) with random weights as a diffusers folder, for benchmarks. Its scheduler is
SD-Turbo's (EulerDiscreteScheduler, trailing spacing, epsilon) and its tokenizer pads with "!".

    /work/venv/bin/python tools/make_sd_turbo_random.py [OUT_DIR] [--seed N] [--no-check] [--json]

OUT_DIR   default models/sd-turbo-random (gitignored), about 2.6 GB in fp16

Built by tools/make_sd15_random.py's `build` with the configs below swapped in (the configs of
stabilityai/sd-turbo), then the scheduler, tokenizer config and model index are rewritten.
Requirements: /work/venv; about 8 GB of free RAM.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_sd15_random as sd15  # noqa: E402

TEXT_ENCODER = dict(sd15.TEXT_ENCODER, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                    num_attention_heads=16, hidden_act="gelu", projection_dim=512)
UNET = dict(sd15.UNET, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
            sample_size=64)
SCHEDULER = {"_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "beta_start": 0.00085, "interpolation_type": "linear", "num_train_timesteps": 1000,
             "prediction_type": "epsilon", "steps_offset": 1, "timestep_spacing": "trailing", "trained_betas": None,
             "use_karras_sigmas": False}


def rewrite(path, update):
    with open(path) as f:
        obj = json.load(f)
    obj.update(update)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", default=os.path.join(sd15.REPO, "models", "sd-turbo-random"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    opts = ap.parse_args()
    sd15.TEXT_ENCODER, sd15.UNET = TEXT_ENCODER, UNET
    sd15.build(opts.out, opts.seed, fp32=False, variant=None)
    with open(os.path.join(opts.out, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(SCHEDULER, f, indent=2, sort_keys=True)
        f.write("\n")
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        rewrite(os.path.join(opts.out, "tokenizer", name), {"pad_token": "!"})
    rewrite(os.path.join(opts.out, "model_index.json"), {"scheduler": ["diffusers", "EulerDiscreteScheduler"]})
    if not opts.no_check:
        sd15.check(opts.out, None)
    if opts.json:
        print(json.dumps({"out": opts.out, "gigabytes": sd15.file_size_gb(opts.out)}))


if __name__ == "__main__":
    main()
