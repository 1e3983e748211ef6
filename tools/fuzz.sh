#!/usr/bin/env bash
# Builds and runs one libFuzzer target (Tests/Fuzz/Fuzz*.swift) with AddressSanitizer.
#   tools/fuzz.sh TARGET SECONDS [--json]     TARGET: safetensors, pdm, config, tokenizer, png, lora, http
#   tools/fuzz.sh --list
# Each target is compiled with `swiftc -sanitize=fuzzer,address` as one module made of the
# parser sources it exercises (their `import` lines of sibling modules dropped), so a
# target builds in about a minute without the kernels. New inputs the fuzzer finds go to
# .build-fuzz/corpus/TARGET (seeds: Tests/Fuzz/corpus/TARGET, committed); a crash, a
# timeout or an allocation over 256 MB stops the run (Swift traps too: the runtime's own
# backtracer is turned off so libFuzzer sees the signal) and leaves the input in
# .build-fuzz/artifacts/TARGET. Exit status: 0 when the run ended without a finding,
# 1 on a finding or a failed build, 2 for a usage error.
set -euo pipefail
cd "$(dirname "$0")/.."

targets="safetensors pdm config tokenizer png lora http"
usage() { echo "usage: tools/fuzz.sh TARGET SECONDS [--json]  (targets: $targets)" >&2; exit 2; }
[ "${1:-}" = "--list" ] && { echo "$targets"; exit 0; }
[ $# -ge 2 ] || usage
target=$1 seconds=$2 json=${3:-}
[[ "$seconds" =~ ^[0-9]+$ ]] && [ "$seconds" -ge 1 ] || usage
[ -z "$json" ] || [ "$json" = "--json" ] || usage

format="Sources/SDFormat/AtomicFile.swift Sources/SDFormat/Checksum.swift Sources/SDFormat/FormatError.swift Sources/SDFormat/ProcessSignals.swift
        Sources/SDFormat/JSON.swift Sources/SDFormat/MappedFile.swift Sources/SDFormat/ModelFile.swift
        Sources/SDFormat/ModelFileReader.swift Sources/SDFormat/Safetensors.swift Sources/SDFormat/TensorView.swift
        Sources/SDKernels/WeightMatrix.swift"
case "$target" in
  safetensors) main=FuzzSafetensors; sources="$format Tests/Fuzz/FuzzSupport.swift" ;;
  pdm) main=FuzzModelFile; sources="$format Tests/Fuzz/FuzzSupport.swift" ;;
  config) main=FuzzConfig
          sources="$format $(find Sources/SDModels/Configs Sources/SDSchedulers -name '*.swift' | sort)
                   Sources/SDModels/Support/ModelError.swift Sources/SDPipeline/SchedulerConfigValues.swift" ;;
  tokenizer) main=FuzzTokenizer; sources="$(find Sources/SDTokenizer -name '*.swift' | sort)" ;;
  lora) main=FuzzLoRA
        sources="$format Sources/SDConverter/LoRA.swift Sources/SDConverter/SourceFloats.swift Tests/Fuzz/FuzzSupport.swift" ;;
  # The body decoding only (JobParameters.swift, Img2ImgBody.swift), without Hummingbird/NIO.
  http) main=FuzzHTTP
        sources="$format Sources/SDFormat/OutputFiles.swift Sources/SDFormat/ModelFileWriter.swift
                 $(find Sources/SDSchedulers -name '*.swift' | sort) Sources/SDPipeline/PNGReader.swift
                 Sources/SDPipeline/PNGWriter.swift Sources/SDPipeline/ImageInput.swift Sources/SDPipeline/GenerationRequest.swift Sources/SDPipeline/SizeConditioning.swift
                 Sources/SDServer/JobParameters.swift Sources/SDServer/Img2ImgBody.swift Tests/Fuzz/FuzzSupport.swift" ;;
  # libpng itself is the system's (not instrumented): coverage counts the Swift side only.
  png) main=FuzzPNG; sources="$format Sources/SDFormat/OutputFiles.swift Sources/SDFormat/ModelFileWriter.swift Sources/SDPipeline/PNGReader.swift
                              Sources/SDPipeline/PNGWriter.swift Tests/Fuzz/FuzzSupport.swift" ;;
  *) usage ;;
esac

root=.build-fuzz
build=$root/build/$target
mkdir -p "$build/src" "$root/corpus/$target" "$root/artifacts/$target"
# One module: the sibling-module imports name code that is compiled in alongside.
rm -f "$build"/src/*.swift
for f in $sources Tests/Fuzz/$main.swift; do
  sed -E '/^import (SDFormat|SDKernels|SDSchedulers|SDTokenizer|SDModels|SDPipeline|SDConverter)$/d' "$f" > "$build/src/$(echo "$f" | tr / _)"
done
binary=$build/fuzz-$target
if [ ! -x "$binary" ] || [ -n "$(find $sources Tests/Fuzz/*.swift -newer "$binary" 2>/dev/null | head -1)" ]; then
  echo "building $target…" >&2
  # ld.gold warns about ASan's local symbols on every link: noise, not a problem.
  # -I Sources: the CPNG module map (libpng), for the targets that read PNGs.
  swiftc -sanitize=fuzzer,address -parse-as-library -O -g -module-name Fuzz$target -I Sources/CPNG \
    $( [ "$(uname -m)" = x86_64 ] && echo "-target-cpu haswell" ) \
    "$build"/src/*.swift -o "$binary" 2> >(grep -v "Cannot export local symbol" >&2)
fi

log=$build/last-run.log
start=$(date +%s)
set +e
# ASan keeps freed memory in a quarantine (256 MB by default) to catch use after free; that
# alone would pass -rss_limit_mb while a large corpus loads, so it is capped well below it.
ASAN_OPTIONS=${ASAN_OPTIONS:-quarantine_size_mb=32} SWIFT_BACKTRACE=enable=no "$binary" -max_total_time="$seconds" -rss_limit_mb=256 -malloc_limit_mb=256 -timeout=10 -print_final_stats=1 \
  -artifact_prefix="$root/artifacts/$target/" "$root/corpus/$target" "Tests/Fuzz/corpus/$target" > "$log" 2>&1
status=$?
set -e
elapsed=$(( $(date +%s) - start ))
runs=$(grep -oE "stat::number_of_executed_units: *[0-9]+" "$log" | grep -oE "[0-9]+$" || echo 0)
cov=$(grep -oE "cov: [0-9]+" "$log" | tail -1 | grep -oE "[0-9]+" || echo 0)
ft=$(grep -oE "ft: [0-9]+" "$log" | tail -1 | grep -oE "[0-9]+" || echo 0)
corpus=$(ls "$root/corpus/$target" | wc -l)
finding=$(grep -m1 -E "ERROR: (AddressSanitizer|libFuzzer)|==[0-9]+== ERROR|Fatal error|SUMMARY:" "$log" || true)
if [ "$json" = "--json" ]; then
  printf '{"target":"%s","seconds":%s,"executions":%s,"coverage_edges":%s,"features":%s,"corpus_files":%s,"status":%s,"finding":"%s"}\n' \
    "$target" "$elapsed" "${runs:-0}" "${cov:-0}" "${ft:-0}" "$corpus" "$status" "$(echo "$finding" | tr -d '"\\')"
else
  echo "fuzz $target: ${elapsed} s, ${runs:-0} executions, cov ${cov:-0} edges, ft ${ft:-0}, corpus $corpus files, exit $status"
  [ -z "$finding" ] || { echo "finding: $finding (log: $log, input in $root/artifacts/$target/)"; tail -40 "$log"; }
fi
[ "$status" -eq 0 ] || exit 1
