#!/usr/bin/env python3
"""Goldens for Tests/SDSchedulersTests: torch.randn draws and diffusers scheduler loops.

Run with the reference stack (torch 2.x CPU on x86_64, diffusers 0.42):
    /work/venv/bin/python tools/make_scheduler_goldens.py
Writes Tests/Fixtures/schedulers/{rng.json, schedulers.json}.

Float arrays are stored as the concatenated 8-digit hex of their float32 bit patterns
(exact and compact); long draws keep only head, tail and an FNV-1a-64 hash of all bits.

torch's float randn differs between its x86_64 (avx_mathfun) and arm64 (libm) builds;
goldens must come from x86_64 (AVX2 or AVX512 capability), which this script checks.
"""

import inspect
import json
import os
import struct

import numpy as np
import torch
import diffusers
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "schedulers")

# runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json, as stored (absent keys stay absent).
SD15 = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}

CLASSES = {c.__name__: c for c in [PNDMScheduler, DDIMScheduler, LMSDiscreteScheduler, EulerDiscreteScheduler,
                                     EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler, LCMScheduler]}

# What makeScheduler(kind) builds: the class and the keys the kind forces.
KINDS = {
    "pndm": ("PNDMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {"use_karras_sigmas": False}),
    "euler": ("EulerDiscreteScheduler", {"use_karras_sigmas": False}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++2m": ("DPMSolverMultistepScheduler",
                {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False}),
    "dpm++2m-karras": ("DPMSolverMultistepScheduler",
                       {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    "lcm": ("LCMScheduler", {}),
}

# SimianLuo/LCM_Dreamshaper_v7-style scheduler_config.json keys (changes to SD15).
LCM_MODEL = {"_class_name": "LCMScheduler", "original_inference_steps": 50, "timestep_scaling": 10.0,
             "set_alpha_to_one": True, "prediction_type": "epsilon", "rescale_betas_zero_snr": False,
             "thresholding": False, "timestep_spacing": "leading"}
# stabilityai/sd-turbo-style: Euler with trailing spacing.
TURBO_MODEL = {"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "trailing", "interpolation_type": "linear",
               "use_karras_sigmas": False, "prediction_type": "epsilon"}
ADD_NOISE_SEED = 321


def hex_bits(values):
    a = np.ascontiguousarray(np.asarray(values, dtype=np.float32))
    return a.view(np.uint32).astype(">u4").tobytes().hex()


def fnv1a64(values):
    h = 0xCBF29CE484222325
    for w in np.asarray(values, dtype=np.float32).view(np.uint32).tolist():
        for byte in struct.pack("<I", w):
            h ^= byte
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def draw_record(values, full_limit=256):
    values = np.asarray(values, dtype=np.float32)
    rec = {"count": int(values.size), "fnv1a64": fnv1a64(values)}
    if values.size <= full_limit:
        rec["bits"] = hex_bits(values)
    else:
        rec["head"] = hex_bits(values[:64])
        rec["tail"] = hex_bits(values[-64:])
    return rec


def make_rng():
    cap = torch.backends.cpu.get_cpu_capability()
    assert cap in ("AVX2", "AVX512"), f"goldens need torch's x86_64 AVX2/AVX512 path, got {cap}"
    single = []
    for seed in [0, 42, 1234567890123]:
        for n in [1, 2, 7, 15, 16, 17, 31, 33, 100, 256, 4 * 64 * 64]:
            g = torch.Generator("cpu").manual_seed(seed)
            single.append({"seed": seed, **draw_record(torch.randn(n, generator=g, dtype=torch.float32).numpy())})
    sequences = []
    for seed, sizes in [(42, [1, 3, 16, 2, 17, 5, 100, 1, 15, 64]),
                        (7, [7, 7, 1, 33, 1, 2, 4 * 64 * 64, 1]),
                        (1234567890123, [2, 1, 1, 40, 1, 31])]:
        g = torch.Generator("cpu").manual_seed(seed)
        draws = [draw_record(torch.randn(n, generator=g, dtype=torch.float32).numpy()) for n in sizes]
        sequences.append({"seed": seed, "draws": draws})
    return {"torch": torch.__version__, "capability": cap, "single": single, "sequences": sequences}


def deterministic_sample(shape):
    n = int(np.prod(shape))
    k = (np.arange(n, dtype=np.int64) * 37) % n
    return torch.from_numpy((k.astype(np.float32) / np.float32(n) * np.float32(2) - np.float32(1)).reshape(shape))


def full_config(case):
    config = dict(SD15)
    config.update(case["config"])
    for key in case["drop"]:
        config.pop(key)
    return config


def run_case(case):
    cls = CLASSES[case["class"]]
    config = full_config(case)
    if "kind" in case:
        config.update(KINDS[case["kind"]][1])
    sched = cls.from_config(config)
    sched.set_timesteps(case["steps"])
    shape = tuple(case.get("shape", [1, 4, 4, 4]))
    generator = torch.Generator("cpu").manual_seed(case.get("seed", 0))
    init_sigma = sched.init_noise_sigma
    sample = deterministic_sample(shape) * init_sigma
    takes_generator = "generator" in inspect.signature(sched.step).parameters
    trajectory = []
    for t in sched.timesteps:
        x_in = sched.scale_model_input(sample, t)
        factor = float(t) / (float(t) + 1.0)            # dummy model: x * t / (t + 1)
        model_output = x_in * torch.tensor(factor, dtype=torch.float32)
        kwargs = {"generator": generator} if takes_generator else {}
        sample = sched.step(model_output, t, sample, **kwargs).prev_sample
        trajectory.append(float(sample.abs().sum()))
    if not bool(torch.isfinite(sample).all()):
        return None
    record = {
        "timesteps": [float(t) for t in sched.timesteps],
        "initNoiseSigma": float(init_sigma),
        "final": hex_bits(sample.numpy().ravel()),
        "trajectoryAbsSum": trajectory,
    }
    if case["class"] == "LMSDiscreteScheduler" and case["steps"] <= 10:
        # scipy.integrate.quad of the Lagrange basis (epsrel 1e-4) for every step and term.
        record["lmsCoefficients"] = [[sched.get_lms_coefficient(min(i + 1, 4), i, k) for k in range(min(i + 1, 4))]
                                     for i in range(len(sched.timesteps))]
    if hasattr(sched, "sigmas") and case["class"] not in ("PNDMScheduler", "DDIMScheduler"):
        record["sigmas"] = hex_bits(sched.sigmas.numpy())
    # diffusers finds its first step index by value; a duplicated first timestep would start
    # it at index 1. Our schedulers are driven by index, so the goldens must not hit that.
    first = sched.timesteps[0]
    if int((sched.timesteps == first).sum()) != 1:
        return None
    record["addNoise"] = add_noise_records(cls, config, case["steps"], shape)
    return record


def add_noise_records(cls, config, steps, shape):
    """add_noise at the first and the middle timestep, as img2img calls it: a fresh scheduler,
    set_begin_index(i), timesteps[i:i + 1]."""
    records = []
    for i in sorted({0, steps // 2}):
        sched = cls.from_config(config)
        sched.set_timesteps(steps)
        if i >= len(sched.timesteps):
            continue
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(i)
        noise = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(ADD_NOISE_SEED), dtype=torch.float32)
        original = deterministic_sample(shape)
        noisy = sched.add_noise(original, noise, sched.timesteps[i:i + 1])
        records.append({"stepIndex": i, "result": hex_bits(noisy.numpy().ravel())})
    return records


def make_cases():
    cases = []

    # "config" holds the keys changed from SD15 (the file's baseConfig), "drop" the SD15 keys
    # removed (so that the class default applies).
    def add(name, cls_or_kind, steps, **extra):
        case = {"name": name, "steps": steps, "config": extra.pop("config", {}), "drop": extra.pop("drop", []), **extra}
        if cls_or_kind in KINDS:
            case["kind"] = cls_or_kind
            case["class"] = KINDS[cls_or_kind][0]
        else:
            case["class"] = cls_or_kind
        cases.append(case)

    for kind in KINDS:
        for steps in [1, 4, 10, 50]:
            add(f"{kind} sd15 {steps}", kind, steps, seed=1234)
    add("dpm++2m sd15 20", "dpm++2m", 20)
    add("dpm++2m-karras sd15 25", "dpm++2m-karras", 25)
    for kind in KINDS:
        add(f"{kind} v_prediction 10", kind, 10, config={"prediction_type": "v_prediction"}, seed=5)
    for kind in ["ddim", "lms", "euler", "dpm++2m"]:
        # leading spacing: with linspace the last timestep is 0, the dummy output is 0 and so
        # is Euler's final sample, which would leave nothing to compare.
        add(f"{kind} sample-prediction 10", kind, 10, config={"prediction_type": "sample", "timestep_spacing": "leading"})
    for spacing in ["leading", "linspace", "trailing"]:
        for kind in KINDS:
            add(f"{kind} {spacing} 7", kind, 7, config={"timestep_spacing": spacing}, seed=99)
    add("ddim diffusers defaults 10", "ddim", 10, drop=["set_alpha_to_one", "clip_sample"])
    add("ddim clip_sample 10", "ddim", 10, config={"clip_sample": True, "clip_sample_range": 0.5})
    add("ddim set_alpha_to_one 10", "ddim", 10, config={"set_alpha_to_one": True})
    add("pndm prk 4", "pndm", 4, config={"skip_prk_steps": False})
    add("pndm prk 10", "pndm", 10, config={"skip_prk_steps": False})
    add("pndm prk v_prediction 12", "pndm", 12, config={"skip_prk_steps": False, "prediction_type": "v_prediction"})
    add("euler-a odd shape 8", "euler-a", 8, shape=[1, 4, 5, 5], seed=77)
    add("euler-a small shape 5", "euler-a", 5, shape=[1, 1, 3, 3], seed=78)
    add("euler karras 10", "EulerDiscreteScheduler", 10, config={"use_karras_sigmas": True})
    add("lms karras 10", "LMSDiscreteScheduler", 10, config={"use_karras_sigmas": True})
    add("euler final sigma_min 10", "EulerDiscreteScheduler", 10, config={"final_sigmas_type": "sigma_min"})
    add("dpm heun 10", "DPMSolverMultistepScheduler", 10, config={"solver_type": "heun"})
    add("dpm order 3 20", "DPMSolverMultistepScheduler", 20, config={"solver_order": 3})
    add("dpm order 3 karras 12", "DPMSolverMultistepScheduler", 12, config={"solver_order": 3, "use_karras_sigmas": True})
    add("dpm order 1 10", "DPMSolverMultistepScheduler", 10, config={"solver_order": 1})
    add("dpm sigma_min no lower_order_final 10", "DPMSolverMultistepScheduler", 10,
        config={"final_sigmas_type": "sigma_min", "lower_order_final": False})
    add("dpm euler_at_final 20", "DPMSolverMultistepScheduler", 20,
        config={"euler_at_final": True, "final_sigmas_type": "sigma_min"})
    add("dpm lambda_min_clipped 10", "DPMSolverMultistepScheduler", 10,
        config={"lambda_min_clipped": -5.1, "beta_schedule": "squaredcos_cap_v2"})
    zero_snr = {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "prediction_type": "v_prediction"}
    for kind in ["ddim", "euler", "euler-a", "dpm++2m"]:
        add(f"{kind} zero-snr 10", kind, 10, config=zero_snr)
    for kind in ["ddim", "pndm", "euler", "dpm++2m"]:
        add(f"{kind} squaredcos 10", kind, 10, config={"beta_schedule": "squaredcos_cap_v2"})
    for kind in ["ddim", "lms", "euler-a"]:
        add(f"{kind} linear 10", kind, 10, config={"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02})
    # The SD 2.x / Turbo sweep: every kind x prediction type x spacing x small step counts.
    sweep_kinds = [k for k in KINDS if k != "lcm"]
    for kind in sweep_kinds:
        for prediction in ["epsilon", "v_prediction"]:
            for spacing in ["leading", "linspace", "trailing"]:
                for steps in [1, 2, 3, 4, 5]:
                    add(f"{kind} {prediction} {spacing} {steps}", kind, steps, seed=11 + steps,
                        config={"prediction_type": prediction, "timestep_spacing": spacing})
    # Zero terminal SNR (PNDM and LMS have no such option: diffusers ignores the key).
    for kind in sweep_kinds:
        for prediction in ["epsilon", "v_prediction"]:
            for spacing in ["trailing", "linspace", "leading"]:
                for steps in [1, 3, 4]:
                    add(f"{kind} zero-snr {prediction} {spacing} {steps}", kind, steps, seed=21 + steps,
                        config={"prediction_type": prediction, "timestep_spacing": spacing,
                                "rescale_betas_zero_snr": True})
    add("dpm++2m sigma_min zero-snr 6", "DPMSolverMultistepScheduler", 6,
        config={"final_sigmas_type": "sigma_min", "rescale_betas_zero_snr": True, "timestep_spacing": "trailing",
                "prediction_type": "v_prediction"})
    add("euler sigma_min trailing 4", "EulerDiscreteScheduler", 4,
        config={"final_sigmas_type": "sigma_min", "timestep_spacing": "trailing"})
    add("ddim steps_offset 0 leading 4", "ddim", 4, config={"steps_offset": 0})
    add("euler steps_offset 0 leading 4", "euler", 4, config={"steps_offset": 0, "timestep_spacing": "leading"})

    # The model's own scheduler (`model`: built from `_class_name`, nothing forced).
    for steps in [1, 2, 4]:
        for prediction in ["epsilon", "v_prediction"]:
            add(f"turbo euler trailing {prediction} {steps}", "EulerDiscreteScheduler", steps, model=True,
                config={**TURBO_MODEL, "prediction_type": prediction})
    add("model euler karras 8", "EulerDiscreteScheduler", 8, model=True,
        config={"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": True})
    add("model dpm order 3 karras 9", "DPMSolverMultistepScheduler", 9, model=True,
        config={"_class_name": "DPMSolverMultistepScheduler", "solver_order": 3, "use_karras_sigmas": True})
    add("model ddim v 6", "DDIMScheduler", 6, model=True,
        config={"_class_name": "DDIMScheduler", "prediction_type": "v_prediction"})
    add("model pndm 6", "PNDMScheduler", 6, model=True, config={})
    add("model euler-a trailing 3", "EulerAncestralDiscreteScheduler", 3, model=True, seed=5,
        config={"_class_name": "EulerAncestralDiscreteScheduler", "timestep_spacing": "trailing"})
    add("model lms 5", "LMSDiscreteScheduler", 5, model=True, config={"_class_name": "LMSDiscreteScheduler"})

    # LCM: an LCM-distilled model's config, and the kind on SD 1.5's config (the LCM-LoRA way).
    for steps in [1, 2, 3, 4, 8]:
        for prediction in ["epsilon", "v_prediction"]:
            add(f"lcm model {prediction} {steps}", "LCMScheduler", steps, model=True, seed=40 + steps,
                config={**LCM_MODEL, "prediction_type": prediction})
    for steps in [1, 2, 4, 8, 50]:
        add(f"lcm kind sd15 {steps}", "lcm", steps, seed=60 + steps)
    add("lcm sample prediction 4", "LCMScheduler", 4, model=True, config={**LCM_MODEL, "prediction_type": "sample"})
    add("lcm original 25 steps 7", "LCMScheduler", 7, model=True, config={**LCM_MODEL, "original_inference_steps": 25})
    add("lcm original 4 steps 4", "LCMScheduler", 4, model=True, config={**LCM_MODEL, "original_inference_steps": 4})
    add("lcm timestep_scaling 5 4", "LCMScheduler", 4, model=True, config={**LCM_MODEL, "timestep_scaling": 5.0})
    add("lcm clip_sample 4", "LCMScheduler", 4, model=True,
        config={**LCM_MODEL, "clip_sample": True, "clip_sample_range": 0.5})
    add("lcm zero-snr v 4", "LCMScheduler", 4, model=True,
        config={**LCM_MODEL, "rescale_betas_zero_snr": True, "prediction_type": "v_prediction"})
    add("lcm batch shape 4", "LCMScheduler", 4, model=True, shape=[2, 4, 5, 3], seed=7, config=LCM_MODEL)
    # Keys absent from the file take LCM's own defaults (scaled_linear 0.00085-0.012, no clipping).
    add("lcm class defaults 4", "LCMScheduler", 4, model=True, config={"_class_name": "LCMScheduler"},
        drop=["beta_start", "beta_end", "beta_schedule", "clip_sample", "set_alpha_to_one", "steps_offset"])

    trained = [float(b) for b in np.linspace(0.001, 0.05, 100)]
    for kind in ["ddim", "euler", "pndm", "dpm++2m"]:
        add(f"{kind} trained_betas 100 train steps 10", kind, 10,
            config={"trained_betas": trained, "num_train_timesteps": 100})
    return cases


def make_tables():
    tables = []
    for name, config in [("scaled_linear", SD15),
                         ("linear", {"beta_schedule": "linear"}),
                         ("squaredcos_cap_v2", {"beta_schedule": "squaredcos_cap_v2"}),
                         ("zero_snr", {**SD15, "rescale_betas_zero_snr": True})]:
        sched = DDIMScheduler.from_config(config)
        values = sched.alphas_cumprod.numpy()
        table = {"name": name, "config": config, "fnv1a64": fnv1a64(values)}
        if name in ("scaled_linear", "zero_snr"):
            table["alphasCumprod"] = hex_bits(values)
        tables.append(table)
    return tables


def write_json(path, doc, list_keys):
    """One record per line for the long lists, compact elsewhere."""
    def dump(value):
        return json.dumps(value, separators=(",", ":"))
    parts = []
    for key, value in doc.items():
        if key in list_keys:
            parts.append(f"{dump(key)}:[\n" + ",\n".join(dump(v) for v in value) + "\n]")
        else:
            parts.append(f"{dump(key)}:{dump(value)}")
    with open(path, "w") as f:
        f.write("{\n" + ",\n".join(parts) + "\n}\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    write_json(os.path.join(OUT, "rng.json"), make_rng(), {"single", "sequences"})
    cases = []
    for case in make_cases():
        expected = run_case(case)
        if expected is None:
            # Non-finite result (e.g. DDIM with epsilon at zero terminal SNR divides by sqrt(0))
            # or a repeated first timestep (diffusers would start at index 1): not comparable.
            print(f"skipped: {case['name']}")
            continue
        case["expected"] = expected
        cases.append(case)
    doc = {"diffusers": diffusers.__version__, "torch": torch.__version__,
           "dummyModel": "model_output = scale_model_input(x, t) * float32(t / (t + 1)); "
                         "x0 = float32(((37 i) mod n) / n * 2 - 1) * init_noise_sigma",
           "baseConfig": SD15, "tables": make_tables(), "cases": cases}
    write_json(os.path.join(OUT, "schedulers.json"), doc, {"tables", "cases"})
    print(f"wrote {len(cases)} scheduler cases to {OUT}")


if __name__ == "__main__":
    main()
