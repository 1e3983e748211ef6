#!/usr/bin/env bash
# x86_64 CPUs without AVX2 (the Atom-class Celerons and Pentiums of many boards and mini PCs),
# under qemu user-mode emulation of such a CPU (Nehalem):
#   1. the Haswell build (.build/release/pocketsd, tools/build.sh) refuses to start there with
#      its one-line error and exit status 1 — not SIGILL — and starts under `-cpu max`;
#   2. a baseline build (POCKETSD_SWIFT_CPU=x86-64, in .build-baseline) converts and runs the
#      bundled tiny model there, and its latents equal the Haswell build's (f32, `portable`
#      kernels on both) bit for bit.
# Correctness only: timings under emulation mean nothing.
#   tools/test-baseline-x86.sh        (after tools/build.sh; installs qemu-user-static if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(uname -m)" != x86_64 ]; then echo "test-baseline-x86: skipped (not an x86_64 host)"; exit 0; fi
if ! command -v qemu-x86_64-static >/dev/null; then
  echo "test-baseline-x86: installing qemu-user-static" >&2
  sudo=$([ "$(id -u)" = 0 ] || echo sudo)
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq qemu-user-static >&2
fi
haswell=.build/release/pocketsd
[ -x "$haswell" ] || { echo "test-baseline-x86: build first (tools/build.sh)" >&2; exit 1; }
tmp=$(mktemp -d /tmp/pocketsd-baseline.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
old_cpu=(qemu-x86_64-static -cpu Nehalem)

# 1. The Haswell build on the old CPU: the start-up check's error, nothing else.
status=0
"${old_cpu[@]}" "$haswell" --version > "$tmp/out" 2> "$tmp/err" || status=$?
if [ "$status" != 1 ] || [ -s "$tmp/out" ] || [ "$(wc -l < "$tmp/err")" != 1 ] ||
   ! grep -q "needs an x86_64 with AVX2, FMA and F16C" "$tmp/err"; then
  echo "test-baseline-x86: FAILED: the Haswell build under -cpu Nehalem exited $status (want 1) with:" >&2
  cat "$tmp/out" "$tmp/err" >&2
  exit 1
fi
version=$(qemu-x86_64-static -cpu max "$haswell" --version)
echo "test-baseline-x86: Haswell build: refused on Nehalem ($(cat "$tmp/err" | cut -c1-60)…), runs on -cpu max ($version)"

# 2. A baseline build runs the whole pipeline there, computing what the Haswell build computes.
export POCKETSD_SWIFT_CPU=x86-64  # the override a user sets to build for such a board elsewhere
. tools/swift-flags.sh
swift build "${swift_release_flags[@]}" --scratch-path .build-baseline --product pocketsd >&2
baseline=.build-baseline/release/pocketsd
"${old_cpu[@]}" "$baseline" convert Tests/Fixtures/tiny-sd-a -o "$tmp/tiny.pdm" > /dev/null
run=(generate -m "$tmp/tiny.pdm" -p "a photo of a cat" --steps 3 --seed 5 --kernels portable --precision f32)
"${old_cpu[@]}" "$baseline" "${run[@]}" -o "$tmp/old.png" --save-latents "$tmp/old.npy" > /dev/null
"$haswell" "${run[@]}" -o "$tmp/new.png" --save-latents "$tmp/new.npy" > /dev/null
if ! cmp -s "$tmp/old.npy" "$tmp/new.npy"; then
  echo "test-baseline-x86: FAILED: the baseline build's latents under -cpu Nehalem differ from the Haswell build's" >&2
  exit 1
fi
echo "test-baseline-x86: baseline build: converts and generates under -cpu Nehalem; latents equal the Haswell build's"
