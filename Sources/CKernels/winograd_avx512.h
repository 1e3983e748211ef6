// What the two Winograd transform files (winograd_transforms.c for F(2×2, 3×3),
// winograd43_transforms.c for F(4×4, 3×3)) share on x86_64: the AVX-512 target, where a
// tile lies in the batch, and the conversion of a weight row's channels to floats.
#ifndef POCKETSD_WINOGRAD_AVX512_H
#define POCKETSD_WINOGRAD_AVX512_H

#include "CKernels.h"

#include <immintrin.h>

#define PD_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))

typedef __m512 v16;

// Where tile t starts: image plane offset, tile row, tile column.
typedef struct { ptrdiff_t plane; int ty, tx; } tile_origin;

static inline tile_origin locate(const pd_winograd_tiles *g, long t) {
    long per_image = (long)g->tiles_y * g->tiles_x;
    long b = t / per_image, rest = t - b * per_image;
    int ty = (int)(rest / g->tiles_x);
    tile_origin o = { b * g->plane_size, ty, (int)(rest - (long)ty * g->tiles_x) };
    return o;
}

// The [channel][3][3] weights of channels ic ..< ic + lanes of a row (starting at element
// `at`; `type` 0 f32, 1 f16, 2 int8 times `scale`) as floats into out[9 · lanes], as
// `Winograd.transposedRow` converts them.
PD_AVX512 static inline void weight_block(int type, const void *data, float scale, ptrdiff_t at, int lanes,
                                          float *out) {
    const int values = 9 * lanes;
    for (int k = 0; k < values; k += 16) {
        const __mmask16 m = values - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (values - k)) - 1);
        v16 f;
        if (type == 0) {
            f = _mm512_maskz_loadu_ps(m, (const float *)data + at + k);
        } else if (type == 1) {
            f = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)data + at + k));
        } else {
            __m128i q = _mm_maskz_loadu_epi8(m, (const int8_t *)data + at + k);
            f = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), _mm512_set1_ps(scale));
        }
        if (m == 0xFFFF)
            _mm512_storeu_ps(out + k, f);
        else
            _mm512_mask_storeu_ps(out + k, m, f);
    }
}

// One weight row's channels, 16 at a time, as vectors over channels per kernel position:
// g[e] lane l = weight[ic + l][e] (e = 3·row + column), lanes past the last channel 0. Two
// blocks of 16 channels are in flight: block b + 1 is loaded and converted while block b is
// gathered, so the gathers do not wait on the stores just made (store forwarding does not
// serve gathers) and the weight loads overlap the arithmetic.
typedef struct {
    __m512i index[9];  // lane l of index[e]: 9l + e
    float block[2][144];
    int type, cols, cin, blocks;
    const void *data;
    float scale;
    ptrdiff_t row;  // first element of the current row
} weight_row_reader;

PD_AVX512 static inline void weight_reader_init(weight_row_reader *w, int type, const void *data, int cols) {
    w->type = type;
    w->data = data;
    w->cols = cols;
    w->cin = cols / 9;
    w->blocks = (w->cin + 15) / 16;
    for (int e = 0; e < 9; e++)
        w->index[e] = _mm512_add_epi32(_mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
                                                                            13, 14, 15), _mm512_set1_epi32(9)),
                                       _mm512_set1_epi32(e));
}

// Starts row n (q8: times its scale): converts its first block.
PD_AVX512 static inline void weight_reader_row(weight_row_reader *w, long n, const float *scales) {
    w->scale = w->type == 2 ? scales[n] : 1.0f;
    w->row = n * (ptrdiff_t)w->cols;
    weight_block(w->type, w->data, w->scale, w->row, w->cin < 16 ? w->cin : 16, w->block[0]);
}

// Block b (channels 16b ..< 16b + 16) of the current row into g[9], after converting block
// b + 1; returns the mask of the channels present.
PD_AVX512 static inline __mmask16 weight_reader_block(weight_row_reader *w, int b, v16 g[9]) {
    const int ic = 16 * b, lanes = w->cin - ic < 16 ? w->cin - ic : 16;
    if (b + 1 < w->blocks) {
        const int next = ic + 16;
        weight_block(w->type, w->data, w->scale, w->row + (ptrdiff_t)next * 9, w->cin - next < 16 ? w->cin - next : 16,
                     w->block[(b + 1) & 1]);
    }
    const __mmask16 valid = lanes >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << lanes) - 1);
    for (int e = 0; e < 9; e++)
        g[e] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), valid, w->index[e], w->block[b & 1], 4);
    return valid;
}

#endif
