#!/usr/bin/env bash
# The quick start: builds pocketsd (release), then
#   tools/demo.sh                                  converts the tiny random-weight model bundled in
#                                                  Tests/Fixtures and generates an image with it;
#   tools/demo.sh MODEL [PROMPT]                   converts MODEL (a diffusers folder or a single-file
#                                                  .safetensors SD 1.x checkpoint) to int8 once, then
#                                                  generates a 512x512 image.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/build.sh
bin=.build/release/pocketsd
mkdir -p out
if [ $# -eq 0 ]; then
  echo
  echo "No weights given: running the demo on the tiny model bundled in Tests/Fixtures/tiny-sd-a."
  echo "Its weights are random, so the picture is noise; give a real checkpoint to get a real image:"
  echo "  tools/demo.sh ~/models/stable-diffusion-v1-5 \"a photo of an astronaut riding a horse\""
  echo
  "$bin" convert Tests/Fixtures/tiny-sd-a -o out/tiny-sd-a.pdm --weights int8
  "$bin" generate -m out/tiny-sd-a.pdm -p "a photo of an astronaut riding a horse on mars" \
    --steps 20 --width 128 --height 128 --seed 42 --scheduler dpm++2m -o out/demo.png --stats
else
  model="$1"
  prompt="${2:-a photo of an astronaut riding a horse on mars}"
  name=$(basename "${model%/}")
  name="${name%.safetensors}"
  [ -f "out/$name-int8.pdm" ] || "$bin" convert "$model" -o "out/$name-int8.pdm" --weights int8
  "$bin" generate -m "out/$name-int8.pdm" -p "$prompt" --steps 20 --seed 42 --scheduler dpm++2m -o "out/$name.png" --stats
fi
