// The int8 block product (contract in CKernels.h) with the ARMv8.2 dot-product instruction
// (`sdot`: four int8 × int8 products summed into each of four int32 lanes, 4× the
// multiply-adds of f32 NEON per cycle on a Cortex-A76 / Pi 5). Compiled for any arm64
// through the `target` attribute and chosen at run time from getauxval(AT_HWCAP); off arm64
// it is an empty stub. Bitwise equal to pd_i8_gemm_block_portable, tested under qemu by
// tools/test-arm64.sh (Tests/arm64/i8_sdot_test.c): correctness only, emulated timings
// mean nothing.
//
// A holds each weight + 128 as uint8 (x86's u8 × s8 form); `sdot` is s8 × s8, so XOR with
// 0x80 gives the weights back and the block sum Σ w·q is the contract's s_b without corr.
// The f32 steps are the contract's: one fused multiply-add per block (vfmaq_f32), then the
// epilogue's multiply and adds rounded one by one (vmulq_f32, vaddq_f32). Clang keeps them
// apart (the pragma below); GCC ignores the pragma and needs -ffp-contract=off.

#pragma STDC FP_CONTRACT OFF

#include "CKernels.h"

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

enum { W = PD_I8_PANEL_COLUMNS, D = PD_I8_BLOCK_DEPTH, TILE_R = 4, TILE_C = 16 };

// One row's four `sdot`s of quad i: lane l of its A vector xv (the row's quad i) · the
// quads of 16 columns in b0 … b3, into that row's accumulators s<r>0 … s<r>3.
#define PD_SDOT_ROW(r, xv, l)                                \
    s##r##0 = vdotq_laneq_s32(s##r##0, b0, xv, l);           \
    s##r##1 = vdotq_laneq_s32(s##r##1, b1, xv, l);           \
    s##r##2 = vdotq_laneq_s32(s##r##2, b2, xv, l);           \
    s##r##3 = vdotq_laneq_s32(s##r##3, b3, xv, l)

// Quad i (k = 4i … 4i+3) of one block: four 16-byte loads of B and 16 `sdot`s; h picks the
// A vectors (quads 0–3 or 4–7), l the lane.
#define PD_SDOT_QUAD(i, h, l)                                                          \
    do {                                                                               \
        const int8_t *bq = q + (i) * W * 4;                                            \
        int8x16_t b0 = vld1q_s8(bq), b1 = vld1q_s8(bq + 16);                           \
        int8x16_t b2 = vld1q_s8(bq + 32), b3 = vld1q_s8(bq + 48);                      \
        PD_SDOT_ROW(0, x0##h, l);                                                      \
        PD_SDOT_ROW(1, x1##h, l);                                                      \
        PD_SDOT_ROW(2, x2##h, l);                                                      \
        PD_SDOT_ROW(3, x3##h, l);                                                      \
    } while (0)

// A's 16 bytes at p as int8 weights.
#define PD_WEIGHTS(p) vreinterpretq_s8_u8(veorq_u8(vld1q_u8(p), flip))

// f[r][4g …] = fma(float(s), xscale, f[r][4g …]), one rounding per lane.
#define PD_BLOCK_STEP(r, g, sv) \
    vst1q_f32(&f[r][4 * (g)], vfmaq_f32(vld1q_f32(&f[r][4 * (g)]), vcvtq_f32_s32(sv), xs##g))

// A 4-row × 16-column tile of one panel (its columns c0 … c0+15, c0 0 or 16). In registers:
// 16 int32 accumulators (the block's s_b), 8 A vectors (4 rows × 32 k), 4 B vectors and the
// XOR constant, 29 of the 32. The 16 f32 running sums do not fit as well: touched once per
// block, they stay in memory (`f`), 16 loads and 16 stores against the block's 128 `sdot`s.
// Rows past `nrows` are computed from readable rows and dropped; `width` (1 … 16) columns
// are stored.
PD_DOTPROD
static void tile(int blocks, int last_quads, const uint8_t *a, ptrdiff_t lda, const uint8_t *panel, int c0, int nrows, int width,
                 float *c, ptrdiff_t ldc, const float *scale, const float *bias, const float *addend) {
    float f[TILE_R][TILE_C];
    for (int r = 0; r < TILE_R; r++)
        for (int p = 0; p < TILE_C; p++) f[r][p] = 0.0f;
    const uint8x16_t flip = vdupq_n_u8(0x80);
    const uint8_t *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda;
    for (int blk = 0; blk < blocks; blk++) {
        const uint8_t *record = panel + (ptrdiff_t)blk * PD_I8_PANEL_BLOCK_BYTES;
        const int8_t *q = (const int8_t *)record + c0 * 4;
        const float *xscale = (const float *)(record + D * W) + c0;
        int8x16_t x00 = PD_WEIGHTS(a0), x01 = PD_WEIGHTS(a0 + 16);
        int8x16_t x10 = PD_WEIGHTS(a1), x11 = PD_WEIGHTS(a1 + 16);
        int8x16_t x20 = PD_WEIGHTS(a2), x21 = PD_WEIGHTS(a2 + 16);
        int8x16_t x30 = PD_WEIGHTS(a3), x31 = PD_WEIGHTS(a3 + 16);
        a0 += D; a1 += D; a2 += D; a3 += D;
        int32x4_t zero = vdupq_n_s32(0);
        int32x4_t s00 = zero, s01 = zero, s02 = zero, s03 = zero, s10 = zero, s11 = zero, s12 = zero, s13 = zero;
        int32x4_t s20 = zero, s21 = zero, s22 = zero, s23 = zero, s30 = zero, s31 = zero, s32 = zero, s33 = zero;
        // The last block's quads past `last_quads` are skipped (their bytes are not read).
        const int quads = blk == blocks - 1 ? last_quads : 8;
        PD_SDOT_QUAD(0, 0, 0);
        if (quads > 1) PD_SDOT_QUAD(1, 0, 1);
        if (quads > 2) PD_SDOT_QUAD(2, 0, 2);
        if (quads > 3) PD_SDOT_QUAD(3, 0, 3);
        if (quads > 4) PD_SDOT_QUAD(4, 1, 0);
        if (quads > 5) PD_SDOT_QUAD(5, 1, 1);
        if (quads > 6) PD_SDOT_QUAD(6, 1, 2);
        if (quads > 7) PD_SDOT_QUAD(7, 1, 3);
        float32x4_t xs0 = vld1q_f32(xscale), xs1 = vld1q_f32(xscale + 4);
        float32x4_t xs2 = vld1q_f32(xscale + 8), xs3 = vld1q_f32(xscale + 12);
        PD_BLOCK_STEP(0, 0, s00); PD_BLOCK_STEP(0, 1, s01); PD_BLOCK_STEP(0, 2, s02); PD_BLOCK_STEP(0, 3, s03);
        PD_BLOCK_STEP(1, 0, s10); PD_BLOCK_STEP(1, 1, s11); PD_BLOCK_STEP(1, 2, s12); PD_BLOCK_STEP(1, 3, s13);
        PD_BLOCK_STEP(2, 0, s20); PD_BLOCK_STEP(2, 1, s21); PD_BLOCK_STEP(2, 2, s22); PD_BLOCK_STEP(2, 3, s23);
        PD_BLOCK_STEP(3, 0, s30); PD_BLOCK_STEP(3, 1, s31); PD_BLOCK_STEP(3, 2, s32); PD_BLOCK_STEP(3, 3, s33);
    }
    // C = f · scale + bias (+ addend), each step rounded on its own. Addend is read only
    // where C is written (it may be C), element by element in a partial group of 4.
    for (int r = 0; r < nrows; r++) {
        float32x4_t rs = vdupq_n_f32(scale ? scale[r] : 1.0f), rb = vdupq_n_f32(bias ? bias[r] : 0.0f);
        for (int g = 0; 4 * g < width; g++) {
            float32x4_t v = vaddq_f32(vmulq_f32(vld1q_f32(&f[r][4 * g]), rs), rb);
            float *out = c + r * ldc + 4 * g;
            if (width - 4 * g >= 4) {
                if (addend) v = vaddq_f32(v, vld1q_f32(addend + r * ldc + 4 * g));
                vst1q_f32(out, v);
            } else {
                float lanes[4];
                vst1q_f32(lanes, v);
                for (int j = 0; j < width - 4 * g; j++) {
                    float value = lanes[j];
                    if (addend) value = value + addend[r * ldc + 4 * g + j];
                    out[j] = value;
                }
            }
        }
    }
}

PD_DOTPROD
void pd_i8_gemm_block_sdot(int rows, int columns, int blocks, int last_quads, const uint8_t *a, ptrdiff_t lda,
                           const uint8_t *b, ptrdiff_t b_panel_stride, float *c, ptrdiff_t ldc,
                           const float *scale, const float *bias, const float *addend) {
    for (int p0 = 0; p0 < columns; p0 += W) {
        const uint8_t *panel = b + (p0 / W) * b_panel_stride;
        int width = columns - p0 < W ? columns - p0 : W;
        for (int r0 = 0; r0 < rows; r0 += TILE_R) {
            int nrows = rows - r0 < TILE_R ? rows - r0 : TILE_R;
            for (int c0 = 0; c0 < width; c0 += TILE_C)
                tile(blocks, last_quads, a + r0 * lda, lda, panel, c0, nrows, width - c0 < TILE_C ? width - c0 : TILE_C,
                     c + r0 * ldc + p0 + c0, ldc, scale ? scale + r0 : NULL, bias ? bias + r0 : NULL,
                     addend ? addend + r0 * ldc + p0 + c0 : NULL);
        }
    }
}

#else

int pd_i8_sdot_available(void) { return 0; }

void pd_i8_gemm_block_sdot(int rows, int columns, int blocks, int last_quads, const uint8_t *a, ptrdiff_t lda,
                           const uint8_t *b, ptrdiff_t b_panel_stride, float *c, ptrdiff_t ldc,
                           const float *scale, const float *bias, const float *addend) {
    (void)rows; (void)columns; (void)blocks; (void)last_quads; (void)a; (void)lda; (void)b; (void)b_panel_stride;
    (void)c; (void)ldc; (void)scale; (void)bias; (void)addend;
}

#endif
