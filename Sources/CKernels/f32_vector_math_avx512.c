// The non-product f32 kernels of f32_vector_math.c, 16 wide for AVX-512 (F/BW/VL): the
// exponential-based activations, the norms' passes, the attention's softmax block and
// Float16 → Float weight conversion; and the bf16 attention's per-block softmax, which also
// packs the probabilities into bf16 pairs (Attention.softmaxPackBF16). The AVX-512 kernel
// variants run these instead of the 8-wide builds (KernelVariant.usesAVX512VectorMath).
//
// They are bitwise equal to the same Swift twins as the 8-wide builds (VectorMath,
// Normalization, Attention; the tests hold them to it). Every per-lane operation is the
// same at any width: the same operations in the same order, a fused multiply-add exactly
// where the twin has `addingProduct` and nowhere else (contraction is off below), max/min
// with the twins' NaN and zero rules (vmaxps(a, b) = a > b ? a : b), lane masks from the
// sign bit as the twins' vblendvps. The one order that depends on the width, the chunked
// sums' two 8-lane accumulators and Swift's left-to-right SIMD8 `.sum()`, is kept: one zmm
// holds both accumulators (lanes 0–7 the first, 8–15 the second), whose halves are added
// and then summed lane by lane. Tails use masked loads and stores (no fault past the end).
//
// The polynomials are written out again rather than shared with the 8-wide file through
// macros: the two files read line for line against the twins.

#include "CKernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#pragma clang fp contract(off)

#define PD_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

typedef __m512 vf;

PD_AVX512 static inline vf splat(float x) { return _mm512_set1_ps(x); }
PD_AVX512 static inline vf fmadd(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }

// Lanes whose sign bit is set (the twins' `signMask`; vpmovd2m would need AVX512DQ).
PD_AVX512 static inline __mmask16 sign_mask(vf x) {
    return _mm512_cmplt_epi32_mask(_mm512_castps_si512(x), _mm512_setzero_si512());
}

// `b` where the sign bit of `m` is set, `a` elsewhere (vblendvps; the twins' `blend`).
PD_AVX512 static inline vf blend_on_sign(vf a, vf b, vf m) { return _mm512_mask_blend_ps(sign_mask(m), a, b); }

// 2ⁿ for t = n + 1.5·2²³ (VectorMath.twoToThe).
PD_AVX512 static inline vf two_to_the(vf t) {
    __m512i bits = _mm512_add_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(bits, 23));
}

// eʳ for |r| ≤ ln2/2 (VectorMath.expPolynomial).
PD_AVX512 static inline vf exp_polynomial(vf r) {
    vf p = splat(1.0f / 720.0f);
    p = fmadd(p, r, splat(1.0f / 120.0f));
    p = fmadd(p, r, splat(1.0f / 24.0f));
    p = fmadd(p, r, splat(1.0f / 6.0f));
    p = fmadd(p, r, splat(0.5f));
    p = fmadd(p, r, splat(1.0f));
    return fmadd(p, r, splat(1.0f));
}

// VectorMath.exp.
PD_AVX512 static inline vf vexp(vf x) {
    x = _mm512_min_ps(_mm512_max_ps(x, splat(-87.33f)), splat(88.3f));
    vf magic = splat(12582912.0f);
    vf t = fmadd(x, splat(1.44269504f), magic);
    vf n = _mm512_sub_ps(t, magic);
    vf r = fmadd(n, splat(-0.69314575f), x);
    r = fmadd(n, splat(-1.4286068e-6f), r);
    return _mm512_mul_ps(exp_polynomial(r), two_to_the(t));
}

// VectorMath.exp2.
PD_AVX512 static inline vf vexp2(vf x) {
    x = _mm512_min_ps(_mm512_max_ps(x, splat(-126.0f)), splat(127.0f));
    vf magic = splat(12582912.0f);
    vf t = _mm512_add_ps(x, magic);
    vf r = _mm512_mul_ps(_mm512_sub_ps(x, _mm512_sub_ps(t, magic)), splat(0.69314718f));
    return _mm512_mul_ps(exp_polynomial(r), two_to_the(t));
}

// VectorMath.exp2NonPositiveBF16: no upper clamp, a degree-4 polynomial.
PD_AVX512 static inline vf vexp2_non_positive_bf16(vf x) {
    x = _mm512_max_ps(x, splat(-126.0f));
    vf magic = splat(12582912.0f);
    vf t = _mm512_add_ps(x, magic);
    vf r = _mm512_mul_ps(_mm512_sub_ps(x, _mm512_sub_ps(t, magic)), splat(0.69314718f));
    vf p = splat(1.0f / 24.0f);
    p = fmadd(p, r, splat(1.0f / 6.0f));
    p = fmadd(p, r, splat(0.5f));
    p = fmadd(p, r, splat(1.0f));
    return _mm512_mul_ps(fmadd(p, r, splat(1.0f)), two_to_the(t));
}

PD_AVX512 static inline vf negate(vf x) {
    return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u)));
}

PD_AVX512 static inline vf silu(vf x) {
    return _mm512_div_ps(x, _mm512_add_ps(splat(1.0f), vexp(negate(x))));
}

PD_AVX512 static inline vf quick_gelu(vf x) {
    return _mm512_div_ps(x, _mm512_add_ps(splat(1.0f), vexp(_mm512_mul_ps(x, splat(-1.702f)))));
}

// VectorMath.erf: Abramowitz & Stegun 7.1.26 away from 0, a Taylor series near it.
PD_AVX512 static inline vf verf(vf x) {
    __m512i xi = _mm512_castps_si512(x);
    vf ax = _mm512_castsi512_ps(_mm512_and_si512(xi, _mm512_set1_epi32(0x7FFFFFFF)));
    vf one = splat(1.0f);
    vf t = _mm512_div_ps(one, fmadd(ax, splat(0.3275911f), one));
    vf q = splat(1.061405429f);
    q = fmadd(q, t, splat(-1.453152027f));
    q = fmadd(q, t, splat(1.421413741f));
    q = fmadd(q, t, splat(-0.284496736f));
    q = fmadd(q, t, splat(0.254829592f));
    vf far = _mm512_sub_ps(one, _mm512_mul_ps(_mm512_mul_ps(q, t), vexp(negate(_mm512_mul_ps(ax, ax)))));
    vf x2 = _mm512_mul_ps(x, x);
    vf s = splat(-1.0f / 75600.0f);
    s = fmadd(s, x2, splat(1.0f / 9360.0f));
    s = fmadd(s, x2, splat(-1.0f / 1320.0f));
    s = fmadd(s, x2, splat(1.0f / 216.0f));
    s = fmadd(s, x2, splat(-1.0f / 42.0f));
    s = fmadd(s, x2, splat(1.0f / 10.0f));
    s = fmadd(s, x2, splat(-1.0f / 3.0f));
    s = fmadd(s, x2, one);
    vf near = _mm512_mul_ps(_mm512_mul_ps(s, x), splat(1.128379167f));
    __m512i sign = _mm512_and_si512(xi, _mm512_set1_epi32((int)0x80000000u));
    vf signed_far = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(far), sign));
    return blend_on_sign(signed_far, near, _mm512_sub_ps(ax, splat(0.5f)));
}

PD_AVX512 static inline vf gelu(vf x) {
    vf half_x = _mm512_mul_ps(splat(0.5f), x);
    return _mm512_mul_ps(half_x, _mm512_add_ps(splat(1.0f), verf(_mm512_mul_ps(x, splat(0.707106781f)))));
}

PD_AVX512 static inline vf activation(int kind, vf x) {
    switch (kind) {
    case PD_ACTIVATION_GELU: return gelu(x);
    case PD_ACTIVATION_QUICK_GELU: return quick_gelu(x);
    default: return silu(x);
    }
}

// Lanes 0 ..< n (n < 16). Tails are loaded with the other lanes zero, as the twins pad them,
// go through the vector function, and only lanes 0 ..< n are stored.
static inline __mmask16 lanes_below(ptrdiff_t n) { return (__mmask16)((1u << n) - 1); }

// IEEE half → float (exact; vcvtph2ps).
PD_AVX512 void pd_half_to_float_avx512(const uint16_t *x, float *y, ptrdiff_t count) {
    ptrdiff_t i = 0;
    for (; i + 16 <= count; i += 16) _mm512_storeu_ps(y + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(x + i))));
    if (i < count) {
        __mmask16 m = lanes_below(count - i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, x + i)));
    }
}

PD_AVX512 void pd_activate_avx512(int kind, const float *x, float *y, ptrdiff_t count) {
    ptrdiff_t i = 0;
    for (; i + 16 <= count; i += 16) _mm512_storeu_ps(y + i, activation(kind, _mm512_loadu_ps(x + i)));
    if (i < count) {
        __mmask16 m = lanes_below(count - i);
        _mm512_mask_storeu_ps(y + i, m, activation(kind, _mm512_maskz_loadu_ps(m, x + i)));
    }
}

PD_AVX512 void pd_geglu_avx512(const float *x, const float *gate, float *y, ptrdiff_t count) {
    ptrdiff_t i = 0;
    for (; i + 16 <= count; i += 16)
        _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), gelu(_mm512_loadu_ps(gate + i))));
    if (i < count) {
        __mmask16 m = lanes_below(count - i);
        vf r = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), gelu(_mm512_maskz_loadu_ps(m, gate + i)));
        _mm512_mask_storeu_ps(y + i, m, r);
    }
}

// The twins' (a0 + a1).sum() for a zmm holding a0 in lanes 0–7 and a1 in lanes 8–15: the
// halves added, then the 8 lanes left to right (Swift's SIMD8<Float>.sum()).
PD_AVX512 static inline float halves_sum(vf a) {
    __m256 lo = _mm512_castps512_ps256(a);
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1));
    float lanes[8];
    _mm256_storeu_ps(lanes, _mm256_add_ps(lo, hi));
    float s = lanes[0];
    for (int i = 1; i < 8; i++) s += lanes[i];
    return s;
}

// Σ (x[i] − center), or Σ (x[i] − center)² with `squares`: f32 partial sums over `chunk`
// elements (Normalization.sum / sumOfSquares with 8-lane vectors: accumulators a0 over
// x[i ..< i+8] and a1 over x[i+8 ..< i+16], 16 elements a step, then the scalar tail),
// added in double. One zmm carries a0 and a1. Each lane's sum is one chain of dependent
// adds, so whole chunks (a multiple of 16, no tail) go four at a time, their partials then
// added to the total in order.
PD_AVX512 static inline vf accumulate(vf a, const float *x, vf c, int squares) {
    vf d = _mm512_sub_ps(_mm512_loadu_ps(x), c);
    return squares ? fmadd(d, d, a) : _mm512_add_ps(a, d);
}

// Inlined into each caller, where `squares` is a constant (else its loops test it).
PD_AVX512 __attribute__((always_inline)) static inline double chunked_sum(const float *x, ptrdiff_t count, float center, ptrdiff_t chunk, int squares) {
    double total = 0;
    vf c = splat(center);
    ptrdiff_t start = 0;
    if (chunk % 16 == 0) {
        for (; start + 4 * chunk <= count; start += 4 * chunk) {
            const float *x0 = x + start, *x1 = x0 + chunk, *x2 = x1 + chunk, *x3 = x2 + chunk;
            vf a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
            for (ptrdiff_t i = 0; i < chunk; i += 16) {
                a0 = accumulate(a0, x0 + i, c, squares);
                a1 = accumulate(a1, x1 + i, c, squares);
                a2 = accumulate(a2, x2 + i, c, squares);
                a3 = accumulate(a3, x3 + i, c, squares);
            }
            total += (double)halves_sum(a0);
            total += (double)halves_sum(a1);
            total += (double)halves_sum(a2);
            total += (double)halves_sum(a3);
        }
    }
    for (; start < count; start += chunk) {
        ptrdiff_t end = start + chunk < count ? start + chunk : count, i = start;
        vf a = _mm512_setzero_ps();
        for (; i + 16 <= end; i += 16) a = accumulate(a, x + i, c, squares);
        float partial = halves_sum(a);
        for (; i < end; i++) {
            float d = x[i] - center;
            partial += squares ? d * d : d;
        }
        total += (double)partial;
    }
    return total;
}

PD_AVX512 double pd_sum_shifted_avx512(const float *x, ptrdiff_t count, float shift, ptrdiff_t chunk) {
    return chunked_sum(x, count, shift, chunk, 0);
}

PD_AVX512 double pd_sum_of_squares_avx512(const float *x, ptrdiff_t count, float mean, ptrdiff_t chunk) {
    return chunked_sum(x, count, mean, chunk, 1);
}

PD_AVX512 void pd_normalize_avx512(const float *x, float mean, float scale, float beta, int with_silu,
                                   ptrdiff_t count, float *y) {
    vf m = splat(mean), a = splat(scale), b = splat(beta);
    ptrdiff_t i = 0;
    for (; i + 16 <= count; i += 16) {
        vf r = fmadd(_mm512_sub_ps(_mm512_loadu_ps(x + i), m), a, b);
        _mm512_storeu_ps(y + i, with_silu ? silu(r) : r);
    }
    if (i < count) {
        __mmask16 k = lanes_below(count - i);
        vf r = fmadd(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), m), a, b);
        _mm512_mask_storeu_ps(y + i, k, with_silu ? silu(r) : r);
    }
}

// LayerNorm of nb (1–4) blocks of 16 columns at once, each block exactly as the twin's
// 2 × 8 columns. The channel rows are `columns` apart, usually a page or more: four blocks
// per row read 256 consecutive bytes of one page instead of 64, a quarter of the TLB and
// cache-line misses per element (which, not arithmetic, bound the one-block loop).
PD_AVX512 __attribute__((always_inline)) static inline void layer_norm_blocks(
    const float *x, ptrdiff_t columns, int channels, float eps, const float *gamma, const float *beta, float *y,
    const int nb) {
    vf inv_count = splat(1.0f / (float)channels);
    vf shift[4], s[4], mean[4], q[4], inv[4];
    for (int b = 0; b < nb; b++) { shift[b] = _mm512_loadu_ps(x + 16 * b); s[b] = _mm512_setzero_ps(); }
    for (int c = 1; c < channels; c++)
        for (int b = 0; b < nb; b++) s[b] = _mm512_add_ps(s[b], _mm512_sub_ps(_mm512_loadu_ps(x + c * columns + 16 * b), shift[b]));
    for (int b = 0; b < nb; b++) { mean[b] = _mm512_add_ps(shift[b], _mm512_mul_ps(s[b], inv_count)); q[b] = _mm512_setzero_ps(); }
    for (int c = 0; c < channels; c++)
        for (int b = 0; b < nb; b++) {
            vf d = _mm512_sub_ps(_mm512_loadu_ps(x + c * columns + 16 * b), mean[b]);
            q[b] = fmadd(d, d, q[b]);
        }
    for (int b = 0; b < nb; b++)
        inv[b] = _mm512_div_ps(splat(1.0f), _mm512_sqrt_ps(_mm512_add_ps(_mm512_mul_ps(q[b], inv_count), splat(eps))));
    for (int c = 0; c < channels; c++) {
        vf g = splat(gamma[c]), bias = splat(beta[c]);
        for (int b = 0; b < nb; b++) {
            vf a = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + c * columns + 16 * b), mean[b]), inv[b]);
            _mm512_storeu_ps(y + c * columns + 16 * b, fmadd(a, g, bias));
        }
    }
}

PD_AVX512 void pd_layer_norm_blocks16_avx512(const float *x, ptrdiff_t columns, int channels, int blocks, float eps,
                                             const float *gamma, const float *beta, float *y) {
    switch (blocks) {
    case 1: layer_norm_blocks(x, columns, channels, eps, gamma, beta, y, 1); break;
    case 2: layer_norm_blocks(x, columns, channels, eps, gamma, beta, y, 2); break;
    case 3: layer_norm_blocks(x, columns, channels, eps, gamma, beta, y, 3); break;
    default: layer_norm_blocks(x, columns, channels, eps, gamma, beta, y, 4); break;
    }
}

PD_AVX512 void pd_softmax_block16_avx512(float *scores, int keys, const float *query_index, int first_key,
                                         int causal, float masked, float *running_max, float *block_sum) {
    vf q = _mm512_loadu_ps(query_index);
    vf max = _mm512_loadu_ps(running_max);
    vf fill = splat(masked);
    for (int j = 0; j < keys; j++) {
        vf s = _mm512_loadu_ps(scores + j * 16);
        if (causal) {
            // Query i sees keys k ≤ i: lanes whose query index is below the key are masked.
            s = blend_on_sign(s, fill, _mm512_sub_ps(q, splat((float)(first_key + j))));
            _mm512_storeu_ps(scores + j * 16, s);
        }
        max = _mm512_max_ps(max, s);
    }
    vf sum = _mm512_setzero_ps();
    for (int j = 0; j < keys; j++) {
        vf p = vexp2(_mm512_sub_ps(_mm512_loadu_ps(scores + j * 16), max));
        _mm512_storeu_ps(scores + j * 16, p);
        sum = _mm512_add_ps(sum, p);
    }
    _mm512_storeu_ps(running_max, max);
    _mm512_storeu_ps(block_sum, sum);
}

// BF16Gemm.round: the bf16 bits of each lane, rounded to nearest even on the bit pattern
// (u + 0x7FFF + ((u >> 16) & 1)) >> 16, in the low 16 bits. Not vcvtne2ps2bf16, which
// quiets NaNs instead.
PD_AVX512 static inline __m512i round_bf16(vf x) {
    __m512i u = _mm512_castps_si512(x);
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    return _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), odd), 16);
}

// BF16Gemm.pair: `low` in bits 0–15, `high` in bits 16–31.
PD_AVX512 static inline __m512i pair_bf16(vf low, vf high) {
    return _mm512_or_si512(round_bf16(low), _mm512_slli_epi32(round_bf16(high), 16));
}

PD_AVX512 void pd_softmax_pack_bf16_avx512(const float *scores, int keys, int first_block, float *running_max,
                                           float *running_sum, uint32_t *p, float *out, int head_dim) {
    enum { W = PD_BF16_PANEL_COLUMNS };
    vf old0 = _mm512_loadu_ps(running_max), old1 = _mm512_loadu_ps(running_max + 16);
    vf max0 = old0, max1 = old1;
    for (int j = 0; j < keys; j++) {
        max0 = _mm512_max_ps(max0, _mm512_loadu_ps(scores + j * W));
        max1 = _mm512_max_ps(max1, _mm512_loadu_ps(scores + j * W + 16));
    }
    vf sum0 = _mm512_setzero_ps(), sum1 = _mm512_setzero_ps();
    for (int j = 0; j < keys; j += 2) {
        const float *row = scores + j * W;
        vf p00 = vexp2_non_positive_bf16(_mm512_sub_ps(_mm512_loadu_ps(row), max0));
        vf p01 = vexp2_non_positive_bf16(_mm512_sub_ps(_mm512_loadu_ps(row + 16), max1));
        // An odd last key is paired with zero probabilities (the twin's V()).
        vf p10 = _mm512_setzero_ps(), p11 = _mm512_setzero_ps();
        if (j + 1 < keys) {
            p10 = vexp2_non_positive_bf16(_mm512_sub_ps(_mm512_loadu_ps(row + W), max0));
            p11 = vexp2_non_positive_bf16(_mm512_sub_ps(_mm512_loadu_ps(row + W + 16), max1));
        }
        sum0 = _mm512_add_ps(sum0, _mm512_add_ps(p00, p10));
        sum1 = _mm512_add_ps(sum1, _mm512_add_ps(p01, p11));
        _mm512_storeu_si512(p + (j / 2) * W, pair_bf16(p00, p10));
        _mm512_storeu_si512(p + (j / 2) * W + 16, pair_bf16(p01, p11));
    }
    _mm512_storeu_ps(running_max, max0);
    _mm512_storeu_ps(running_max + 16, max1);
    if (first_block) {
        _mm512_storeu_ps(running_sum, sum0);
        _mm512_storeu_ps(running_sum + 16, sum1);
        return;
    }
    vf alpha0 = vexp2(_mm512_sub_ps(old0, max0)), alpha1 = vexp2(_mm512_sub_ps(old1, max1));
    _mm512_storeu_ps(running_sum, _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(running_sum), alpha0), sum0));
    _mm512_storeu_ps(running_sum + 16, _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(running_sum + 16), alpha1), sum1));
    for (int e = 0; e < head_dim; e++) {
        _mm512_storeu_ps(out + e * W, _mm512_mul_ps(_mm512_loadu_ps(out + e * W), alpha0));
        _mm512_storeu_ps(out + e * W + 16, _mm512_mul_ps(_mm512_loadu_ps(out + e * W + 16), alpha1));
    }
}

#else

// Other architectures run the Swift twins; these are never called there.
void pd_half_to_float_avx512(const uint16_t *x, float *y, ptrdiff_t count) { (void)x; (void)y; (void)count; }
void pd_activate_avx512(int kind, const float *x, float *y, ptrdiff_t count) { (void)kind; (void)x; (void)y; (void)count; }
void pd_geglu_avx512(const float *x, const float *gate, float *y, ptrdiff_t count) { (void)x; (void)gate; (void)y; (void)count; }
double pd_sum_shifted_avx512(const float *x, ptrdiff_t count, float shift, ptrdiff_t chunk) {
    (void)x; (void)count; (void)shift; (void)chunk; return 0;
}
double pd_sum_of_squares_avx512(const float *x, ptrdiff_t count, float mean, ptrdiff_t chunk) {
    (void)x; (void)count; (void)mean; (void)chunk; return 0;
}
void pd_normalize_avx512(const float *x, float mean, float scale, float beta, int with_silu, ptrdiff_t count, float *y) {
    (void)x; (void)mean; (void)scale; (void)beta; (void)with_silu; (void)count; (void)y;
}
void pd_layer_norm_blocks16_avx512(const float *x, ptrdiff_t columns, int channels, int blocks, float eps,
                                   const float *gamma, const float *beta, float *y) {
    (void)x; (void)columns; (void)channels; (void)blocks; (void)eps; (void)gamma; (void)beta; (void)y;
}
void pd_softmax_block16_avx512(float *scores, int keys, const float *query_index, int first_key, int causal,
                               float masked, float *running_max, float *block_sum) {
    (void)scores; (void)keys; (void)query_index; (void)first_key; (void)causal; (void)masked; (void)running_max;
    (void)block_sum;
}
void pd_softmax_pack_bf16_avx512(const float *scores, int keys, int first_block, float *running_max,
                                 float *running_sum, uint32_t *p, float *out, int head_dim) {
    (void)scores; (void)keys; (void)first_block; (void)running_max; (void)running_sum; (void)p; (void)out;
    (void)head_dim;
}

#endif
