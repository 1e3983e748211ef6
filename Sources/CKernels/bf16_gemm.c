// bf16 GEMM micro-kernel for x86_64 AVX-512 BF16 (vdpbf16ps: 16 lanes × 2 products per
// instruction). Compiled for any x86_64 through the `target` attribute and chosen at run
// time, so the binary still runs on CPUs without it. Other architectures get the stub;
// the Swift twin (BF16Gemm.portableBlock) runs there.

#include "CKernels.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#include <string.h>

int pd_bf16_native_available(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0;  // OSXSAVE
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 0xE6u) != 0xE6u) return 0;  // OS saves xmm, ymm, opmask and zmm state
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    int avx512f = (b >> 16) & 1, avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1;
    if (!(avx512f && avx512bw && avx512vl)) return 0;
    __get_cpuid_count(7, 1, &a, &b, &c, &d);
    return (a >> 5) & 1;  // AVX512_BF16
}

#define PD_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,fma")))

// One R × 32 tile (R = 12, or 4 for the last rows of a block: the attention's V · P has 40
// rows, 3 × 12 + 4): 2R zmm accumulators, 2 B loads and one broadcast per row and k pair.
// The A operand is a broadcast 32-bit pair, so each instruction adds
// A[r,2i]·B[2i,p] + A[r,2i+1]·B[2i+1,p] to 16 columns. The 12 A rows are addressed from four
// bases (rows 0, 3, 6, 9) plus 0, 1 or 2 row strides, which x86 addressing does for free.
PD_TARGET
static inline __attribute__((always_inline)) void
tile_of(const int R, int rows, int columns, int pairs, const uint32_t *a, ptrdiff_t lda, const uint32_t *b,
        float *c, ptrdiff_t ldc, const float *scale, const float *bias, const float *addend) {
    __m512 acc[PD_BF16_TILE_ROWS][2];
#pragma clang loop unroll(full)
    for (int r = 0; r < R; r++) {
        acc[r][0] = _mm512_setzero_ps();
        acc[r][1] = _mm512_setzero_ps();
    }
    const uint32_t *base[4] = {a, a + 3 * lda, a + 6 * lda, a + 9 * lda};
    for (int k = 0; k < pairs; k++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + k * PD_BF16_PANEL_COLUMNS);
        __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + k * PD_BF16_PANEL_COLUMNS + 16);
#pragma clang loop unroll(full)
        for (int r = 0; r < R; r++) {
            __m512bh s = (__m512bh)_mm512_set1_epi32((int)base[r / 3][(r % 3) * lda + k]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], s, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], s, b1);
        }
    }
    __mmask16 m0 = columns >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << columns) - 1);
    __mmask16 m1 = columns >= 32 ? (__mmask16)0xFFFF
                 : columns <= 16 ? (__mmask16)0 : (__mmask16)((1u << (columns - 16)) - 1);
#pragma clang loop unroll(full)
    for (int r = 0; r < R; r++) {
        if (r >= rows) continue;  // (not break: the loop must unroll to keep acc in registers)
        __m512 x0 = acc[r][0], x1 = acc[r][1];
        if (scale) {
            __m512 s = _mm512_set1_ps(scale[r]);
            x0 = _mm512_mul_ps(x0, s);
            x1 = _mm512_mul_ps(x1, s);
        }
        if (bias) {
            __m512 s = _mm512_set1_ps(bias[r]);
            x0 = _mm512_add_ps(x0, s);
            x1 = _mm512_add_ps(x1, s);
        }
        if (addend) {
            x0 = _mm512_add_ps(x0, _mm512_maskz_loadu_ps(m0, addend + r * ldc));
            x1 = _mm512_add_ps(x1, _mm512_maskz_loadu_ps(m1, addend + r * ldc + 16));
        }
        _mm512_mask_storeu_ps(c + r * ldc, m0, x0);
        _mm512_mask_storeu_ps(c + r * ldc + 16, m1, x1);
    }
}

// The two sizes as functions of their own (`tile` is the one tools/check-kernel-asm.sh reads).
PD_TARGET
static void tile(int rows, int columns, int pairs, const uint32_t *a, ptrdiff_t lda, const uint32_t *b,
                 float *c, ptrdiff_t ldc, const float *scale, const float *bias, const float *addend) {
    tile_of(PD_BF16_TILE_ROWS, rows, columns, pairs, a, lda, b, c, ldc, scale, bias, addend);
}

PD_TARGET
static void tile4(int rows, int columns, int pairs, const uint32_t *a, ptrdiff_t lda, const uint32_t *b,
                  float *c, ptrdiff_t ldc, const float *scale, const float *bias, const float *addend) {
    tile_of(4, rows, columns, pairs, a, lda, b, c, ldc, scale, bias, addend);
}

void pd_bf16_gemm_block(int rows, int columns, int pairs, const uint32_t *a, ptrdiff_t lda,
                        const uint32_t *b, ptrdiff_t b_panel_stride, float *c, ptrdiff_t ldc,
                        const float *scale, const float *bias, const float *addend) {
    // Panel by panel (one B panel, pairs × 128 bytes, stays in L1) over all row tiles.
    for (int p0 = 0; p0 < columns; p0 += PD_BF16_PANEL_COLUMNS) {
        const uint32_t *bp = b + (p0 / PD_BF16_PANEL_COLUMNS) * b_panel_stride;
        int cols = columns - p0 < PD_BF16_PANEL_COLUMNS ? columns - p0 : PD_BF16_PANEL_COLUMNS;
        for (int r0 = 0; r0 < rows; r0 += PD_BF16_TILE_ROWS) {
            int rs = rows - r0 < PD_BF16_TILE_ROWS ? rows - r0 : PD_BF16_TILE_ROWS;
            (rs <= 4 ? tile4 : tile)(rs, cols, pairs, a + r0 * lda, lda, bp, c + r0 * ldc + p0, ldc,
                                     scale ? scale + r0 : 0, bias ? bias + r0 : 0,
                                     addend ? addend + r0 * ldc + p0 : 0);
        }
    }
}

// 32 int8 per step: sign-extended to int32, converted to float (exact), and to bf16 by
// vcvtne2ps2bf16 (exact too: integers below 2⁸ need no rounding, and none is subnormal).
// In memory the pairs are simply the row's bf16 values in order.
PD_TARGET
void pd_bf16_pack_q8_row(const int8_t *src, int count, uint32_t *dst) {
    uint16_t *out = (uint16_t *)dst;
    int i = 0;
    for (; i + 32 <= count; i += 32) {
        __m256i bytes = _mm256_loadu_si256((const __m256i *)(src + i));
        __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(bytes)));
        __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(bytes, 1)));
        _mm512_storeu_si512((void *)(out + i), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
    for (; i < count; i++) {
        float f = (float)src[i];
        uint32_t bits;
        memcpy(&bits, &f, 4);
        out[i] = (uint16_t)(bits >> 16);
    }
    if (count % 2) out[count] = 0;
}

#else

int pd_bf16_native_available(void) { return 0; }

void pd_bf16_pack_q8_row(const int8_t *src, int count, uint32_t *dst) {
    (void)src; (void)count; (void)dst;
}

void pd_bf16_gemm_block(int rows, int columns, int pairs, const uint32_t *a, ptrdiff_t lda,
                        const uint32_t *b, ptrdiff_t b_panel_stride, float *c, ptrdiff_t ldc,
                        const float *scale, const float *bias, const float *addend) {
    (void)rows; (void)columns; (void)pairs; (void)a; (void)lda; (void)b;
    (void)b_panel_stride; (void)c; (void)ldc;
    (void)scale; (void)bias; (void)addend;
}

#endif
