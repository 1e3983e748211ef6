#!/usr/bin/env bash
# Runs the whole test suite (the README's test command; CI runs it too).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/build.sh --tests
. tools/swift-flags.sh
swift test "${swift_release_flags[@]}" --skip-build --disable-swift-testing "$@"
