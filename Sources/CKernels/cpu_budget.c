// The process's CPU affinity mask, which Swift's Glibc module does not export
// (sched_getaffinity needs _GNU_SOURCE): SDKernels' CPUBudget.

#define _GNU_SOURCE
#include <sched.h>

#include "CKernels.h"

int pd_affinity_cpu_count(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
    return CPU_COUNT(&set);
}
