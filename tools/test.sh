#!/usr/bin/env bash
# Runs the whole test suite (the README's test command; CI runs it too).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/build.sh --tests
swift test -c release -Xswiftc -enable-testing --skip-build --disable-swift-testing "$@"
