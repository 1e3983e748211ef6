// The int8 block product's portable build and reference (contract in CKernels.h): plain C,
// the same on every architecture, written for clarity over speed. The per-ISA kernels
// (i8_vnni.c, i8_sdot.c) are tested bitwise against it.

#pragma STDC FP_CONTRACT OFF

#include <math.h>
#include <string.h>
#include "CKernels.h"

void pd_i8_gemm_block_portable(int rows, int columns, int blocks, int last_quads, const uint8_t *a, ptrdiff_t lda,
                               const uint8_t *b, ptrdiff_t b_panel_stride, float *c, ptrdiff_t ldc,
                               const float *scale, const float *bias, const float *addend) {
    enum { W = PD_I8_PANEL_COLUMNS, D = PD_I8_BLOCK_DEPTH };
    for (int p0 = 0; p0 < columns; p0 += W) {
        const uint8_t *panel = b + (p0 / W) * b_panel_stride;
        int width = columns - p0 < W ? columns - p0 : W;
        for (int r = 0; r < rows; r++) {
            const uint8_t *row = a + r * lda;
            float f[W];
            for (int p = 0; p < W; p++) f[p] = 0.0f;
            for (int blk = 0; blk < blocks; blk++) {
                const uint8_t *record = panel + (ptrdiff_t)blk * PD_I8_PANEL_BLOCK_BYTES;
                const int8_t *q = (const int8_t *)record;
                float xscale[W];
                int32_t corr[W];
                memcpy(xscale, record + D * W, sizeof xscale);
                memcpy(corr, record + D * W + sizeof xscale, sizeof corr);
                int32_t s[W];
                for (int p = 0; p < W; p++) s[p] = -corr[p];
                int depth = blk == blocks - 1 ? 4 * last_quads : D;
                for (int k = 0; k < depth; k++) {
                    int32_t w = row[blk * D + k];
                    for (int p = 0; p < W; p++) s[p] += w * q[((k / 4) * W + p) * 4 + k % 4];
                }
                for (int p = 0; p < W; p++) f[p] = fmaf((float)s[p], xscale[p], f[p]);
            }
            float rs = scale ? scale[r] : 1.0f, rb = bias ? bias[r] : 0.0f;
            for (int p = 0; p < width; p++) {
                float value = f[p] * rs;
                value = value + rb;
                if (addend) value = value + addend[r * ldc + p0 + p];
                c[r * ldc + p0 + p] = value;
            }
        }
    }
}
