// Unit test of the ARM64 `sdot` int8 product (Sources/CKernels/i8_sdot.c) against its
// scalar reference: int32 sums are exact, so every element must match. Built and run by
// tools/test-arm64.sh (cross-compiled, run under qemu-aarch64-static on x86_64 hosts).
#include <stdio.h>
#include <stdlib.h>
#include "CKernels.h"

static unsigned long long state = 0x9E3779B97F4A7C15ull;
static int8_t next_int8(void) {
    state ^= state << 13; state ^= state >> 7; state ^= state << 17;
    return (int8_t)(state >> 56);  // full range, −128 … 127
}

int main(void) {
    if (!pd_i8_sdot_available()) {
        fprintf(stderr, "i8_sdot_test: the CPU (or emulator) reports no dot-product extension\n");
        return 1;
    }
    // Shapes: full 4×16 tiles, tail rows (1–3), 4-column tail groups, deep k (int32 range).
    const int shapes[][3] = {{4, 16, 4}, {1, 4, 4}, {7, 20, 12}, {13, 36, 64}, {32, 64, 1024}, {3, 8, 320},
                             {6, 4, 8}, {17, 52, 4096}};
    int failures = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int rows = shapes[s][0], columns = shapes[s][1], depth = shapes[s][2];
        ptrdiff_t lda = depth + 3, ldc = columns + 5;  // strides wider than the rows
        int8_t *a = malloc((size_t)rows * lda), *b = malloc((size_t)depth * columns);
        int32_t *c = malloc(sizeof(int32_t) * rows * ldc), *ref = malloc(sizeof(int32_t) * rows * ldc);
        for (ptrdiff_t i = 0; i < rows * lda; i++) a[i] = next_int8();
        for (int i = 0; i < depth * columns; i++) b[i] = next_int8();
        for (ptrdiff_t i = 0; i < rows * ldc; i++) c[i] = ref[i] = 0x5A5A5A5A;  // padding must stay
        if (!pd_i8_gemm_sdot(rows, columns, depth, a, lda, b, c, ldc)) {
            fprintf(stderr, "i8_sdot_test: pd_i8_gemm_sdot refused %dx%dx%d\n", rows, columns, depth);
            return 1;
        }
        pd_i8_gemm_reference(rows, columns, depth, a, lda, b, ref, ldc);
        int bad = 0;
        for (ptrdiff_t i = 0; i < rows * ldc; i++) bad += c[i] != ref[i];
        printf("%s rows %d columns %d depth %d: %d of %td elements differ\n", bad ? "FAIL" : "ok", rows, columns,
               depth, bad, rows * ldc);
        failures += bad != 0;
        free(a); free(b); free(c); free(ref);
    }
    // The contract's refusals: depth or columns not a multiple of 4.
    int8_t a1[8] = {0}, b1[32] = {0};
    int32_t c1[8];
    if (pd_i8_gemm_sdot(1, 4, 6, a1, 6, b1, c1, 4) || pd_i8_gemm_sdot(1, 6, 4, a1, 4, b1, c1, 6)) {
        fprintf(stderr, "FAIL: accepted depth or columns not a multiple of 4\n");
        failures++;
    }
    printf("i8_sdot_test: %s\n", failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
}
