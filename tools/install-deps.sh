#!/usr/bin/env bash
# Installs the system packages a build needs when they are missing (Debian/Ubuntu):
# libpng-dev for PNG output, pkg-config to find it.
set -euo pipefail
missing=()
dpkg -s libpng-dev >/dev/null 2>&1 || missing+=(libpng-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
