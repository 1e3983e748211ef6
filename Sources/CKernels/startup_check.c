// The one check that must run before any Swift code: the project's scripts compile the Swift
// modules for Haswell-class x86_64 (tools/swift-flags.sh: AVX2, FMA, F16C, BMI1/2, LZCNT,
// MOVBE, and they define PD_SWIFT_TARGET_HASWELL for the C compiler too). On an x86_64 without
// those (Intel's Atom-class Celerons and Pentiums of many mini PCs and boards, older CPUs) that
// code would die on its first such instruction with SIGILL and no word of why. A constructor
// runs before main: it checks the CPU and exits with a one-line error instead. The C kernels
// themselves choose their instructions at run time and need no such check; builds without
// the define (a consumer's, or a baseline build: POCKETSD_SWIFT_CPU=x86-64) have none.

#include "CKernels.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <unistd.h>

int pd_cpu_runs_haswell_code(void) {
    if (!(pd_cpu_features() & PD_CPU_AVX2_FMA)) return 0;  // AVX2, FMA, F16C, ymm state
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 22) & 1)) return 0;  // MOVBE
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !((b >> 3) & 1) || !((b >> 8) & 1)) return 0;  // BMI1, BMI2
    if (!__get_cpuid(0x80000001, &a, &b, &c, &d) || !((c >> 5) & 1)) return 0;  // LZCNT
    return 1;
}

#if defined(PD_SWIFT_TARGET_HASWELL)
__attribute__((constructor)) static void pd_require_haswell_class_cpu(void) {
    if (pd_cpu_runs_haswell_code()) return;
    static const char message[] =
        "pocketsd: this build needs an x86_64 with AVX2, FMA and F16C (Haswell or newer), which this CPU "
        "lacks; build on it with tools/build.sh, or elsewhere with POCKETSD_SWIFT_CPU=x86-64 tools/build.sh\n";
    ssize_t written = write(2, message, sizeof message - 1);
    (void)written;
    _exit(1);
}
#endif

#else

int pd_cpu_runs_haswell_code(void) { return 0; }

#endif
