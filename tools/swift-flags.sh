# Sourced by the scripts that build this package (build.sh, test.sh, test-variants.sh,
# check-kernel-asm.sh, install.sh, sanitize.sh): the code-generation flags that used to be
# unsafeFlags in Package.swift. They live here because SwiftPM refuses a versioned
# dependency with unsafeFlags (README, "Depending on PocketDiffusion"); every script passes
# the same ones, so one build's objects are reused by the next instead of rebuilt.
#
# x86_64: FMA and F16C for the Swift SIMD kernels (`addingProduct`, Float16 conversions);
# without them each becomes a per-lane library call. Haswell is the oldest x86_64 with
# both. arm64 has them in its base ISA. `-Xswiftc` reaches every Swift module of the build,
# the dependencies' too; the C kernels choose their own at run time either way.
swift_cpu_flags=()
if [ "$(uname -m)" = x86_64 ]; then swift_cpu_flags=(-Xswiftc -target-cpu -Xswiftc haswell); fi
# The release build every script shares (-enable-testing: the tests use @testable import).
swift_release_flags=(-c release -Xswiftc -enable-testing "${swift_cpu_flags[@]}")
