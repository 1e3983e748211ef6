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
# A Haswell build dies with SIGILL on an x86_64 without AVX2 (the Atom-class Celerons and
# Pentiums of many boards): on such a CPU the build targets baseline x86-64 instead, and
# POCKETSD_SWIFT_CPU=x86-64 (or haswell) forces either, e.g. to build for such a board on
# another machine. The define tells the C start-up check (CKernels/startup_check.c) to
# refuse a Haswell build on a CPU without those features, with a one-line error.
swift_cpu_flags=()
if [ "$(uname -m)" = x86_64 ]; then
  _pd_swift_cpu=${POCKETSD_SWIFT_CPU:-}
  if [ -z "$_pd_swift_cpu" ]; then
    _pd_swift_cpu=haswell
    _pd_cpu_flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
    # (/proc/cpuinfo calls LZCNT "abm".)
    for _pd_flag in avx2 fma f16c bmi1 bmi2 abm movbe; do
      [[ "$_pd_cpu_flags" == *" $_pd_flag "* ]] || _pd_swift_cpu=x86-64
    done
  fi
  case "$_pd_swift_cpu" in
    haswell) swift_cpu_flags=(-Xswiftc -target-cpu -Xswiftc haswell -Xcc -DPD_SWIFT_TARGET_HASWELL) ;;
    x86-64) ;;
    *) echo "POCKETSD_SWIFT_CPU must be haswell or x86-64 (got '$_pd_swift_cpu')" >&2; return 2 2>/dev/null || exit 2 ;;
  esac
fi
# The release build every script shares (-enable-testing: the tests use @testable import).
swift_release_flags=(-c release -Xswiftc -enable-testing "${swift_cpu_flags[@]}")
