#!/usr/bin/env python3
"""Random SDXL LoRA files in both formats, and diffusers' fused weights and pipeline output for them.

    /work/venv/bin/python tools/make_sdxl_lora_goldens.py [--out Tests/Fixtures/lora-sdxl]

On the tiny SDXL model Tests/Fixtures/tiny-sdxl, with peft adapters of random weights (rank 4)
on every kind of UNet module kohya trains (attention, feed-forward, projections, the resnets'
convs, time-embedding projection and shortcut, the down/up-samplers, conv_in/conv_out and the
time and added-condition embeddings) in every block, and on every linear layer of both text
encoders, writes:
  peft.safetensors    diffusers/PEFT keys (unet.*, text_encoder.*, text_encoder_2.*), as
                      StableDiffusionXLPipeline.save_lora_weights writes them (alpha = rank)
  kohya.safetensors   the same deltas under kohya's SDXL keys: lora_unet_* in Stability's original
                      UNet layout (input_blocks_4_1_..., middle_block_..., output_blocks_...,
                      in_layers_2, emb_layers_1, skip_connection, op, time_embed_0, label_emb_0_0,
                      out_2), lora_te1_* and lora_te2_*; up matrices doubled and alpha = 2 (half
                      the rank), so the alpha rule is exercised and the product is unchanged
  fused-SCALE.safetensors
                      every tensor that pipe.load_lora_weights(file) + pipe.fuse_lora(lora_scale=SCALE)
                      changed, keyed as in the .pdm model file, as its last output row; the
                      script checks both files fuse to these weights, so one golden serves both
  pipeline-SCALE/latents.npy, image.npy
                      the fused pipeline's final latents and 8-bit image for cases.json's request
  cases.json          the cases and how they were made
Matrices are stored as float16 (as most shared LoRAs are) and loaded exactly by both sides.
"""
import argparse
import os
import sys

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from make_goldens import Writer  # noqa: E402
from make_lora_goldens import write_pipeline_golden  # noqa: E402
from make_tiny_sdxl import load  # noqa: E402
from make_tiny_sdxl_single import unet_single_file_key, with_text_model  # noqa: E402

RANK = 4
KOHYA_ALPHA = 2.0
# peft's regex form (full match on the module name). Every kind of module kohya trains, in every
# block position, so each rename of the original layout is exercised; within a kind only as many
# as that takes (conv2 in the middle block, the first transformer block's attention), to keep
# the fixtures small.
UNET_TARGETS = (r".*(resnets\.\d+\.(conv1|time_emb_proj|conv_shortcut)|mid_block\.resnets\.\d+\.conv2"
                r"|(down|up)samplers\.0\.conv|conv_in|conv_out|linear_[12]|proj_in|proj_out"
                r"|transformer_blocks\.0\.(attn1\.to_q|attn1\.to_out\.0|attn2\.to_k|attn2\.to_v|ff\.net\.0\.proj|ff\.net\.2))")
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")
SCALES = [0.6, 1.25]
REQUEST = dict(prompt=["a lighthouse on a cliff at dusk"], negative_prompt=["blurry"], num_inference_steps=4,
               guidance_scale=5.0, width=64, height=64, seed=11)
# Both files hold the same float16 deltas; diffusers reaches them by different renames and
# alpha factors, so the fused fp32 weights may differ by rounding only.
FORMATS_AGREE = 1e-6


def peft_state(pipe):
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(1234)
    pipe.unet.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, target_modules=UNET_TARGETS, init_lora_weights=False))
    # peft directly: transformers' add_adapter may demand a newer peft than diffusers does.
    for name in TEXT_ENCODERS:
        inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=RANK, target_modules=TEXT_TARGETS, init_lora_weights=False),
                                getattr(pipe, name))
    states = {"unet": get_peft_model_state_dict(pipe.unet)}
    states.update({name: get_peft_model_state_dict(getattr(pipe, name)) for name in TEXT_ENCODERS})
    # B is drawn like A (kaiming uniform over rank inputs): scale it so the LoRA moves the
    # weights by a few percent, as a trained one does, rather than replacing them.
    return {c: {k: (v * 0.05 if "lora_B" in k else v).half() for k, v in sd.items()} for c, sd in states.items()}


def kohya_state(states, unet_config):
    out = {}
    prefixes = {"unet": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}
    for component, sd in states.items():
        for k, v in sd.items():
            module, kind = k.rsplit(".lora_", 1)
            if component == "unet":
                # kohya trains SDXL on Stability's own UNet, so its keys use the original layout.
                module = unet_single_file_key(module + ".weight", unet_config)[: -len(".weight")]
            elif not module.startswith("text_model."):
                # kohya names text encoder modules from CLIPTextModel's root (text_model.encoder...).
                module = "text_model." + module
            name = prefixes[component] + module.replace(".", "_")
            if kind.startswith("A"):
                out[name + ".lora_down.weight"] = v.contiguous()
            else:
                out[name + ".lora_up.weight"] = (v * (RANK / KOHYA_ALPHA)).contiguous()
            out[name + ".alpha"] = torch.tensor(KOHYA_ALPHA)
    return out


def last_row(t):
    """Output row n-1 of a weight, flattened over the other axes: enough to catch a wrong key,
    alpha, scale or layout (and the row offset of a chunked merge) at a fraction of the size."""
    return t.reshape(t.shape[0], -1)[-1:].contiguous()


def model_state(pipe):
    """The weights keyed as in the .pdm model file (text encoders under text_model., as the
    converter stores them; text_encoder_2's projection at its root)."""
    state = {f"unet.{k}": v for k, v in pipe.unet.state_dict().items()}
    for name in TEXT_ENCODERS:
        state.update({f"{name}.{with_text_model(k)}": v for k, v in getattr(pipe, name).state_dict().items()})
    return {k: v.clone() for k, v in state.items()}


def fused(folder, lora_dir, weight_name, scale):
    pipe = load(folder)
    before = model_state(pipe)
    pipe.load_lora_weights(lora_dir, weight_name=weight_name, adapter_name="x")
    pipe.fuse_lora(lora_scale=scale)
    pipe.unload_lora_weights()
    after = model_state(pipe)
    changed = {k: v for k, v in after.items() if k in before and not torch.equal(v, before[k])}
    return pipe, changed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "Tests/Fixtures/lora-sdxl"))
    args = ap.parse_args()
    import diffusers
    import peft
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    folder = os.path.join(REPO, "Tests/Fixtures/tiny-sdxl")
    w = Writer(args.out)
    os.makedirs(args.out, exist_ok=True)
    pipe = load(folder)
    states = peft_state(pipe)
    StableDiffusionXLPipeline.save_lora_weights(args.out, unet_lora_layers=states["unet"],
                                                text_encoder_lora_layers=states["text_encoder"],
                                                text_encoder_2_lora_layers=states["text_encoder_2"],
                                                weight_name="peft.safetensors")
    save_file(kohya_state(states, dict(pipe.unet.config)), os.path.join(args.out, "kohya.safetensors"))
    modules = {c: len(sd) // 2 for c, sd in states.items()}

    cases = []
    for scale in SCALES:
        pipe, changed = fused(folder, args.out, "peft.safetensors", scale)
        _, kohya_changed = fused(folder, args.out, "kohya.safetensors", scale)
        assert sorted(changed) == sorted(kohya_changed), sorted(set(changed) ^ set(kohya_changed))
        assert len(changed) == sum(modules.values()), (len(changed), modules)
        for k, v in changed.items():
            diff = (v - kohya_changed[k]).abs().max().item() / v.abs().max().item()
            assert diff <= FORMATS_AGREE, f"{k}: kohya and peft fuse {diff} apart"
        name = f"{scale}"
        save_file({k: last_row(v) for k, v in changed.items()}, os.path.join(args.out, f"fused-{name}.safetensors"))
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        latents = write_pipeline_golden(w, pipe, REQUEST, f"pipeline-{name}")
        cases.append(dict(name=name, scale=scale, fused=f"fused-{name}.safetensors", changed_tensors=len(changed),
                          pipeline=f"pipeline-{name}"))
        print(f"  scale {scale}: {len(changed)} tensors changed ({modules}), kohya = peft, latents {tuple(latents.shape)}")
    w.json("cases.json", dict(
        reference=f"diffusers {diffusers.__version__}, peft {peft.__version__}, torch {torch.__version__} CPU fp32: "
                  "pipe.load_lora_weights(folder, weight_name=FILE); pipe.fuse_lora(lora_scale=SCALE); "
                  "kohya.safetensors and peft.safetensors both fuse to fused-SCALE",
        base="tiny-sdxl", rank=RANK, kohya_alpha=KOHYA_ALPHA, peft_alpha=RANK, formats=["peft", "kohya"],
        modules=modules, request=dict(REQUEST, scheduler="euler"), cases=cases))


if __name__ == "__main__":
    main()
