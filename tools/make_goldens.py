#!/usr/bin/env python3
"""Computes golden outputs of the reference stack (diffusers + transformers, CPU, fp32) for the
tiny fixture models written by tools/make_tiny_models.py.

    /work/venv/bin/python tools/make_goldens.py [--fixtures Tests/Fixtures] [--check]

--check  runs everything a second time, in a new process with another PYTHONHASHSEED, into a
         temporary folder and fails unless every file is byte-identical (determinism), besides
         the NaN/inf check that always runs.
--out    output folder (default FIXTURES/golden)

Writes Tests/Fixtures/golden/:
  text_encoder/<model>/index.json + *.npy   ids int32 [1,77] (tokenizer, padding="max_length",
                                            truncation, max_length 77) -> last_hidden_state f32 [1,77,32]
  unet/<model>/index.json + *.npy           sample f32 [2,4,h,w], timestep, encoder_hidden_states
                                            f32 [2,77,32] -> output f32 [2,4,h,w]
  vae/<model>/index.json + *.npy            latents f32 [1,4,h,w] -> vae.decode(latents).sample
                                            f32 [1,3,f*h,f*w], f = 2**(len(vae.block_out_channels)-1)
                                            (2 for tiny-sd-a, 4 for tiny-sd-b; 8 for real SD)
  pipeline/cases.json + <case>/*.npy        StableDiffusionPipeline runs: final latents
                                            (output_type="latent") f32 [B,4,H/f,W/f], image uint8
                                            [B,H,W,3] = (np_image*255).round(), prompt ids int32
  rng/index.json + *.npy                    torch.randn(shape, generator=torch.Generator("cpu")
                                            .manual_seed(seed)) values, f32

All .npy files are little-endian, C order; floats float32, ids int32. Model folders are loaded
from disk (local files only), so goldens are computed from exactly the stored weights.

Requirements: the reference stack in /work/venv (torch CPU, diffusers 0.42, transformers 5.x,
safetensors, numpy).
"""
import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

MODELS = ("tiny-sd-a", "tiny-sd-b")

LONG_PROMPT = ("a very long prompt, with many words: " + " ".join(
    f"word{i}, and more; item-{i}!" for i in range(30)))  # well past 77 tokens

TEXT_PROMPTS = {
    "tiny-sd-a": [("empty", ""), ("punct", "A photo of an astronaut, riding a horse on Mars!"), ("long", LONG_PROMPT)],
    "tiny-sd-b": [("empty", ""), ("punct", "a red cube (on a table); 3 cats -- sleeping?!"), ("long", LONG_PROMPT)],
}

# (name, latent h, w, timestep, seed)
UNET_CASES = {
    "tiny-sd-a": [("t981_8x8", 8, 8, 981, 100), ("t1_5x7", 5, 7, 1, 101)],
    "tiny-sd-b": [("t981_8x8", 8, 8, 981, 200), ("t1_9x5", 9, 5, 1, 201)],
}
VAE_CASES = {
    "tiny-sd-a": [("8x8", 8, 8, 300), ("5x7", 5, 7, 301)],
    "tiny-sd-b": [("8x8", 8, 8, 400), ("5x7", 5, 7, 401)],
}

SCHEDULERS = {
    "pndm": ("PNDMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++2m": ("DPMSolverMultistepScheduler", {}),
    "dpm++2m-karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
}

P1 = "A photo of an astronaut, riding a horse on Mars!"
P2 = "a red cube (on a table); 3 cats -- sleeping?!"
P3 = "Oil painting: a lighthouse at dusk, waves & seagulls..."


def case(name, model, scheduler, prompts, seed, steps=5, guidance=7.5, negative=None, width=64, height=64,
         per_prompt=1):
    return dict(name=name, model=model, scheduler=scheduler, prompts=prompts, negative_prompt=negative,
                steps=steps, guidance_scale=guidance, seed=seed, width=width, height=height,
                num_images_per_prompt=per_prompt)


PIPELINE_CASES = [
    *[case(f"a-{s}", "tiny-sd-a", s, [P1], seed=42) for s in SCHEDULERS],
    case("a-negative", "tiny-sd-a", "euler", [P3], seed=7, negative="blurry, low quality (ugly)!"),
    case("a-guidance1", "tiny-sd-a", "ddim", [P2], seed=5, guidance=1.0, steps=4),
    case("a-two-prompts", "tiny-sd-a", "dpm++2m", [P1, P2], seed=3, steps=6),
    case("a-two-images", "tiny-sd-a", "euler-a", [P3], seed=11, per_prompt=2, steps=4),
    case("a-40x56", "tiny-sd-a", "pndm", [P2], seed=13, width=40, height=56),
    case("b-pndm", "tiny-sd-b", "pndm", [P1], seed=42),
    case("b-euler-a", "tiny-sd-b", "euler-a", [P2], seed=1234, steps=6),
    case("b-dpm++2m-karras", "tiny-sd-b", "dpm++2m-karras", [P3], seed=99, guidance=5.0),
    case("b-72x40", "tiny-sd-b", "lms", [P2], seed=17, width=72, height=40, steps=4),
    case("b-batch-negative", "tiny-sd-b", "euler", [P1, P3], seed=21, steps=4, guidance=6.0,
         negative=["ugly, blurry", "lowres; bad anatomy..."], per_prompt=2),
]

RNG_SHAPES = [(1,), (7,), (15,), (16,), (17,), (100,), (4, 8, 8), (2, 4, 5, 7)]
RNG_SEEDS = [0, 42, 2 ** 32 + 5]
# Successive draws from one generator: (seed, [shapes...]); covers the scalar path (< 16 values)
# and the vectorised path (>= 16) following each other.
RNG_SEQUENCES = [(42, [(4, 8, 8), (7,)]), (0, [(7,), (7,)]), (1, [(1,), (1,), (3,)]), (5, [(7,), (16,)]),
                 (6, [(16,), (7,)]), (123, [(2, 4, 5, 7), (17,)])]


class Writer:
    """Saves arrays with fixed dtype/endianness/order and refuses NaN/inf."""

    def __init__(self, root):
        self.root = root

    def npy(self, rel, array, dtype):
        array = np.ascontiguousarray(np.asarray(array), dtype=np.dtype(dtype).newbyteorder("<"))
        if array.dtype.kind == "f":
            assert np.isfinite(array).all(), f"{rel}: NaN or inf"
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.save(path, array)
        return os.path.basename(rel)

    def json(self, rel, obj):
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")


def load_pipeline(folder):
    from diffusers import StableDiffusionPipeline

    variant = None if os.path.exists(os.path.join(folder, "unet", "diffusion_pytorch_model.safetensors")) else "fp16"
    pipe = StableDiffusionPipeline.from_pretrained(folder, variant=variant, dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tokenize(tokenizer, prompts):
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def seeded_randn(shape, seed):
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)


@torch.no_grad()
def text_encoder_goldens(w, model, pipe):
    cases = []
    for name, prompt in TEXT_PROMPTS[model]:
        ids = tokenize(pipe.tokenizer, [prompt])
        hidden = pipe.text_encoder(ids)[0]  # last_hidden_state, as encode_prompt uses it
        untruncated = len(pipe.tokenizer(prompt).input_ids)
        cases.append(dict(name=name, prompt=prompt, untruncated_token_count=untruncated,
                          ids=w.npy(f"text_encoder/{model}/{name}_ids.npy", ids.numpy(), np.int32),
                          last_hidden_state=w.npy(f"text_encoder/{model}/{name}_last_hidden_state.npy",
                                                  hidden.numpy(), np.float32),
                          ids_shape=list(ids.shape), last_hidden_state_shape=list(hidden.shape)))
    w.json(f"text_encoder/{model}/index.json", dict(model=model, component="text_encoder", cases=cases))


@torch.no_grad()
def unet_goldens(w, model, pipe):
    cases = []
    dim = pipe.unet.config.cross_attention_dim
    for name, h, wd, t, seed in UNET_CASES[model]:
        sample = seeded_randn((2, 4, h, wd), seed)
        context = seeded_randn((2, 77, dim), seed + 1000)
        out = pipe.unet(sample, torch.tensor(t), encoder_hidden_states=context).sample
        d = f"unet/{model}/"
        cases.append(dict(name=name, timestep=t,
                          sample=w.npy(d + f"{name}_sample.npy", sample.numpy(), np.float32),
                          encoder_hidden_states=w.npy(d + f"{name}_encoder_hidden_states.npy", context.numpy(),
                                                      np.float32),
                          output=w.npy(d + f"{name}_output.npy", out.numpy(), np.float32),
                          sample_shape=list(sample.shape), encoder_hidden_states_shape=list(context.shape),
                          output_shape=list(out.shape),
                          inputs="sample = torch.randn(sample_shape, generator=manual_seed(sample_seed)); "
                                 "encoder_hidden_states likewise with context_seed",
                          sample_seed=seed, context_seed=seed + 1000))
    w.json(f"unet/{model}/index.json", dict(model=model, component="unet", cases=cases))


@torch.no_grad()
def vae_goldens(w, model, pipe):
    cases = []
    for name, h, wd, seed in VAE_CASES[model]:
        latents = seeded_randn((1, 4, h, wd), seed)
        image = pipe.vae.decode(latents).sample  # raw decoder output, no scaling_factor applied
        d = f"vae/{model}/"
        cases.append(dict(name=name, latents=w.npy(d + f"{name}_latents.npy", latents.numpy(), np.float32),
                          image=w.npy(d + f"{name}_image.npy", image.numpy(), np.float32),
                          latents_shape=list(latents.shape), image_shape=list(image.shape), latents_seed=seed))
    w.json(f"vae/{model}/index.json", dict(model=model, component="vae.decode",
                                            vae_scale_factor=pipe.vae_scale_factor, cases=cases))


def json_value(v):
    if isinstance(v, (tuple, list)):
        return [json_value(x) for x in v]
    if isinstance(v, dict):
        # diffusers fills _use_default_values from a set: sort it so the file is reproducible.
        return {k: sorted(x) if k == "_use_default_values" else json_value(x) for k, x in v.items()}
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


@torch.no_grad()
def pipeline_goldens(w, pipes, base_configs):
    import diffusers

    index = []
    for c in PIPELINE_CASES:
        pipe = pipes[c["model"]]
        class_name, kwargs = SCHEDULERS[c["scheduler"]]
        pipe.scheduler = getattr(diffusers, class_name).from_config(base_configs[c["model"]], **kwargs)
        negative = c["negative_prompt"]
        if isinstance(negative, str):  # diffusers wants the same type as prompt (a list here)
            negative = [negative] * len(c["prompts"])
        args = dict(prompt=c["prompts"], negative_prompt=negative, num_inference_steps=c["steps"],
                    guidance_scale=c["guidance_scale"], width=c["width"], height=c["height"],
                    num_images_per_prompt=c["num_images_per_prompt"])
        latents = pipe(**args, generator=torch.Generator("cpu").manual_seed(c["seed"]), output_type="latent").images
        timesteps = pipe.scheduler.timesteps.tolist()
        image = pipe(**args, generator=torch.Generator("cpu").manual_seed(c["seed"]), output_type="np").images
        image_u8 = (image * 255).round().astype(np.uint8)
        d = f"pipeline/{c['name']}/"
        entry = dict(c)
        entry["scheduler_class"] = class_name
        entry["scheduler_kwargs"] = kwargs
        entry["scheduler_construction"] = f"diffusers.{class_name}.from_config(pipe.scheduler.config, **scheduler_kwargs)"
        entry["scheduler_config"] = json_value(dict(pipe.scheduler.config))
        entry["timesteps"] = timesteps
        entry["init_noise_sigma"] = float(pipe.scheduler.init_noise_sigma)
        entry["vae_scale_factor"] = pipe.vae_scale_factor
        entry["do_classifier_free_guidance"] = c["guidance_scale"] > 1.0
        entry["ids"] = w.npy(d + "ids.npy", tokenize(pipe.tokenizer, c["prompts"]).numpy(), np.int32)
        if entry["do_classifier_free_guidance"]:
            neg = [""] * len(c["prompts"]) if negative is None else negative
            entry["negative_ids"] = w.npy(d + "negative_ids.npy", tokenize(pipe.tokenizer, neg).numpy(), np.int32)
        else:
            entry["negative_ids"] = None
        entry["latents"] = w.npy(d + "latents.npy", latents.numpy(), np.float32)
        entry["image"] = w.npy(d + "image.npy", image_u8, np.uint8)
        entry["latents_shape"] = list(latents.shape)
        entry["image_shape"] = list(image_u8.shape)
        entry["folder"] = c["name"]
        index.append(entry)
        print(f"  pipeline {c['name']}: latents {tuple(latents.shape)} image {image_u8.shape} "
              f"timesteps {[round(t, 3) for t in timesteps]}")
    w.json("pipeline/cases.json", dict(
        reference=f"diffusers {diffusers.__version__} StableDiffusionPipeline, CPU fp32, "
                  "generator=torch.Generator('cpu').manual_seed(seed); latents from output_type='latent' "
                  "(before VAE scaling), image from output_type='np' as (image*255).round().astype(uint8)",
        negative_prompt="null: unconditional \"\" per prompt; a string applies to every prompt; a list has one "
                        "entry per prompt",
        ids="ids.npy: prompt ids [len(prompts),77]; negative_ids.npy: ids of the negative prompts (or of \"\" "
            "when negative_prompt is null), absent without classifier-free guidance; each prompt's embedding is "
            "repeated num_images_per_prompt times",
        batch_order="images are prompt-major: [p0 image0, p0 image1, p1 image0, ...]; the initial latents are one "
                    "torch.randn([B,4,H/f,W/f], generator) draw times init_noise_sigma (B = prompts x "
                    "num_images_per_prompt); with guidance the UNet batch is concat([uncond, cond])",
        cases=index))


def rng_goldens(w):
    cases = []
    for seed in RNG_SEEDS:
        for shape in RNG_SHAPES:
            numel = int(np.prod(shape))
            name = f"seed{seed}_n{numel}.npy"
            values = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))
            cases.append(dict(seed=seed, draws=[dict(shape=list(shape), file=w.npy("rng/" + name, values.numpy(),
                                                                                  np.float32))]))
    for seed, shapes in RNG_SEQUENCES:
        g = torch.Generator("cpu").manual_seed(seed)
        draws = []
        for i, shape in enumerate(shapes):
            values = torch.randn(shape, generator=g)
            name = f"seq_seed{seed}_draw{i}_n{int(np.prod(shape))}.npy"
            draws.append(dict(shape=list(shape), file=w.npy("rng/" + name, values.numpy(), np.float32)))
        cases.append(dict(seed=seed, draws=draws))
    w.json("rng/index.json", dict(
        reference=f"torch {torch.__version__}: g = torch.Generator('cpu').manual_seed(seed); then for each draw in "
                  "order: torch.randn(shape, generator=g) (float32). One generator per case; draws share it.",
        cases=cases))


def generate(root, fixtures):
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    w = Writer(root)
    rng_goldens(w)
    pipes, base_configs = {}, {}
    for model in MODELS:
        pipe = load_pipeline(os.path.join(fixtures, model))
        pipes[model] = pipe
        base_configs[model] = pipe.scheduler.config
        text_encoder_goldens(w, model, pipe)
        unet_goldens(w, model, pipe)
        vae_goldens(w, model, pipe)
    pipeline_goldens(w, pipes, base_configs)


def compare_trees(a, b):
    cmp = filecmp.dircmp(a, b)
    problems = cmp.left_only + cmp.right_only + cmp.diff_files + cmp.funny_files
    # dircmp compares by stat signature by default; recheck each common file's bytes.
    for f in cmp.common_files:
        if not filecmp.cmp(os.path.join(a, f), os.path.join(b, f), shallow=False):
            problems.append(f)
    for sub in cmp.common_dirs:
        problems += [os.path.join(sub, p) for p in compare_trees(os.path.join(a, sub), os.path.join(b, sub))]
    return sorted(set(problems))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", default=os.path.join(REPO, "Tests", "Fixtures"))
    ap.add_argument("--check", action="store_true", help="run twice and require identical output")
    ap.add_argument("--out")
    args = ap.parse_args()
    out = args.out or os.path.join(args.fixtures, "golden")
    if os.path.isdir(out):
        shutil.rmtree(out)
    generate(out, args.fixtures)
    if args.check:
        tmp = tempfile.mkdtemp(prefix="goldens-")
        try:
            env = dict(os.environ, PYTHONHASHSEED=str(os.getpid()))
            subprocess.run([sys.executable, os.path.abspath(__file__), "--fixtures", args.fixtures, "--out",
                            os.path.join(tmp, "golden")], check=True, env=env, stdout=subprocess.DEVNULL)
            problems = compare_trees(out, os.path.join(tmp, "golden"))
            if problems:
                print("NOT deterministic:", problems)
                return 1
            print("  check: second run is byte-identical")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
