// The non-product f32 kernels for x86_64 AVX2 + FMA (+ F16C): the exponential-based
// activations, the norms' passes, the attention's softmax block and Float16 → Float weight
// conversion. Their Swift twins (VectorMath, Normalization, Attention.queryTile, Gemm.rowsOfA
// in SDKernels) are compiled for whatever CPU the build names: with the project's
// `-target-cpu haswell` they are as fast as these, but in a consumer's plain `swift build`
// every fused multiply-add there becomes a per-lane fmaf call and every Float16 conversion a
// library call. These carry their own `target` attribute and are chosen at run time like the
// block products, so every build runs them at full speed.
//
// They are bitwise equal to the twins (the tests hold them to it): the same operations in
// the same order, a fused multiply-add exactly where the twin has `addingProduct` and
// nowhere else (contraction is off below), max/min with the twins' NaN and zero rules
// (vmaxps(a, b) = a > b ? a : b), and Swift's left-to-right `SIMD.sum()`.

#include "CKernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#pragma clang fp contract(off)

#define PD_AVX2 __attribute__((target("avx2,fma")))

typedef __m256 vf;

PD_AVX2 static inline vf splat(float x) { return _mm256_set1_ps(x); }
PD_AVX2 static inline vf fmadd(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }

// 2ⁿ for t = n + 1.5·2²³ (VectorMath.twoToThe).
PD_AVX2 static inline vf two_to_the(vf t) {
    __m256i bits = _mm256_add_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(bits, 23));
}

// eʳ for |r| ≤ ln2/2 (VectorMath.expPolynomial).
PD_AVX2 static inline vf exp_polynomial(vf r) {
    vf p = splat(1.0f / 720.0f);
    p = fmadd(p, r, splat(1.0f / 120.0f));
    p = fmadd(p, r, splat(1.0f / 24.0f));
    p = fmadd(p, r, splat(1.0f / 6.0f));
    p = fmadd(p, r, splat(0.5f));
    p = fmadd(p, r, splat(1.0f));
    return fmadd(p, r, splat(1.0f));
}

// VectorMath.exp.
PD_AVX2 static inline vf vexp(vf x) {
    x = _mm256_min_ps(_mm256_max_ps(x, splat(-87.33f)), splat(88.3f));
    vf magic = splat(12582912.0f);
    vf t = fmadd(x, splat(1.44269504f), magic);
    vf n = _mm256_sub_ps(t, magic);
    vf r = fmadd(n, splat(-0.69314575f), x);
    r = fmadd(n, splat(-1.4286068e-6f), r);
    return _mm256_mul_ps(exp_polynomial(r), two_to_the(t));
}

// VectorMath.exp2.
PD_AVX2 static inline vf vexp2(vf x) {
    x = _mm256_min_ps(_mm256_max_ps(x, splat(-126.0f)), splat(127.0f));
    vf magic = splat(12582912.0f);
    vf t = _mm256_add_ps(x, magic);
    vf r = _mm256_mul_ps(_mm256_sub_ps(x, _mm256_sub_ps(t, magic)), splat(0.69314718f));
    return _mm256_mul_ps(exp_polynomial(r), two_to_the(t));
}

PD_AVX2 static inline vf negate(vf x) { return _mm256_xor_ps(x, splat(-0.0f)); }

PD_AVX2 static inline vf silu(vf x) {
    return _mm256_div_ps(x, _mm256_add_ps(splat(1.0f), vexp(negate(x))));
}

PD_AVX2 static inline vf quick_gelu(vf x) {
    return _mm256_div_ps(x, _mm256_add_ps(splat(1.0f), vexp(_mm256_mul_ps(x, splat(-1.702f)))));
}

// VectorMath.erf: Abramowitz & Stegun 7.1.26 away from 0, a Taylor series near it.
PD_AVX2 static inline vf verf(vf x) {
    vf ax = _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF)));
    vf one = splat(1.0f);
    vf t = _mm256_div_ps(one, fmadd(ax, splat(0.3275911f), one));
    vf q = splat(1.061405429f);
    q = fmadd(q, t, splat(-1.453152027f));
    q = fmadd(q, t, splat(1.421413741f));
    q = fmadd(q, t, splat(-0.284496736f));
    q = fmadd(q, t, splat(0.254829592f));
    vf far = _mm256_sub_ps(one, _mm256_mul_ps(_mm256_mul_ps(q, t), vexp(negate(_mm256_mul_ps(ax, ax)))));
    vf x2 = _mm256_mul_ps(x, x);
    vf s = splat(-1.0f / 75600.0f);
    s = fmadd(s, x2, splat(1.0f / 9360.0f));
    s = fmadd(s, x2, splat(-1.0f / 1320.0f));
    s = fmadd(s, x2, splat(1.0f / 216.0f));
    s = fmadd(s, x2, splat(-1.0f / 42.0f));
    s = fmadd(s, x2, splat(1.0f / 10.0f));
    s = fmadd(s, x2, splat(-1.0f / 3.0f));
    s = fmadd(s, x2, one);
    vf near = _mm256_mul_ps(_mm256_mul_ps(s, x), splat(1.128379167f));
    vf signed_far = _mm256_or_ps(far, _mm256_and_ps(x, splat(-0.0f)));
    return _mm256_blendv_ps(signed_far, near, _mm256_sub_ps(ax, splat(0.5f)));
}

PD_AVX2 static inline vf gelu(vf x) {
    vf half_x = _mm256_mul_ps(splat(0.5f), x);
    return _mm256_mul_ps(half_x, _mm256_add_ps(splat(1.0f), verf(_mm256_mul_ps(x, splat(0.707106781f)))));
}

PD_AVX2 static inline vf activation(int kind, vf x) {
    switch (kind) {
    case PD_ACTIVATION_GELU: return gelu(x);
    case PD_ACTIVATION_QUICK_GELU: return quick_gelu(x);
    default: return silu(x);
    }
}

// Lanes 0 ..< n of p, the others zero; and the store of lanes 0 ..< n (the tails go through
// the vector function, as in the twins, so every element sees the same approximation).
PD_AVX2 static inline __m256i lanes_below(ptrdiff_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
PD_AVX2 static inline vf load_partial(const float *p, ptrdiff_t n) { return _mm256_maskload_ps(p, lanes_below(n)); }
PD_AVX2 static inline void store_partial(float *p, ptrdiff_t n, vf v) { _mm256_maskstore_ps(p, lanes_below(n), v); }

// IEEE half → float (exact; vcvtph2ps).
__attribute__((target("avx2,f16c"))) void pd_half_to_float_avx2(const uint16_t *x, float *y, ptrdiff_t count) {
    ptrdiff_t i = 0;
    for (; i + 8 <= count; i += 8) _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
    for (; i < count; i++) y[i] = _cvtsh_ss(x[i]);
}

PD_AVX2 void pd_activate_avx2(int kind, const float *x, float *y, ptrdiff_t count) {
    ptrdiff_t i = 0;
    for (; i + 8 <= count; i += 8) _mm256_storeu_ps(y + i, activation(kind, _mm256_loadu_ps(x + i)));
    if (i < count) store_partial(y + i, count - i, activation(kind, load_partial(x + i, count - i)));
}

PD_AVX2 void pd_geglu_avx2(const float *x, const float *gate, float *y, ptrdiff_t count) {
    ptrdiff_t i = 0;
    for (; i + 8 <= count; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), gelu(_mm256_loadu_ps(gate + i))));
    if (i < count) {
        vf r = _mm256_mul_ps(load_partial(x + i, count - i), gelu(load_partial(gate + i, count - i)));
        store_partial(y + i, count - i, r);
    }
}

// Swift's SIMD8<Float>.sum(): lanes added left to right.
PD_AVX2 static inline float lane_sum(vf v) {
    float lanes[8];
    _mm256_storeu_ps(lanes, v);
    float s = lanes[0];
    for (int i = 1; i < 8; i++) s += lanes[i];
    return s;
}

// Σ (x[i] − center), or Σ (x[i] − center)² with `squares`: f32 partial sums over `chunk`
// elements (two vector accumulators, then the scalar tail), added in double, as
// Normalization.sum / sumOfSquares do. `squares` is a constant at each call, so each caller
// gets its own loop.
PD_AVX2 static inline double chunked_sum(const float *x, ptrdiff_t count, float center, ptrdiff_t chunk, int squares) {
    double total = 0;
    vf c = splat(center);
    for (ptrdiff_t start = 0; start < count; start += chunk) {
        ptrdiff_t end = start + chunk < count ? start + chunk : count, i = start;
        vf a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        for (; i + 16 <= end; i += 16) {
            vf d0 = _mm256_sub_ps(_mm256_loadu_ps(x + i), c), d1 = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), c);
            a0 = squares ? fmadd(d0, d0, a0) : _mm256_add_ps(a0, d0);
            a1 = squares ? fmadd(d1, d1, a1) : _mm256_add_ps(a1, d1);
        }
        float partial = lane_sum(_mm256_add_ps(a0, a1));
        for (; i < end; i++) {
            float d = x[i] - center;
            partial += squares ? d * d : d;
        }
        total += (double)partial;
    }
    return total;
}

PD_AVX2 double pd_sum_shifted_avx2(const float *x, ptrdiff_t count, float shift, ptrdiff_t chunk) {
    return chunked_sum(x, count, shift, chunk, 0);
}

PD_AVX2 double pd_sum_of_squares_avx2(const float *x, ptrdiff_t count, float mean, ptrdiff_t chunk) {
    return chunked_sum(x, count, mean, chunk, 1);
}

PD_AVX2 void pd_normalize_avx2(const float *x, float mean, float scale, float beta, int with_silu,
                               ptrdiff_t count, float *y) {
    vf m = splat(mean), a = splat(scale), b = splat(beta);
    ptrdiff_t i = 0;
    for (; i + 8 <= count; i += 8) {
        vf r = fmadd(_mm256_sub_ps(_mm256_loadu_ps(x + i), m), a, b);
        _mm256_storeu_ps(y + i, with_silu ? silu(r) : r);
    }
    if (i < count) {
        vf r = fmadd(_mm256_sub_ps(load_partial(x + i, count - i), m), a, b);
        store_partial(y + i, count - i, with_silu ? silu(r) : r);
    }
}

PD_AVX2 void pd_layer_norm_columns16_avx2(const float *x, ptrdiff_t columns, int channels, float eps,
                                          const float *gamma, const float *beta, float *y) {
    vf inv_count = splat(1.0f / (float)channels);
    vf shift0 = _mm256_loadu_ps(x), shift1 = _mm256_loadu_ps(x + 8);
    vf s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    for (int c = 1; c < channels; c++) {
        s0 = _mm256_add_ps(s0, _mm256_sub_ps(_mm256_loadu_ps(x + c * columns), shift0));
        s1 = _mm256_add_ps(s1, _mm256_sub_ps(_mm256_loadu_ps(x + c * columns + 8), shift1));
    }
    vf mean0 = _mm256_add_ps(shift0, _mm256_mul_ps(s0, inv_count));
    vf mean1 = _mm256_add_ps(shift1, _mm256_mul_ps(s1, inv_count));
    vf q0 = _mm256_setzero_ps(), q1 = _mm256_setzero_ps();
    for (int c = 0; c < channels; c++) {
        vf d0 = _mm256_sub_ps(_mm256_loadu_ps(x + c * columns), mean0);
        vf d1 = _mm256_sub_ps(_mm256_loadu_ps(x + c * columns + 8), mean1);
        q0 = fmadd(d0, d0, q0);
        q1 = fmadd(d1, d1, q1);
    }
    vf e = splat(eps), one = splat(1.0f);
    vf inv0 = _mm256_div_ps(one, _mm256_sqrt_ps(_mm256_add_ps(_mm256_mul_ps(q0, inv_count), e)));
    vf inv1 = _mm256_div_ps(one, _mm256_sqrt_ps(_mm256_add_ps(_mm256_mul_ps(q1, inv_count), e)));
    for (int c = 0; c < channels; c++) {
        vf g = splat(gamma[c]), b = splat(beta[c]);
        vf a0 = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + c * columns), mean0), inv0);
        vf a1 = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + c * columns + 8), mean1), inv1);
        _mm256_storeu_ps(y + c * columns, fmadd(a0, g, b));
        _mm256_storeu_ps(y + c * columns + 8, fmadd(a1, g, b));
    }
}

PD_AVX2 void pd_softmax_block16_avx2(float *scores, int keys, const float *query_index, int first_key,
                                     int causal, float masked, float *running_max, float *block_sum) {
    vf q0 = _mm256_loadu_ps(query_index), q1 = _mm256_loadu_ps(query_index + 8);
    vf max0 = _mm256_loadu_ps(running_max), max1 = _mm256_loadu_ps(running_max + 8);
    vf fill = splat(masked);
    for (int j = 0; j < keys; j++) {
        vf s0 = _mm256_loadu_ps(scores + j * 16), s1 = _mm256_loadu_ps(scores + j * 16 + 8);
        if (causal) {
            // Query i sees keys k ≤ i: lanes whose query index is below the key are masked.
            vf key = splat((float)(first_key + j));
            s0 = _mm256_blendv_ps(s0, fill, _mm256_sub_ps(q0, key));
            s1 = _mm256_blendv_ps(s1, fill, _mm256_sub_ps(q1, key));
            _mm256_storeu_ps(scores + j * 16, s0);
            _mm256_storeu_ps(scores + j * 16 + 8, s1);
        }
        max0 = _mm256_max_ps(max0, s0);
        max1 = _mm256_max_ps(max1, s1);
    }
    vf sum0 = _mm256_setzero_ps(), sum1 = _mm256_setzero_ps();
    for (int j = 0; j < keys; j++) {
        vf p0 = vexp2(_mm256_sub_ps(_mm256_loadu_ps(scores + j * 16), max0));
        vf p1 = vexp2(_mm256_sub_ps(_mm256_loadu_ps(scores + j * 16 + 8), max1));
        _mm256_storeu_ps(scores + j * 16, p0);
        _mm256_storeu_ps(scores + j * 16 + 8, p1);
        sum0 = _mm256_add_ps(sum0, p0);
        sum1 = _mm256_add_ps(sum1, p1);
    }
    _mm256_storeu_ps(running_max, max0);
    _mm256_storeu_ps(running_max + 8, max1);
    _mm256_storeu_ps(block_sum, sum0);
    _mm256_storeu_ps(block_sum + 8, sum1);
}

#else

// Other architectures run the Swift twins; these are never called there.
void pd_half_to_float_avx2(const uint16_t *x, float *y, ptrdiff_t count) { (void)x; (void)y; (void)count; }
void pd_activate_avx2(int kind, const float *x, float *y, ptrdiff_t count) { (void)kind; (void)x; (void)y; (void)count; }
void pd_geglu_avx2(const float *x, const float *gate, float *y, ptrdiff_t count) { (void)x; (void)gate; (void)y; (void)count; }
double pd_sum_shifted_avx2(const float *x, ptrdiff_t count, float shift, ptrdiff_t chunk) {
    (void)x; (void)count; (void)shift; (void)chunk; return 0;
}
double pd_sum_of_squares_avx2(const float *x, ptrdiff_t count, float mean, ptrdiff_t chunk) {
    (void)x; (void)count; (void)mean; (void)chunk; return 0;
}
void pd_normalize_avx2(const float *x, float mean, float scale, float beta, int with_silu, ptrdiff_t count, float *y) {
    (void)x; (void)mean; (void)scale; (void)beta; (void)with_silu; (void)count; (void)y;
}
void pd_layer_norm_columns16_avx2(const float *x, ptrdiff_t columns, int channels, float eps, const float *gamma,
                                  const float *beta, float *y) {
    (void)x; (void)columns; (void)channels; (void)eps; (void)gamma; (void)beta; (void)y;
}
void pd_softmax_block16_avx2(float *scores, int keys, const float *query_index, int first_key, int causal,
                             float masked, float *running_max, float *block_sum) {
    (void)scores; (void)keys; (void)query_index; (void)first_key; (void)causal; (void)masked; (void)running_max;
    (void)block_sum;
}

#endif
