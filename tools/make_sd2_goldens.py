#!/usr/bin/env python3
"""Fixtures and whole-pipeline goldens for SD 2.x-like models, SD-Turbo-like and LCM-distilled
UNets and guidance_rescale, from diffusers on tiny random-weight configs (CPU, fp32).

    /work/venv/bin/python tools/make_sd2_goldens.py [--json]

Writes under Tests/Fixtures/:
  tiny-sd2.safetensors   an SD 2.x-like model as ONE single-file checkpoint in the original
                         layout: UNet and VAE as tools/diffusers_to_ldm.py writes them, the text
                         encoder as OpenCLIP's text tower under cond_stage_model.model.
                         (token_embedding, positional_embedding, transformer.resblocks.N with a
                         fused attn.in_proj_weight/in_proj_bias, ln_final, text_projection,
                         logit_scale) with ONE MORE residual block than the diffusers text
                         encoder has: SD 2.x conditions on the penultimate layer, so the
                         converter must leave the last block out.
  tiny-sd2-config/       its diffusers configs only (model_index, unet, vae, text_encoder,
                         scheduler; no tokenizer files: a single-file SD 2.x model gets the
                         bundled CLIP vocabulary padded with "!"), for `convert --config`.
  tiny-lcm-unet/         an LCM-distilled UNet (time_cond_proj_dim) that fits tiny-sd-a: the
                         test copies tiny-sd-a and puts this unet/ in place.
  golden/sd2/cases.json and golden/sd2/<case>/{ids,latents,image}.npy

The SD 2.x-like model: CLIPTextModel with gelu and 2 layers (the OpenCLIP file has 3 blocks), a
tokenizer padding with "!" (id 0, as stabilityai/stable-diffusion-2-1's), a UNet with
per-block attention_head_dim, linear proj_in/proj_out, upcast_attention, sample_size 8 (so
the default image is 16 px: 8 × the tiny VAE's scale 2), and SD 2.1's DDIMScheduler config with v_prediction.

Cases (diffusers StableDiffusionPipeline; latents from output_type="latent", image from
output_type="np" as (image*255).round().astype(uint8)):
  sd2-<kind>       every scheduler kind on the SD 2.x-like model, <Class>.from_config(stored
                   config) as tools/make_goldens.py does for named kinds (v-prediction in each)
  sd2-default-*    no scheduler named: the model's own (DDIM, v-prediction), default size
  sd2-rescale-*    guidance_rescale 0.7 and 0.3
  sd2-eps-override the stored config with prediction_type epsilon (what --prediction-type
                   epsilon gives)
  lcm-unet-*       tiny-sd-a with the LCM UNet and an LCMScheduler config: guidance 1 and 1.5
                   go to the UNet as w = guidance - 1 (get_guidance_scale_embedding), no
                   unconditional batch (diffusers: CFG only when time_cond_proj_dim is None);
                   checked against LatentConsistencyModelPipeline too.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_goldens import P1, P2, P3, REPO, SCHEDULERS, Writer, json_value, load_pipeline, tokenize  # noqa: E402
from make_tiny_models import round_to_half  # noqa: E402
import diffusers_to_ldm  # noqa: E402

FIXTURES = os.path.join(REPO, "Tests", "Fixtures")

SD21_SCHEDULER = {"_class_name": "DDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                  "beta_start": 0.00085, "clip_sample": False, "num_train_timesteps": 1000,
                  "prediction_type": "v_prediction", "set_alpha_to_one": False, "skip_prk_steps": True,
                  "steps_offset": 1, "trained_betas": None}
LCM_SCHEDULER = {"_class_name": "LCMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                 "beta_start": 0.00085, "clip_sample": False, "num_train_timesteps": 1000,
                 "original_inference_steps": 50, "prediction_type": "epsilon", "set_alpha_to_one": True,
                 "steps_offset": 1, "timestep_scaling": 10.0, "timestep_spacing": "leading", "trained_betas": None}

TEXT = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=0, eos_token_id=2, pad_token_id=1,
            hidden_size=16, intermediate_size=40, num_hidden_layers=2, num_attention_heads=2, hidden_act="gelu",
            projection_dim=16, layer_norm_eps=1e-5)
UNET = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=16, attention_head_dim=(2, 4), norm_num_groups=32, use_linear_projection=True,
            upcast_attention=True)
VAE = dict(in_channels=3, out_channels=3, block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
           up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=32, layers_per_block=1,
           sample_size=64, scaling_factor=0.18215)
# An LCM-distilled UNet for tiny-sd-a (cross_attention_dim 32, its text encoder's width).
LCM_UNET = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32, time_cond_proj_dim=32)

# (name, scheduler kind or None for the model's own, prompt, seed, steps, guidance, extra pipeline args, stored config)
SD2_CASES = [
    *[(f"sd2-{kind}", kind, [P1, P2, P3][i % 3], 100 + i, 4 if kind != "pndm" else 5, 7.5, {}, None)
      for i, kind in enumerate(list(SCHEDULERS) + ["lcm"])],
    ("sd2-default-ddim-5", None, P2, 21, 5, 7.5, {}, None),
    ("sd2-default-g1-3", None, P3, 8, 3, 1.0, {}, None),
    ("sd2-rescale-0.7", None, P1, 5, 4, 7.5, {"guidance_rescale": 0.7}, None),
    ("sd2-rescale-0.3-euler", "euler", P3, 9, 4, 5.0, {"guidance_rescale": 0.3}, None),
    ("sd2-eps-override", None, P1, 12, 4, 7.5, {}, {**SD21_SCHEDULER, "prediction_type": "epsilon"}),
    ("sd2-turbo-trailing-1", None, P2, 31, 1, 0.0, {},
     {**SD21_SCHEDULER, "_class_name": "EulerDiscreteScheduler", "timestep_spacing": "trailing",
      "interpolation_type": "linear", "use_karras_sigmas": False}),
]
LCM_CASES = [("lcm-unet-4-g1", P1, 42, 4, 1.0), ("lcm-unet-4-g1.5", P2, 7, 4, 1.5), ("lcm-unet-2-g8.5", P3, 3, 2, 8.5)]


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def build_sd2_folder(folder):
    """The SD 2.x-like diffusers folder (fp16-representable fp32 weights), plus the extra
    OpenCLIP block (random) that only the single file carries."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(20)
    text = CLIPTextModel(CLIPTextConfig(**TEXT)).eval()
    torch.manual_seed(21)
    unet = UNet2DConditionModel(**UNET).eval()
    torch.manual_seed(22)
    vae = AutoencoderKL(**VAE).eval()
    # One more layer than the diffusers model: the block SD 2.x skips (penultimate output).
    torch.manual_seed(23)
    deeper = CLIPTextModel(CLIPTextConfig(**{**TEXT, "num_hidden_layers": TEXT["num_hidden_layers"] + 1})).eval()
    for m in (text, unet, vae, deeper):
        round_to_half(m)
    text.save_pretrained(os.path.join(folder, "text_encoder"))
    unet.save_pretrained(os.path.join(folder, "unet"))
    vae.save_pretrained(os.path.join(folder, "vae"))
    write_json(os.path.join(folder, "scheduler", "scheduler_config.json"), SD21_SCHEDULER)
    tok = os.path.join(folder, "tokenizer")
    os.makedirs(tok)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(FIXTURES, "tiny-sd-a", "tokenizer", name), os.path.join(tok, name))
    # stabilityai/stable-diffusion-2-1's tokenizer: pads with "!".
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "!",
               "unk_token": "<|endoftext|>"}
    write_json(os.path.join(tok, "tokenizer_config.json"), {**special, "model_max_length": 77,
                                                            "tokenizer_class": "CLIPTokenizer"})
    write_json(os.path.join(tok, "special_tokens_map.json"), special)
    write_json(os.path.join(folder, "model_index.json"), {
        "_class_name": "StableDiffusionPipeline", "feature_extractor": [None, None], "requires_safety_checker": False,
        "safety_checker": [None, None], "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]})
    return text, deeper


def text_layers(model):
    """The encoder layers of a CLIPTextModel (transformers >= 5.6 drops the text_model level)."""
    return getattr(model, "text_model", model).encoder.layers


def openclip_state(text, extra_layer):
    """The CLIPTextModel as OpenCLIP keys (diffusers' convert_open_clip_checkpoint inverted),
    with `extra_layer` (a CLIPEncoderLayer) appended as the last residual block."""
    p = "cond_stage_model.model."
    s = {k: v for k, v in text.state_dict().items()}
    s = {k if k.startswith("text_model.") else "text_model." + k: v for k, v in s.items()}
    out = {p + "token_embedding.weight": s["text_model.embeddings.token_embedding.weight"],
           p + "positional_embedding": s["text_model.embeddings.position_embedding.weight"],
           p + "ln_final.weight": s["text_model.final_layer_norm.weight"],
           p + "ln_final.bias": s["text_model.final_layer_norm.bias"]}
    layers = [text_layers(text)[i] for i in range(TEXT["num_hidden_layers"])] + [extra_layer]
    for i, layer in enumerate(layers):
        b = f"{p}transformer.resblocks.{i}."
        a = layer.self_attn
        out[b + "attn.in_proj_weight"] = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight], 0)
        out[b + "attn.in_proj_bias"] = torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias], 0)
        out[b + "attn.out_proj.weight"] = a.out_proj.weight
        out[b + "attn.out_proj.bias"] = a.out_proj.bias
        for ours, theirs in (("ln_1", layer.layer_norm1), ("ln_2", layer.layer_norm2), ("mlp.c_fc", layer.mlp.fc1),
                             ("mlp.c_proj", layer.mlp.fc2)):
            out[b + ours + ".weight"] = theirs.weight
            out[b + ours + ".bias"] = theirs.bias
    g = torch.Generator().manual_seed(24)
    out[p + "text_projection"] = torch.randn(TEXT["hidden_size"], TEXT["hidden_size"], generator=g) * 0.1
    out[p + "logit_scale"] = torch.tensor(4.6052)
    return {k: v.detach().half().contiguous() for k, v in out.items()}


def write_single_file(folder, text, deeper, path):
    state = diffusers_to_ldm.convert(folder, half=True, with_extras=False)
    state = {k: v for k, v in state.items() if not k.startswith(diffusers_to_ldm.TEXT_PREFIX)}
    state.update(openclip_state(text, text_layers(deeper)[-1]))
    state["alphas_cumprod"] = diffusers_to_ldm.alphas_cumprod(SD21_SCHEDULER)
    save_file(state, path)


@torch.no_grad()
def check_single_file(folder, path):
    """diffusers' own single-file loader must give the folder's text encoder from our file."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_single_file(path, config=folder, local_files_only=True,
                                                    safety_checker=None, requires_safety_checker=False)
    ref = load_pipeline(folder)
    for name in ("text_encoder", "unet", "vae"):
        a, b = getattr(pipe, name).state_dict(), getattr(ref, name).state_dict()
        for k, v in b.items():
            if k.endswith("position_ids"):
                continue
            assert k in a, f"{name}: {k} missing after from_single_file"
            assert torch.equal(a[k].float(), v.float()), f"{name}: {k} differs after from_single_file"


def run_case(w, pipe, d, name, prompt, seed, steps, guidance, extra, index, meta):
    args = dict(prompt=[prompt], num_inference_steps=steps, guidance_scale=guidance, **extra)
    latents = pipe(**args, generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images
    timesteps = pipe.scheduler.timesteps.tolist()
    image = pipe(**args, generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images
    image_u8 = (image * 255).round().astype(np.uint8)
    index.append(dict(
        name=name, prompts=[prompt], steps=steps, guidance_scale=guidance, seed=seed,
        guidance_rescale=extra.get("guidance_rescale", 0.0), width=image_u8.shape[2], height=image_u8.shape[1],
        scheduler_class=type(pipe.scheduler).__name__, scheduler_config=json_value(dict(pipe.scheduler.config)),
        timesteps=timesteps, ids=w.npy(d + "ids.npy", tokenize(pipe.tokenizer, [prompt]).numpy(), np.int32),
        latents=w.npy(d + "latents.npy", latents.numpy(), np.float32),
        image=w.npy(d + "image.npy", image_u8, np.uint8), folder=name, **meta))
    print(f"  {name}: {type(pipe.scheduler).__name__} timesteps {timesteps}")
    return latents


@torch.no_grad()
def main():
    import diffusers

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    opts = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    scratch = tempfile.mkdtemp()
    w = Writer(os.path.join(FIXTURES, "golden"))
    index = []

    # SD 2.x-like: folder, single file, config-only folder.
    folder = os.path.join(scratch, "tiny-sd2")
    text, deeper = build_sd2_folder(folder)
    single = os.path.join(FIXTURES, "tiny-sd2.safetensors")
    write_single_file(folder, text, deeper, single)
    check_single_file(folder, single)
    config_dir = os.path.join(FIXTURES, "tiny-sd2-config")
    shutil.rmtree(config_dir, ignore_errors=True)
    for name in ("text_encoder", "unet", "vae"):
        os.makedirs(os.path.join(config_dir, name))
        shutil.copyfile(os.path.join(folder, name, "config.json"), os.path.join(config_dir, name, "config.json"))
    shutil.copytree(os.path.join(folder, "scheduler"), os.path.join(config_dir, "scheduler"))
    shutil.copyfile(os.path.join(folder, "model_index.json"), os.path.join(config_dir, "model_index.json"))

    pipe = load_pipeline(folder)
    assert pipe.tokenizer.pad_token == "!" and pipe.tokenizer.pad_token_id == 0
    stored = pipe.scheduler.config
    classes = dict(SCHEDULERS, lcm=("LCMScheduler", {}))
    for name, kind, prompt, seed, steps, guidance, extra, other in SD2_CASES:
        if other is not None:
            variant = os.path.join(scratch, "variant")
            shutil.rmtree(variant, ignore_errors=True)
            shutil.copytree(folder, variant)
            write_json(os.path.join(variant, "scheduler", "scheduler_config.json"), other)
            pipe.scheduler = getattr(diffusers, other["_class_name"]).from_config(
                load_pipeline(variant).scheduler.config)
        elif kind is None:
            pipe.scheduler = type(load_pipeline(folder).scheduler).from_config(stored)
        else:
            class_name, kwargs = classes[kind]
            pipe.scheduler = getattr(diffusers, class_name).from_config(stored, **kwargs)
        run_case(w, pipe, f"sd2/{name}/", name, prompt, seed, steps, guidance, extra, index,
                 dict(model="tiny-sd2", scheduler=kind, stored_scheduler_config=other))

    # LCM-distilled UNet on tiny-sd-a.
    from diffusers import LatentConsistencyModelPipeline, UNet2DConditionModel
    torch.manual_seed(30)
    unet = UNet2DConditionModel(**LCM_UNET).eval()
    round_to_half(unet)
    unet_dir = os.path.join(FIXTURES, "tiny-lcm-unet")
    shutil.rmtree(unet_dir, ignore_errors=True)
    unet.half().save_pretrained(unet_dir, variant="fp16")
    unet.float()
    lcm_folder = os.path.join(scratch, "tiny-lcm")
    shutil.copytree(os.path.join(FIXTURES, "tiny-sd-a"), lcm_folder)
    shutil.rmtree(os.path.join(lcm_folder, "unet"))
    shutil.copytree(unet_dir, os.path.join(lcm_folder, "unet"))
    write_json(os.path.join(lcm_folder, "scheduler", "scheduler_config.json"), LCM_SCHEDULER)
    index_path = os.path.join(lcm_folder, "model_index.json")
    with open(index_path) as f:
        model_index = json.load(f)
    model_index["scheduler"] = ["diffusers", "LCMScheduler"]
    write_json(index_path, model_index)
    lcm = load_pipeline(lcm_folder)
    assert type(lcm.scheduler).__name__ == "LCMScheduler"
    lcm_pipe = LatentConsistencyModelPipeline(**{k: getattr(lcm, k) for k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")},
                                              safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    lcm_pipe.set_progress_bar_config(disable=True)
    for name, prompt, seed, steps, guidance in LCM_CASES:
        latents = run_case(w, lcm, f"sd2/{name}/", name, prompt, seed, steps, guidance, {}, index,
                           dict(model="tiny-lcm", scheduler=None, stored_scheduler_config=LCM_SCHEDULER))
        other = lcm_pipe(prompt=[prompt], num_inference_steps=steps, guidance_scale=guidance,
                         generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images
        err = ((other - latents).norm() / latents.norm()).item()
        assert err < 1e-5, f"{name}: LatentConsistencyModelPipeline differs from StableDiffusionPipeline ({err})"
    shutil.rmtree(scratch)
    w.json("sd2/cases.json", dict(
        reference=f"diffusers {diffusers.__version__} StableDiffusionPipeline, CPU fp32; tiny-sd2 = "
                  "Tests/Fixtures/tiny-sd2.safetensors with tiny-sd2-config (SD 2.x-like, v-prediction, '!' padding); "
                  "tiny-lcm = tiny-sd-a with unet/ from tiny-lcm-unet and an LCMScheduler config "
                  "(stored_scheduler_config); scheduler null = the model's own class from its stored config, "
                  "else <class>.from_config(stored config) as in golden/pipeline; "
                  "generator=torch.Generator('cpu').manual_seed(seed)",
        cases=index))
    if opts.json:
        print(json.dumps({"cases": [c["name"] for c in index]}))


if __name__ == "__main__":
    main()
