#!/usr/bin/env bash
# Checks that PocketDiffusion works as a versioned dependency of another Swift package, as
# a user adds it: clones this repository's committed HEAD to a temporary folder, tags the
# clone 0.1.0, writes a consumer package that depends on it with
# `.package(url: "file://…", from: "0.1.0")` (SwiftPM refuses a versioned dependency whose
# targets carry unsafeFlags, so this fails if Package.swift grows one again), builds it, and
# runs Examples/CustomPipeline's code, copied unchanged into the consumer, on the bundled
# tiny model (converted from code through the library's Converter).
#
#   tools/test-consumer.sh [SWIFT-BUILD-ARGS...]
#     default: `swift build -c release`, the command a consumer types (portable Swift
#     kernels: see README, "Depending on PocketDiffusion"); e.g. add
#     `-Xswiftc -target-cpu -Xswiftc haswell` to build the consumer with the fast ones.
#
# Checks: the build succeeds, the example writes a 32×32 PNG, and when .build/release/pocketsd
# exists (tools/build.sh), the example's latents equal `pocketsd generate --scheduler lms`'s
# bit for bit (so the consumer's build computes what the project's own build computes).
# Uncommitted changes are not tested: the consumer sees what a tag would publish.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
sha=$(git rev-parse HEAD)
[ -z "$(git status --porcelain --untracked-files=no)" ] ||
  echo "test-consumer: note: uncommitted changes are not part of the test (it uses commit ${sha:0:12})" >&2
tools/install-deps.sh

tmp=$(mktemp -d /tmp/pocketsd-consumer.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
lib=$tmp/PocketDiffusion
git clone -q --no-checkout "$root" "$lib"
git -C "$lib" checkout -q --detach "$sha"
# Only this tag: a real release tag in the history would otherwise be what `from:` picks.
git -C "$lib" tag -l | xargs -r git -C "$lib" tag -d > /dev/null
git -C "$lib" tag 0.1.0

app=$tmp/consumer
mkdir -p "$app/Sources/CustomPipeline" "$app/Sources/Convert"
cat > "$app/Package.swift" <<EOF
// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "Consumer",
    platforms: [.macOS(.v13)],
    dependencies: [
        .package(url: "file://$lib", from: "0.1.0"),
    ],
    targets: [
        .executableTarget(name: "Convert", dependencies: [.product(name: "PocketDiffusion", package: "PocketDiffusion")]),
        .executableTarget(name: "CustomPipeline", dependencies: [.product(name: "PocketDiffusion", package: "PocketDiffusion")]),
    ]
)
EOF
cp "$lib/Examples/CustomPipeline/main.swift" "$app/Sources/CustomPipeline/main.swift"
cat > "$app/Sources/Convert/main.swift" <<'EOF'
// Convert DIFFUSERS-FOLDER OUT.pdm: the converter called from code, fp16 weights.
import Glibc
import PocketDiffusion

let arguments = CommandLine.arguments
guard arguments.count == 3 else { print("usage: Convert DIFFUSERS-FOLDER OUT.pdm"); exit(2) }
do {
    let report = try Converter.convert(input: arguments[1], output: arguments[2],
                                       options: ConversionOptions(weights: .fp16))
    print("wrote \(arguments[2]): \(report.components.map(\.name).joined(separator: ", "))")
} catch {
    print("Convert: \(error)")
    exit(1)
}
EOF

build=(swift build --package-path "$app" --disable-dependency-cache -c release "$@")
echo "test-consumer: ${build[*]}"
start=$(date +%s)
"${build[@]}"
echo "test-consumer: consumer built in $(( $(date +%s) - start )) s"
bin=$(swift build --package-path "$app" -c release "$@" --show-bin-path)

"$bin/Convert" "$lib/Tests/Fixtures/tiny-sd-a" "$tmp/tiny.pdm"
args=(--size 32 --steps 4 --seed 11 --guidance 6)
"$bin/CustomPipeline" "$tmp/tiny.pdm" "a red bicycle" "${args[@]}" -o "$tmp/custom.png" --latents "$tmp/custom.npy"

fail() { echo "test-consumer: FAILED: $*" >&2; exit 1; }
# PNG signature, then the IHDR chunk's width and height (big-endian, bytes 16-23).
[ "$(od -An -tx1 -N8 "$tmp/custom.png" | tr -d ' \n')" = 89504e470d0a1a0a ] || fail "custom.png is not a PNG"
[ "$(od -An -tx1 -j16 -N8 "$tmp/custom.png" | tr -d ' \n')" = 0000002000000020 ] || fail "custom.png is not 32×32"
if [ -x .build/release/pocketsd ]; then
  .build/release/pocketsd generate -m "$tmp/tiny.pdm" -p "a red bicycle" --width 32 --height 32 --steps 4 --seed 11 \
    --guidance 6 --scheduler lms --precision f32 -o "$tmp/builtin.png" --save-latents "$tmp/builtin.npy" > /dev/null
  cmp -s "$tmp/custom.npy" "$tmp/builtin.npy" || fail "the consumer's latents differ from pocketsd generate's"
  echo "test-consumer: the consumer's latents equal pocketsd generate --scheduler lms's"
fi
echo "test-consumer: ok (PocketDiffusion ${sha:0:12} as 0.1.0, 32×32 PNG written)"
