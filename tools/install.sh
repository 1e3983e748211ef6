#!/usr/bin/env bash
# Puts pocketsd on the PATH:
#   tools/install.sh [PREFIX]           build (release) and copy to PREFIX/bin
#                                       (default: /usr/local as root, else ~/.local)
#   tools/install.sh --static [PREFIX]  the same with the Swift runtime linked in, for
#                                       copying to a machine of the same architecture
#                                       that has no Swift toolchain (only libpng16)
# The installed binary needs no file of this checkout at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
static=0
if [ "${1:-}" = "--static" ]; then static=1; shift; fi
if [ $# -ge 1 ]; then prefix="$1"; elif [ "$(id -u)" = 0 ]; then prefix=/usr/local; else prefix="$HOME/.local"; fi
if [ $static = 1 ]; then
  tools/install-deps.sh
  # A scratch folder of its own: the static runtime changes how everything links.
  . tools/swift-flags.sh
  swift build -c release "${swift_cpu_flags[@]}" --product pocketsd --static-swift-stdlib --scratch-path .build-static
  bin=.build-static/release/pocketsd
else
  tools/build.sh
  bin=.build/release/pocketsd
fi
mkdir -p "$prefix/bin"
# Copy to a temporary name and rename, so a running pocketsd is never half-overwritten.
cp "$bin" "$prefix/bin/.pocketsd.new"
mv -f "$prefix/bin/.pocketsd.new" "$prefix/bin/pocketsd"
echo "installed $prefix/bin/pocketsd"
case ":$PATH:" in
  *":$prefix/bin:"*) ;;
  *) echo "note: $prefix/bin is not on your PATH; add it, e.g.: export PATH=\"$prefix/bin:\$PATH\"" ;;
esac
