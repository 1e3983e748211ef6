// int8 matrix product with the ARMv8.2 dot-product instruction (`sdot`: four int8 products
// summed into each of four int32 lanes per instruction, 4× the multiply-adds of f32 NEON
// per cycle on a Cortex-A76 / Pi 5). Compiled for any arm64 through the `target`
// attribute and chosen at run time from getauxval(AT_HWCAP); elsewhere only the scalar
// reference is real. Tested against that reference under qemu by tools/test-arm64.sh
// (Tests/arm64/i8_sdot_test.c): correctness only, emulated timings mean nothing.

#include "CKernels.h"

void pd_i8_gemm_reference(int rows, int columns, int depth, const int8_t *a, ptrdiff_t lda,
                          const int8_t *b, int32_t *c, ptrdiff_t ldc) {
    for (int r = 0; r < rows; r++) {
        for (int p = 0; p < columns; p++) {
            int32_t sum = 0;
            for (int k = 0; k < depth; k++) sum += (int32_t)a[r * lda + k] * (int32_t)b[((k / 4) * columns + p) * 4 + k % 4];
            c[r * ldc + p] = sum;
        }
    }
}

#if defined(__aarch64__)
#include <arm_neon.h>
#include <sys/auxv.h>

#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif

#if defined(__clang__)
#define PD_DOTPROD __attribute__((target("dotprod")))
#else
#define PD_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
#endif

int pd_i8_sdot_available(void) { return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0; }

// A 4-row × (4·G)-column tile, G ∈ {1, 4}: the four rows' k-quads form one int32x4 vector
// and each `sdot` by lane r adds row r's quad · four columns' quads.
PD_DOTPROD
static inline void tile(int groups, int rows, int depth, const int8_t *a, ptrdiff_t lda, const int8_t *b,
                        int columns, int32_t *c, ptrdiff_t ldc) {
    int32x4_t acc[4][4];
    for (int r = 0; r < 4; r++)
        for (int g = 0; g < 4; g++) acc[r][g] = vdupq_n_s32(0);
    const int8_t *row[4];
    for (int r = 0; r < 4; r++) row[r] = a + (r < rows ? r : rows - 1) * lda;  // extra rows: dropped
    for (int q = 0; q < depth / 4; q++) {
        int32_t quads[4];
        for (int r = 0; r < 4; r++) __builtin_memcpy(&quads[r], row[r] + 4 * q, 4);
        int8x16_t av = vreinterpretq_s8_s32(vld1q_s32(quads));
        const int8_t *bq = b + (size_t)q * columns * 4;
        for (int g = 0; g < groups; g++) {
            int8x16_t bv = vld1q_s8(bq + 16 * g);
            acc[0][g] = vdotq_laneq_s32(acc[0][g], bv, av, 0);
            acc[1][g] = vdotq_laneq_s32(acc[1][g], bv, av, 1);
            acc[2][g] = vdotq_laneq_s32(acc[2][g], bv, av, 2);
            acc[3][g] = vdotq_laneq_s32(acc[3][g], bv, av, 3);
        }
    }
    for (int r = 0; r < rows; r++)
        for (int g = 0; g < groups; g++) vst1q_s32(c + r * ldc + 4 * g, acc[r][g]);
}

PD_DOTPROD
int pd_i8_gemm_sdot(int rows, int columns, int depth, const int8_t *a, ptrdiff_t lda,
                    const int8_t *b, int32_t *c, ptrdiff_t ldc) {
    if (!pd_i8_sdot_available() || depth % 4 != 0 || columns % 4 != 0) return 0;
    for (int r0 = 0; r0 < rows; r0 += 4) {
        int rs = rows - r0 < 4 ? rows - r0 : 4;
        int p0 = 0;
        for (; p0 + 16 <= columns; p0 += 16)
            tile(4, rs, depth, a + r0 * lda, lda, b + p0 * 4, columns, c + r0 * ldc + p0, ldc);
        for (; p0 < columns; p0 += 4)
            tile(1, rs, depth, a + r0 * lda, lda, b + p0 * 4, columns, c + r0 * ldc + p0, ldc);
    }
    return 1;
}

#else

int pd_i8_sdot_available(void) { return 0; }

int pd_i8_gemm_sdot(int rows, int columns, int depth, const int8_t *a, ptrdiff_t lda,
                    const int8_t *b, int32_t *c, ptrdiff_t ldc) {
    (void)rows; (void)columns; (void)depth; (void)a; (void)lda; (void)b; (void)c; (void)ldc;
    return 0;
}

#endif
