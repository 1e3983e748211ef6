#!/usr/bin/env python3
"""Random LoRA files in both formats, and diffusers' fused weights and pipeline output for them.

    /work/venv/bin/python tools/make_lora_goldens.py [--out Tests/Fixtures/lora]

On the tiny SD 1.x model Tests/Fixtures/tiny-sd-b (fp32), with peft adapters of random weights
(rank 4) on the UNet's attention, feed-forward, projections and 3x3 resnet convolutions, and on
every linear layer of the text encoder, writes:
  peft.safetensors    diffusers/PEFT keys (unet.*.lora_A/lora_B, text_encoder.*), as
                      StableDiffusionPipeline.save_lora_weights writes them (alpha = rank)
  peft-alpha2.safetensors
                      the peft file with lora_alpha = 2 in its lora_adapter_metadata header
  kohya.safetensors   the same matrices under kohya/AUTOMATIC1111 keys (lora_unet_*, lora_te_*,
                      .lora_down/.lora_up/.alpha) with alpha = 2 (half the rank)
  fused-FORMAT-SCALE.safetensors
                      every tensor that pipe.load_lora_weights(file) + pipe.fuse_lora(lora_scale=SCALE)
                      changed, keyed as in the .pdm model file (unet.*, text_encoder.text_model.*),
                      as its output rows 0, n/2 and n-1 ([3 or fewer, in*kh*kw])
  pipeline-FORMAT-SCALE/latents.npy, image.npy
                      the fused pipeline's final latents and 8-bit image for cases.json's request
  cases.json          the cases and how they were made
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from make_goldens import Writer, load_pipeline  # noqa: E402

RANK = 4
KOHYA_ALPHA = 2.0
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
SCALES = [0.6, 1.25]
REQUEST = dict(prompt=["a lighthouse on a cliff at dusk"], negative_prompt=["blurry"], num_inference_steps=4,
               guidance_scale=6.0, width=64, height=64, seed=11)


def peft_state(pipe):
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(1234)
    pipe.unet.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, target_modules=UNET_TARGETS, init_lora_weights=False))
    # peft directly: transformers' add_adapter may demand a newer peft than diffusers does.
    inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=RANK, target_modules=TEXT_TARGETS, init_lora_weights=False),
                            pipe.text_encoder)
    unet = get_peft_model_state_dict(pipe.unet)
    text = get_peft_model_state_dict(pipe.text_encoder)
    # B is drawn like A (kaiming uniform over rank inputs): scale it so the LoRA moves the
    # weights by a few percent, as a trained one does, rather than replacing them.
    for sd in (unet, text):
        for k in sd:
            if "lora_B" in k:
                sd[k] = sd[k] * 0.05
    return unet, text


def kohya_state(unet, text):
    out = {}
    for prefix, sd in (("lora_unet_", unet), ("lora_te_", text)):
        for k, v in sd.items():
            module, kind = k.rsplit(".lora_", 1)
            # kohya names text encoder modules from CLIPTextModel's root (text_model.encoder...).
            if prefix == "lora_te_" and not module.startswith("text_model."):
                module = "text_model." + module
            name = prefix + module.replace(".", "_")
            out[name + (".lora_down.weight" if kind.startswith("A") else ".lora_up.weight")] = v.contiguous()
            out[name + ".alpha"] = torch.tensor(KOHYA_ALPHA)
    # Same matrices as the peft file, but alpha/rank = 1/2 scales their product: the
    # expected weights come from diffusers itself, so this checks the alpha rule too.
    return out


def write_peft_with_alpha(out):
    """peft-alpha2.safetensors: the peft file's matrices with lora_alpha = KOHYA_ALPHA recorded in
    the header's lora_adapter_metadata, as save_lora_weights(..., unet_lora_adapter_metadata=
    LoraConfig(...).to_dict()) writes it: diffusers then fuses what it fuses for kohya.safetensors."""
    from peft import LoraConfig

    meta = {}
    for component, targets in (("unet", UNET_TARGETS), ("text_encoder", TEXT_TARGETS)):
        config = LoraConfig(r=RANK, lora_alpha=KOHYA_ALPHA, target_modules=targets).to_dict()
        for k, v in config.items():
            meta[f"{component}.{k}"] = sorted(v) if isinstance(v, set) else v
    save_file(load_file(os.path.join(out, "peft.safetensors")), os.path.join(out, "peft-alpha2.safetensors"),
              metadata={"format": "pt", "lora_adapter_metadata": json.dumps(meta, indent=2, sort_keys=True, default=str)})


def sampled_rows(t):
    """Output rows 0, n/2 and n-1 of a weight, flattened over the other axes: enough to catch a
    wrong key, alpha, scale or layout in every tensor at a fraction of the fixture size."""
    rows = t.shape[0]
    return t.reshape(rows, -1)[sorted({0, rows // 2, rows - 1})].contiguous()


def model_keyed(state, component):
    if component == "text_encoder":
        state = {(k if k.startswith("text_model.") else "text_model." + k): v for k, v in state.items()}
    return {f"{component}.{k}": v for k, v in state.items()}


def write_pipeline_golden(w, pipe, r, folder):
    """The fused pipeline's final latents and 8-bit image for request `r` in `folder`; returns the latents."""
    call = dict(prompt=r["prompt"], negative_prompt=r["negative_prompt"], num_inference_steps=r["num_inference_steps"],
                guidance_scale=r["guidance_scale"], width=r["width"], height=r["height"])
    latents = pipe(**call, generator=torch.Generator("cpu").manual_seed(r["seed"]), output_type="latent").images
    image = pipe(**call, generator=torch.Generator("cpu").manual_seed(r["seed"]), output_type="np").images
    w.npy(f"{folder}/latents.npy", latents.numpy(), np.float32)
    w.npy(f"{folder}/image.npy", (image * 255).round().astype(np.uint8), np.uint8)
    return latents


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "Tests/Fixtures/lora"))
    args = ap.parse_args()
    import diffusers
    import peft
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    base_folder = os.path.join(REPO, "Tests/Fixtures/tiny-sd-b")
    w = Writer(args.out)
    os.makedirs(args.out, exist_ok=True)
    pipe = load_pipeline(base_folder)
    unet_lora, text_lora = peft_state(pipe)
    StableDiffusionPipeline.save_lora_weights(args.out, unet_lora_layers=unet_lora, text_encoder_lora_layers=text_lora,
                                              weight_name="peft.safetensors")
    save_file(kohya_state(unet_lora, text_lora), os.path.join(args.out, "kohya.safetensors"))
    write_peft_with_alpha(args.out)

    cases = []
    for fmt in ("kohya", "peft"):
        for scale in SCALES:
            pipe = load_pipeline(base_folder)
            pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
            before = {**model_keyed(pipe.unet.state_dict(), "unet"),
                      **model_keyed(pipe.text_encoder.state_dict(), "text_encoder")}
            before = {k: v.clone() for k, v in before.items()}
            pipe.load_lora_weights(args.out, weight_name=f"{fmt}.safetensors", adapter_name="x")
            pipe.fuse_lora(lora_scale=scale)
            pipe.unload_lora_weights()
            after = {**model_keyed(pipe.unet.state_dict(), "unet"),
                     **model_keyed(pipe.text_encoder.state_dict(), "text_encoder")}
            changed = {k: sampled_rows(v) for k, v in after.items() if k in before and not torch.equal(v, before[k])}
            name = f"{fmt}-{scale}"
            save_file(changed, os.path.join(args.out, f"fused-{name}.safetensors"))
            latents = write_pipeline_golden(w, pipe, REQUEST, f"pipeline-{name}")
            cases.append(dict(name=name, format=fmt, scale=scale, lora=f"{fmt}.safetensors",
                              fused=f"fused-{name}.safetensors", changed_tensors=len(changed),
                              pipeline=f"pipeline-{name}"))
            print(f"  {name}: {len(changed)} tensors changed, latents {tuple(latents.shape)}")
    w.json("cases.json", dict(
        reference=f"diffusers {diffusers.__version__}, peft {peft.__version__}, torch {torch.__version__} CPU fp32: "
                  "pipe.load_lora_weights(folder, weight_name=FILE); pipe.fuse_lora(lora_scale=SCALE)",
        base="tiny-sd-b", rank=RANK, kohya_alpha=KOHYA_ALPHA, peft_alpha=RANK,
        request=dict(REQUEST, scheduler="euler"), cases=cases))


if __name__ == "__main__":
    main()
