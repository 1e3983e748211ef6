#!/usr/bin/env bash
# The one release build that demo.sh, test.sh and install.sh share: the same flags, so
# running one after another reuses what the first compiled instead of rebuilding it.
#   tools/build.sh [--tests]     pocketsd only, or pocketsd and the test bundle
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
flags=(-c release -Xswiftc -enable-testing)
if [ "${1:-}" = "--tests" ]; then
  swift build "${flags[@]}" --build-tests
else
  swift build "${flags[@]}" --product pocketsd
fi
