#!/usr/bin/env python3
"""Fixtures and goldens for img2img and inpainting: diffusers' StableDiffusionImg2ImgPipeline and
StableDiffusionInpaintPipeline on the tiny fixture model (and a tiny 9-channel inpainting UNet),
Pillow's Lanczos resize, Pillow's PNG decoding, and the VAE encoder.

    /work/venv/bin/python tools/make_img2img_goldens.py

Writes:
  Tests/Fixtures/tiny-sd-inpaint-unet/      a 9-input-channel UNet: tiny-sd-a's UNet config with
                                            in_channels 9, random weights (torch seed 9), fp16 file;
                                            the tests put it in a copy of tiny-sd-a as unet/
  Tests/Fixtures/golden/img2img/
    images/*.png                            init images and masks (small, made from seeded noise)
    cases.json + <case>/{latents,image}.npy pipeline runs: final latents (output_type="latent") and
                                            (image*255).round() uint8 [B,H,W,3]
    lanczos/index.json + *.npy              Image.resize((w,h), LANCZOS) of 8-bit RGB and L images
    png/index.json + *.png + *.npy          PNGs of every colour type and Image.open().convert("RGB")
                                            (16-bit grey: the high byte); only this part:
                                            python -c 'import make_img2img_goldens as m; m.png_goldens(m.Writer(m.GOLDEN))'
                                            from tools/
    encode/index.json + *.npy               vae.encode(x).latent_dist mean and std, x f32 [1,3,H,W]

Requirements: the reference stack in /work/venv (torch CPU, diffusers 0.42, Pillow, numpy).
"""
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_goldens import P1, P2, P3, REPO, Writer, json_value  # noqa: E402

FIXTURES = os.path.join(REPO, "Tests", "Fixtures")
GOLDEN = os.path.join(FIXTURES, "golden", "img2img")
INPAINT_UNET = os.path.join(FIXTURES, "tiny-sd-inpaint-unet")

SCHEDULERS = {
    "pndm": ("PNDMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++2m": ("DPMSolverMultistepScheduler", {}),
}

# (name, mode, scheduler, prompt, seed, steps, guidance, strength, init image, mask, size (w, h) or None,
#  images per prompt)
# mode: img2img | inpaint9 | inpaint4. A size of None is the init image's, rounded down to 8.
CASES = [
    *[(f"img2img-{s}-{k}", "img2img", k, P1, 42, 8, 7.5, s, "init-52x44", None, None, 1)
      for k in ("pndm", "dpm++2m", "lms") for s in (0.3, 0.6, 1.0)],
    ("img2img-euler-a-0.75", "img2img", "euler-a", P2, 7, 6, 7.5, 0.75, "init-52x44", None, None, 1),
    ("img2img-ddim-0.75-g1", "img2img", "ddim", P3, 3, 5, 1.0, 0.75, "init-40x64", None, None, 1),
    ("img2img-euler-0.6-x2", "img2img", "euler", P1, 11, 5, 7.5, 0.6, "init-40x64", None, None, 2),
    ("img2img-resize-0.6", "img2img", "pndm", P2, 5, 5, 7.5, 0.6, "init-52x44", None, (64, 32), 1),
    ("inpaint9-pndm-1.0", "inpaint9", "pndm", P1, 42, 6, 7.5, 1.0, "init-48x40", "mask-48x40", None, 1),
    ("inpaint9-euler-a-0.75", "inpaint9", "euler-a", P2, 8, 6, 7.5, 0.75, "init-48x40", "mask-48x40", None, 1),
    ("inpaint9-ddim-0.5-g1", "inpaint9", "ddim", P3, 9, 6, 1.0, 0.5, "init-48x40", "mask-rgb-48x40", None, 1),
    ("inpaint4-pndm-1.0", "inpaint4", "pndm", P1, 42, 6, 7.5, 1.0, "init-48x40", "mask-48x40", None, 1),
    ("inpaint4-lms-0.75", "inpaint4", "lms", P2, 12, 6, 7.5, 0.75, "init-48x40", "mask-48x40", None, 1),
    ("inpaint4-dpm++2m-0.6", "inpaint4", "dpm++2m", P3, 13, 6, 7.5, 0.6, "init-48x40", "mask-rgb-48x40", None, 1),
]


def smooth_image(rng, w, h):
    """A low-frequency RGB picture (noise blurred by resizing up), so resizing and the VAE see
    structure rather than white noise."""
    small = rng.integers(0, 256, size=(max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    return Image.fromarray(small, "RGB").resize((w, h), Image.BICUBIC)


def make_images(root):
    rng = np.random.default_rng(1234)
    os.makedirs(root, exist_ok=True)
    images = {}
    for name, (w, h) in {"init-52x44": (52, 44), "init-40x64": (40, 64), "init-48x40": (48, 40)}.items():
        images[name] = smooth_image(rng, w, h)
    # Masks: white = repaint. A grey ramp crosses the 0.5 threshold; the RGB one is coloured.
    y, x = np.mgrid[0:40, 0:48]
    images["mask-48x40"] = Image.fromarray(((x > 18) & (y > 10) & (y < 34)).astype(np.uint8) * 255, "L")
    ramp = np.clip((x * 6 + y * 2) - 100, 0, 255).astype(np.uint8)
    images["mask-rgb-48x40"] = Image.fromarray(np.stack([ramp, 255 - ramp // 3, ramp // 2], -1), "RGB")
    for name, im in images.items():
        im.save(os.path.join(root, name + ".png"))
    return {name: Image.open(os.path.join(root, name + ".png")) for name in images}


def make_inpaint_unet():
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    config = dict(UNet2DConditionModel.load_config(os.path.join(FIXTURES, "tiny-sd-a", "unet")))
    config["in_channels"] = 9
    torch.manual_seed(9)
    unet = UNet2DConditionModel.from_config(config)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in unet.state_dict().items()}
    os.makedirs(INPAINT_UNET, exist_ok=True)
    save_file(state, os.path.join(INPAINT_UNET, "diffusion_pytorch_model.fp16.safetensors"), metadata={"format": "pt"})
    unet.save_config(INPAINT_UNET)


def model_folder(scratch, inpaint):
    folder = os.path.join(scratch, "inpaint" if inpaint else "plain")
    if not os.path.exists(folder):
        shutil.copytree(os.path.join(FIXTURES, "tiny-sd-a"), folder)
        if inpaint:
            shutil.rmtree(os.path.join(folder, "unet"))
            shutil.copytree(INPAINT_UNET, os.path.join(folder, "unet"))
    return folder


def lanczos_goldens(w):
    rng = np.random.default_rng(77)
    index = []
    src_rgb = rng.integers(0, 256, size=(23, 37, 3), dtype=np.uint8)
    src_l = rng.integers(0, 256, size=(31, 17), dtype=np.uint8)
    w.npy("lanczos/src-rgb.npy", src_rgb, np.uint8)
    w.npy("lanczos/src-l.npy", src_l, np.uint8)
    for src, mode, sizes in ((src_rgb, "RGB", [(16, 16), (48, 40), (37, 8), (5, 23), (80, 61), (36, 22)]),
                             (src_l, "L", [(8, 16), (40, 64), (17, 30)])):
        for (ow, oh) in sizes:
            out = np.asarray(Image.fromarray(src, mode).resize((ow, oh), Image.LANCZOS))
            name = f"lanczos/{mode.lower()}-{ow}x{oh}.npy"
            w.npy(name, out, np.uint8)
            index.append(dict(source=f"src-{mode.lower()}.npy", mode=mode, width=ow, height=oh, file=os.path.basename(name)))
    w.json("lanczos/index.json", dict(reference="PIL.Image.resize((width, height), Image.LANCZOS) of the source array",
                                      cases=index))


def png_goldens(w):
    rng = np.random.default_rng(99)
    root = os.path.join(GOLDEN, "png")
    os.makedirs(root, exist_ok=True)
    rgb = rng.integers(0, 256, size=(9, 13, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, size=(9, 13), dtype=np.uint8)
    alpha = rng.integers(0, 256, size=(9, 13, 1), dtype=np.uint8)
    files = {
        "rgb8": Image.fromarray(rgb, "RGB"),
        "rgba8": Image.fromarray(np.concatenate([rgb, alpha], -1), "RGBA"),
        "gray8": Image.fromarray(gray, "L"),
        "gray-alpha8": Image.fromarray(np.stack([gray, alpha[..., 0]], -1), "LA"),
        "palette": Image.fromarray(rgb, "RGB").quantize(16),
        "gray16": Image.fromarray((gray.astype(np.uint16) * 257 + 3).astype(np.uint16)),
        "gray1": Image.fromarray(gray > 128),
    }
    index = []
    for name, im in files.items():
        im.save(os.path.join(root, name + ".png"))
        back = Image.open(os.path.join(root, name + ".png"))
        mode = back.mode
        if mode.startswith("I"):
            # Pillow opens 16-bit grey as I;16 and its convert("RGB") clips the 16-bit values to
            # 255 (white); the reference is the 8-bit reduction, the high byte, instead.
            expected = np.repeat((np.asarray(back).astype(np.uint16) >> 8).astype(np.uint8)[..., None], 3, -1)
        else:
            expected = np.asarray(back.convert("RGB"))
        index.append(dict(file=name + ".png", pil_mode=mode, rgb=w.npy(f"png/{name}.npy", expected, np.uint8)))
    w.json("png/index.json", dict(reference="PIL.Image.open(file).convert('RGB'); for 16-bit grey (I;16) the high "
                                            "byte of each sample, as Pillow's convert clips those to 255", cases=index))


@torch.no_grad()
def encode_goldens(w, pipe, images):
    from diffusers.image_processor import VaeImageProcessor

    processor = VaeImageProcessor(vae_scale_factor=pipe.vae_scale_factor)
    index = []
    for name in ("init-48x40", "init-40x64"):
        x = processor.preprocess(images[name])
        dist = pipe.vae.encode(x).latent_dist
        d = f"encode/{name}-"
        index.append(dict(image=name + ".png", input=w.npy(d + "input.npy", x.numpy(), np.float32),
                          mean=w.npy(d + "mean.npy", dist.mean.numpy(), np.float32),
                          std=w.npy(d + "std.npy", dist.std.numpy(), np.float32), shape=list(dist.mean.shape)))
    w.json("encode/index.json", dict(reference="VaeImageProcessor().preprocess(Image) then "
                                               "AutoencoderKL.encode(x).latent_dist mean and std (tiny-sd-a)",
                                     cases=index))


@torch.no_grad()
def main():
    import diffusers
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    if os.path.exists(GOLDEN):
        shutil.rmtree(GOLDEN)
    w = Writer(GOLDEN)
    images = make_images(os.path.join(GOLDEN, "images"))
    make_inpaint_unet()
    lanczos_goldens(w)
    png_goldens(w)

    scratch = tempfile.mkdtemp()
    pipes = {}

    def pipeline(mode):
        if mode not in pipes:
            folder = model_folder(scratch, mode == "inpaint9")
            cls = StableDiffusionImg2ImgPipeline if mode == "img2img" else StableDiffusionInpaintPipeline
            pipe = cls.from_pretrained(folder, variant="fp16", dtype=torch.float32, safety_checker=None,
                                       requires_safety_checker=False, local_files_only=True)
            pipe.set_progress_bar_config(disable=True)
            pipes[mode] = pipe
        return pipes[mode]

    encode_goldens(w, pipeline("img2img"), images)
    index = []
    for name, mode, kind, prompt, seed, steps, guidance, strength, init, mask, size, per_prompt in CASES:
        pipe = pipeline(mode)
        class_name, overrides = SCHEDULERS[kind]
        base = pipe.scheduler.config
        pipe.scheduler = getattr(diffusers, class_name).from_config(base, **overrides)
        args = dict(prompt=[prompt], image=images[init], num_inference_steps=steps, guidance_scale=guidance,
                    strength=strength, num_images_per_prompt=per_prompt)
        image = images[init]
        if mode == "img2img":
            if size is not None:
                image = image.resize(size, Image.LANCZOS)  # diffusers' img2img takes its size from the image
                args["image"] = image
            width, height = image.size[0] // 8 * 8, image.size[1] // 8 * 8
        else:
            width, height = size or images[init].size
            args.update(mask_image=images[mask], width=width, height=height)

        def generator():
            # One generator per image (A1111's seed, seed + 1, ...), as pocketsd's default per-image mode.
            gens = [torch.Generator("cpu").manual_seed(seed + i) for i in range(per_prompt)]
            return gens if per_prompt > 1 else gens[0]

        latents = pipe(**args, generator=generator(), output_type="latent").images
        decoded = pipe(**args, generator=generator(), output_type="np").images
        image_u8 = (decoded * 255).round().astype(np.uint8)
        d = f"{name}/"
        index.append(dict(
            name=name, mode=mode, scheduler=kind, prompts=[prompt], steps=steps, guidance_scale=guidance, seed=seed,
            strength=strength, init_image=init + ".png", mask=None if mask is None else mask + ".png",
            resized_init=size is not None and mode == "img2img", width=width, height=height,
            num_images_per_prompt=per_prompt, scheduler_class=class_name,
            timesteps=pipe.scheduler.timesteps.tolist(),
            latents=w.npy(d + "latents.npy", latents.numpy(), np.float32),
            image=w.npy(d + "image.npy", image_u8, np.uint8),
            latents_shape=list(latents.shape), image_shape=list(image_u8.shape), folder=name))
        print(f"  {name}: {latents.shape} timesteps {pipe.scheduler.timesteps.tolist()}")
    shutil.rmtree(scratch)
    w.json("cases.json", dict(
        reference=f"diffusers {diffusers.__version__} StableDiffusionImg2ImgPipeline (mode img2img, tiny-sd-a) and "
                  "StableDiffusionInpaintPipeline (inpaint4: tiny-sd-a; inpaint9: tiny-sd-a with "
                  "tiny-sd-inpaint-unet as unet), CPU fp32, scheduler = <scheduler_class>.from_config(stored config); "
                  "init image and mask as PIL images from images/; img2img with resized_init gets the init image "
                  "already resized to width x height with Image.LANCZOS; generator torch.Generator('cpu')"
                  ".manual_seed(seed), or a list seeded seed + i with several images; latents from "
                  "output_type='latent', image from output_type='np' as (image*255).round().astype(uint8)",
        cases=[json_value(c) for c in index]))


if __name__ == "__main__":
    main()
