#!/usr/bin/env bash
# The web page of `pocketsd serve` in headless Chromium (tools/browser-test.py), with what
# it needs installed when missing: Debian's chromium and chromium-driver, and selenium in
# .venv-browser (gitignored). Uses the release build of tools/build.sh and the bundled
# tiny model.
#   tools/browser-test.sh [--screenshot PATH] [--json]    (default screenshot: out/server.png)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "installing chromium chromium-driver" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
fi
if ! .venv-browser/bin/python -c "import selenium" 2>/dev/null; then
  python3 -m venv .venv-browser
  .venv-browser/bin/pip install -q selenium
fi
tools/build.sh
mkdir -p out
model=out/tiny-sd-a.pdm
[ -f "$model" ] || .build/release/pocketsd convert Tests/Fixtures/tiny-sd-a -o "$model" --weights fp16 >/dev/null
args=("$@")
[[ " ${args[*]} " == *" --screenshot "* ]] || args+=(--screenshot out/server.png)
.venv-browser/bin/python tools/browser-test.py --pocketsd .build/release/pocketsd --model "$model" "${args[@]}"
