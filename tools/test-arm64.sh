#!/usr/bin/env bash
# ARM64 kernels that this x86_64 machine cannot run natively: cross-compile their C unit
# tests with Debian's aarch64 GCC and run them under qemu user-mode emulation. Correctness
# only (emulated timings mean nothing). On an arm64 host the test runs natively.
#   tools/test-arm64.sh [--json]
set -euo pipefail
cd "$(dirname "$0")/.."
json=0
[ "${1:-}" = "--json" ] && json=1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# The sdot kernel, the portable reference it must equal bit for bit, and the test.
sources=(Sources/CKernels/i8_sdot.c Sources/CKernels/i8_gemm.c Tests/arm64/i8_sdot_test.c)
# -ffp-contract=off: GCC ignores `#pragma STDC FP_CONTRACT OFF` and would fuse the contract's
# separately rounded epilogue (multiply, then add) into fused multiply-adds.
flags=(-O2 -ffp-contract=off -march=armv8.2-a+dotprod -I Sources/CKernels/include)
if [ "$(uname -m)" = aarch64 ]; then
  cc "${flags[@]}" "${sources[@]}" -lm -o "$out/i8_sdot_test"
  run=("$out/i8_sdot_test")
else
  if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64-static >/dev/null; then
    echo "test-arm64: installing gcc-aarch64-linux-gnu and qemu-user-static" >&2
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
    # A fresh machine may have no package lists yet.
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq gcc-aarch64-linux-gnu qemu-user-static >&2
  fi
  aarch64-linux-gnu-gcc -static "${flags[@]}" "${sources[@]}" -lm -o "$out/i8_sdot_test"
  # -cpu max: an emulated core with the dot-product extension (like a Cortex-A76).
  run=(qemu-aarch64-static -cpu max "$out/i8_sdot_test")
fi
status=0
"${run[@]}" >"$out/log" 2>&1 || status=$?
if [ $json = 1 ]; then
  passed=$([ $status = 0 ] && echo true || echo false)
  printf '{"test": "i8_sdot_test", "passed": %s, "lines": %d}\n' "$passed" "$(wc -l <"$out/log")"
else
  cat "$out/log"
fi
exit $status
