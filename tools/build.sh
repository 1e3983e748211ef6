#!/usr/bin/env bash
# The one release build that demo.sh, test.sh and install.sh share: the same flags, so
# running one after another reuses what the first compiled instead of rebuilding it.
#   tools/build.sh [--tests]     pocketsd only, or pocketsd and the test bundle
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
. tools/swift-flags.sh
if [ "${1:-}" = "--tests" ]; then
  swift build "${swift_release_flags[@]}" --build-tests
else
  swift build "${swift_release_flags[@]}" --product pocketsd
fi
