#!/usr/bin/env python3
"""Measures which int8 weight granularity keeps accuracy: one scale per output channel
(what `pocketsd convert --weights int8` stores) or one scale per block of 32 along the
reduction axis (ggml's q8_0). Weights are quantised and dequantised in place in diffusers'
own pipeline (CPU, fp32), by the converter's rule (linear/conv `.weight` with >= 16 rows
and >= 16 columns, no embeddings), and the final latents are compared with the
unquantised run. Also prints the weight reconstruction error.

    /work/venv/bin/python tools/measure_int8_granularity.py [Tests/Fixtures/tiny-sd-a ...]
"""
import sys
import numpy as np
import torch
from diffusers import StableDiffusionPipeline, EulerDiscreteScheduler


def quantize(w, block):
    rows = w.shape[0]
    flat = w.reshape(rows, -1)
    if block is None:
        scale = flat.abs().amax(dim=1, keepdim=True) / 127
        scale[scale == 0] = 1
        return ((flat / scale).round().clamp(-127, 127) * scale).reshape(w.shape)
    cols = flat.shape[1]
    pad = (-cols) % block
    padded = torch.nn.functional.pad(flat, (0, pad)).reshape(rows, -1, block)
    scale = padded.abs().amax(dim=2, keepdim=True) / 127
    scale[scale == 0] = 1
    q = ((padded / scale).round().clamp(-127, 127) * scale).reshape(rows, -1)[:, :cols]
    return q.reshape(w.shape)


def quantizable(name, p):
    if not name.endswith(".weight") or p.dim() < 2 or "embedding" in name:
        return False
    rows = p.shape[0]
    return rows >= 16 and p.numel() // rows >= 16


def latents(pipe, prompt):
    g = torch.Generator("cpu").manual_seed(42)
    return pipe(prompt, num_inference_steps=5, guidance_scale=7.5, height=64, width=64,
                generator=g, output_type="latent").images.numpy()


def main():
    folders = sys.argv[1:] or ["Tests/Fixtures/tiny-sd-a", "Tests/Fixtures/tiny-sd-b"]
    prompt = "A photo of an astronaut, riding a horse on Mars!"
    print("| model | granularity | weight rel RMS error | latents rel RMS vs fp32 |")
    print("|---|---|--:|--:|")
    for folder in folders:
        import os
        variant = "fp16" if os.path.exists(os.path.join(folder, "unet/diffusion_pytorch_model.fp16.safetensors")) else None
        pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False,
                                                       local_files_only=True, variant=variant, torch_dtype=torch.float32)
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        reference = latents(pipe, prompt)
        originals = {}
        for module in (pipe.text_encoder, pipe.unet, pipe.vae):
            for name, p in module.named_parameters():
                if quantizable(name, p):
                    originals[(id(module), name)] = p.detach().clone()
        for label, block in (("per output channel", None), ("blocks of 32 (q8_0)", 32)):
            err = ref = 0.0
            with torch.no_grad():
                for module in (pipe.text_encoder, pipe.unet, pipe.vae):
                    for name, p in module.named_parameters():
                        key = (id(module), name)
                        if key in originals:
                            q = quantize(originals[key], block)
                            err += float(((q - originals[key]) ** 2).sum())
                            ref += float((originals[key] ** 2).sum())
                            p.copy_(q)
            out = latents(pipe, prompt)
            rel = np.sqrt(((out - reference) ** 2).mean() / (reference ** 2).mean())
            print(f"| {folder.split('/')[-1]} | {label} | {np.sqrt(err / ref):.2e} | {rel:.2e} |")
            with torch.no_grad():
                for module in (pipe.text_encoder, pipe.unet, pipe.vae):
                    for name, p in module.named_parameters():
                        if (id(module), name) in originals:
                            p.copy_(originals[(id(module), name)])


if __name__ == "__main__":
    main()
