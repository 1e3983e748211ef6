#!/usr/bin/env python3
"""Whole-pipeline goldens for the schedulers added after tools/make_goldens.py's set: diffusers'
StableDiffusionPipeline on the tiny fixture model with LCMScheduler built from the model's
stored (SD 1.5-style) scheduler config, as one uses the LCM-LoRA:
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)

    /work/venv/bin/python tools/make_scheduler_pipeline_goldens.py

Writes Tests/Fixtures/golden/pipeline-schedulers/cases.json and <case>/{ids,latents,image}.npy
in the layout of tools/make_goldens.py's pipeline/ folder (read by
Tests/SDPipelineTests/SchedulerPipelineGoldenTests.swift). LCM re-noises between steps from
the pipeline's generator, so these cases check the draw order end to end.
"""
import os
import sys

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


@torch.no_grad()
def main():
    import diffusers

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    w = Writer(os.path.join(FIXTURES, "golden"))
    model = "tiny-sd-a"
    pipe = load_pipeline(os.path.join(FIXTURES, model))
    base = pipe.scheduler.config
    index = []
    for name, kind, class_name, prompt, seed, steps, guidance in CASES:
        pipe.scheduler = getattr(diffusers, class_name).from_config(base)
        args = dict(prompt=[prompt], num_inference_steps=steps, guidance_scale=guidance, width=64, height=64)
        latents = pipe(**args, generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images
        timesteps = pipe.scheduler.timesteps.tolist()
        image = pipe(**args, generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images
        image_u8 = (image * 255).round().astype(np.uint8)
        d = f"pipeline-schedulers/{name}/"
        index.append(dict(
            name=name, model=model, scheduler=kind, prompts=[prompt], negative_prompt=None, steps=steps,
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
                  "<scheduler_class>.from_config(the model's stored scheduler config); "
                  "generator=torch.Generator('cpu').manual_seed(seed); latents from output_type='latent', "
                  "image from output_type='np' as (image*255).round().astype(uint8)",
        cases=index))


if __name__ == "__main__":
    main()
