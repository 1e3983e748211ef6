// Single-thread rate of the int8 block products (i8_gemm.c, i8_vnni.c) on one shape, in
// multiply-accumulates per second, next to the bf16 AVX-512 kernel (bf16_gemm.c) on the same
// shape; each int8 kernel's output is also compared with the portable one's, bit for bit.
//
//   clang -O2 -ISources/CKernels/include tools/i8-gemm-rate.c Sources/CKernels/*.c -lm \
//       -o /tmp/i8-gemm-rate && /tmp/i8-gemm-rate [rows columns blocks]
//
// Default shape: rows 96, columns 512, blocks 12 (k = 384), one call over all of it (B, 16
// panels of 15 KiB, in L2; each panel in L1 while the row tiles pass over it). Best of 7 runs.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "CKernels.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

typedef void (*i8_kernel)(int, int, int, int, const uint8_t *, ptrdiff_t, const uint8_t *, ptrdiff_t, float *,
                          ptrdiff_t, const float *, const float *, const float *);

// Best seconds per call of `body` over 7 runs of `n` calls.
#define BEST(n, body)                                                                  \
    ({                                                                                 \
        double best_ = 1e30;                                                           \
        for (int rep_ = 0; rep_ < 7; rep_++) {                                         \
            double t0_ = now();                                                        \
            for (int j_ = 0; j_ < (n); j_++) { body; }                                 \
            double t_ = (now() - t0_) / (n);                                           \
            if (t_ < best_) best_ = t_;                                                \
        }                                                                              \
        best_;                                                                         \
    })

int main(int argc, char **argv) {
    int rows = 96, columns = 512, blocks = 12;
    if (argc == 4) rows = atoi(argv[1]), columns = atoi(argv[2]), blocks = atoi(argv[3]);
    int depth = blocks * PD_I8_BLOCK_DEPTH, panels = (columns + 31) / 32, arows = (rows + 11) / 12 * 12;
    ptrdiff_t lda = depth, stride = (ptrdiff_t)blocks * PD_I8_PANEL_BLOCK_BYTES;
    uint8_t *a = aligned_alloc(64, (size_t)arows * lda);
    uint8_t *b = aligned_alloc(64, (size_t)panels * stride);
    float *c = malloc(sizeof(float) * rows * columns), *ref = malloc(sizeof(float) * rows * columns);
    float *scale = malloc(sizeof(float) * rows), *bias = malloc(sizeof(float) * rows);
    srand(1);
    for (int i = 0; i < arows * lda; i++) a[i] = (uint8_t)(rand() % 256);
    for (int p = 0; p < panels; p++)
        for (int blk = 0; blk < blocks; blk++) {
            uint8_t *record = b + p * stride + blk * PD_I8_PANEL_BLOCK_BYTES;
            int8_t *q = (int8_t *)record;
            float xscale[32];
            int32_t corr[32];
            for (int i = 0; i < 32 * 32; i++) q[i] = (int8_t)(rand() % 255 - 127);
            for (int j = 0; j < 32; j++) {
                int sum = 0;
                for (int k = 0; k < 32; k++) sum += q[((k / 4) * 32 + j) * 4 + k % 4];
                corr[j] = 128 * sum;
                xscale[j] = (float)(rand() % 1000 + 1) * 1e-5f;
            }
            memcpy(record + 32 * 32, xscale, sizeof xscale);
            memcpy(record + 32 * 32 + sizeof xscale, corr, sizeof corr);
        }
    for (int r = 0; r < rows; r++) scale[r] = 0.01f * (float)(r + 1), bias[r] = 0.5f - 0.01f * (float)r;

    unsigned features = pd_cpu_features();
    double macs = (double)rows * columns * depth;
    printf("rows %d, columns %d, blocks %d (k = %d), one thread\n", rows, columns, blocks, depth);
    struct { const char *name; i8_kernel kernel; int available; } kernels[] = {
        {"int8 portable", pd_i8_gemm_block_portable, 1},
        {"int8 avx512vnni", pd_i8_gemm_block_avx512vnni, !!(features & PD_CPU_AVX512_VNNI)},
        {"int8 avxvnni", pd_i8_gemm_block_avxvnni, !!(features & PD_CPU_AVX_VNNI)},
    };
    pd_i8_gemm_block_portable(rows, columns, blocks, 8, a, lda, b, stride, ref, columns, scale, bias, 0);
    double portable = 0;
    for (int i = 0; i < 3; i++) {
        if (!kernels[i].available) {
            printf("%-16s not on this CPU\n", kernels[i].name);
            continue;
        }
        memset(c, 0, sizeof(float) * rows * columns);
        kernels[i].kernel(rows, columns, blocks, 8, a, lda, b, stride, c, columns, scale, bias, 0);
        int same = memcmp(c, ref, sizeof(float) * rows * columns) == 0;
        double t = BEST(i == 0 ? 3 : 200,
                        kernels[i].kernel(rows, columns, blocks, 8, a, lda, b, stride, c, columns, scale, bias, 0));
        if (i == 0) portable = t;
        printf("%-16s %7.1f GMAC/s  %6.1fx portable  %s\n", kernels[i].name, macs / t * 1e-9, portable / t,
               same ? "bitwise equal to portable" : "DIFFERS FROM PORTABLE");
    }

    // The bf16 kernel on the same shape: pairs = k / 2, operands any finite bf16.
    if (features & PD_CPU_AVX512_BF16) {
        int pairs = depth / 2;
        uint32_t *a16 = aligned_alloc(64, sizeof(uint32_t) * arows * pairs);
        uint32_t *b16 = aligned_alloc(64, sizeof(uint32_t) * panels * pairs * 32);
        for (int i = 0; i < arows * pairs; i++) a16[i] = 0x3C003C00u + (uint32_t)(rand() & 0x007F007F);
        for (int i = 0; i < panels * pairs * 32; i++) b16[i] = 0x3C003C00u + (uint32_t)(rand() & 0x007F007F);
        double t = BEST(200, pd_bf16_gemm_block(rows, columns, pairs, a16, pairs, b16, (ptrdiff_t)pairs * 32, c,
                                                columns, scale, bias, 0));
        printf("%-16s %7.1f GMAC/s  %6.1fx portable int8\n", "bf16 avx512", macs / t * 1e-9, portable / t);
    } else {
        printf("%-16s not on this CPU\n", "bf16 avx512");
    }
    return 0;
}
