#!/usr/bin/env python3
"""Seeds of the `lora` fuzz target (Tests/Fuzz/corpus/lora), cut from the LoRA test fixtures.

    /work/venv/bin/python tools/make_fuzz_lora_seeds.py

Each seed keeps three modules of Tests/Fixtures/lora/{kohya,peft,peft-alpha2}.safetensors
(the UNet's first to_q, its first 3x3 resnet conv1, the text encoder's first q_proj), which
Tests/Fuzz/FuzzLoRA.swift's fixed model key set has, so mutations start from files that match.
The sdxl-* seeds keep four of Tests/Fixtures/lora-sdxl's (a to_q of the second level, the first
resnet conv1 — under kohya's original-layout names input_blocks_4_1_… and input_blocks_1_0_in_layers_2
— and both text encoders' first q_proj), which the target's SDXL key set has.
"""
import json
import os

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(REPO, "Tests/Fixtures/lora")
OUT = os.path.join(REPO, "Tests/Fuzz/corpus/lora")
MODULES = ["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", "down_blocks.0.resnets.0.conv1",
           "encoder.layers.0.self_attn.q_proj"]


SDXL_SRC = os.path.join(REPO, "Tests/Fixtures/lora-sdxl")
SDXL_MODULES = ["input_blocks.4.1.transformer_blocks.0.attn1.to_q", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
                "input_blocks.1.0.in_layers.2", "down_blocks.0.resnets.0.conv1", "encoder.layers.0.self_attn.q_proj"]


def keep(key, modules=MODULES):
    flat = key.replace(".", "_")
    return any(m.replace(".", "_") in flat for m in modules)


def cut(name, out, dtype=None, metadata=None, src=SRC, modules=MODULES):
    tensors = {k: v for k, v in load_file(os.path.join(src, name)).items() if keep(k, modules)}
    if dtype is not None:
        tensors = {k: v.astype(dtype) for k, v in tensors.items()}
    save_file(tensors, os.path.join(OUT, out), metadata=metadata)


os.makedirs(OUT, exist_ok=True)
cut("kohya.safetensors", "kohya.safetensors")
cut("kohya.safetensors", "kohya-f16.safetensors", dtype=np.float16)
cut("peft.safetensors", "peft.safetensors", metadata={"format": "pt"})
with safe_open(os.path.join(SRC, "peft-alpha2.safetensors"), "np") as f:
    full = json.loads(f.metadata()["lora_adapter_metadata"])
# The metadata fields the reader uses, and a per-module alpha_pattern.
meta = {k: v for k, v in full.items() if k.endswith((".lora_alpha", ".r"))}
meta["unet.alpha_pattern"] = {"down_blocks.0.resnets.0.conv1": 3}
cut("peft-alpha2.safetensors", "peft-alpha2.safetensors",
    metadata={"format": "pt", "lora_adapter_metadata": json.dumps(meta)})
cut("kohya.safetensors", "sdxl-kohya.safetensors", src=SDXL_SRC, modules=SDXL_MODULES)
cut("peft.safetensors", "sdxl-peft.safetensors", metadata={"format": "pt"}, src=SDXL_SRC, modules=SDXL_MODULES)
