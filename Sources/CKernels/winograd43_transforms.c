// The input, output and weight transforms of Winograd F(4×4, 3×3) (SDKernels' `Winograd43`,
// the exact f32 mode's 3×3 convolution) for x86_64 AVX-512: 16 tiles (or 16 input channels)
// per zmm, where the Swift twins run 8 per vector. With the twins they took ≈ 12 % of an
// SD 1.5 f32 run on AMD EPYC Zen 5 (family 26 model 2), next to 63 % for the block product.
//
// Bitwise equal to the twins (Winograd43VariantTests holds them to it): Bᵀ, Aᵀ and G are
// applied with the same multiplies, adds and subtractions in the same order as `bt`, `at`
// and `gt` (which use no multiply-add, so neither does this file: fp contraction is off),
// the bias is added as the twin adds it (also when zero: -0 + 0 is +0), then the residual.
//
// Layouts (as the Swift side):
//   x, y: [channel][batch][height][width], `channel_stride` floats apart per channel.
//   Tile t (row by row over the batch) has its input patch at the 6×6 at (4·row − 1,
//   4·column − 1) and its outputs at the 4×4 at (4·row, 4·column).
//   V: position ξ = 6i + j at ξ·xi_stride floats; a group of 16 tiles j0 ..< j0+16 of the
//   block is 16 lanes of panel j0 / panel_width at lane j0 % panel_width, panel rows are
//   channels.
//   M: m[ξ][r][tile], row stride ldm, ξ stride rows·ldm.
//   U: u[ξ][r][ic], row stride Cin, ξ stride count·Cin.
//
// A group's 16 tiles run along one tile row or cross into the next rows (images 32 pixels
// wide have 8 tiles a row) or stop early (the block's tail): each group is cut into
// segments, the lanes of one tile row, and a segment is read and written with contiguous
// masked loads and stores as if its row started at lane 0 (lane l at column cv + 4l).

#include "CKernels.h"

#if defined(__x86_64__)
#include "winograd_avx512.h"

#pragma clang fp contract(off)

// Bits q (0 ≤ q < 16) with lo ≤ q < hi.
static inline __mmask16 span_mask(ptrdiff_t lo, ptrdiff_t hi) {
    if (lo < 0) lo = 0;
    if (hi > 16) hi = 16;
    if (hi <= lo) return 0;
    unsigned bits = (hi >= 16 ? 0xFFFFu : (1u << hi) - 1) & ~((1u << lo) - 1);
    return (__mmask16)bits;
}

// MARK: the 1-D transforms (Winograd43.bt, .at, .gt)

// Bᵀ on six values: (4d0 − 5d2 + d4, p + q, p − q, a + 2b, a − 2b, 4d1 − 5d3 + d5) with
// a = d4 − d2, b = d3 − d1, p = d4 − 4d2, q = d3 − 4d1.
PD_AVX512 static inline void bt(v16 d0, v16 d1, v16 d2, v16 d3, v16 d4, v16 d5, v16 o[6]) {
    const v16 four = _mm512_set1_ps(4.0f), five = _mm512_set1_ps(5.0f), two = _mm512_set1_ps(2.0f);
    v16 a = _mm512_sub_ps(d4, d2), b = _mm512_sub_ps(d3, d1);
    v16 p = _mm512_sub_ps(d4, _mm512_mul_ps(four, d2)), q = _mm512_sub_ps(d3, _mm512_mul_ps(four, d1));
    v16 b2 = _mm512_mul_ps(two, b);
    o[0] = _mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(four, d0), _mm512_mul_ps(five, d2)), d4);
    o[1] = _mm512_add_ps(p, q);
    o[2] = _mm512_sub_ps(p, q);
    o[3] = _mm512_add_ps(a, b2);
    o[4] = _mm512_sub_ps(a, b2);
    o[5] = _mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(four, d1), _mm512_mul_ps(five, d3)), d5);
}

// Aᵀ on six values: (m0 + s12 + s34, d12 + 2·d34, s12 + 4·s34, d12 + 8·d34 + m5).
PD_AVX512 static inline void at(v16 m0, v16 m1, v16 m2, v16 m3, v16 m4, v16 m5, v16 o[4]) {
    const v16 two = _mm512_set1_ps(2.0f), four = _mm512_set1_ps(4.0f), eight = _mm512_set1_ps(8.0f);
    v16 s12 = _mm512_add_ps(m1, m2), d12 = _mm512_sub_ps(m1, m2);
    v16 s34 = _mm512_add_ps(m3, m4), d34 = _mm512_sub_ps(m3, m4);
    o[0] = _mm512_add_ps(_mm512_add_ps(m0, s12), s34);
    o[1] = _mm512_add_ps(d12, _mm512_mul_ps(two, d34));
    o[2] = _mm512_add_ps(s12, _mm512_mul_ps(four, s34));
    o[3] = _mm512_add_ps(_mm512_add_ps(d12, _mm512_mul_ps(eight, d34)), m5);
}

// G on three values: (g0/4, 0 − a − b, b − a, c + d, c − d, g2) with a = (g0 + g2)·⅙,
// b = g1·⅙, c = g0·(1/24) + g2·⅙, d = g1·(1/12) (the constants rounded as Swift's Float
// divisions round them).
PD_AVX512 static inline void gt(v16 g0, v16 g1, v16 g2, v16 o[6]) {
    const v16 quarter = _mm512_set1_ps(0.25f), sixth = _mm512_set1_ps(1.0f / 6.0f);
    const v16 c24 = _mm512_set1_ps(1.0f / 24.0f), c12 = _mm512_set1_ps(1.0f / 12.0f);
    v16 a = _mm512_mul_ps(_mm512_add_ps(g0, g2), sixth), b = _mm512_mul_ps(g1, sixth);
    v16 c = _mm512_add_ps(_mm512_mul_ps(g0, c24), _mm512_mul_ps(g2, sixth)), d = _mm512_mul_ps(g1, c12);
    o[0] = _mm512_mul_ps(g0, quarter);
    o[1] = _mm512_sub_ps(_mm512_sub_ps(_mm512_setzero_ps(), a), b);
    o[2] = _mm512_sub_ps(b, a);
    o[3] = _mm512_add_ps(c, d);
    o[4] = _mm512_sub_ps(c, d);
    o[5] = g2;
}

// MARK: input transform

// The lanes of one tile row in a group of 16 tiles, read as if that row's tiles started at
// lane 0: lane l's patch row r is columns cv + 4l + c (c < 6) of image row r0 + r, i.e.
// positions q = 4l + c of the 80 floats from start + r·width (start = plane + r0·width +
// cv), of which the five loads at q = 16k keep those with m[k] (the segment's lanes,
// inside the image).
typedef struct {
    ptrdiff_t start;
    int r0;
    __mmask16 lanes, m[5];
} input_segment;

enum { MAX_GROUPS = PD_WINOGRAD43_MAX_LANES / 16 };

// Patch row r of the 16 lanes at p (= channel + start + r·width): out[c] lane l = q = 4l + c.
PD_AVX512 static inline void load_row(const float *p, const __mmask16 m[5], v16 out[6]) {
    // A 16 × 4 transpose of the first 64 positions in two rounds of permutes: columns
    // (0, 1) and (2, 3) of tiles 0–7 (a0, a1) and 8–15 (a2, a3), then each column's halves.
    const __m512i pairs01 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29);
    const __m512i pairs23 = _mm512_setr_epi32(2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23, 27, 31);
    const __m512i low = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
    const __m512i high = _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    v16 a0 = _mm512_maskz_loadu_ps(m[0], p), a1 = _mm512_maskz_loadu_ps(m[1], p + 16);
    v16 a2 = _mm512_maskz_loadu_ps(m[2], p + 32), a3 = _mm512_maskz_loadu_ps(m[3], p + 48);
    v16 a4 = _mm512_maskz_loadu_ps(m[4], p + 64);
    v16 b0 = _mm512_permutex2var_ps(a0, pairs01, a1), b1 = _mm512_permutex2var_ps(a0, pairs23, a1);
    v16 b2 = _mm512_permutex2var_ps(a2, pairs01, a3), b3 = _mm512_permutex2var_ps(a2, pairs23, a3);
    out[0] = _mm512_permutex2var_ps(b0, low, b2);
    out[1] = _mm512_permutex2var_ps(b0, high, b2);
    out[2] = _mm512_permutex2var_ps(b1, low, b3);
    out[3] = _mm512_permutex2var_ps(b1, high, b3);
    // Columns 4 and 5: those of 0 and 1 one lane on, the last lane's (q = 64, 65) from a4.
    __m512i e = _mm512_castps_si512(a4);
    out[4] = _mm512_castsi512_ps(_mm512_alignr_epi32(e, _mm512_castps_si512(out[0]), 1));
    out[5] = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_alignr_epi32(e, e, 1), _mm512_castps_si512(out[1]), 1));
}

// Cuts the tiles j0 ..< j0 + valid of the block into segments (one per tile row); returns
// how many.
static int input_segments(const pd_winograd_tiles *g, long first, int valid, input_segment *s) {
    const int width = g->width;
    int n = 0;
    for (int l = 0; l < valid;) {
        tile_origin o = locate(g, first + l);
        int e = l + (g->tiles_x - o.tx);
        if (e > valid) e = valid;
        const ptrdiff_t cv = (ptrdiff_t)4 * o.tx - 1 - 4 * l;
        const int r0 = 4 * o.ty - 1;
        // Positions q of the segment's patches (4l ≤ q < 4e + 2) inside the image row.
        ptrdiff_t lo = 4 * l, hi = 4 * (ptrdiff_t)e + 2;
        if (lo < -cv) lo = -cv;
        if (hi > width - cv) hi = width - cv;
        s[n].start = o.plane + (ptrdiff_t)r0 * width + cv;
        s[n].r0 = r0;
        s[n].lanes = span_mask(l, e);
        for (int k = 0; k < 5; k++) s[n].m[k] = span_mask(lo - 16 * k, hi - 16 * k);
        n++;
        l = e;
    }
    return n;
}

PD_AVX512
void pd_winograd43_input_avx512(const pd_winograd_tiles *g, const float *x, long first_tile, int count,
                                int panels, int panel_width, float *dst, ptrdiff_t xi_stride) {
    const int cin = g->channels, width = g->width, height = g->height;
    const ptrdiff_t cs = g->channel_stride;
    const int w = panel_width, groups = panels * w / 16;
    if (groups > MAX_GROUPS) return;  // the Swift side checks it
    input_segment segment[PD_WINOGRAD43_MAX_LANES];
    int first_segment[MAX_GROUPS + 1];
    int n = 0;
    for (int gi = 0; gi < groups; gi++) {
        int valid = count - 16 * gi;
        if (valid > 16) valid = 16;
        first_segment[gi] = n;
        if (valid > 0) n += input_segments(g, first_tile + 16 * gi, valid, segment + n);
    }
    first_segment[groups] = n;
    // Channel by channel, each along all groups (as the F(2, 3) transform: every input row
    // read front to back); the rows of the next channel are prefetched as they are read.
    v16 d[36], t[36], row[6];
    for (int ic = 0; ic < cin; ic++) {
        const float *channel = x + ic * cs;
        for (int gi = 0; gi < groups; gi++) {
            const int s0 = first_segment[gi], s1 = first_segment[gi + 1];
            const int whole = s1 - s0 == 1 && segment[s0].lanes == 0xFFFF;
            if (!whole)
                for (int k = 0; k < 36; k++) d[k] = _mm512_setzero_ps();
            for (int si = s0; si < s1; si++) {
                const input_segment *q = &segment[si];
                for (int r = 0; r < 6; r++) {
                    const int iy = q->r0 + r;
                    if (iy < 0 || iy >= height) {
                        if (whole)
                            for (int c = 0; c < 6; c++) d[6 * r + c] = _mm512_setzero_ps();
                        continue;
                    }
                    const float *p = channel + q->start + (ptrdiff_t)r * width;
                    if (ic + 1 < cin)
                        for (int k = 0; k < 5; k++)
                            if (q->m[k]) _mm_prefetch((const char *)(p + cs + 16 * k), _MM_HINT_T0);
                    if (whole) {
                        load_row(p, q->m, d + 6 * r);
                    } else {
                        load_row(p, q->m, row);
                        for (int c = 0; c < 6; c++) d[6 * r + c] = _mm512_mask_mov_ps(d[6 * r + c], q->lanes, row[c]);
                    }
                }
            }
            // Bᵀ down each column, then along each row: ξ = 6i + j.
            for (int c = 0; c < 6; c++) {
                v16 o[6];
                bt(d[c], d[6 + c], d[12 + c], d[18 + c], d[24 + c], d[30 + c], o);
                for (int i = 0; i < 6; i++) t[6 * i + c] = o[i];
            }
            float *out = dst + (ptrdiff_t)(16 * gi / w) * cin * w + (16 * gi) % w + (ptrdiff_t)ic * w;
            for (int i = 0; i < 6; i++) {
                v16 o[6];
                bt(t[6 * i], t[6 * i + 1], t[6 * i + 2], t[6 * i + 3], t[6 * i + 4], t[6 * i + 5], o);
                for (int j = 0; j < 6; j++) _mm512_storeu_ps(out + (6 * i + j) * xi_stride, o[j]);
            }
        }
    }
}

// MARK: output transform

// The lanes of one tile row in a group, written as if that row's tiles started at lane 0:
// output row i of lane l's tile, column j, goes to position q = 4l + j of the 64 floats
// from start + i·width (start = plane + 4·ty·width + cv); the four stores at q = 16k keep
// those with m[k]; `rows` rows are inside the image.
typedef struct {
    ptrdiff_t start;
    int rows;
    __mmask16 m[4];
} output_segment;

PD_AVX512
void pd_winograd43_output_avx512(const pd_winograd_tiles *g, const float *m, ptrdiff_t ldm, long first_row,
                                 int rows, long first_tile, int count, const float *bias, const float *residual,
                                 float *y) {
    const int width = g->width, height = g->height;
    const ptrdiff_t cs = g->channel_stride, xi_stride = (ptrdiff_t)rows * ldm;
    const int groups = (count + 15) / 16;
    if (groups > MAX_GROUPS) return;  // the Swift side checks it
    output_segment segment[PD_WINOGRAD43_MAX_LANES];
    int first_segment[MAX_GROUPS + 1];
    int n = 0;
    for (int gi = 0; gi < groups; gi++) {
        int valid = count - 16 * gi;
        if (valid > 16) valid = 16;
        first_segment[gi] = n;
        for (int l = 0; l < valid;) {
            tile_origin o = locate(g, first_tile + 16 * gi + l);
            int e = l + (g->tiles_x - o.tx);
            if (e > valid) e = valid;
            const ptrdiff_t cv = (ptrdiff_t)4 * o.tx - 4 * l;
            ptrdiff_t lo = 4 * l, hi = 4 * (ptrdiff_t)e;
            if (hi > width - cv) hi = width - cv;
            segment[n].start = o.plane + (ptrdiff_t)4 * o.ty * width + cv;
            segment[n].rows = height - 4 * o.ty < 4 ? height - 4 * o.ty : 4;
            for (int k = 0; k < 4; k++) segment[n].m[k] = span_mask(lo - 16 * k, hi - 16 * k);
            n++;
            l = e;
        }
    }
    first_segment[groups] = n;
    // Output q = 4l + j of the k-th vector: lane 4k + l/4 of column j's vector; columns 0
    // and 2 by one permute, 1 and 3 by another, merged on the odd q.
    __m512i index[4];
    for (int k = 0; k < 4; k++) {
        int at_q[16];
        for (int q = 0; q < 16; q++) at_q[q] = 4 * k + q / 4 + (q % 4 >= 2 ? 16 : 0);
        index[k] = _mm512_loadu_si512(at_q);
    }
    for (int r = 0; r < rows; r++) {
        const long oc = first_row + r;
        const v16 b = _mm512_set1_ps(bias ? bias[oc] : 0.0f);
        float *yc = y + oc * cs;
        const float *rc = residual ? residual + oc * cs : 0;
        for (int gi = 0; gi < groups; gi++) {
            const float *src = m + (ptrdiff_t)r * ldm + 16 * gi;
            // Aᵀ down each column into s[i][j], then along each row, then the bias.
            v16 s[24];
            for (int j = 0; j < 6; j++) {
                v16 o[4];
                at(_mm512_loadu_ps(src + j * xi_stride), _mm512_loadu_ps(src + (6 + j) * xi_stride),
                   _mm512_loadu_ps(src + (12 + j) * xi_stride), _mm512_loadu_ps(src + (18 + j) * xi_stride),
                   _mm512_loadu_ps(src + (24 + j) * xi_stride), _mm512_loadu_ps(src + (30 + j) * xi_stride), o);
                for (int i = 0; i < 4; i++) s[6 * i + j] = o[i];
            }
            v16 out[4][4];
            for (int i = 0; i < 4; i++) {
                v16 o[4];
                at(s[6 * i], s[6 * i + 1], s[6 * i + 2], s[6 * i + 3], s[6 * i + 4], s[6 * i + 5], o);
                for (int j = 0; j < 4; j++) o[j] = _mm512_add_ps(o[j], b);
                for (int k = 0; k < 4; k++) {
                    v16 even = _mm512_permutex2var_ps(o[0], index[k], o[2]);
                    v16 odd = _mm512_permutex2var_ps(o[1], index[k], o[3]);
                    out[i][k] = _mm512_mask_blend_ps((__mmask16)0xAAAA, even, odd);
                }
            }
            for (int si = first_segment[gi]; si < first_segment[gi + 1]; si++) {
                const output_segment *q = &segment[si];
                for (int i = 0; i < q->rows; i++) {
                    const ptrdiff_t at_row = q->start + (ptrdiff_t)i * width;
                    for (int k = 0; k < 4; k++) {
                        const __mmask16 mk = q->m[k];
                        if (!mk) continue;
                        v16 value = out[i][k];
                        if (rc) value = _mm512_add_ps(value, _mm512_maskz_loadu_ps(mk, rc + at_row + 16 * k));
                        _mm512_mask_storeu_ps(yc + at_row + 16 * k, mk, value);
                    }
                }
            }
        }
    }
}

// MARK: weight transform

PD_AVX512
void pd_winograd43_weights_avx512(int type, const void *data, const float *scales, int cols, long first_row,
                                  int count, float *u) {
    const int cin = cols / 9;
    const ptrdiff_t xi_stride = (ptrdiff_t)count * cin;
    const int size = type == 0 ? 4 : type == 1 ? 2 : 1;  // bytes per stored weight
    weight_row_reader reader;
    weight_reader_init(&reader, type, data, cols);
    for (int r = 0; r < count; r++) {
        const ptrdiff_t row = (first_row + r) * (ptrdiff_t)cols;
        float *dst = u + (ptrdiff_t)r * cin;
        weight_reader_row(&reader, first_row + r, scales);
        for (int b = 0; b < reader.blocks; b++) {
            const int ic = 16 * b, lanes = cin - ic < 16 ? cin - ic : 16;
            // The next row's weights of this block: the loads of the stored (often int8)
            // weights waited on memory (`perf`), and each row is read once per tile block.
            if (r + 1 < count) pd_prefetch((const char *)data + (row + cols + (ptrdiff_t)ic * 9) * size, 9 * lanes * size);
            v16 w[9];
            const __mmask16 valid = weight_reader_block(&reader, b, w);
            // G down each kernel column (q[i][k]), then along each row: u[6i + j].
            v16 q[3][6];
            for (int k = 0; k < 3; k++) gt(w[k], w[3 + k], w[6 + k], q[k]);
            for (int i = 0; i < 6; i++) {
                v16 o[6];
                gt(q[0][i], q[1][i], q[2][i], o);
                for (int j = 0; j < 6; j++) _mm512_mask_storeu_ps(dst + (6 * i + j) * xi_stride + ic, valid, o[j]);
            }
        }
    }
}

#else

void pd_winograd43_input_avx512(const pd_winograd_tiles *g, const float *x, long first_tile, int count,
                                int panels, int panel_width, float *dst, ptrdiff_t xi_stride) {
    (void)g; (void)x; (void)first_tile; (void)count; (void)panels; (void)panel_width; (void)dst; (void)xi_stride;
}

void pd_winograd43_output_avx512(const pd_winograd_tiles *g, const float *m, ptrdiff_t ldm, long first_row,
                                 int rows, long first_tile, int count, const float *bias, const float *residual,
                                 float *y) {
    (void)g; (void)m; (void)ldm; (void)first_row; (void)rows; (void)first_tile; (void)count; (void)bias;
    (void)residual; (void)y;
}

void pd_winograd43_weights_avx512(int type, const void *data, const float *scales, int cols, long first_row,
                                  int count, float *u) {
    (void)type; (void)data; (void)scales; (void)cols; (void)first_row; (void)count; (void)u;
}

#endif
