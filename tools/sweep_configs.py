#!/usr/bin/env python3
"""Randomised end-to-end sweep: tiny random-weight diffusers models of many shapes, run through
diffusers (CPU fp32) and through `pocketsd convert` + `pocketsd generate`, compared.

    /work/venv/bin/python tools/sweep_configs.py [--cases N] [--seed S] [--only K[,K...]]
        [--exotic P] [--absent P] [--bin PATH] [--keep DIR] [--json] [--verbose]
    /work/venv/bin/python tools/sweep_configs.py --error-paths [--bin PATH] [--json]

For each case K (0 <= K < N; case K depends only on (S, K, --exotic, --absent), so
`--only K` with the same flags remakes it alone; --keep DIR keeps its folder and files):
  1. draws a family and its knobs:
       sd1    CLIPTextModel padding with <|endoftext|>, epsilon, conv or linear proj_in
       sd2    OpenCLIP-like: "!" padding (id 0), gelu, v_prediction or epsilon, linear proj_in,
              upcast_attention, per-block attention_head_dim
       turbo  SD-like with EulerDiscreteScheduler trailing (stored), 1/2/4 steps, guidance 0
       lcm    UNet with time_cond_proj_dim and a stored LCMScheduler (original_inference_steps),
              guidance 1 or 1.5 (w = guidance - 1 goes to the UNet; no unconditional batch)
       sdxl   two text encoders (tokenizer_2 pads with "!"), text_time additions,
              transformer_layers_per_block lists, non-square sizes, original/crop/target sizes,
              force_zeros_for_empty_prompt true/false, no negative vs an explicit "" negative
     plus: 2-4 UNet blocks, layers_per_block 1-2, head counts (int or per block), cross-attention
     width, sample_size, VAE depth (scale 2/4/8), the stored scheduler class and its config
     (timestep_spacing, steps_offset, rescale_betas_zero_snr, karras, DPM order ...), sometimes a
     --scheduler override (diffusers: <Class>.from_config(stored config, **kind kwargs), as
     tools/make_goldens.py), --prediction-type override, guidance_rescale, negative prompts,
     batches (several prompts, --images) in either --seed-mode, a TAESD (convert --taesd,
     generate --vae taesd; diffusers: pipe.vae = the AutoencoderTiny).
  2. writes the diffusers folder (fp32 safetensors, vocab.json/merges.txt from
     Tests/Fixtures/tiny-sd-a/tokenizer, model_index.json) into a temp dir;
  3. runs diffusers' StableDiffusionPipeline / StableDiffusionXLPipeline with
     generator=torch.Generator("cpu").manual_seed(seed) (a list of seed+i generators for
     --seed-mode per-image), output_type="np"; the final latents are taken in
     callback_on_step_end at the last step (what output_type="latent" returns);
  4. `pocketsd convert FOLDER -o m.pdm --weights fp32 [--taesd DIR]` and `pocketsd generate
     ... --threads 1 --precision f32 --save-latents l.npy`;
  5. compares: latents relative RMS <= 1e-3 and every PNG within +-1 of
     (image*255).round().astype(uint8).

--exotic P gives a fraction P of the cases one rarely used setting (EXOTIC: exponential or
Lu-lambda sigmas, cosine betas, zero-SNR with epsilon, flip_sin_to_cos, mid_block_type null,
VAE without quant convs, SDXL latents_mean ...): pocketsd must match diffusers or refuse it.
--error-paths instead mutates one valid folder (missing/truncated/mis-shaped files, unsupported
classes and values) and requires success or a one-line error with exit 1 or 2 from convert and
generate, never a signal. ERROR marks a case diffusers itself cannot run (not counted as FAIL
of pocketsd, but the exit status is nonzero).

A case whose config pocketsd refuses with a one-line error and a nonzero exit (no signal) is
reported as REJECT (not a failure: listed for review); a crash, a multi-line error, a missing
output or a mismatch is FAIL.

One line per case on stdout (stderr with --json, which prints the summary as JSON on stdout):
  <id> <PASS|FAIL|REJECT> rel=<latents rel RMS> img=<max abs diff> <config summary> [reason]
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TOKENIZER_FILES = os.path.join(REPO, "Tests", "Fixtures", "tiny-sd-a", "tokenizer")
DEFAULT_BIN = os.path.join(REPO, ".build", "release", "pocketsd")  # tools/build.sh

PROMPTS = [
    "A photo of an astronaut, riding a horse on Mars!",
    "a red cube (on a table); 3 cats -- sleeping?!",
    "Oil painting: a lighthouse at dusk, waves & seagulls...",
    "",
    "café naïve résumé, 東京 night – neon \u2728",
    "a very long prompt, " + " ".join(f"token{i} and word{i}," for i in range(40)),
    "UPPER lower MiXeD   spaces\tand\ttabs",
    "don't stop! it's 100% (really) 3.14 #tag @user",
]
NEGATIVES = ["blurry, low quality (ugly)!", "lowres; bad anatomy...", ""]

SCHEDULER_CLASSES = {
    "pndm": "PNDMScheduler", "ddim": "DDIMScheduler", "lms": "LMSDiscreteScheduler",
    "euler": "EulerDiscreteScheduler", "euler-a": "EulerAncestralDiscreteScheduler",
    "dpm++2m": "DPMSolverMultistepScheduler", "dpm++2m-karras": "DPMSolverMultistepScheduler",
    "lcm": "LCMScheduler",
}
KIND_KWARGS = {"dpm++2m-karras": {"use_karras_sigmas": True}}
# What pocketsd's named kinds force (docs/SCHEDULERS.md: a kind fixes what its AUTOMATIC1111
# name implies), where diffusers' Class.from_config would keep the stored value. An intended
# difference: the reference applies it too, and the case notes it.
_PLAIN = {"use_exponential_sigmas": False, "use_beta_sigmas": False}
_DPM = {**_PLAIN, "use_lu_lambdas": False, "use_flow_sigmas": False, "solver_order": 2, "algorithm_type": "dpmsolver++"}
KIND_FORCED = {"lms": {"use_karras_sigmas": False, **_PLAIN}, "euler": {"use_karras_sigmas": False, **_PLAIN},
               "dpm++2m": {"use_karras_sigmas": False, **_DPM}, "dpm++2m-karras": {"use_karras_sigmas": True, **_DPM}}
CLASS_KIND = {"PNDMScheduler": "pndm", "DDIMScheduler": "ddim", "LMSDiscreteScheduler": "lms",
              "EulerDiscreteScheduler": "euler", "EulerAncestralDiscreteScheduler": "euler-a",
              "DPMSolverMultistepScheduler": "dpm++2m", "LCMScheduler": "lcm"}
SD_BASE = {"beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
           "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
           "trained_betas": None}
SPECIAL = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}


# ----------------------------------------------------------------------------------------------
# Drawing a case

def divisors_heads(channels, rng, choices=(1, 2, 4, 8)):
    ok = [h for h in choices if channels % h == 0 and channels // h >= 2]
    return rng.choice(ok)


def draw_text(rng, pad_bang, hidden=None, act=None):
    hidden = hidden or rng.choice([16, 24, 32])
    return dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                pad_token_id=0 if pad_bang else 49407, hidden_size=hidden,
                intermediate_size=rng.choice([24, 37, 48, 64]), num_hidden_layers=rng.choice([1, 2, 3]),
                num_attention_heads=divisors_heads(hidden, rng, (1, 2, 4)),
                hidden_act=act or rng.choice(["quick_gelu", "gelu"]), projection_dim=rng.choice([16, 20, 32]),
                layer_norm_eps=1e-5)


def draw_unet(rng, family, cross_dim):
    n = rng.choice([2, 2, 3, 3, 4])
    groups = rng.choice([8, 16]) if family != "sd2" else rng.choice([8, 16, 32])
    mult = [1, 2, 2, 4][:n] if rng.random() < 0.5 else [1, 2, 3, 4][:n]
    base = groups * rng.choice([1, 2]) if groups < 32 else 32
    channels = [base * m for m in mult]
    channels = [c if c % groups == 0 else groups * ((c + groups - 1) // groups) for c in channels]
    if family == "sdxl":
        # SDXL: the first block plain, the others cross-attention.
        attn = [False] + [True] * (n - 1)
    else:
        attn = [rng.random() < 0.8 for _ in range(n)]
        if not any(attn):
            attn[0] = True
        if rng.random() < 0.6:
            attn[-1] = False  # SD's last down block has no attention
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn]
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)]
    per_block = family in ("sd2", "sdxl") or rng.random() < 0.3
    if per_block:
        heads = [divisors_heads(c, rng) for c in channels]
    else:
        heads = divisors_heads(min(channels), rng)
    cfg = dict(sample_size=rng.choice([8, 16]), in_channels=4, out_channels=4, block_out_channels=tuple(channels),
               layers_per_block=rng.choice([1, 2]), down_block_types=tuple(down), up_block_types=tuple(up),
               cross_attention_dim=cross_dim, attention_head_dim=tuple(heads) if per_block else heads,
               norm_num_groups=groups)
    if family == "sd1":
        cfg["use_linear_projection"] = rng.random() < 0.3
    else:
        cfg["use_linear_projection"] = family in ("sd2", "sdxl") or rng.random() < 0.5
    if family == "sd2" or rng.random() < 0.15:
        cfg["upcast_attention"] = rng.random() < 0.7
    if family == "sdxl" or rng.random() < 0.15:
        cfg["transformer_layers_per_block"] = tuple(rng.choice([1, 1, 2]) for _ in range(n)) \
            if rng.random() < 0.7 else rng.choice([1, 2])
    return cfg


def draw_vae(rng, family):
    levels = rng.choice([2, 2, 3, 3, 4])
    groups = rng.choice([8, 16])
    ch = [groups * rng.choice([1, 2])]
    for _ in range(levels - 1):
        ch.append(min(ch[-1] * 2, 32) if rng.random() < 0.5 else ch[-1])
    cfg = dict(in_channels=3, out_channels=3, block_out_channels=tuple(ch),
               down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
               latent_channels=4, norm_num_groups=groups, layers_per_block=rng.choice([1, 2]), sample_size=64,
               scaling_factor=0.13025 if family == "sdxl" else 0.18215)
    if family == "sdxl":
        cfg["force_upcast"] = True
    return cfg


def draw_scheduler(rng, family, prediction):
    """The stored scheduler config (a dict with _class_name)."""
    if family == "turbo":
        return {**SD_BASE, "_class_name": "EulerDiscreteScheduler", "timestep_spacing": "trailing",
                "prediction_type": prediction, "interpolation_type": "linear", "use_karras_sigmas": False}
    if family == "lcm":
        return {**SD_BASE, "_class_name": "LCMScheduler", "original_inference_steps": rng.choice([50, 25, 8, 100]),
                "timestep_scaling": 10.0, "set_alpha_to_one": True, "prediction_type": prediction,
                "timestep_spacing": rng.choice(["leading", "leading", "linspace", "trailing"])}
    cls = rng.choice(["PNDMScheduler", "DDIMScheduler", "LMSDiscreteScheduler", "EulerDiscreteScheduler",
                      "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler"])
    if family == "sdxl" and rng.random() < 0.5:
        cls = rng.choice(["EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler"])
    cfg = {**SD_BASE, "_class_name": cls, "prediction_type": prediction}
    r = rng.random()
    if r < 0.25:
        pass  # no timestep_spacing key: the class default
    else:
        cfg["timestep_spacing"] = rng.choice(["leading", "linspace", "trailing"])
    cfg["steps_offset"] = rng.choice([0, 1, 1])
    if rng.random() < 0.15:
        cfg.update(beta_schedule="linear", beta_start=0.0001, beta_end=0.02)
    if prediction == "v_prediction" and rng.random() < 0.3 and cls != "PNDMScheduler" and cls != "LMSDiscreteScheduler":
        cfg["rescale_betas_zero_snr"] = True
        cfg["timestep_spacing"] = "trailing"
    if cls == "DDIMScheduler":
        cfg["set_alpha_to_one"] = rng.choice([False, True])
        if rng.random() < 0.2:
            cfg["clip_sample"] = True
    if cls in ("EulerDiscreteScheduler", "LMSDiscreteScheduler", "DPMSolverMultistepScheduler") and rng.random() < 0.3:
        cfg["use_karras_sigmas"] = True
    if cls == "EulerDiscreteScheduler" and rng.random() < 0.2:
        cfg["final_sigmas_type"] = "sigma_min"
    if cls == "DPMSolverMultistepScheduler":
        if rng.random() < 0.3:
            cfg["solver_order"] = rng.choice([1, 3])
        if rng.random() < 0.2:
            cfg["solver_type"] = "heun"
        if rng.random() < 0.2:
            cfg["lower_order_final"] = False
        if rng.random() < 0.2:
            cfg["euler_at_final"] = True
        if rng.random() < 0.2:
            cfg["final_sigmas_type"] = "sigma_min"
    return cfg


# Rarely used settings: pocketsd must either match diffusers or refuse them with a one-line
# error. (target, key, value, condition on the case) -- applied to one case in --exotic.
EXOTIC = [
    ("scheduler", "use_exponential_sigmas", True, lambda c: c["kind"] in ("euler", "lms", "dpm++2m") and not c["karras"]),
    ("scheduler", "use_beta_sigmas", True, lambda c: c["kind"] in ("euler", "lms", "dpm++2m") and not c["karras"]),
    ("scheduler", "use_lu_lambdas", True, lambda c: c["kind"] == "dpm++2m" and not c["karras"]),
    ("scheduler", "sigma_min", 0.1, lambda c: c["kind"] == "euler" and c["karras"]),
    ("scheduler", "sigma_max", 8.0, lambda c: c["kind"] == "euler" and c["karras"]),
    ("scheduler", "beta_schedule", "squaredcos_cap_v2", lambda c: True),
    ("scheduler", "prediction_type", "sample", lambda c: c["kind"] in ("ddim", "euler", "dpm++2m", "lcm", "euler-a", "lms")),
    ("scheduler", "trained_betas", "linspace", lambda c: True),
    ("scheduler", "thresholding", True, lambda c: c["kind"] in ("ddim", "dpm++2m")),
    ("scheduler", "timestep_type", "continuous", lambda c: c["kind"] == "euler"),
    ("scheduler", "interpolation_type", "log_linear", lambda c: c["kind"] == "euler"),
    ("scheduler", "algorithm_type", "sde-dpmsolver++", lambda c: c["kind"] == "dpm++2m"),
    ("scheduler", "algorithm_type", "dpmsolver", lambda c: c["kind"] == "dpm++2m"),
    ("scheduler", "rescale_betas_zero_snr", True, lambda c: c["kind"] in ("ddim", "euler", "euler-a", "dpm++2m", "lcm")),
    ("scheduler", "clip_sample_range", 0.5, lambda c: c["kind"] == "ddim"),
    ("scheduler", "lambda_min_clipped", -5.1, lambda c: c["kind"] == "dpm++2m"),
    ("scheduler", "timestep_scaling", 5.0, lambda c: c["kind"] == "lcm"),
    ("scheduler", "num_train_timesteps", 500, lambda c: True),
    ("unet", "flip_sin_to_cos", False, lambda c: True),
    ("unet", "freq_shift", 1, lambda c: True),
    ("unet", "center_input_sample", True, lambda c: True),
    ("unet", "downsample_padding", 0, lambda c: True),
    ("unet", "norm_eps", 1e-6, lambda c: True),
    ("unet", "time_embedding_dim", 48, lambda c: True),
    ("unet", "mid_block_type", None, lambda c: True),
    ("unet", "mid_block_scale_factor", 0.5, lambda c: True),
    ("unet", "layers_per_block", "list", lambda c: True),
    ("unet", "only_cross_attention", True, lambda c: True),
    ("unet", "resnet_time_scale_shift", "scale_shift", lambda c: True),
    ("unet", "class_embed_type", "timestep", lambda c: True),
    ("unet", "time_embedding_act_fn", "silu", lambda c: True),
    ("unet", "conv_in_kernel", 5, lambda c: True),
    ("unet", "act_fn", "mish", lambda c: True),
    ("unet", "attention_type", "gated", lambda c: False),
    ("unet", "cross_attention_norm", "layer_norm", lambda c: True),
    ("vae", "use_quant_conv", False, lambda c: True),
    ("vae", "use_post_quant_conv", False, lambda c: True),
    ("vae", "mid_block_add_attention", False, lambda c: True),
    ("vae", "scaling_factor", 0.5, lambda c: True),
    ("vae", "shift_factor", 0.1, lambda c: True),
    ("vae", "latents_mean", [0.1, -0.2, 0.3, 0.0], lambda c: True),
    ("vae", "latent_channels", 8, lambda c: False),
    ("text", "layer_norm_eps", 1e-6, lambda c: True),
    ("text", "hidden_act", "gelu_new", lambda c: True),
    ("text", "eos_token_id", 2, lambda c: True),
    ("text", "num_hidden_layers", 5, lambda c: True),
]


def apply_exotic(c, rng):
    kind = c["override"] or CLASS_KIND[c["scheduler"]["_class_name"]]
    info = dict(kind=kind, karras=bool(c["scheduler"].get("use_karras_sigmas")) or kind == "dpm++2m-karras")
    options = [e for e in EXOTIC if e[3](info)]
    target, key, value, _ = rng.choice(options)
    if target == "scheduler":
        sched = c["scheduler"]
        if key == "trained_betas":
            sched["trained_betas"] = [float(x) for x in np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2]
        elif key == "beta_schedule" and value == "squaredcos_cap_v2":
            sched.update(beta_schedule=value)
        elif key == "rescale_betas_zero_snr":
            sched.update(rescale_betas_zero_snr=True, timestep_spacing="trailing")
        elif key == "use_lu_lambdas":
            sched.update(use_lu_lambdas=True)
        elif key in ("sigma_min", "sigma_max"):
            sched.update(sigma_min=0.1, sigma_max=8.0)
        elif key == "num_train_timesteps":
            sched["num_train_timesteps"] = value
        else:
            sched[key] = value
        if c["override"] and key == "prediction_type":
            pass
    elif target == "unet":
        u = c["unet"]
        if key == "layers_per_block":
            u[key] = tuple(rng.choice([1, 2]) for _ in u["block_out_channels"])
        elif key == "only_cross_attention":
            u[key] = tuple(False for _ in u["block_out_channels"])
        elif key == "class_embed_type":
            u[key] = value
        else:
            u[key] = value
    elif target == "vae":
        if key == "latents_mean":
            c["vae"]["latents_mean"] = value
            c["vae"]["latents_std"] = [0.9, 1.1, 1.0, 0.8]
        else:
            c["vae"][key] = value
    else:
        c["text"][key] = value
    c["exotic"] = f"{target}.{key}={'list' if isinstance(value, list) else value}"


def draw_case(seed, index, exotic_rate=0.0, absent_rate=0.15):
    rng = random.Random(f"{seed}-{index}")
    family = rng.choice(["sd1", "sd1", "sd2", "sd2", "turbo", "lcm", "sdxl", "sdxl"])
    c = dict(id=index, family=family)
    prediction = "epsilon"
    if family == "sd2":
        prediction = rng.choice(["v_prediction", "v_prediction", "epsilon"])
    elif family == "turbo":
        prediction = rng.choice(["epsilon", "epsilon", "v_prediction"])
    pad_bang = family in ("sd2",) or (family == "turbo" and rng.random() < 0.5)
    if family == "sdxl":
        c["text"] = draw_text(rng, False)
        c["text_2"] = draw_text(rng, True, act="gelu")
        cross = c["text"]["hidden_size"] + c["text_2"]["hidden_size"]
    else:
        c["text"] = draw_text(rng, pad_bang, act="gelu" if pad_bang else None)
        cross = c["text"]["hidden_size"]
    c["pad_bang"] = pad_bang
    c["unet"] = draw_unet(rng, family, cross)
    if family == "lcm":
        c["unet"]["time_cond_proj_dim"] = rng.choice([16, 32, 256])
    if family == "sdxl":
        atd = rng.choice([4, 8])
        c["unet"].update(addition_embed_type="text_time", addition_time_embed_dim=atd,
                         projection_class_embeddings_input_dim=6 * atd + c["text_2"]["projection_dim"])
        c["force_zeros"] = rng.random() < 0.8
    c["vae"] = draw_vae(rng, family)
    c["scheduler"] = draw_scheduler(rng, family, prediction)
    vsf = 2 ** (len(c["vae"]["block_out_channels"]) - 1)
    c["vae_scale"] = vsf

    # Request.
    if family == "turbo":
        c["steps"], c["guidance"] = rng.choice([1, 2, 4]), 0.0
    elif family == "lcm":
        c["steps"], c["guidance"] = rng.choice([1, 2, 4]), rng.choice([1.0, 1.5])
    else:
        c["steps"] = rng.choice([1, 2, 3, 4, 5, 6])
        c["guidance"] = rng.choice([0.0, 1.0, 3.5, 5.0, 7.5, 7.5])
    if family == "sdxl" and c["scheduler"]["_class_name"] == "EulerAncestralDiscreteScheduler" and rng.random() < 0.4:
        c["scheduler"]["timestep_spacing"] = "trailing"  # SDXL-Turbo's
        c["steps"], c["guidance"] = rng.choice([1, 2]), 0.0
    c["override"] = None
    if family in ("sd1", "sd2", "sdxl") and rng.random() < 0.45:
        c["override"] = rng.choice(list(SCHEDULER_CLASSES))
    if family == "sd1" and c["override"] is None and rng.random() < 0.1:
        c["override"] = "lcm"
    kind = c["override"] or CLASS_KIND[c["scheduler"]["_class_name"]]
    if kind == "lcm":
        c["steps"] = min(c["steps"], c["scheduler"].get("original_inference_steps", 50))
    c["prediction_override"] = None
    if family in ("sd1", "sd2") and rng.random() < 0.1:
        c["prediction_override"] = "v_prediction" if prediction == "epsilon" else "epsilon"
    c["rescale"] = 0.0
    if c["guidance"] > 1 and family != "lcm" and rng.random() < 0.25:
        c["rescale"] = rng.choice([0.3, 0.7, 1.0])
    # Prompts and batch.
    np_ = 2 if rng.random() < 0.15 else 1
    c["prompts"] = [rng.choice(PROMPTS) for _ in range(np_)]
    c["images"] = 2 if rng.random() < 0.15 else 1
    c["seed_mode"] = rng.choice(["per-image", "batch"])
    c["negative"] = None
    if rng.random() < 0.3:
        c["negative"] = rng.choice(NEGATIVES)
    c["seed"] = rng.choice([0, 1, 7, 42, 1234, 2 ** 32 + 5, rng.randrange(2 ** 31)])
    # Size: default (None) or explicit multiples of 8 (latent multiple of nothing in particular).
    if rng.random() < 0.2 and family != "sdxl":
        c["width"] = c["height"] = None
    else:
        c["width"] = rng.choice([16, 24, 32, 40, 48, 64]) if vsf <= 4 else rng.choice([32, 48, 64, 80])
        c["height"] = rng.choice([16, 24, 32, 40, 48, 64]) if vsf <= 4 else rng.choice([32, 48, 64, 80])
        c["width"] = max(c["width"], 8 * 1)
    if family == "sdxl":
        c["sizes"] = {}
        if rng.random() < 0.4:
            c["sizes"]["original_size"] = (rng.choice([64, 96, 128]), rng.choice([48, 64, 128]))  # (h, w)
        if rng.random() < 0.3:
            c["sizes"]["crops_coords_top_left"] = (rng.choice([0, 4, 8]), rng.choice([0, 12]))  # (top, left)
        if rng.random() < 0.3:
            c["sizes"]["target_size"] = (rng.choice([48, 80]), rng.choice([64, 32]))  # (h, w)
    c["taesd"] = family in ("sd1", "sd2", "turbo", "lcm") and rng.random() < 0.15
    # An SD 1.x-like model as one CompVis/LDM single-file checkpoint (tools/diffusers_to_ldm.py),
    # converted with --config FOLDER (shapes alone cannot tell the head counts).
    # (Its own generator, so the draws above and below stay those of earlier sweeps.)
    c["single_file"] = family in ("sd1", "turbo") and not pad_bang and random.Random(f"{seed}-{index}-single").random() < 0.2
    # Keys a file may lack (the class default then applies; StableDiffusionPipeline rewrites
    # the model's own steps_offset/clip_sample but not a named kind's): own generator, so the
    # other draws stay those of earlier sweeps.
    absent = random.Random(f"{seed}-{index}-absent")
    for key in ("steps_offset", "clip_sample", "timestep_spacing", "set_alpha_to_one"):
        if key in c["scheduler"] and absent.random() < absent_rate:
            del c["scheduler"][key]
    c["exotic"] = None
    if rng.random() < exotic_rate:
        apply_exotic(c, rng)
    return c


def summary(c):
    u = c["unet"]
    s = c["scheduler"]
    kind = c["override"] or CLASS_KIND[s["_class_name"]]
    heads = u["attention_head_dim"]
    parts = [c["family"], f"blocks={list(u['block_out_channels'])}",
             "attn=" + "".join("x" if t.startswith("Cross") else "." for t in u["down_block_types"]),
             f"lpb={u['layers_per_block']}", f"heads={list(heads) if isinstance(heads, tuple) else heads}",
             "lin" if u.get("use_linear_projection") else "conv"]
    if u.get("upcast_attention"):
        parts.append("upcast")
    if "transformer_layers_per_block" in u:
        t = u["transformer_layers_per_block"]
        parts.append(f"tlpb={list(t) if isinstance(t, tuple) else t}")
    if u.get("time_cond_proj_dim"):
        parts.append(f"tcond={u['time_cond_proj_dim']}")
    parts.append(f"x{len(c['text'])and c['text']['hidden_size']}")
    parts.append(f"vae{c['vae_scale']}")
    sched = CLASS_KIND[s["_class_name"]] + ("" if not c["override"] else f"->{c['override']}")
    missing = [k for k in ("steps_offset", "clip_sample") if k not in s]
    extra = [k + "=" + str(s[k]) for k in ("timestep_spacing", "steps_offset", "rescale_betas_zero_snr",
                                          "use_karras_sigmas", "solver_order", "solver_type", "lower_order_final",
                                          "euler_at_final", "final_sigmas_type", "set_alpha_to_one", "clip_sample",
                                          "original_inference_steps")
             if k in s and not (k in SD_BASE and s[k] == SD_BASE[k])]
    if s.get("beta_schedule") == "linear":
        extra.append("linear-betas")
    extra += [f"no-{k}" for k in missing]
    parts.append(f"sched={sched}[{s['prediction_type'][0]}{',' if extra else ''}{','.join(extra)}]")
    if c["prediction_override"]:
        parts.append(f"--pred={c['prediction_override']}")
    parts.append(f"steps={c['steps']} g={c['guidance']}")
    if c["rescale"]:
        parts.append(f"rescale={c['rescale']}")
    parts.append(f"size={c['width']}x{c['height']}")
    if len(c["prompts"]) > 1 or c["images"] > 1:
        parts.append(f"batch={len(c['prompts'])}x{c['images']}/{c['seed_mode']}")
    if c["negative"] is not None:
        parts.append(f"neg={c['negative'][:8]!r}")
    if c.get("sizes"):
        parts.append("sizes=" + ",".join(f"{k.split('_')[0]}{v}" for k, v in c["sizes"].items()))
    if c["family"] == "sdxl" and not c["force_zeros"]:
        parts.append("no-force-zeros")
    if c["taesd"]:
        parts.append("taesd")
    if c.get("single_file"):
        parts.append("single-file")
    if c.get("exotic"):
        parts.append("EXOTIC:" + c["exotic"])
    parts.append(f"seed={c['seed']}")
    return " ".join(parts)


# ----------------------------------------------------------------------------------------------
# Building the folder

def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def write_tokenizer(folder, pad_bang):
    os.makedirs(folder, exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(TOKENIZER_FILES, name), os.path.join(folder, name))
    special = dict(SPECIAL, pad_token="!" if pad_bang else "<|endoftext|>")
    write_json(os.path.join(folder, "tokenizer_config.json"),
               {**special, "model_max_length": 77, "tokenizer_class": "CLIPTokenizer"})
    write_json(os.path.join(folder, "special_tokens_map.json"), special)


def build(c, folder):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    base = 1000 + c["id"] * 10
    torch.manual_seed(base)
    text = CLIPTextModel(CLIPTextConfig(**c["text"])).eval()
    text.save_pretrained(os.path.join(folder, "text_encoder"))
    write_tokenizer(os.path.join(folder, "tokenizer"), c["pad_bang"])
    comps = dict(text_encoder=text, tokenizer=CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer")))
    if c["family"] == "sdxl":
        torch.manual_seed(base + 1)
        text2 = CLIPTextModelWithProjection(CLIPTextConfig(**c["text_2"])).eval()
        text2.save_pretrained(os.path.join(folder, "text_encoder_2"))
        write_tokenizer(os.path.join(folder, "tokenizer_2"), True)
        comps.update(text_encoder_2=text2,
                     tokenizer_2=CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer_2")))
    torch.manual_seed(base + 2)
    unet = UNet2DConditionModel(**c["unet"]).eval()
    unet.save_pretrained(os.path.join(folder, "unet"))
    torch.manual_seed(base + 3)
    vae = AutoencoderKL(**c["vae"]).eval()
    vae.save_pretrained(os.path.join(folder, "vae"))
    write_json(os.path.join(folder, "scheduler", "scheduler_config.json"), c["scheduler"])
    comps.update(unet=unet, vae=vae)
    cls = c["scheduler"]["_class_name"]
    if c["family"] == "sdxl":
        index = {"_class_name": "StableDiffusionXLPipeline", "force_zeros_for_empty_prompt": c["force_zeros"],
                 "scheduler": ["diffusers", cls], "text_encoder": ["transformers", "CLIPTextModel"],
                 "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
                 "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
                 "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}
    else:
        index = {"_class_name": "StableDiffusionPipeline", "feature_extractor": [None, None],
                 "requires_safety_checker": False, "safety_checker": [None, None], "scheduler": ["diffusers", cls],
                 "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
                 "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}
    write_json(os.path.join(folder, "model_index.json"), index)
    if c["taesd"]:
        comps["taesd"] = build_taesd(c, os.path.join(os.path.dirname(folder), "taesd"), base + 4)
    return comps


def build_taesd(c, folder, seed):
    """A tiny AutoencoderTiny whose up-sampling matches the VAE's, output spread as in
    tools/make_taesd_goldens.py so 8-bit images do not saturate."""
    import torch
    from diffusers import AutoencoderTiny

    levels = len(c["vae"]["block_out_channels"])
    cfg = dict(in_channels=3, out_channels=3, encoder_block_out_channels=(16,) * levels,
               decoder_block_out_channels=(16,) * levels, num_encoder_blocks=(1,) * levels,
               num_decoder_blocks=(1,) * levels, latent_channels=4, upsampling_scaling_factor=2, act_fn="relu",
               upsample_fn="nearest", scaling_factor=1.0)
    sys.path.insert(0, HERE)
    from make_taesd_goldens import spread_decoder_output

    torch.manual_seed(seed)
    taesd = AutoencoderTiny(**cfg).eval()
    spread_decoder_output(taesd)
    taesd.save_pretrained(folder, safe_serialization=True)
    return taesd


# ----------------------------------------------------------------------------------------------
# diffusers

def reference(c, comps):
    import diffusers
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    # The pipeline is built with the model's own scheduler (its constructor may rewrite the
    # config: StableDiffusionPipeline's steps_offset/clip_sample), then a named kind replaces
    # it as tools/make_goldens.py does: pipe.scheduler = Class.from_config(pipe.scheduler.config).
    # --prediction-type: the stored config with that prediction type (make_sd2_goldens.py's
    # sd2-eps-override convention).
    stored_cls = getattr(diffusers, c["scheduler"]["_class_name"])
    stored = dict(c["scheduler"])
    if c["prediction_override"]:
        stored["prediction_type"] = c["prediction_override"]
    sched = stored_cls.from_config(stored)
    notes = []
    pipe = None
    if c["family"] == "sdxl":
        pipe = StableDiffusionXLPipeline(vae=comps["vae"], text_encoder=comps["text_encoder"],
                                         text_encoder_2=comps["text_encoder_2"], tokenizer=comps["tokenizer"],
                                         tokenizer_2=comps["tokenizer_2"], unet=comps["unet"], scheduler=sched,
                                         force_zeros_for_empty_prompt=c["force_zeros"], add_watermarker=False)
    else:
        pipe = StableDiffusionPipeline(vae=comps["vae"], text_encoder=comps["text_encoder"],
                                       tokenizer=comps["tokenizer"], unet=comps["unet"], scheduler=sched,
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    sched = pipe.scheduler
    if c["override"]:
        cls = getattr(diffusers, SCHEDULER_CLASSES[c["override"]])
        sched = cls.from_config(sched.config, **KIND_KWARGS.get(c["override"], {}))
        forced = {k: v for k, v in KIND_FORCED.get(c["override"], {}).items()
                  if sched.config.get(k, False if isinstance(v, bool) else None) != v}
        if forced:
            notes.append("kind forces " + ",".join(f"{k}={v}" for k, v in forced.items()) + " (intended)")
            sched = cls.from_config(sched.config, **forced)
    pipe.scheduler = sched
    if c["taesd"]:
        pipe.vae = comps["taesd"]
    pipe.set_progress_bar_config(disable=True)
    batch = len(c["prompts"]) * c["images"]
    if c["seed_mode"] == "batch":
        gen = torch.Generator("cpu").manual_seed(c["seed"])
    else:
        gen = [torch.Generator("cpu").manual_seed(c["seed"] + i) for i in range(batch)]
    args = dict(prompt=list(c["prompts"]), num_inference_steps=c["steps"], guidance_scale=c["guidance"],
                num_images_per_prompt=c["images"], generator=gen, output_type="np")
    if c["width"] is not None:
        args.update(width=c["width"], height=c["height"])
    if c["negative"] is not None:
        args["negative_prompt"] = [c["negative"]] * len(c["prompts"])
    if c["rescale"]:
        args["guidance_rescale"] = c["rescale"]
    for k, v in (c.get("sizes") or {}).items():
        args[k] = tuple(v)
    captured = {}

    def grab(p, i, t, kw):
        captured["latents"] = kw["latents"].detach().clone()
        return kw

    with torch.no_grad():
        out = pipe(**args, callback_on_step_end=grab, callback_on_step_end_tensor_inputs=["latents"])
    images = (out.images * 255).round().astype(np.uint8)
    return captured["latents"].numpy().astype(np.float32), images, sched.timesteps.tolist(), notes


# ----------------------------------------------------------------------------------------------
# pocketsd

def run(cmd, timeout=300):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def classify_error(rc, err):
    """REJECT for a clean one-line error with exit code 1 or 2, FAIL otherwise."""
    lines = [l for l in err.strip().splitlines() if l.strip()]
    if rc < 0 or rc > 2 or len(lines) != 1:
        return "FAIL", f"exit {rc}, stderr {len(lines)} lines: {err.strip()[:300]!r}"
    return "REJECT", lines[0][:300]


def pocketsd(c, binary, work, folder):
    model = os.path.join(work, "m.pdm")
    cmd = [binary, "convert", folder, "-o", model, "--weights", "fp32"]
    if c.get("single_file"):
        sys.path.insert(0, HERE)
        import diffusers_to_ldm
        from safetensors.torch import save_file

        single = os.path.join(work, "single.safetensors")
        save_file(diffusers_to_ldm.convert(folder, with_extras=False), single)
        cmd = [binary, "convert", single, "--config", folder, "-o", model, "--weights", "fp32"]
    if c["taesd"]:
        cmd += ["--taesd", os.path.join(work, "taesd")]
    rc, out, err = run(cmd)
    if rc != 0:
        return ("convert",) + classify_error(rc, err)
    png = os.path.join(work, "out.png")
    lat = os.path.join(work, "lat.npy")
    cmd = [binary, "generate", "-m", model, "--seed", str(c["seed"]), "--steps", str(c["steps"]),
           "--guidance", repr(c["guidance"]), "--images", str(c["images"]), "--seed-mode", c["seed_mode"],
           "--threads", "1", "--precision", "f32", "--save-latents", lat, "-o", png, "--json"]
    for p in c["prompts"]:
        cmd += ["-p", p]
    if c["negative"] is not None:
        cmd += ["-n", c["negative"]]
    if c["width"] is not None:
        cmd += ["--width", str(c["width"]), "--height", str(c["height"])]
    if c["override"]:
        cmd += ["--scheduler", c["override"]]
    if c["prediction_override"]:
        cmd += ["--prediction-type", c["prediction_override"]]
    if c["rescale"]:
        cmd += ["--guidance-rescale", repr(c["rescale"])]
    if c["taesd"]:
        cmd += ["--vae", "taesd"]
    sizes = c.get("sizes") or {}
    if "original_size" in sizes:
        h, w = sizes["original_size"]
        cmd += ["--original-size", f"{w},{h}"]
    if "crops_coords_top_left" in sizes:
        top, left = sizes["crops_coords_top_left"]
        cmd += ["--crops-coords", f"{left},{top}"]
    if "target_size" in sizes:
        h, w = sizes["target_size"]
        cmd += ["--target-size", f"{w},{h}"]
    rc, out, err = run(cmd)
    if rc != 0:
        return ("generate",) + classify_error(rc, err)
    info = json.loads(out)
    pngs = [im["file"] for im in info["images"]]
    return ("ok", np.load(lat), pngs, info, cmd)


def read_png(path):
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def command_line(cmd):
    import shlex

    return " ".join(shlex.quote(x) for x in cmd)


def run_case(c, binary, keep=None, verbose=False):
    import torch

    work = tempfile.mkdtemp(prefix=f"sweep-{c['id']}-")
    folder = os.path.join(work, "model")
    res = dict(id=c["id"], summary=summary(c), status="FAIL", rel=None, img=None, reason="")
    try:
        comps = build(c, folder)
        lat_ref, img_ref, timesteps, notes = reference(c, comps)
        if notes:
            res["note"] = "; ".join(notes)
        res["timesteps"] = [round(t, 3) for t in timesteps]
        got = pocketsd(c, binary, work, folder)
        if got[0] != "ok":
            res["status"], res["reason"] = got[1], f"{got[0]}: {got[2]}"
            return res
        _, lat, pngs, info, cmd = got
        res["command"] = command_line(cmd)
        if lat.shape != lat_ref.shape:
            res["reason"] = f"latents shape {lat.shape} vs diffusers {lat_ref.shape}"
            return res
        finite, finite_ref = np.isfinite(lat), np.isfinite(lat_ref)
        if not (finite == finite_ref).all():
            res["reason"] = f"non-finite latents: pocketsd {(~finite).sum()}, diffusers {(~finite_ref).sum()}"
            return res
        if not finite.all():
            res["note"] = "; ".join(filter(None, [res.get("note"), f"{(~finite).sum()} non-finite latents in both"]))
        a, b = lat[finite].astype(np.float64), lat_ref[finite].astype(np.float64)
        den = float(np.sqrt((b ** 2).mean())) if b.size else 0.0
        res["rel"] = float(np.sqrt(((a - b) ** 2).mean())) / (den or 1.0) if b.size else 0.0
        worst = 0
        if len(pngs) != len(img_ref):
            res["reason"] = f"{len(pngs)} images, diffusers made {len(img_ref)}"
            return res
        for i, p in enumerate(pngs):
            if not os.path.exists(p):
                res["reason"] = f"missing {os.path.basename(p)}"
                return res
            if i >= len(img_ref):
                res["reason"] = f"{len(pngs)} images, diffusers made {len(img_ref)}"
                return res
            ours = read_png(p)
            if ours.shape != img_ref[i].shape:
                res["reason"] = f"image shape {ours.shape} vs diffusers {img_ref[i].shape}"
                return res
            worst = max(worst, int(np.abs(ours.astype(np.int32) - img_ref[i].astype(np.int32)).max()))
        res["img"] = worst
        ok = res["rel"] <= 1e-3 and worst <= 1
        res["status"] = "PASS" if ok else "FAIL"
        if not ok:
            res["reason"] = f"pocketsd scheduler {info.get('scheduler')} pred {info.get('prediction_type')}"
    except subprocess.TimeoutExpired as e:
        res["reason"] = f"timeout: {e.cmd[1] if isinstance(e.cmd, list) else e.cmd}"
    except Exception as e:  # noqa: BLE001 - a diffusers-side problem is reported, not raised
        res["status"] = "ERROR"
        res["reason"] = f"reference side: {type(e).__name__}: {str(e)[:200]}"
        if verbose:
            traceback.print_exc()
    finally:
        if keep:
            dest = os.path.join(keep, f"case-{c['id']}")
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(work, dest)
        shutil.rmtree(work, ignore_errors=True)
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return res


# ----------------------------------------------------------------------------------------------
# Error paths: broken or unsupported folders must give a one-line error and a nonzero exit.

def _edit_json(path, **changes):
    with open(path) as f:
        obj = json.load(f)
    for k, v in changes.items():
        if v is _DELETE:
            obj.pop(k, None)
        else:
            obj[k] = v
    with open(path, "w") as f:
        json.dump(obj, f)


_DELETE = object()


def _truncate(path, keep):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:keep] if keep >= 0 else data[:len(data) + keep])


def _swap_tensor(path, key_part, shape):
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(path)
    key = next(k for k in sorted(state) if key_part in k)
    state[key] = torch.zeros(shape)
    save_file(state, path)


ERROR_MUTATIONS = [
    ("no model_index.json", lambda d: os.remove(os.path.join(d, "model_index.json"))),
    ("unsupported pipeline class", lambda d: _edit_json(os.path.join(d, "model_index.json"), _class_name="KandinskyPipeline")),
    ("unet folder missing", lambda d: shutil.rmtree(os.path.join(d, "unet"))),
    ("unet config.json missing", lambda d: os.remove(os.path.join(d, "unet", "config.json"))),
    ("unet config not JSON", lambda d: open(os.path.join(d, "unet", "config.json"), "w").write("{not json")),
    ("unet weights missing", lambda d: os.remove(os.path.join(d, "unet", "diffusion_pytorch_model.safetensors"))),
    ("unet weights truncated", lambda d: _truncate(os.path.join(d, "unet", "diffusion_pytorch_model.safetensors"), -1000)),
    ("unet weights header only", lambda d: _truncate(os.path.join(d, "unet", "diffusion_pytorch_model.safetensors"), 7)),
    ("vae weights empty", lambda d: _truncate(os.path.join(d, "vae", "diffusion_pytorch_model.safetensors"), 0)),
    ("unet block_out_channels disagree with weights", lambda d: _edit_json(os.path.join(d, "unet", "config.json"), block_out_channels=[16, 64])),
    ("unet layers_per_block disagrees with weights", lambda d: _edit_json(os.path.join(d, "unet", "config.json"), layers_per_block=3)),
    ("unet cross_attention_dim vs text encoder", lambda d: _edit_json(os.path.join(d, "unet", "config.json"), cross_attention_dim=48)),
    ("unet in_channels 9 (inpainting) with 4-channel weights", lambda d: _edit_json(os.path.join(d, "unet", "config.json"), in_channels=9)),
    ("unet weight of the wrong shape", lambda d: _swap_tensor(os.path.join(d, "unet", "diffusion_pytorch_model.safetensors"), "conv_in.weight", (32, 4, 5, 5))),
    ("vae latent_channels 8", lambda d: _edit_json(os.path.join(d, "vae", "config.json"), latent_channels=8)),
    ("unet class AutoencoderKL", lambda d: _edit_json(os.path.join(d, "unet", "config.json"), _class_name="UNet2DModel")),
    ("unet block type UNetMidBlock2D in down_block_types", lambda d: _edit_json(os.path.join(d, "unet", "config.json"), down_block_types=["AttnDownBlock2D", "DownBlock2D"])),
    ("unet attention heads not dividing channels", lambda d: _edit_json(os.path.join(d, "unet", "config.json"), attention_head_dim=5)),
    ("unet addition_embed_type text_time without text_encoder_2", lambda d: _edit_json(os.path.join(d, "unet", "config.json"), addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=64)),
    ("text encoder hidden_act relu", lambda d: _edit_json(os.path.join(d, "text_encoder", "config.json"), hidden_act="relu")),
    ("text encoder heads not dividing width", lambda d: _edit_json(os.path.join(d, "text_encoder", "config.json"), num_attention_heads=5)),
    ("text encoder max_position_embeddings 64", lambda d: _edit_json(os.path.join(d, "text_encoder", "config.json"), max_position_embeddings=64)),
    ("text encoder fewer layers than weights", lambda d: _edit_json(os.path.join(d, "text_encoder", "config.json"), num_hidden_layers=1)),
    ("text encoder more layers than weights", lambda d: _edit_json(os.path.join(d, "text_encoder", "config.json"), num_hidden_layers=6)),
    ("tokenizer vocab missing", lambda d: os.remove(os.path.join(d, "tokenizer", "vocab.json"))),
    ("tokenizer merges empty", lambda d: open(os.path.join(d, "tokenizer", "merges.txt"), "w").write("")),
    ("scheduler class unknown", lambda d: _edit_json(os.path.join(d, "scheduler", "scheduler_config.json"), _class_name="UniPCMultistepScheduler")),
    ("scheduler beta_schedule unknown", lambda d: _edit_json(os.path.join(d, "scheduler", "scheduler_config.json"), beta_schedule="sigmoid")),
    ("scheduler prediction_type unknown", lambda d: _edit_json(os.path.join(d, "scheduler", "scheduler_config.json"), prediction_type="flow")),
    ("scheduler num_train_timesteps 0", lambda d: _edit_json(os.path.join(d, "scheduler", "scheduler_config.json"), num_train_timesteps=0)),
    ("scheduler steps_offset string", lambda d: _edit_json(os.path.join(d, "scheduler", "scheduler_config.json"), steps_offset="1")),
    ("scheduler trained_betas too short", lambda d: _edit_json(os.path.join(d, "scheduler", "scheduler_config.json"), trained_betas=[0.1, 0.2])),
    ("scheduler config missing", lambda d: os.remove(os.path.join(d, "scheduler", "scheduler_config.json"))),
    ("vae sample_size null", lambda d: _edit_json(os.path.join(d, "vae", "config.json"), scaling_factor=None)),
    ("unet sample_size 0", lambda d: _edit_json(os.path.join(d, "unet", "config.json"), sample_size=0)),
]


def error_paths(binary, verbose=False):
    """Each mutation of a small valid SD 1.x-like folder: convert (and generate, when convert
    succeeds) must succeed or fail with one stderr line and exit 1/2, never a signal."""
    rows = []
    c = draw_case(0, 0)
    c.update(family="sd1", pad_bang=False, taesd=False, override=None, prediction_override=None)
    c["text"] = draw_text(random.Random(1), False, hidden=32, act="quick_gelu")
    c["text"]["num_hidden_layers"] = 2
    c["unet"] = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
                     down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                     attention_head_dim=4, norm_num_groups=32)
    c["vae"] = draw_vae(random.Random(2), "sd1")
    c["scheduler"] = {**SD_BASE, "_class_name": "PNDMScheduler", "prediction_type": "epsilon"}
    c["id"] = 0
    root = tempfile.mkdtemp(prefix="sweep-errors-")
    base = os.path.join(root, "base")
    build(c, base)
    for name, mutate in ERROR_MUTATIONS:
        folder = os.path.join(root, "m")
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(base, folder)
        mutate(folder)
        model = os.path.join(root, "m.pdm")
        if os.path.exists(model):
            os.remove(model)
        rc, out, err = run([binary, "convert", folder, "-o", model, "--weights", "fp32"])
        stage = "convert"
        if rc == 0:
            stage = "generate"
            rc, out, err = run([binary, "generate", "-m", model, "-p", "a cat", "--steps", "2", "--seed", "1",
                                "--width", "16", "--height", "16", "--threads", "1", "-o",
                                os.path.join(root, "o.png")])
        lines = [l for l in err.strip().splitlines() if l.strip() and not l.startswith("step ")]
        if rc == 0:
            status, detail = "ACCEPT", "converted and generated"
        elif 0 < rc <= 2 and len(lines) == 1:
            status, detail = "OK", lines[0][:200]
        else:
            status, detail = "FAIL", f"exit {rc}, {len(lines)} lines: {err.strip()[:300]!r}"
        rows.append(dict(mutation=name, status=status, stage=stage, detail=detail))
    shutil.rmtree(root, ignore_errors=True)
    return rows


def line(r):
    rel = "-" if r["rel"] is None else f"{r['rel']:.2e}"
    img = "-" if r["img"] is None else str(r["img"])
    s = f"case {r['id']:3d} {r['status']:6s} rel={rel:8s} img={img:3s} {r['summary']}"
    if r["reason"]:
        s += f"  [{r['reason']}]"
    if r.get("note"):
        s += f"  ({r['note']})"
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", help="comma-separated case ids to run (of the --seed sweep)")
    ap.add_argument("--bin", default=DEFAULT_BIN, help="the pocketsd binary (default: .build/release/pocketsd)")
    ap.add_argument("--keep", help="copy every case's folder, model file and outputs here")
    ap.add_argument("--json", action="store_true", help="the summary as JSON on stdout (lines on stderr)")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--exotic", type=float, default=0.0,
                    help="fraction of cases given one rarely used setting (EXOTIC), 0 to 1 (default 0)")
    ap.add_argument("--absent", type=float, default=0.15,
                    help="per key, how often the scheduler config leaves out steps_offset, clip_sample, "
                         "timestep_spacing, set_alpha_to_one (default 0.15; 0 gives the cases of commits before it)")
    ap.add_argument("--error-paths", action="store_true",
                    help="instead of the sweep: broken/unsupported variants of one folder must fail cleanly")
    ap.add_argument("--print-config", action="store_true", help="print each case's drawn config as JSON")
    opts = ap.parse_args()

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)
    import warnings

    warnings.filterwarnings("ignore")
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()
    dlog.disable_progress_bar()
    try:
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
    except Exception:  # noqa: BLE001
        pass
    if opts.error_paths:
        rows = error_paths(opts.bin, opts.verbose)
        out = sys.stderr if opts.json else sys.stdout
        for r in rows:
            print(f"{r['status']:6s} {r['mutation']:55s} {r['stage']:8s} {r['detail']}", file=out)
        bad = [r for r in rows if r["status"] == "FAIL"]
        print(f"# {len(rows)} mutations: {len(bad)} FAIL", file=out)
        if opts.json:
            print(json.dumps(dict(error_paths=rows), indent=1))
        sys.exit(1 if bad else 0)
    ids = [int(x) for x in opts.only.split(",")] if opts.only else list(range(opts.cases))
    out = sys.stderr if opts.json else sys.stdout
    results = []
    start = time.time()
    for i in ids:
        c = draw_case(opts.seed, i, opts.exotic, opts.absent)
        if opts.print_config:
            print(json.dumps(c, default=list), file=out)
        t0 = time.time()
        r = run_case(c, opts.bin, opts.keep, opts.verbose)
        r["seconds"] = round(time.time() - t0, 2)
        results.append(r)
        print(line(r), file=out, flush=True)
    counts = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    print(f"# {len(results)} cases in {time.time() - start:.0f} s: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), file=out)
    if opts.json:
        print(json.dumps(dict(seed=opts.seed, counts=counts, cases=results), indent=1))
    sys.exit(0 if counts.get("FAIL", 0) == 0 and counts.get("ERROR", 0) == 0 else 1)


if __name__ == "__main__":
    main()
