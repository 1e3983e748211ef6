// int8 mode's activation quantiser 16 wide for AVX-512 (F/BW/VL): one B record of
// `I8Gemm` (q[8][32][4] int8, scale[32] float, corr[32] int32; contract in CKernels.h) from 32
// columns of f32 activations, the work `I8Gemm.quantize` (its Swift twin) does 8 columns at a
// time. The AVX-512 kernel variants run it (KernelVariant.usesAVX512VectorMath).
//
// Bitwise equal to the twin: per column the same operations in the same order (max of |x|
// over the block's rows with the twin's vmax(a, b) = a > b ? a : b, which vmaxps is; 127 / m
// capped at FLT_MAX with vmin's rule; m / 127; x · inverse + 1.5·2²³ as a multiply and a
// separate add, contraction off; the integer difference of the bits clamped to ±127).

#include "CKernels.h"

#if defined(__x86_64__)
#include <float.h>
#include <immintrin.h>

#pragma clang fp contract(off)

#define PD_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))

enum {
    QUADS = PD_I8_BLOCK_DEPTH / 4,
    SCALE_OFFSET = PD_I8_BLOCK_DEPTH * PD_I8_PANEL_COLUMNS,
    CORR_OFFSET = SCALE_OFFSET + PD_I8_PANEL_COLUMNS * 4,
};

// Columns column ..< column+16 of the record from rows src + i·row_stride (i < depth), lanes
// at or past `lanes` zero (not read).
PD_AVX512
static void quantize16(const float *src, ptrdiff_t row_stride, int depth, int lanes, int column, uint8_t *record) {
    __mmask16 valid = lanes >= 16 ? (__mmask16)0xFFFF : lanes <= 0 ? 0 : (__mmask16)((1u << lanes) - 1);
    const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF);
    __m512 x[PD_I8_BLOCK_DEPTH];
    __m512 m = _mm512_setzero_ps();
    for (int i = 0; i < PD_I8_BLOCK_DEPTH; i++) {
        // From rows, the 32 rows are as many streams far apart, and the loads waited on memory
        // (perf: the quantiser 4.0–4.4 % of an int8 UNet step without this, 3.4–3.5 % with):
        // ask for the row's floats two records on.
        if (i < depth) __builtin_prefetch(src + i * row_stride + 2 * PD_I8_PANEL_COLUMNS);
        x[i] = i < depth ? _mm512_maskz_loadu_ps(valid, src + i * row_stride) : _mm512_setzero_ps();
        // |x| by clearing the sign bit (the twin's `magnitude`; vandps on zmm needs AVX512DQ).
        if (i < depth) m = _mm512_max_ps(m, _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x[i]), abs_mask)));
    }
    __m512 inverse = _mm512_min_ps(_mm512_div_ps(_mm512_set1_ps(127.0f), m), _mm512_set1_ps(FLT_MAX));
    _mm512_storeu_ps((float *)(record + SCALE_OFFSET) + column, _mm512_div_ps(m, _mm512_set1_ps(127.0f)));
    const __m512 magic = _mm512_set1_ps(12582912.0f);
    const __m512i low = _mm512_set1_epi32(-127), high = _mm512_set1_epi32(127), byte = _mm512_set1_epi32(0xFF);
    __m512i sum = _mm512_setzero_si512();
    for (int quad = 0; quad < QUADS; quad++) {
        __m512i packed = _mm512_setzero_si512();
        for (int b = 0; b < 4; b++) {
            int i = 4 * quad + b;
            __m512i q = _mm512_setzero_si512();
            if (i < depth) {
                __m512 r = _mm512_add_ps(_mm512_mul_ps(x[i], inverse), magic);
                q = _mm512_sub_epi32(_mm512_castps_si512(r), _mm512_castps_si512(magic));
                q = _mm512_min_epi32(_mm512_max_epi32(q, low), high);
            }
            sum = _mm512_add_epi32(sum, q);
            packed = _mm512_or_si512(packed, _mm512_slli_epi32(_mm512_and_si512(q, byte), 8 * b));
        }
        _mm512_storeu_si512(record + (quad * PD_I8_PANEL_COLUMNS + column) * 4, packed);
    }
    _mm512_storeu_si512(record + CORR_OFFSET + column * 4, _mm512_slli_epi32(sum, 7));
}

PD_AVX512
void pd_i8_quantize_record_avx512(const float *low_half, const float *high_half, ptrdiff_t row_stride, int depth,
                                  int columns, uint8_t *record) {
    quantize16(low_half, row_stride, depth, columns, 0, record);
    quantize16(high_half, row_stride, depth, columns - 16, 16, record);
}

#else

void pd_i8_quantize_record_avx512(const float *low_half, const float *high_half, ptrdiff_t row_stride, int depth,
                                  int columns, uint8_t *record) {
    (void)low_half; (void)high_half; (void)row_stride; (void)depth; (void)columns; (void)record;
}

#endif
