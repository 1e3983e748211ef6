// int8 block products for x86_64 VNNI (contract in CKernels.h, next to its plain-C reference
// `pd_i8_gemm_block_portable`, i8_gemm.c): vpdpbusd multiplies 4 unsigned bytes by 4 signed
// bytes and adds the 4 products to an int32 lane, so one instruction sums a quad of k for 16
// (zmm) or 8 (ymm) columns. A's bytes are the unsigned operand (weights + 128) and B's the
// signed one, which is why the A quad is broadcast into a register: the instruction's
// broadcast form only broadcasts its second, signed source. Compiled for any x86_64 through the
// `target` attribute and called only where `pd_cpu_features()` reports PD_CPU_AVX512_VNNI or
// PD_CPU_AVX_VNNI; other architectures get stubs.
//
// Bitwise equal to the reference: the int32 block sums are exact in any order, and the f32
// steps are the contract's (cvtdq2ps is exact below 2²⁴, |s| < 2²¹; one vfmadd per block in
// block order from +0.0; the epilogue's multiply and adds separate, never fused).

#pragma STDC FP_CONTRACT OFF

#include "CKernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

enum {
    W = PD_I8_PANEL_COLUMNS,
    D = PD_I8_BLOCK_DEPTH,
    QUADS = PD_I8_BLOCK_DEPTH / 4,
    RECORD = PD_I8_PANEL_BLOCK_BYTES,
    SCALE_OFFSET = PD_I8_BLOCK_DEPTH * PD_I8_PANEL_COLUMNS,  // after q[8][32][4]
    CORR_OFFSET = SCALE_OFFSET + PD_I8_PANEL_COLUMNS * 4,    // after scale[32]
};

// The 4 bytes of A at p as one int32 lane (lda is a multiple of 4, but A itself need not be
// aligned: memcpy is one 32-bit load).
static inline int quad(const uint8_t *p) {
    int v;
    memcpy(&v, p, 4);
    return v;
}

// ---------------------------------------------------------------------------------------
// AVX512-VNNI: 6 × 32 tile. Both the block's int32 sums (12 zmm) and the f32 running sums
// (12 zmm) stay in registers, with the two B vectors of a quad and the row's broadcast A quad:
// 27 of the 32 zmm. Per quad: 2 B loads and 6 broadcasts for 12 vpdpbusd; per block: the
// int32 sums start at −corr (one negated load per half, copied to the six rows), then one
// cvtdq2ps and one vfmadd per accumulator. Six rows divide PD_I8_TILE_ROWS, so a partial last
// tile reads only rows the contract makes readable (their results are dropped).

#define PD_VNNI512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma")))

enum { TILE512_ROWS = 6 };

// Quad i of a block for the tile's rows: 2 B loads, R broadcasts, 2R vpdpbusd.
PD_VNNI512
static inline void quad512(const uint8_t *a, ptrdiff_t lda, const uint8_t *b, int i, __m512i s[TILE512_ROWS][2]) {
    __m512i b0 = _mm512_loadu_si512(b + i * 4 * W), b1 = _mm512_loadu_si512(b + i * 4 * W + 64);
#pragma clang loop unroll(full)
    for (int r = 0; r < TILE512_ROWS; r++) {
        __m512i x = _mm512_set1_epi32(quad(a + r * lda + 4 * i));
        s[r][0] = _mm512_dpbusd_epi32(s[r][0], x, b0);
        s[r][1] = _mm512_dpbusd_epi32(s[r][1], x, b1);
    }
}

PD_VNNI512
static inline void tile512(int rows, int columns, int blocks, int last_quads, const uint8_t *a, ptrdiff_t lda, const uint8_t *b,
                           float *c, ptrdiff_t ldc, const float *scale, const float *bias, const float *addend) {
    enum { R = TILE512_ROWS };
    __m512 f[R][2];
#pragma clang loop unroll(full)
    for (int r = 0; r < R; r++) f[r][0] = f[r][1] = _mm512_setzero_ps();
    for (int blk = 0; blk < blocks; blk++, a += D, b += RECORD) {
        __m512i n0 = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_loadu_si512(b + CORR_OFFSET));
        __m512i n1 = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_loadu_si512(b + CORR_OFFSET + 64));
        __m512i s[R][2];
#pragma clang loop unroll(full)
        for (int r = 0; r < R; r++) {
            s[r][0] = n0;
            s[r][1] = n1;
        }
        if (blk < blocks - 1 || last_quads == QUADS) {
#pragma clang loop unroll(full)
            for (int i = 0; i < QUADS; i++) quad512(a, lda, b, i, s);
        } else {
            for (int i = 0; i < last_quads; i++) quad512(a, lda, b, i, s);
        }
        __m512 x0 = _mm512_loadu_ps((const float *)(b + SCALE_OFFSET));
        __m512 x1 = _mm512_loadu_ps((const float *)(b + SCALE_OFFSET + 64));
#pragma clang loop unroll(full)
        for (int r = 0; r < R; r++) {
            f[r][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[r][0]), x0, f[r][0]);
            f[r][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[r][1]), x1, f[r][1]);
        }
    }
    // Columns past `columns` are masked out of the loads and stores: nothing outside the
    // caller's rows × columns of c is read from addend or written.
    __mmask16 m0 = columns >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << columns) - 1);
    __mmask16 m1 = columns >= 32 ? (__mmask16)0xFFFF
                 : columns <= 16 ? (__mmask16)0 : (__mmask16)((1u << (columns - 16)) - 1);
#pragma clang loop unroll(full)
    for (int r = 0; r < R; r++) {
        if (r >= rows) continue;  // (not break: the loop must unroll to keep f in registers)
        // The reference's steps: × scale (1 without), + bias (+0.0 without: −0 becomes +0),
        // + addend, each rounded.
        __m512 rs = _mm512_set1_ps(scale ? scale[r] : 1.0f), rb = _mm512_set1_ps(bias ? bias[r] : 0.0f);
        __m512 y0 = _mm512_add_ps(_mm512_mul_ps(f[r][0], rs), rb);
        __m512 y1 = _mm512_add_ps(_mm512_mul_ps(f[r][1], rs), rb);
        if (addend) {
            y0 = _mm512_add_ps(y0, _mm512_maskz_loadu_ps(m0, addend + r * ldc));
            y1 = _mm512_add_ps(y1, _mm512_maskz_loadu_ps(m1, addend + r * ldc + 16));
        }
        _mm512_mask_storeu_ps(c + r * ldc, m0, y0);
        _mm512_mask_storeu_ps(c + r * ldc + 16, m1, y1);
    }
}

PD_VNNI512
void pd_i8_gemm_block_avx512vnni(int rows, int columns, int blocks, int last_quads, const uint8_t *a, ptrdiff_t lda,
                                 const uint8_t *b, ptrdiff_t b_panel_stride, float *c, ptrdiff_t ldc,
                                 const float *scale, const float *bias, const float *addend) {
    // Panel by panel (one B panel, blocks × 1280 bytes, stays in L1) over all row tiles.
    for (int p0 = 0; p0 < columns; p0 += W) {
        const uint8_t *bp = b + (p0 / W) * b_panel_stride;
        int cols = columns - p0 < W ? columns - p0 : W;
        for (int r0 = 0; r0 < rows; r0 += TILE512_ROWS) {
            int rs = rows - r0 < TILE512_ROWS ? rows - r0 : TILE512_ROWS;
            tile512(rs, cols, blocks, last_quads, a + r0 * lda, lda, bp, c + r0 * ldc + p0, ldc,
                    scale ? scale + r0 : 0, bias ? bias + r0 : 0, addend ? addend + r0 * ldc + p0 : 0);
        }
    }
}

// ---------------------------------------------------------------------------------------
// AVX-VNNI (VEX, ymm; Alder Lake and later, Zen 5): 3 × 16 tile, half a panel at a time.
// With 16 ymm registers: the block's int32 sums (6 ymm), the f32 running sums (6 ymm), two B
// vectors and the broadcast A quad. Per quad: 2 B loads and 3 broadcasts for 6 vpdpbusd. The
// int32 sums start at zero and corr is subtracted at the block's end (starting them at −corr,
// as the zmm tile does, needs two more registers than there are: an f32 sum went to the stack).
// A half panel past `columns` is skipped; the last one's columns past `columns` are masked
// out of the loads and stores (vmaskmovps neither reads nor writes masked lanes).

#define PD_AVXVNNI __attribute__((target("avxvnni,avx2,fma")))

enum { TILE256_ROWS = 3 };

// Quad i of a block for the tile's rows: 2 B loads, R broadcasts, 2R vpdpbusd.
PD_AVXVNNI
static inline void quad256(const uint8_t *a, ptrdiff_t lda, const uint8_t *b, int i, __m256i s[TILE256_ROWS][2]) {
    __m256i b0 = _mm256_loadu_si256((const __m256i *)(b + i * 4 * W));
    __m256i b1 = _mm256_loadu_si256((const __m256i *)(b + i * 4 * W + 32));
#pragma clang loop unroll(full)
    for (int r = 0; r < TILE256_ROWS; r++) {
        __m256i x = _mm256_set1_epi32(quad(a + r * lda + 4 * i));
        s[r][0] = _mm256_dpbusd_avx_epi32(s[r][0], x, b0);
        s[r][1] = _mm256_dpbusd_avx_epi32(s[r][1], x, b1);
    }
}

PD_AVXVNNI
static inline void tile256(int rows, int columns, int blocks, int last_quads, const uint8_t *a, ptrdiff_t lda, const uint8_t *b,
                           float *c, ptrdiff_t ldc, const float *scale, const float *bias, const float *addend) {
    enum { R = TILE256_ROWS };
    __m256 f[R][2];
#pragma clang loop unroll(full)
    for (int r = 0; r < R; r++) f[r][0] = f[r][1] = _mm256_setzero_ps();
    for (int blk = 0; blk < blocks; blk++, a += D, b += RECORD) {
        __m256i s[R][2];
#pragma clang loop unroll(full)
        for (int r = 0; r < R; r++) s[r][0] = s[r][1] = _mm256_setzero_si256();
        if (blk < blocks - 1 || last_quads == QUADS) {
#pragma clang loop unroll(full)
            for (int i = 0; i < QUADS; i++) quad256(a, lda, b, i, s);
        } else {
            for (int i = 0; i < last_quads; i++) quad256(a, lda, b, i, s);
        }
        __m256 x0 = _mm256_loadu_ps((const float *)(b + SCALE_OFFSET));
        __m256 x1 = _mm256_loadu_ps((const float *)(b + SCALE_OFFSET + 32));
        __m256i corr0 = _mm256_loadu_si256((const __m256i *)(b + CORR_OFFSET));
        __m256i corr1 = _mm256_loadu_si256((const __m256i *)(b + CORR_OFFSET + 32));
#pragma clang loop unroll(full)
        for (int r = 0; r < R; r++) {
            f[r][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(s[r][0], corr0)), x0, f[r][0]);
            f[r][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(s[r][1], corr1)), x1, f[r][1]);
        }
    }
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(columns), lane);
    __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(columns - 8), lane);
#pragma clang loop unroll(full)
    for (int r = 0; r < R; r++) {
        if (r >= rows) continue;  // (not break: the loop must unroll to keep f in registers)
        __m256 rs = _mm256_set1_ps(scale ? scale[r] : 1.0f), rb = _mm256_set1_ps(bias ? bias[r] : 0.0f);
        __m256 y0 = _mm256_add_ps(_mm256_mul_ps(f[r][0], rs), rb);
        __m256 y1 = _mm256_add_ps(_mm256_mul_ps(f[r][1], rs), rb);
        if (columns >= 16) {
            if (addend) {
                y0 = _mm256_add_ps(y0, _mm256_loadu_ps(addend + r * ldc));
                y1 = _mm256_add_ps(y1, _mm256_loadu_ps(addend + r * ldc + 8));
            }
            _mm256_storeu_ps(c + r * ldc, y0);
            _mm256_storeu_ps(c + r * ldc + 8, y1);
        } else {
            if (addend) {
                y0 = _mm256_add_ps(y0, _mm256_maskload_ps(addend + r * ldc, m0));
                y1 = _mm256_add_ps(y1, _mm256_maskload_ps(addend + r * ldc + 8, m1));
            }
            _mm256_maskstore_ps(c + r * ldc, m0, y0);
            _mm256_maskstore_ps(c + r * ldc + 8, m1, y1);
        }
    }
}

PD_AVXVNNI
void pd_i8_gemm_block_avxvnni(int rows, int columns, int blocks, int last_quads, const uint8_t *a, ptrdiff_t lda,
                              const uint8_t *b, ptrdiff_t b_panel_stride, float *c, ptrdiff_t ldc,
                              const float *scale, const float *bias, const float *addend) {
    for (int p0 = 0; p0 < columns; p0 += W) {
        const uint8_t *bp = b + (p0 / W) * b_panel_stride;
        for (int h = 0; h < W && p0 + h < columns; h += 16) {
            int cols = columns - p0 - h < 16 ? columns - p0 - h : 16;
            // The half panel's q, scale and corr are 64 bytes into each 128-byte row of the record.
            for (int r0 = 0; r0 < rows; r0 += TILE256_ROWS) {
                int rs = rows - r0 < TILE256_ROWS ? rows - r0 : TILE256_ROWS;
                tile256(rs, cols, blocks, last_quads, a + r0 * lda, lda, bp + 4 * h, c + r0 * ldc + p0 + h, ldc,
                        scale ? scale + r0 : 0, bias ? bias + r0 : 0, addend ? addend + r0 * ldc + p0 + h : 0);
            }
        }
    }
}

#else

void pd_i8_gemm_block_avx512vnni(int rows, int columns, int blocks, int last_quads, const uint8_t *a, ptrdiff_t lda,
                                 const uint8_t *b, ptrdiff_t b_panel_stride, float *c, ptrdiff_t ldc,
                                 const float *scale, const float *bias, const float *addend) {
    (void)rows; (void)columns; (void)blocks; (void)last_quads; (void)a; (void)lda; (void)b;
    (void)b_panel_stride; (void)c; (void)ldc;
    (void)scale; (void)bias; (void)addend;
}

void pd_i8_gemm_block_avxvnni(int rows, int columns, int blocks, int last_quads, const uint8_t *a, ptrdiff_t lda,
                              const uint8_t *b, ptrdiff_t b_panel_stride, float *c, ptrdiff_t ldc,
                              const float *scale, const float *bias, const float *addend) {
    (void)rows; (void)columns; (void)blocks; (void)last_quads; (void)a; (void)lda; (void)b;
    (void)b_panel_stride; (void)c; (void)ldc;
    (void)scale; (void)bias; (void)addend;
}

#endif
