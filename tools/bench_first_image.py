#!/usr/bin/env python3
"""Time to first image: whole `pocketsd generate` processes, as a user starts them.

    tools/bench_first_image.py --sd15 SD15.pdm --turbo TURBO.pdm [--pocketsd PATH] [--runs N]
        [--reference PYTHON --sd15-folder DIR --turbo-folder DIR --taesd-folder DIR]

Both model files need the tiny autoencoder (`convert … --taesd DIR`). Runs, each with
`--vae full` and `--vae taesd`, `--memory keep` and `--memory stream`, 512×512, seed 1:

  SD 1.5, 20 steps, the model's own scheduler, guidance 7.5 (two UNet batches per step)
  LCM, 4 steps, `--scheduler lcm --guidance 1` on the SD 1.5 file (the LCM-LoRA way: one
      batch per step; an LCM-distilled UNet costs the same per step)
  SD-Turbo, 1 step, guidance 0, the model's own trailing Euler

With `--reference`, each of the three runs is also made by diffusers on CPU PyTorch in the
same session (tools/first_image_diffusers.py under that Python, from the diffusers folders the
model files were converted from; float32, all resident: its rows say "keep").

Wall time and peak RSS are measured from outside (`/usr/bin/time`-style: wait4's rusage of
the child), the phase split from the run's own `--json`. Prints a Markdown table; the median
of N runs per row (default 1). Python only drives the processes: nothing here is measured
in Python.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.machine()
    model = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name")), "?")
    flags = next((l.split(":", 1)[1].split() for l in info.splitlines() if l.startswith("flags")), [])
    wanted = [f for f in ("avx2", "fma", "f16c", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return f"{model} ({os.cpu_count()} CPUs; {' '.join(wanted)})"


def measure(cmd):
    """Runs cmd to its end; (stdout, wall s, CPU s, peak RSS MiB) as wait4 sees the child."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    if status != 0:
        sys.exit(f"bench_first_image: {' '.join(cmd)} failed with status {status}")
    return out, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def run_pocketsd(pocketsd, args):
    with tempfile.TemporaryDirectory() as tmp:
        out, wall, cpu, rss = measure([pocketsd, "generate", *args, "-p", "a photo of a cat", "--seed", "1",
                                       "-o", os.path.join(tmp, "out.png"), "--json"])
    phases = {p["name"]: p["seconds"] for p in json.loads(out)["phases"]}
    return {"wall": wall, "cpu": cpu, "rss_mib": rss, "text": phases.get("text encoder", 0),
            "denoise": phases.get("denoising", 0), "decode": phases.get("vae decode", 0)}


def run_diffusers(python, folder, args):
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "first_image_diffusers.py")
    out, wall, cpu, rss = measure([python, script, folder, *args])
    phases = json.loads(out.decode().strip().splitlines()[-1])
    return {"wall": wall, "cpu": cpu, "rss_mib": rss, "import": phases["import"], "load": phases["load"],
            "generate": phases["generate"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sd15", required=True)
    ap.add_argument("--turbo", required=True)
    ap.add_argument("--pocketsd", default=".build/release/pocketsd")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--only", help="run only rows whose label contains this text")
    ap.add_argument("--reference", metavar="PYTHON", help="a Python with diffusers: add its runs")
    ap.add_argument("--sd15-folder")
    ap.add_argument("--turbo-folder")
    ap.add_argument("--taesd-folder")
    a = ap.parse_args()
    if a.reference and not (a.sd15_folder and a.turbo_folder and a.taesd_folder):
        ap.error("--reference needs --sd15-folder, --turbo-folder and --taesd-folder")

    # (label, pocketsd arguments, diffusers folder, diffusers arguments)
    models = [
        ("SD 1.5, 20 steps, CFG 7.5", ["-m", a.sd15, "--steps", "20"],
         a.sd15_folder, ["--steps", "20", "--guidance", "7.5"]),
        ("LCM, 4 steps, guidance 1", ["-m", a.sd15, "--steps", "4", "--scheduler", "lcm", "--guidance", "1"],
         a.sd15_folder, ["--steps", "4", "--guidance", "1", "--scheduler", "lcm"]),
        ("SD-Turbo, 1 step, guidance 0", ["-m", a.turbo, "--steps", "1", "--guidance", "0"],
         a.turbo_folder, ["--steps", "1", "--guidance", "0"]),
    ]
    print(f"CPU: {cpu_name()}; load average at start {os.getloadavg()[0]:.2f}; "
          f"median of {a.runs} run(s) per row")
    print()
    print("| run (512×512) | VAE | program, memory | wall s | CPU s | text encoder s | denoising s "
          "| decode s | peak RSS MiB |")
    print("|---|---|---|--:|--:|--:|--:|--:|--:|")
    median = lambda runs: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    for label, args, folder, reference_args in models:
        for vae in ("full", "taesd"):
            for memory in ("keep", "stream"):
                if a.only and a.only not in f"{label} {vae} {memory}":
                    continue
                m = median([run_pocketsd(a.pocketsd, args + ["--width", "512", "--height", "512",
                                                            "--vae", vae, "--memory", memory])
                            for _ in range(a.runs)])
                print(f"| {label} | {vae} | pocketsd int8, {memory} | {m['wall']:.2f} | {m['cpu']:.2f} "
                      f"| {m['text']:.2f} | {m['denoise']:.2f} | {m['decode']:.2f} | {m['rss_mib']:.1f} |",
                      flush=True)
            if a.reference and not (a.only and a.only not in f"{label} {vae} diffusers"):
                extra = ["--taesd", a.taesd_folder] if vae == "taesd" else []
                m = median([run_diffusers(a.reference, folder, reference_args + extra) for _ in range(a.runs)])
                print(f"| {label} | {vae} | diffusers fp32, keep (import {m['import']:.1f} s, load "
                      f"{m['load']:.1f} s, pipeline call {m['generate']:.1f} s) | {m['wall']:.2f} | {m['cpu']:.2f} "
                      f"| | | | {m['rss_mib']:.1f} |", flush=True)

if __name__ == "__main__":
    main()
