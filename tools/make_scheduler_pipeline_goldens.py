#!/usr/bin/env python3
"""Whole-pipeline goldens for the schedulers added after tools/make_goldens.py's set: diffusers'
StableDiffusionPipeline on the tiny fixture model with LCMScheduler built from the model's
stored (SD 1.5-style) scheduler config, as one uses the LCM-LoRA:
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)

    /work/venv/bin/python tools/make_scheduler_pipeline_goldens.py

Writes Tests/Fixtures/golden/pipeline-schedulers/cases.json and <case>/{ids,latents,image}.npy
(and <case>/scheduler_config.json for the "model" cases)
in the layout of tools/make_goldens.py's pipeline/ folder (read by
Tests/SDPipelineTests/SchedulerPipelineGoldenTests.swift). LCM re-noises between steps from
the pipeline's generator, so these cases check the draw order end to end.

The "model" cases give the tiny model another scheduler/scheduler_config.json (a copy of the
folder with that file replaced; the test does the same before converting) and let diffusers
load the scheduler the folder names: the model's own scheduler, e.g. SD-Turbo-like trailing
Euler at guidance 0, SD 2.x-like v-prediction, zero terminal SNR.
"""
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_goldens import P1, P2, P3, REPO, Writer, json_value, load_pipeline, tokenize  # noqa: E402

FIXTURES = os.path.join(REPO, "Tests", "Fixtures")

# (name, kind, diffusers class, prompt, seed, steps, guidance)
CASES = [
    ("a-lcm-4-g1", "lcm", "LCMScheduler", P1, 42, 4, 1.0),
    ("a-lcm-4-g1.5", "lcm", "LCMScheduler", P2, 7, 4, 1.5),
    ("a-lcm-1-g1", "lcm", "LCMScheduler", P3, 3, 1, 1.0),
    ("a-lcm-2-g1.5", "lcm", "LCMScheduler", P1, 1234, 2, 1.5),
    ("a-lcm-8-g1", "lcm", "LCMScheduler", P2, 5, 8, 1.0),
]


SD = {"beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
      "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
      "trained_betas": None}
# (name, stored scheduler config, prompt, seed, steps, guidance)
MODEL_CASES = [
    *[(f"turbo-euler-trailing-{n}", {**SD, "_class_name": "EulerDiscreteScheduler", "timestep_spacing": "trailing",
                                    "prediction_type": "epsilon", "interpolation_type": "linear",
                                    "use_karras_sigmas": False}, P1, 10 + n, n, 0.0) for n in (1, 2, 4)],
    ("v-euler-trailing-2-g0", {**SD, "_class_name": "EulerDiscreteScheduler", "timestep_spacing": "trailing",
                               "prediction_type": "v_prediction"}, P2, 8, 2, 0.0),
    ("sd21-ddim-v-5", {**SD, "_class_name": "DDIMScheduler", "prediction_type": "v_prediction"}, P3, 21, 5, 7.5),
    ("v-ddim-zero-snr-trailing-4", {**SD, "_class_name": "DDIMScheduler", "prediction_type": "v_prediction",
                                    "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}, P1, 4, 4, 7.5),
    ("v-euler-a-zero-snr-3", {**SD, "_class_name": "EulerAncestralDiscreteScheduler", "prediction_type": "v_prediction",
                              "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}, P2, 33, 3, 1.5),
    ("v-dpm-linspace-5", {**SD, "_class_name": "DPMSolverMultistepScheduler", "prediction_type": "v_prediction",
                          "timestep_spacing": "linspace"}, P3, 55, 5, 5.0),
    ("lcm-model-4-g1", {**SD, "_class_name": "LCMScheduler", "original_inference_steps": 50, "timestep_scaling": 10.0,
                        "set_alpha_to_one": True, "prediction_type": "epsilon"}, P1, 77, 4, 1.0),
]


def model_variant(model_folder, config, root):
    """A copy of the model folder whose scheduler_config.json is `config` (and whose
    model_index.json names its class)."""
    folder = os.path.join(root, "model")
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(model_folder, folder)
    with open(os.path.join(folder, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    # diffusers takes the class from model_index.json; published folders name it in both files.
    index_path = os.path.join(folder, "model_index.json")
    with open(index_path) as f:
        index = json.load(f)
    index["scheduler"] = ["diffusers", config["_class_name"]]
    with open(index_path, "w") as f:
        json.dump(index, f, indent=2)
    return folder


@torch.no_grad()
def main():
    import diffusers

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    w = Writer(os.path.join(FIXTURES, "golden"))
    model = "tiny-sd-a"
    pipe = load_pipeline(os.path.join(FIXTURES, model))
    base = pipe.scheduler.config
    runs = [(name, kind, prompt, seed, steps, guidance, None, getattr(diffusers, class_name).from_config(base))
            for name, kind, class_name, prompt, seed, steps, guidance in CASES]
    scratch = tempfile.mkdtemp()
    index = []
    for name, config, prompt, seed, steps, guidance in MODEL_CASES:
        variant = load_pipeline(model_variant(os.path.join(FIXTURES, model), config, scratch))
        assert type(variant.scheduler).__name__ == config["_class_name"]
        runs.append((name, None, prompt, seed, steps, guidance, config, variant.scheduler))
    shutil.rmtree(scratch)
    for name, kind, prompt, seed, steps, guidance, stored, scheduler in runs:
        # Same weights in every variant: only the scheduler differs.
        pipe.scheduler = scheduler
        class_name = type(scheduler).__name__
        args = dict(prompt=[prompt], num_inference_steps=steps, guidance_scale=guidance, width=64, height=64)
        latents = pipe(**args, generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images
        timesteps = pipe.scheduler.timesteps.tolist()
        image = pipe(**args, generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images
        image_u8 = (image * 255).round().astype(np.uint8)
        d = f"pipeline-schedulers/{name}/"
        if stored is not None:
            w.json(d + "scheduler_config.json", stored)   # what the test puts in its copy of the model
        index.append(dict(
            name=name, model=model, scheduler=kind, stored_scheduler_config=stored, prompts=[prompt], negative_prompt=None, steps=steps,
            guidance_scale=guidance, seed=seed, width=64, height=64, num_images_per_prompt=1,
            scheduler_class=class_name, scheduler_config=json_value(dict(pipe.scheduler.config)),
            timesteps=timesteps,
            ids=w.npy(d + "ids.npy", tokenize(pipe.tokenizer, [prompt]).numpy(), np.int32),
            latents=w.npy(d + "latents.npy", latents.numpy(), np.float32),
            image=w.npy(d + "image.npy", image_u8, np.uint8),
            latents_shape=list(latents.shape), image_shape=list(image_u8.shape), folder=name))
        print(f"  {name}: timesteps {timesteps}")
    w.json("pipeline-schedulers/cases.json", dict(
        reference=f"diffusers {diffusers.__version__} StableDiffusionPipeline, CPU fp32, scheduler = "
                  "<scheduler_class>.from_config(the model's stored scheduler config) for a named scheduler kind; "
                  "with stored_scheduler_config (scheduler null) the model folder's scheduler_config.json is that "
                  "config and diffusers loads the class it names; "
                  "generator=torch.Generator('cpu').manual_seed(seed); latents from output_type='latent', "
                  "image from output_type='np' as (image*255).round().astype(uint8)",
        cases=index))


if __name__ == "__main__":
    main()
