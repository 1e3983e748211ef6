#!/usr/bin/env bash
# Runs the kernel tests and the pipeline goldens once per kernel variant this CPU can run
# (POCKETSD_KERNELS forces it for the whole process), so every variant is held to the same
# references as the default one. Variants the CPU lacks are listed as skipped.
#   tools/test-variants.sh [--json] [--not-auto]     (after tools/build.sh --tests)
# --not-auto skips the widest variant, which `auto` (the plain test run) already tested.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/swift-flags.sh
json=0 not_auto=0
for a in "$@"; do
  case "$a" in
    --json) json=1 ;;
    --not-auto) not_auto=1 ;;
    *) echo "test-variants.sh: unknown option $a (expected --json, --not-auto)" >&2; exit 2 ;;
  esac
done
flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
has() { for f in "$@"; do [[ " $flags " == *" $f "* ]] || return 1; done; }
variants=(portable)
skipped=()
if has avx2 fma f16c; then variants+=(avx2); else skipped+=("avx2 (this CPU lacks it)"); fi
if has avx512f avx512bw avx512vl; then variants+=(avx512); else skipped+=("avx512 (this CPU lacks it)"); fi
if has avx512f avx512bw avx512vl avx512_bf16; then variants+=(avx512-bf16); else skipped+=("avx512-bf16 (this CPU lacks it)"); fi
if has avx512f avx512bw avx512vl avx512_bf16 amx_tile amx_bf16; then variants+=(amx); else skipped+=("amx (this CPU lacks it)"); fi
if [ $not_auto = 1 ]; then
  skipped+=("${variants[-1]} (tested as auto)")
  unset 'variants[-1]'
fi
results=()
status=0
for v in "${variants[@]}"; do
  echo "== kernels $v: SDKernelsTests, PipelineGoldenTests ==" >&2
  log=$(mktemp)
  if POCKETSD_KERNELS=$v swift test "${swift_release_flags[@]}" --skip-build --disable-swift-testing \
       --filter 'SDKernelsTests|PipelineGoldenTests' >"$log" 2>&1; then r=passed; else r=failed; status=1; fi
  summary=$(grep -E "Executed [0-9]+ tests?" "$log" | tail -1 | sed -E 's/^[[:space:]]+//')
  [ $json = 1 ] || echo "kernels $v: $r ($summary)"
  [ "$r" = failed ] && [ $json = 0 ] && grep -E "error:|failed" "$log" | head -20 >&2
  results+=("{\"variant\": \"$v\", \"result\": \"$r\", \"summary\": \"$summary\"}")
  rm -f "$log"
done
for v in "${skipped[@]}"; do [ $json = 1 ] || echo "kernels $v: skipped"; done
if [ $json = 1 ]; then
  skipped_json=$(printf '"%s",' "${skipped[@]}"); skipped_json="[${skipped_json%,}]"
  [ ${#skipped[@]} = 0 ] && skipped_json="[]"
  echo "{\"runs\": [$(IFS=,; echo "${results[*]}")], \"skipped\": $skipped_json}"
fi
exit $status
