#!/usr/bin/env bash
# Runs tests under AddressSanitizer and ThreadSanitizer, each in a build of its own
# (.build-asan, .build-tsan: the sanitizers instrument every module, so nothing is shared
# with the ordinary build).
#   tools/sanitize.sh [address|thread|all] [--quick] [--json]
# The default subset: the thread pool, the activation arena, the pipeline's arena and
# golden tests, the model file and safetensors readers, the converter and the output
# files. --quick (CI) runs the thread pool, arena and format tests only. Exit status: 0
# when every run passed, 1 otherwise, 2 for a usage error.
set -euo pipefail
cd "$(dirname "$0")/.."

which=all quick=0 json=0
for a in "$@"; do
  case "$a" in
    address|thread|all) which=$a ;;
    --quick) quick=1 ;;
    --json) json=1 ;;
    *) echo "usage: tools/sanitize.sh [address|thread|all] [--quick] [--json]" >&2; exit 2 ;;
  esac
done
tools/install-deps.sh
. tools/swift-flags.sh
# Debug builds (the sanitizers' usual setting), but optimised: unoptimised SIMD kernels run
# ~100x slower. Package.swift used to optimise only the numeric targets; that was an
# unsafeFlag, which a versioned dependency may not have (tools/swift-flags.sh).
debug_flags=("${swift_cpu_flags[@]}" -Xswiftc -O)

if [ $quick = 1 ]; then
  filter='ThreadPoolTests|ActivationArenaTests|OutputFilesTests|BadInputTests|SafetensorsTests'
else
  filter='ThreadPoolTests|ActivationArenaTests|ActivationArenaPipelineTests|PipelineGoldenTests|OutputFilesTests|BadInputTests|SafetensorsTests|ConverterTests|MemoryTests'
fi
sanitizers=$([ "$which" = all ] && echo "address thread" || echo "$which")
results=() failed=0
for s in $sanitizers; do
  scratch=.build-$([ "$s" = address ] && echo asan || echo tsan)
  log=$(mktemp)
  start=$(date +%s)
  status=0
  {
    echo "== $s sanitizer: build ($scratch)"
    swift build "${debug_flags[@]}" --scratch-path "$scratch" --sanitize="$s" --build-tests
    echo "== $s sanitizer: tests matching $filter"
    # halt_on_error: the first report fails the run; TSan's second_deadlock_stack helps read one.
    ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
      swift test "${debug_flags[@]}" --scratch-path "$scratch" --sanitize="$s" --skip-build --disable-swift-testing --filter "$filter"
  } > "$log" 2>&1 || status=$?
  elapsed=$(( $(date +%s) - start ))
  summary=$(grep -E "Executed [0-9]+ tests?, with [0-9]+ failures?" "$log" | tail -1 | sed -E 's/^ *//' || true)
  reports=$(grep -cE "ERROR: AddressSanitizer|WARNING: ThreadSanitizer" "$log" || true)
  [ $json = 1 ] || { grep -E "ERROR: AddressSanitizer|WARNING: ThreadSanitizer|error:|failed" "$log" | head -20 || true
                     echo "$s sanitizer: exit $status, $elapsed s, ${summary:-no test summary}, $reports sanitizer reports (log $log)"; }
  results+=("{\"sanitizer\":\"$s\",\"status\":$status,\"seconds\":$elapsed,\"summary\":\"$summary\",\"reports\":$reports}")
  [ $status = 0 ] && [ "$reports" = 0 ] || failed=1
done
[ $json = 0 ] || (IFS=,; echo "[${results[*]}]")
exit $failed
