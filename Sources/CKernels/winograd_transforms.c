// The input and output transforms of Winograd F(2×2, 3×3) (SDKernels' `Winograd`) for
// x86_64 AVX-512: 16 tiles per zmm, where the Swift twins run 8 per vector (Swift's SIMD
// width is fixed when the module is compiled). Next to bf16 products the transforms weigh:
// with the twins, 37 % of the bf16 kernel's time in an SD 1.5 UNet step and VAE decode and
// about as much as the products in TAESD's 64-channel decode (`perf`, AMD Zen 5). The input
// transform is bound by memory rather than arithmetic, hence its loop order (below).
//
// Bitwise equal to the twins (the tests hold them to it): the transforms are sums and
// differences of the same operands in the same order, the bias is added as the twin adds it
// (also when it is zero: -0 + 0 is +0), and bf16 pairs are rounded with BF16Gemm.round's
// integer rule, not vcvtne2ps2bf16 (which flushes subnormals).
//
// Layouts (as the Swift side, `Winograd.transformInput` / `transformOutput`):
//   x, y: [channel][batch][height][width], `channel_stride` floats apart per channel.
//   Tiles are numbered row by row over the batch: tile t is image t / (ty·tx), tile row
//   and column from the rest; its input patch is the 4×4 at (2·row − 1, 2·column − 1).
//   V: position ξ at ξ·xi_stride words; a group of 16 tiles j0 ..< j0+16 of the block is
//   16 lanes of panel j0 / panel_width at lane j0 % panel_width; panel rows are channels
//   (f32) or channel pairs (bf16: even channel in the low half, a last odd channel with 0).
//   M: m[ξ][r][tile], row stride ldm, ξ stride rows·ldm.

#include "CKernels.h"

#if defined(__x86_64__)
#include "winograd_avx512.h"

#pragma clang fp contract(off)

// Lanes s + i (i < 16) with 0 ≤ s + i < limit.
PD_AVX512 static inline __mmask16 range_mask(ptrdiff_t s, ptrdiff_t limit) {
    ptrdiff_t lo = s < 0 ? -s : 0, hi = limit - s;
    if (hi > 16) hi = 16;
    if (hi <= lo) return 0;
    unsigned bits = (hi >= 16 ? 0xFFFFu : (1u << hi) - 1) & ~((1u << lo) - 1);
    return (__mmask16)bits;
}

// Bᵀ d B on the 16 values of a 4×4 patch d[4r + c], in place (Winograd.inputTile).
PD_AVX512 static inline void input_tile(v16 d[16]) {
    v16 t00 = _mm512_sub_ps(d[0], d[8]), t01 = _mm512_sub_ps(d[1], d[9]);
    v16 t02 = _mm512_sub_ps(d[2], d[10]), t03 = _mm512_sub_ps(d[3], d[11]);
    v16 t10 = _mm512_add_ps(d[4], d[8]), t11 = _mm512_add_ps(d[5], d[9]);
    v16 t12 = _mm512_add_ps(d[6], d[10]), t13 = _mm512_add_ps(d[7], d[11]);
    v16 t20 = _mm512_sub_ps(d[8], d[4]), t21 = _mm512_sub_ps(d[9], d[5]);
    v16 t22 = _mm512_sub_ps(d[10], d[6]), t23 = _mm512_sub_ps(d[11], d[7]);
    v16 t30 = _mm512_sub_ps(d[4], d[12]), t31 = _mm512_sub_ps(d[5], d[13]);
    v16 t32 = _mm512_sub_ps(d[6], d[14]), t33 = _mm512_sub_ps(d[7], d[15]);
    d[0] = _mm512_sub_ps(t00, t02); d[1] = _mm512_add_ps(t01, t02);
    d[2] = _mm512_sub_ps(t02, t01); d[3] = _mm512_sub_ps(t01, t03);
    d[4] = _mm512_sub_ps(t10, t12); d[5] = _mm512_add_ps(t11, t12);
    d[6] = _mm512_sub_ps(t12, t11); d[7] = _mm512_sub_ps(t11, t13);
    d[8] = _mm512_sub_ps(t20, t22); d[9] = _mm512_add_ps(t21, t22);
    d[10] = _mm512_sub_ps(t22, t21); d[11] = _mm512_sub_ps(t21, t23);
    d[12] = _mm512_sub_ps(t30, t32); d[13] = _mm512_add_ps(t31, t32);
    d[14] = _mm512_sub_ps(t32, t31); d[15] = _mm512_sub_ps(t31, t33);
}

// BF16Gemm.round: the high half of the float, rounded to nearest even by integer addition.
PD_AVX512 static inline __m512i bf16_round(v16 x) {
    __m512i u = _mm512_castps_si512(x);
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    return _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), odd), 16);
}

// The patch rows of 16 tiles side by side in one tile row: lane l reads columns
// c0 + 2l + c (c < 4) of row `p` (already offset to c0), columns outside [0, width)
// masked to zero by `m0..m2` (the masks of the loads at c0, c0 + 16, c0 + 32).
PD_AVX512 static inline void load_row(const float *p, __mmask16 m0, __mmask16 m1, __mmask16 m2, v16 out[4]) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    v16 a = _mm512_maskz_loadu_ps(m0, p), b = _mm512_maskz_loadu_ps(m1, p + 16);
    v16 c = _mm512_maskz_loadu_ps(m2, p + 32);
    v16 d0 = _mm512_permutex2var_ps(a, even, b), d1 = _mm512_permutex2var_ps(a, odd, b);
    __m512i ci = _mm512_castps_si512(c);
    // Columns c0 + 2 + 2l and c0 + 3 + 2l: one lane on, the last from c.
    out[0] = d0;
    out[1] = d1;
    out[2] = _mm512_castsi512_ps(_mm512_alignr_epi32(ci, _mm512_castps_si512(d0), 1));
    out[3] = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_alignr_epi32(ci, ci, 1), _mm512_castps_si512(d1), 1));
}

// How one group of 16 tiles reads its patches: from one tile row by contiguous loads
// (`r0`: the patches' first row; masks m0..m2 for the loads at columns c0, c0 + 16, c0 + 32),
// or lane by lane by gathers (`gather` ≥ 0: its slot of index and mask vectors).
typedef struct {
    ptrdiff_t start;    // contiguous: plane + r0·width + c0
    int r0, gather;
    __mmask16 m0, m1, m2;
} input_group;

enum { MAX_GROUPS = PD_WINOGRAD_INPUT_MAX_LANES / 16, PREFETCH_AHEAD = 128 };

// V of one channel of one group (`channel` = x of that channel).
PD_AVX512 static inline void transform_channel(const input_group *q, const __m512i *index, const __mmask16 *mask,
                                               const float *channel, int width, int height, v16 d[16]) {
    if (q->gather < 0) {
        const float *base = channel + q->start;
        for (int r = 0; r < 4; r++) {
            int row = q->r0 + r;
            if (row < 0 || row >= height) {
                for (int c = 0; c < 4; c++) d[4 * r + c] = _mm512_setzero_ps();
            } else {
                const float *p = base + (ptrdiff_t)r * width;
                // Four groups ahead along the row: the loads at each row's leading edge still
                // waited on memory in this order (`perf`), and the transform ran 1.5× longer.
                _mm_prefetch((const char *)(p + PREFETCH_AHEAD), _MM_HINT_T0);
                _mm_prefetch((const char *)(p + PREFETCH_AHEAD + 16), _MM_HINT_T0);
                load_row(p, q->m0, q->m1, q->m2, d + 4 * r);
            }
        }
    } else {
        const __m512i *ix = index + 16 * q->gather;
        const __mmask16 *mk = mask + 16 * q->gather;
        for (int k = 0; k < 16; k++) d[k] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mk[k], ix[k], channel, 4);
    }
    input_tile(d);
}

PD_AVX512
void pd_winograd23_input_avx512(const pd_winograd_tiles *g, const float *x, long first_tile, int count,
                                int panels, int panel_width, int bf16, void *dst, ptrdiff_t xi_stride) {
    const int cin = g->channels, width = g->width, height = g->height;
    const ptrdiff_t cs = g->channel_stride;
    const int w = panel_width, groups = panels * w / 16;
    const ptrdiff_t panel_words = (ptrdiff_t)(bf16 ? (cin + 1) / 2 : cin) * w;
    if (groups > MAX_GROUPS) return;  // the Swift side checks it
    input_group group[MAX_GROUPS];
    __m512i index[16 * MAX_GROUPS];
    __mmask16 mask[16 * MAX_GROUPS];
    int gathers = 0;
    for (int gi = 0; gi < groups; gi++) {
        const int j0 = 16 * gi;
        int valid = count - j0;
        if (valid > 16) valid = 16;
        input_group *q = &group[gi];
        tile_origin first = { 0, 0, 0 };
        if (valid > 0) first = locate(g, first_tile + j0);
        if (valid == 16 && first.tx + 16 <= g->tiles_x) {
            const int r0 = 2 * first.ty - 1, c0 = 2 * first.tx - 1;
            q->start = first.plane + (ptrdiff_t)r0 * width + c0;
            q->r0 = r0;
            q->gather = -1;
            q->m0 = range_mask(c0, width);
            q->m1 = range_mask(c0 + 16, width);
            q->m2 = range_mask(c0 + 32, width);
            continue;
        }
        // Tiles across rows or images, or the tail (lanes past `count` stay 0).
        q->gather = gathers++;
        int offset[16], row0[16], col0[16];
        for (int l = 0; l < 16; l++) {
            if (l < valid) {
                tile_origin o = locate(g, first_tile + j0 + l);
                row0[l] = 2 * o.ty - 1;
                col0[l] = 2 * o.tx - 1;
                offset[l] = (int)(o.plane + (ptrdiff_t)row0[l] * width + col0[l]);
            } else {
                row0[l] = -4; col0[l] = 0; offset[l] = 0;  // every row outside
            }
        }
        __m512i base = _mm512_loadu_si512(offset);
        for (int r = 0; r < 4; r++) {
            for (int c = 0; c < 4; c++) {
                unsigned bits = 0;
                for (int l = 0; l < 16; l++) {
                    int row = row0[l] + r, col = col0[l] + c;
                    if (row >= 0 && row < height && col >= 0 && col < width) bits |= 1u << l;
                }
                mask[16 * q->gather + 4 * r + c] = (__mmask16)bits;
                index[16 * q->gather + 4 * r + c] = _mm512_add_epi32(base, _mm512_set1_epi32(r * width + c));
            }
        }
    }
    // Channel by channel (pair by pair in bf16), each along all groups: every input row is
    // read front to back, which the hardware prefetchers follow; group by group, the 4·Cin
    // rows of a block were too many streams to track and the loads waited on memory.
    v16 d[16], e[16];
    for (int ic = 0; ic < cin; ic += bf16 ? 2 : 1) {
        const float *channel = x + ic * cs;
        for (int gi = 0; gi < groups; gi++) {
            const ptrdiff_t at = (16 * gi / w) * panel_words + (16 * gi) % w;
            transform_channel(&group[gi], index, mask, channel, width, height, d);
            if (!bf16) {
                float *p = (float *)dst + at + (ptrdiff_t)ic * w;
                for (int xi = 0; xi < 16; xi++) _mm512_storeu_ps(p + xi * xi_stride, d[xi]);
                continue;
            }
            uint32_t *p = (uint32_t *)dst + at + (ptrdiff_t)(ic / 2) * w;
            if (ic + 1 < cin) {
                transform_channel(&group[gi], index, mask, channel + cs, width, height, e);
                for (int xi = 0; xi < 16; xi++) {
                    __m512i pair = _mm512_or_si512(bf16_round(d[xi]), _mm512_slli_epi32(bf16_round(e[xi]), 16));
                    _mm512_storeu_si512((void *)(p + xi * xi_stride), pair);
                }
            } else {
                for (int xi = 0; xi < 16; xi++) _mm512_storeu_si512((void *)(p + xi * xi_stride), bf16_round(d[xi]));
            }
        }
    }
}

PD_AVX512
void pd_winograd23_output_avx512(const pd_winograd_tiles *g, const float *m, ptrdiff_t ldm, long first_row,
                                 int rows, long first_tile, int count, const float *bias, const float *residual,
                                 float *y) {
    const int width = g->width, height = g->height;
    const ptrdiff_t cs = g->channel_stride, xi_stride = (ptrdiff_t)rows * ldm;
    const __m512i lo_index = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi_index = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for (int r = 0; r < rows; r++) {
        const long oc = first_row + r;
        const v16 b = _mm512_set1_ps(bias ? bias[oc] : 0.0f);
        for (int j0 = 0; j0 < count; j0 += 16) {
            const float *src = m + (ptrdiff_t)r * ldm + j0;
            v16 q[16];
            for (int xi = 0; xi < 16; xi++) q[xi] = _mm512_loadu_ps(src + xi * xi_stride);
            // Aᵀ m A (Winograd.outputTile), then the bias.
            v16 s00 = _mm512_add_ps(_mm512_add_ps(q[0], q[4]), q[8]);
            v16 s01 = _mm512_add_ps(_mm512_add_ps(q[1], q[5]), q[9]);
            v16 s02 = _mm512_add_ps(_mm512_add_ps(q[2], q[6]), q[10]);
            v16 s03 = _mm512_add_ps(_mm512_add_ps(q[3], q[7]), q[11]);
            v16 s10 = _mm512_sub_ps(_mm512_sub_ps(q[4], q[8]), q[12]);
            v16 s11 = _mm512_sub_ps(_mm512_sub_ps(q[5], q[9]), q[13]);
            v16 s12 = _mm512_sub_ps(_mm512_sub_ps(q[6], q[10]), q[14]);
            v16 s13 = _mm512_sub_ps(_mm512_sub_ps(q[7], q[11]), q[15]);
            v16 o[4];
            o[0] = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(s00, s01), s02), b);
            o[1] = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(s01, s02), s03), b);
            o[2] = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(s10, s11), s12), b);
            o[3] = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(s11, s12), s13), b);
            int valid = count - j0;
            if (valid > 16) valid = 16;
            tile_origin first = locate(g, first_tile + j0);
            if (valid == 16 && first.tx + 16 <= g->tiles_x && 2 * (first.tx + 16) <= width
                && 2 * first.ty + 2 <= height) {
                // Interleave (y00, y01) and (y10, y11) into two output rows of 32.
                ptrdiff_t p = oc * cs + first.plane + (ptrdiff_t)2 * first.ty * width + 2 * first.tx;
                v16 r00 = _mm512_permutex2var_ps(o[0], lo_index, o[1]);
                v16 r01 = _mm512_permutex2var_ps(o[0], hi_index, o[1]);
                v16 r10 = _mm512_permutex2var_ps(o[2], lo_index, o[3]);
                v16 r11 = _mm512_permutex2var_ps(o[2], hi_index, o[3]);
                if (residual) {
                    r00 = _mm512_add_ps(r00, _mm512_loadu_ps(residual + p));
                    r01 = _mm512_add_ps(r01, _mm512_loadu_ps(residual + p + 16));
                    r10 = _mm512_add_ps(r10, _mm512_loadu_ps(residual + p + width));
                    r11 = _mm512_add_ps(r11, _mm512_loadu_ps(residual + p + width + 16));
                }
                _mm512_storeu_ps(y + p, r00);
                _mm512_storeu_ps(y + p + 16, r01);
                _mm512_storeu_ps(y + p + width, r10);
                _mm512_storeu_ps(y + p + width + 16, r11);
            } else {
                // Lane by lane, skipping outputs past an odd-sized image's edge.
                float values[4][16];
                for (int k = 0; k < 4; k++) _mm512_storeu_ps(values[k], o[k]);
                for (int l = 0; l < valid; l++) {
                    tile_origin t = locate(g, first_tile + j0 + l);
                    for (int i = 0; i < 2 && 2 * t.ty + i < height; i++) {
                        for (int j = 0; j < 2 && 2 * t.tx + j < width; j++) {
                            ptrdiff_t p = oc * cs + t.plane + (ptrdiff_t)(2 * t.ty + i) * width + 2 * t.tx + j;
                            float value = values[2 * i + j][l];
                            if (residual) value += residual[p];
                            y[p] = value;
                        }
                    }
                }
            }
        }
    }
}

// U = G g Gᵀ for 16 input channels of one weight row, from g[e] (e = 3·row + column of the
// 3×3 kernel, lanes = channels), in ξ = 4i + j order: Winograd.transformWeights' operations.
PD_AVX512 static inline void weight_tile(const v16 g[9], v16 u[16]) {
    const v16 half = _mm512_set1_ps(0.5f);
    // Gᵀ on a row (x0, x1, x2): (x0, (x0 + x2)/2 + x1/2, (x0 + x2)/2 − x1/2, x2).
#define GT(x0, x1, x2, out) do { \
        v16 s_ = _mm512_mul_ps(_mm512_add_ps(x0, x2), half), h_ = _mm512_mul_ps(x1, half); \
        (out)[0] = (x0); (out)[1] = _mm512_add_ps(s_, h_); (out)[2] = _mm512_sub_ps(s_, h_); (out)[3] = (x2); \
    } while (0)
    v16 s0 = _mm512_mul_ps(_mm512_add_ps(g[0], g[6]), half), s1 = _mm512_mul_ps(_mm512_add_ps(g[1], g[7]), half);
    v16 s2 = _mm512_mul_ps(_mm512_add_ps(g[2], g[8]), half);
    v16 h0 = _mm512_mul_ps(g[3], half), h1 = _mm512_mul_ps(g[4], half), h2 = _mm512_mul_ps(g[5], half);
    GT(g[0], g[1], g[2], u);
    GT(_mm512_add_ps(s0, h0), _mm512_add_ps(s1, h1), _mm512_add_ps(s2, h2), u + 4);
    GT(_mm512_sub_ps(s0, h0), _mm512_sub_ps(s1, h1), _mm512_sub_ps(s2, h2), u + 8);
    GT(g[6], g[7], g[8], u + 12);
#undef GT
}

// U = G g Gᵀ of weight rows first_row ..< first_row + count into f32 rows of `cin` (`bf16` 0:
// Winograd.transformWeights' u[ξ][r][ic]) or bf16 pair rows of ⌈cin/2⌉, rows up to a whole
// PD_BF16_TILE_ROWS zero (`bf16` 1: Winograd.transformWeightsBF16's A rows).
PD_AVX512 static inline void transform_weight_rows(int type, const void *data, const float *scales, int cols,
                                                   long first_row, int count, void *out, ptrdiff_t xi_stride,
                                                   int bf16) {
    const int cin = cols / 9, pairs = (cin + 1) / 2;
    const int row_words = bf16 ? pairs : cin;
    const int padded = bf16 ? (count + PD_BF16_TILE_ROWS - 1) / PD_BF16_TILE_ROWS * PD_BF16_TILE_ROWS : count;
    weight_row_reader reader;
    weight_reader_init(&reader, type, data, cols);
    for (int r = 0; r < padded; r++) {
        uint32_t *dst = (uint32_t *)out + (ptrdiff_t)r * row_words;  // 4-byte words either way
        if (r >= count) {
            for (int xi = 0; xi < 16; xi++)
                for (int i = 0; i < pairs; i++) dst[xi * xi_stride + i] = 0;
            continue;
        }
        weight_reader_row(&reader, first_row + r, scales);
        const int size = type == 0 ? 4 : type == 1 ? 2 : 1;  // bytes per stored weight
        const char *next_row = (const char *)data + (first_row + r + 1) * (ptrdiff_t)cols * size;
        for (int b = 0; b < reader.blocks; b++) {
            const int ic = 16 * b, lanes = cin - ic < 16 ? cin - ic : 16;
            // The next row's weights of this block, as the F(4, 3) transform does: the
            // stored weights' loads waited on memory (`perf`, bf16 SD 1.5 UNet step on AMD
            // EPYC Zen 5: this function 8.5 % of the samples before, 5.7–6.1 % after).
            if (r + 1 < count) pd_prefetch(next_row + (ptrdiff_t)ic * 9 * size, 9 * lanes * size);
            v16 g[9], u[16];
            const __mmask16 valid = weight_reader_block(&reader, b, g);
            weight_tile(g, u);
            if (!bf16) {
                for (int xi = 0; xi < 16; xi++) _mm512_mask_storeu_ps((float *)dst + xi * xi_stride + ic, valid, u[xi]);
                continue;
            }
            // bf16 pairs of neighbouring channels: 16 rounded halves narrowed to 16 bits
            // (lanes past the last channel were gathered as 0 and stay 0 through the
            // transform, so an odd last channel pairs with 0).
            const __mmask8 pair_mask = (__mmask8)((1u << ((lanes + 1) / 2)) - 1);
            for (int xi = 0; xi < 16; xi++) {
                __m256i halves = _mm512_cvtepi32_epi16(bf16_round(u[xi]));
                _mm256_mask_storeu_epi32(dst + xi * xi_stride + ic / 2, pair_mask, halves);
            }
        }
    }
}

PD_AVX512
void pd_winograd23_weights_bf16_avx512(int type, const void *data, const float *scales, int cols, long first_row,
                                       int count, uint32_t *a, ptrdiff_t xi_stride) {
    transform_weight_rows(type, data, scales, cols, first_row, count, a, xi_stride, 1);
}

PD_AVX512
void pd_winograd23_weights_f32_avx512(int type, const void *data, const float *scales, int cols, long first_row,
                                      int count, float *u, ptrdiff_t xi_stride) {
    transform_weight_rows(type, data, scales, cols, first_row, count, u, xi_stride, 0);
}

#else

void pd_winograd23_weights_bf16_avx512(int type, const void *data, const float *scales, int cols, long first_row,
                                       int count, uint32_t *a, ptrdiff_t xi_stride) {
    (void)type; (void)data; (void)scales; (void)cols; (void)first_row; (void)count; (void)a; (void)xi_stride;
}
void pd_winograd23_weights_f32_avx512(int type, const void *data, const float *scales, int cols, long first_row,
                                      int count, float *u, ptrdiff_t xi_stride) {
    (void)type; (void)data; (void)scales; (void)cols; (void)first_row; (void)count; (void)u; (void)xi_stride;
}

void pd_winograd23_input_avx512(const pd_winograd_tiles *g, const float *x, long first_tile, int count,
                                int panels, int panel_width, int bf16, void *dst, ptrdiff_t xi_stride) {
    (void)g; (void)x; (void)first_tile; (void)count; (void)panels; (void)panel_width; (void)bf16; (void)dst;
    (void)xi_stride;
}

void pd_winograd23_output_avx512(const pd_winograd_tiles *g, const float *m, ptrdiff_t ldm, long first_row,
                                 int rows, long first_tile, int count, const float *bias, const float *residual,
                                 float *y) {
    (void)g; (void)m; (void)ldm; (void)first_row; (void)rows; (void)first_tile; (void)count; (void)bias;
    (void)residual; (void)y;
}

#endif
