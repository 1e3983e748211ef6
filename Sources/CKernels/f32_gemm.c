// f32 GEMM block products for x86_64, one per vector width, chosen at run time
// (SDKernels' KernelVariant). Each is compiled for any x86_64 through the `target`
// attribute, so one binary runs everywhere and uses the widest FMA unit the CPU has.
// Their Swift twin is the loop over `Gemm.microKernel` in `Gemm.block` (the reference in
// the tests); other architectures get stubs and always run the twin.

#include "CKernels.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#include <string.h>

// XCR0 bits the OS must save for each register file.
enum { XCR0_YMM = 0x6u, XCR0_ZMM = 0xE6u, XCR0_TILE = 0x60000u };

static unsigned long long read_xcr0(void) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

unsigned pd_cpu_features(void) {
    unsigned a, b, c, d, features = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !avx) return 0;
    unsigned long long xcr0 = read_xcr0();
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    unsigned ebx7 = b, c7 = c, edx7 = d;
    int avx2 = (ebx7 >> 5) & 1;
    if ((xcr0 & XCR0_YMM) == XCR0_YMM && avx2 && fma && f16c) features |= PD_CPU_AVX2_FMA;
    int avx512 = ((ebx7 >> 16) & 1) && ((ebx7 >> 30) & 1) && ((ebx7 >> 31) & 1);  // F, BW, VL
    if ((xcr0 & XCR0_ZMM) == XCR0_ZMM && avx512 && (features & PD_CPU_AVX2_FMA)) {
        features |= PD_CPU_AVX512;
        __get_cpuid_count(7, 1, &a, &b, &c, &d);
        if ((a >> 5) & 1) features |= PD_CPU_AVX512_BF16;
        if ((c7 >> 11) & 1) features |= PD_CPU_AVX512_VNNI;
    }
    if (features & PD_CPU_AVX2_FMA) {
        __get_cpuid_count(7, 1, &a, &b, &c, &d);
        if ((a >> 4) & 1) features |= PD_CPU_AVX_VNNI;
    }
    // AMX: the tile state also needs arch_prctl(ARCH_REQ_XCOMP_PERM) before the first tile
    // instruction, which pd_amx_bf16_available (bf16_amx.c) asks for.
    if ((xcr0 & XCR0_TILE) == XCR0_TILE && ((edx7 >> 22) & 1) && ((edx7 >> 24) & 1)) features |= PD_CPU_AMX_BF16;
    return features;
}

// ---------------------------------------------------------------------------------------
// Shared edge handling: a tile whose columns stop short of the panel is computed in full
// (B is zero-padded) into `edge` and finished here, scalar.

static inline void finish_edge(const float *edge, int edge_stride, int rows, int columns, float *c, ptrdiff_t ldc,
                               const float *bias, const float *addend) {
    for (int r = 0; r < rows; r++) {
        float add = bias ? bias[r] : 0.0f;
        for (int j = 0; j < columns; j++) {
            float value = edge[r * edge_stride + j] + add;
            if (addend) value += addend[r * ldc + j];
            c[r * ldc + j] = value;
        }
    }
}

// ---------------------------------------------------------------------------------------
// AVX2 + FMA: 6 × 16 tile (12 ymm accumulators, 2 B loads, 1 broadcast per row and k):
// the same register blocking as the Swift micro-kernel, with the broadcasts taken from
// memory and the k loop unrolled by 2 so the loop overhead leaves the FMA ports alone.

#define PD_AVX2 __attribute__((target("avx2,fma")))

PD_AVX2
static inline void avx2_tile(int rows, int columns, int depth, const float *a, ptrdiff_t lda, const float *b,
                             float *c, ptrdiff_t ldc, const float *bias, const float *addend) {
    const int last = rows - 1;
    const float *a0 = a, *a1 = a + (last < 1 ? last : 1) * lda, *a2 = a + (last < 2 ? last : 2) * lda;
    const float *a3 = a + (last < 3 ? last : 3) * lda, *a4 = a + (last < 4 ? last : 4) * lda;
    const float *a5 = a + (last < 5 ? last : 5) * lda;
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
#define PD_AVX2_STEP(k)                                                                        \
    {                                                                                          \
        __m256 b0 = _mm256_loadu_ps(b + (k) * 16), b1 = _mm256_loadu_ps(b + (k) * 16 + 8);     \
        __m256 s = _mm256_broadcast_ss(a0 + (k));                                              \
        c00 = _mm256_fmadd_ps(s, b0, c00); c01 = _mm256_fmadd_ps(s, b1, c01);                  \
        s = _mm256_broadcast_ss(a1 + (k));                                                     \
        c10 = _mm256_fmadd_ps(s, b0, c10); c11 = _mm256_fmadd_ps(s, b1, c11);                  \
        s = _mm256_broadcast_ss(a2 + (k));                                                     \
        c20 = _mm256_fmadd_ps(s, b0, c20); c21 = _mm256_fmadd_ps(s, b1, c21);                  \
        s = _mm256_broadcast_ss(a3 + (k));                                                     \
        c30 = _mm256_fmadd_ps(s, b0, c30); c31 = _mm256_fmadd_ps(s, b1, c31);                  \
        s = _mm256_broadcast_ss(a4 + (k));                                                     \
        c40 = _mm256_fmadd_ps(s, b0, c40); c41 = _mm256_fmadd_ps(s, b1, c41);                  \
        s = _mm256_broadcast_ss(a5 + (k));                                                     \
        c50 = _mm256_fmadd_ps(s, b0, c50); c51 = _mm256_fmadd_ps(s, b1, c51);                  \
    }
    int k = 0;
    for (; k + 2 <= depth; k += 2) {
        PD_AVX2_STEP(k)
        PD_AVX2_STEP(k + 1)
    }
    if (k < depth) PD_AVX2_STEP(k)
#undef PD_AVX2_STEP
    __m256 acc[6][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    if (columns == 16) {
        for (int r = 0; r < rows; r++) {
            __m256 x0 = acc[r][0], x1 = acc[r][1];
            if (bias) {
                __m256 s = _mm256_set1_ps(bias[r]);
                x0 = _mm256_add_ps(x0, s);
                x1 = _mm256_add_ps(x1, s);
            }
            if (addend) {
                x0 = _mm256_add_ps(x0, _mm256_loadu_ps(addend + r * ldc));
                x1 = _mm256_add_ps(x1, _mm256_loadu_ps(addend + r * ldc + 8));
            }
            _mm256_storeu_ps(c + r * ldc, x0);
            _mm256_storeu_ps(c + r * ldc + 8, x1);
        }
    } else {
        float edge[6 * 16];
        for (int r = 0; r < 6; r++) {
            _mm256_storeu_ps(edge + r * 16, acc[r][0]);
            _mm256_storeu_ps(edge + r * 16 + 8, acc[r][1]);
        }
        finish_edge(edge, 16, rows, columns, c, ldc, bias, addend);
    }
}

PD_AVX2
void pd_f32_gemm_block_avx2(int rows, int columns, int depth, const float *a, ptrdiff_t lda, const float *b,
                            ptrdiff_t panel_stride, float *c, ptrdiff_t ldc, const float *bias,
                            const float *addend) {
    // Panel by panel (one B panel, depth × 64 bytes, stays in L1) over all row tiles.
    for (int p0 = 0; p0 < columns; p0 += PD_F32_PANEL_COLUMNS) {
        const float *bp = b + (p0 / PD_F32_PANEL_COLUMNS) * panel_stride;
        int cols = columns - p0 < PD_F32_PANEL_COLUMNS ? columns - p0 : PD_F32_PANEL_COLUMNS;
        for (int r0 = 0; r0 < rows; r0 += 6) {
            int rs = rows - r0 < 6 ? rows - r0 : 6;
            avx2_tile(rs, cols, depth, a + r0 * lda, lda, bp, c + r0 * ldc + p0, ldc, bias ? bias + r0 : 0,
                      addend ? addend + r0 * ldc + p0 : 0);
        }
    }
}

// ---------------------------------------------------------------------------------------
// AVX-512: 14 × 32 tile over two neighbouring 16-column panels (28 zmm accumulators,
// 2 B loads and 14 broadcasts per k: 28 FMAs per 16 loads, within two load ports while
// the two 512-bit FMA ports stay busy). A trailing single panel runs a 14 × 16 tile.
// The 14 A rows are addressed from five bases (rows 0, 3, 6, 9, 12) plus 0, 1 or 2 row
// strides, as in bf16_gemm.c.

#define PD_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))
enum { AVX512_TILE_ROWS = 14 };

PD_AVX512
static inline __mmask16 lane_mask(int n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

PD_AVX512
static inline void avx512_tile(int rows, int columns, int depth, int two_panels, const float *a, ptrdiff_t lda,
                               const float *b0p, const float *b1p, float *c, ptrdiff_t ldc, const float *bias,
                               const float *addend) {
    __m512 acc[AVX512_TILE_ROWS][2];
#pragma clang loop unroll(full)
    for (int r = 0; r < AVX512_TILE_ROWS; r++) {
        acc[r][0] = _mm512_setzero_ps();
        acc[r][1] = _mm512_setzero_ps();
    }
    // Rows past `rows` read the last valid row again (results dropped).
    const float *row[AVX512_TILE_ROWS];
    for (int r = 0; r < AVX512_TILE_ROWS; r++) row[r] = a + (r < rows ? r : rows - 1) * lda;
    if (two_panels && rows == AVX512_TILE_ROWS) {
        // The hot case: five bases and two strides instead of 14 pointers (which would
        // not fit in the 16 general registers beside the loop state).
        const float *base[5] = {a, a + 3 * lda, a + 6 * lda, a + 9 * lda, a + 12 * lda};
        for (int k = 0; k < depth; k++) {
            __m512 b0 = _mm512_loadu_ps(b0p + k * 16), b1 = _mm512_loadu_ps(b1p + k * 16);
#pragma clang loop unroll(full)
            for (int r = 0; r < AVX512_TILE_ROWS; r++) {
                __m512 s = _mm512_set1_ps(base[r / 3][(r % 3) * lda + k]);
                acc[r][0] = _mm512_fmadd_ps(s, b0, acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(s, b1, acc[r][1]);
            }
        }
    } else if (two_panels) {
        for (int k = 0; k < depth; k++) {
            __m512 b0 = _mm512_loadu_ps(b0p + k * 16), b1 = _mm512_loadu_ps(b1p + k * 16);
#pragma clang loop unroll(full)
            for (int r = 0; r < AVX512_TILE_ROWS; r++) {
                __m512 s = _mm512_set1_ps(row[r][k]);
                acc[r][0] = _mm512_fmadd_ps(s, b0, acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(s, b1, acc[r][1]);
            }
        }
    } else {
        for (int k = 0; k < depth; k++) {
            __m512 b0 = _mm512_loadu_ps(b0p + k * 16);
#pragma clang loop unroll(full)
            for (int r = 0; r < AVX512_TILE_ROWS; r++)
                acc[r][0] = _mm512_fmadd_ps(_mm512_set1_ps(row[r][k]), b0, acc[r][0]);
        }
    }
    __mmask16 m0 = lane_mask(columns), m1 = lane_mask(columns - 16);
#pragma clang loop unroll(full)
    for (int r = 0; r < AVX512_TILE_ROWS; r++) {
        if (r >= rows) continue;  // (not break: the loop must unroll to keep acc in registers)
        __m512 x0 = acc[r][0], x1 = acc[r][1];
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

PD_AVX512
void pd_f32_gemm_block_avx512(int rows, int columns, int depth, const float *a, ptrdiff_t lda, const float *b,
                              ptrdiff_t panel_stride, float *c, ptrdiff_t ldc, const float *bias,
                              const float *addend) {
    const int width = 2 * PD_F32_PANEL_COLUMNS;
    for (int p0 = 0; p0 < columns; p0 += width) {
        const float *bp = b + (p0 / PD_F32_PANEL_COLUMNS) * panel_stride;
        int cols = columns - p0 < width ? columns - p0 : width;
        int two = cols > PD_F32_PANEL_COLUMNS;
        for (int r0 = 0; r0 < rows; r0 += AVX512_TILE_ROWS) {
            int rs = rows - r0 < AVX512_TILE_ROWS ? rows - r0 : AVX512_TILE_ROWS;
            avx512_tile(rs, cols, depth, two, a + r0 * lda, lda, bp, two ? bp + panel_stride : bp,
                        c + r0 * ldc + p0, ldc, bias ? bias + r0 : 0, addend ? addend + r0 * ldc + p0 : 0);
        }
    }
}

// ---------------------------------------------------------------------------------------
// FMA peak: 12 independent chains per vector width (enough for 4-cycle latency on two
// pipes), everything in registers. Returns a value that depends on every chain.

PD_AVX2
float pd_fma_loop_avx2(long iterations) {
    __m256 m = _mm256_set1_ps(0.999999f), d = _mm256_set1_ps(1e-7f), x[12];
    for (int i = 0; i < 12; i++) x[i] = _mm256_set1_ps((float)(i + 1));
    for (long n = 0; n < iterations; n++) {
#pragma clang loop unroll(full)
        for (int i = 0; i < 12; i++) x[i] = _mm256_fmadd_ps(x[i], m, d);
        __asm__ volatile("" : "+x"(x[0]), "+x"(x[1]), "+x"(x[2]), "+x"(x[3]));
    }
    __m256 s = x[0];
    for (int i = 1; i < 12; i++) s = _mm256_add_ps(s, x[i]);
    float lanes[8];
    _mm256_storeu_ps(lanes, s);
    return lanes[0] + lanes[7];
}

PD_AVX512
float pd_fma_loop_avx512(long iterations) {
    __m512 m = _mm512_set1_ps(0.999999f), d = _mm512_set1_ps(1e-7f), x[12];
    for (int i = 0; i < 12; i++) x[i] = _mm512_set1_ps((float)(i + 1));
    for (long n = 0; n < iterations; n++) {
#pragma clang loop unroll(full)
        for (int i = 0; i < 12; i++) x[i] = _mm512_fmadd_ps(x[i], m, d);
        __asm__ volatile("" : "+v"(x[0]), "+v"(x[1]), "+v"(x[2]), "+v"(x[3]));
    }
    __m512 s = x[0];
    for (int i = 1; i < 12; i++) s = _mm512_add_ps(s, x[i]);
    return _mm512_reduce_add_ps(s);
}

#else

unsigned pd_cpu_features(void) { return 0; }

void pd_f32_gemm_block_avx2(int rows, int columns, int depth, const float *a, ptrdiff_t lda, const float *b,
                            ptrdiff_t panel_stride, float *c, ptrdiff_t ldc, const float *bias,
                            const float *addend) {
    (void)rows; (void)columns; (void)depth; (void)a; (void)lda; (void)b; (void)panel_stride;
    (void)c; (void)ldc; (void)bias; (void)addend;
}

void pd_f32_gemm_block_avx512(int rows, int columns, int depth, const float *a, ptrdiff_t lda, const float *b,
                              ptrdiff_t panel_stride, float *c, ptrdiff_t ldc, const float *bias,
                              const float *addend) {
    (void)rows; (void)columns; (void)depth; (void)a; (void)lda; (void)b; (void)panel_stride;
    (void)c; (void)ldc; (void)bias; (void)addend;
}

float pd_fma_loop_avx2(long iterations) { (void)iterations; return 0; }
float pd_fma_loop_avx512(long iterations) { (void)iterations; return 0; }

#endif
