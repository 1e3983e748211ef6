#!/usr/bin/env bash
# Runs `pocketsd bench` on one or more .pdm files and then tools/bench_diffusers.py on the
# diffusers folder they were converted from, back to back, and prints one markdown table
# (docs/BENCHMARKS.md). The cores may be shared, so it first waits (up to WAIT_SECONDS) for
# QUIET_WINDOWS consecutive 10-second windows with fewer than MAX_BUSY cores busy.
#
#   tools/bench.sh [MODEL.pdm[:PRECISION[:KERNELS]] ...]   default: models/sd15-int8.pdm (precision and kernels auto)
#   e.g. tools/bench.sh models/sd15-int8.pdm:bf16 models/sd15-int8.pdm:f32 models/sd15-int8.pdm:f32:portable
#
# Environment: POCKETSD (binary, default .build/release/pocketsd), FOLDER (diffusers folder,
# default models/sd15-random), THREADS (default: all cores), WIDTH/HEIGHT (512), STEPS (1),
# REPEATS (3), UNET_RUNS (2, diffusers), OUT (JSON folder, default /tmp/pocketsd-bench),
# PYTHON (/work/venv/bin/python), MAX_BUSY (0.15), QUIET_WINDOWS (2; 0 = don't wait),
# WAIT_SECONDS (1800), SKIP_DIFFUSERS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
POCKETSD=${POCKETSD:-.build/release/pocketsd}
FOLDER=${FOLDER:-models/sd15-random}
THREADS=${THREADS:-$(nproc)}
WIDTH=${WIDTH:-512}
HEIGHT=${HEIGHT:-512}
STEPS=${STEPS:-1}
REPEATS=${REPEATS:-3}
UNET_RUNS=${UNET_RUNS:-2}
OUT=${OUT:-/tmp/pocketsd-bench}
PYTHON=${PYTHON:-/work/venv/bin/python}
MAX_BUSY=${MAX_BUSY:-0.15}
QUIET_WINDOWS=${QUIET_WINDOWS:-2}
WAIT_SECONDS=${WAIT_SECONDS:-1800}
[ $# -gt 0 ] || set -- models/sd15-int8.pdm

[ -x "$POCKETSD" ] || { echo "bench.sh: $POCKETSD not found; run swift build -c release first" >&2; exit 1; }
for m in "$@"; do [ -f "${m%%:*}" ] || { echo "bench.sh: no model file ${m%%:*} (pocketsd convert $FOLDER -o ${m%%:*})" >&2; exit 1; }; done
mkdir -p "$OUT"

# Cores busy over the next 10 s, from /proc/stat (the load average lags by minutes).
busy_cores() {
    local a b
    a=$(head -1 /proc/stat); sleep 10; b=$(head -1 /proc/stat)
    awk -v a="$a" -v b="$b" -v n="$(nproc)" 'BEGIN {
        split(a, x); split(b, y); busy = 0; all = 0
        for (i = 2; i <= 9; i++) { d = y[i] - x[i]; all += d; if (i != 5 && i != 6) busy += d }
        printf "%.2f", (all > 0 ? n * busy / all : 0) }'
}
quiet=0 waited=0
while [ "$quiet" -lt "$QUIET_WINDOWS" ] && [ "$waited" -lt "$WAIT_SECONDS" ]; do
    b=$(busy_cores); waited=$((waited + 10))
    if awk -v b="$b" -v max="$MAX_BUSY" 'BEGIN { exit !(b < max) }'; then quiet=$((quiet + 1)); else
        quiet=0; echo "bench.sh: $b cores busy (load $(cut -d' ' -f1-3 /proc/loadavg)), waiting…" >&2; fi
done
[ "$quiet" -ge "$QUIET_WINDOWS" ] || echo "bench.sh: the machine did not get quiet; running anyway" >&2
echo "bench.sh: start $(date -u +%FT%TZ), uptime:$(uptime)" >&2

ours=() reference=()
run_ours() {
    local model=${1%%:*} precision=auto kernels=auto name
    [[ $1 == *:* ]] && precision=${1#*:}
    [[ $precision == *:* ]] && { kernels=${precision#*:}; precision=${precision%%:*}; }
    name=$(basename "$model" .pdm)-$precision-$kernels
    echo "bench.sh: pocketsd bench -m $model --precision $precision --kernels $kernels ($(cut -d' ' -f1-3 /proc/loadavg))" >&2
    "$POCKETSD" bench -m "$model" --precision "$precision" --kernels "$kernels" --width "$WIDTH" --height "$HEIGHT" \
        --steps "$STEPS" --repeats "$REPEATS" --threads "$THREADS" --json > "$OUT/pocketsd-$name.json"
    ours+=("$OUT/pocketsd-$name.json")
}
# The first model and diffusers run back to back: that is the comparison that matters.
run_ours "$1"
if [ "${SKIP_DIFFUSERS:-0}" != 1 ]; then
    echo "bench.sh: tools/bench_diffusers.py $FOLDER ($(cut -d' ' -f1-3 /proc/loadavg))" >&2
    "$PYTHON" tools/bench_diffusers.py "$FOLDER" --threads "$THREADS" --width "$WIDTH" --height "$HEIGHT" \
        --unet-runs "$UNET_RUNS" --json > "$OUT/diffusers.json"
    reference=("$OUT/diffusers.json")
fi
shift
for m in "$@"; do run_ours "$m"; done
files=("${ours[@]}" "${reference[@]}")
echo "bench.sh: end $(date -u +%FT%TZ), uptime:$(uptime)" >&2

"$PYTHON" - "${files[@]}" <<'EOF'
import json, sys

runs = [json.load(open(p)) for p in sys.argv[1:]]
ours = [r for r in runs if "kernels" in r]
ref = next((r for r in runs if r.get("tool") == "diffusers"), None)
gib = lambda b: f"{b / 2**30:.2f} GiB"

def phase(run, prefix):
    return next((p for p in run["phases"] if p["name"].startswith(prefix)), None)

cols = [f"pocketsd {r['weights']} {r.get('precision', 'f32')} {r.get('kernel_variant', '')}".rstrip() for r in ours] + (["diffusers fp32"] if ref else [])
print("| phase | " + " | ".join(cols) + (" | " + " | ".join(f"diffusers ÷ {c[9:]}" for c in cols[:len(ours)]) if ref else "") + " |")
print("|---|" + "--:|" * (len(cols) + (len(ours) if ref else 0)))
for label, prefix in [("text encoder, batch 2 (s)", "text encoder"), ("UNet step, guided batch 2 (s)", "UNet step"),
                      ("VAE decode (s)", "VAE decode")]:
    ps = [phase(r, prefix) for r in ours] + ([phase(ref, prefix)] if ref else [])
    cells = [f"{p['median_seconds']:.2f} ({p['median_cpu_seconds']:.1f})" if p else "–" for p in ps]
    if ref:
        cells += [f"{ps[-1]['median_seconds'] / p['median_seconds']:.2f}×" if p and ps[-1] else "–" for p in ps[:len(ours)]]
    print(f"| {label} | " + " | ".join(cells) + " |")
peaks = [r["peak_rss_bytes"] for r in ours] + ([ref["peak_rss_bytes"]] if ref else [])
cells = [gib(b) for b in peaks] + ([f"{peaks[-1] / b:.2f}×" for b in peaks[:len(ours)]] if ref else [])
print("| peak RSS | " + " | ".join(cells) + " |")
print("\nSeconds: median wall time (median CPU time of all threads). Load average (1 min) at start → end: "
      + ", ".join(f"{c} {r['load_average'][0]:.2f} → {r.get('load_average_end', [float('nan')])[0]:.2f}"
                  for c, r in zip(cols, ours + ([ref] if ref else []))) + ".")

for r in ours:
    peak = r["fma_peak_gflops"]
    print(f"\npocketsd {r['weights']} ({r['kernel_weight_type']} kernels, {r.get('precision', 'f32')} products, "
          f"variant {r.get('kernel_variant', '?')}), {r['threads']} threads, CPU {r.get('cpu_model', '?')}, "
          f"FMA peak {peak:.1f} GFLOP/s ({r.get('fma_peak_lanes', '?')}-wide); median of the repeats after one warm-up\n")
    print("| kernel | shape | GFLOP/s | % of peak | median ms | min ms | max ms | GFLOP/s per CPU-s |")
    print("|---|---|--:|--:|--:|--:|--:|--:|")
    for k in r["kernels"]:
        print(f"| {k['name']} | {k['shape']} | {k['gflops']:.1f} | {k['percent_of_peak']:.0f} | {k['median_seconds'] * 1e3:.1f} | "
              f"{k['min_seconds'] * 1e3:.1f} | {k['max_seconds'] * 1e3:.1f} | {k['gflops_per_cpu_second']:.1f} |")
EOF
