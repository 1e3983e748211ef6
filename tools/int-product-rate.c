// Multiply-accumulate rate of the x86 instructions an int8-activation product mode could
// use, against the f32 FMA that the block products use today, on one core. It answers "would
// quantising activations to int8/int16 make the products faster on this CPU?" before any
// kernel is written (docs/KERNELS.md, "Integer products on AVX2").
//
//   clang -O2 tools/int-product-rate.c -o /tmp/int-product-rate && /tmp/int-product-rate
//
// clang (the C compiler SwiftPM uses for CKernels) keeps the accumulators in registers; GCC 12
// keeps the integer ones on the stack, which understates the integer rates.
//
// Each loop runs 8 independent accumulator chains (enough to hide the latencies) and counts
// multiply-accumulates (MACs) per second:
//   f32 FMA              vfmadd231ps: 8 MACs
//   s16 pairs            vpmaddwd + vpaddd: 16 MACs (int16 × int16 → int32 sums of pairs)
//   u8 × s8 quads        vpmaddubsw + vpmaddwd(1) + vpaddd: 32 MACs; vpmaddubsw saturates
//                        its int16 pair sums once u8 activations exceed 128
//   s8 × s8, sign trick  vpmaddubsw(|a|, sign(w, a)) + vpmaddwd(1) + vpaddd, one vpsignb
//                        per product: 32 MACs, exact for a, w in [−127, 127] (the form
//                        ggml's AVX2 q8_0 dot product uses)
// AVX-VNNI / AVX512-VNNI (vpdpbusd: 32 or 64 MACs in one instruction), and the zmm f32 FMA
// (16 MACs) and AVX512-BF16 vdpbf16ps (32 MACs) that the `avx512-bf16` kernels use, are
// measured where the CPU has them; the zmm loops run 16 chains (latency × two pipes).
// On CPUs with AMX (after asking Linux for the tile state), the tile products too:
// tdpbf16ps (16 × 16 × 32 = 8192 MACs) and tdpbssd (16 × 16 × 64 = 16384), four
// independent 16 × 16 accumulator tiles, operands already in tiles (the peak, not a kernel).
#include <cpuid.h>
#include <immintrin.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

// 8 accumulator chains, each fed by a different (a, w) operand pair so that no compiler can
// compute one product for all of them; the empty asm statements make the operands look new
// every iteration, so nothing is hoisted out of the loop.
#define CHAINS(X) X(0, a0, w0) X(1, a0, w1) X(2, a0, w2) X(3, a0, w3) \
                  X(4, a1, w0) X(5, a1, w1) X(6, a1, w2) X(7, a1, w3)
#define TOUCH(a0, a1, w0, w1, w2, w3) \
    __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(w0), "+x"(w1), "+x"(w2), "+x"(w3))

__attribute__((target("avx2,fma"))) static float f32_fma(long n) {
    __m256 acc[8], a0 = _mm256_set1_ps(1.0001f), a1 = _mm256_set1_ps(0.9999f);
    __m256 w0 = _mm256_set1_ps(1e-3f), w1 = _mm256_set1_ps(2e-3f), w2 = _mm256_set1_ps(3e-3f), w3 = _mm256_set1_ps(4e-3f);
    for (int i = 0; i < 8; i++) acc[i] = _mm256_set1_ps((float)i);
    for (long k = 0; k < n; k++) {
#define F(i, a, w) acc[i] = _mm256_fmadd_ps(a, w, acc[i]);
        CHAINS(F)
        TOUCH(a0, a1, w0, w1, w2, w3);
    }
    __m256 s = acc[0];
    for (int i = 1; i < 8; i++) s = _mm256_add_ps(s, acc[i]);
    return _mm256_cvtss_f32(s);
}

// 16 chains for the zmm loops: with two 512-bit pipes and latencies up to 6 cycles, 8 chains
// would measure the latency, not the rate.
#define CHAINS16(X) CHAINS(X) X(8, a0, w4) X(9, a0, w5) X(10, a1, w4) X(11, a1, w5) \
                    X(12, a2, w0) X(13, a2, w1) X(14, a2, w4) X(15, a2, w5)
#define TOUCH16(a0, a1, a2, w0, w1, w2, w3, w4, w5) __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), \
    "+v"(w0), "+v"(w1), "+v"(w2), "+v"(w3), "+v"(w4), "+v"(w5))

__attribute__((target("avx512f"))) static float f32_fma512(long n) {
    __m512 acc[16], a0 = _mm512_set1_ps(1.0001f), a1 = _mm512_set1_ps(0.9999f), a2 = _mm512_set1_ps(1.0002f);
    __m512 w0 = _mm512_set1_ps(1e-3f), w1 = _mm512_set1_ps(2e-3f), w2 = _mm512_set1_ps(3e-3f), w3 = _mm512_set1_ps(4e-3f);
    __m512 w4 = _mm512_set1_ps(5e-3f), w5 = _mm512_set1_ps(6e-3f);
    for (int i = 0; i < 16; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long k = 0; k < n; k++) {
#define F512(i, a, w) acc[i] = _mm512_fmadd_ps(a, w, acc[i]);
        CHAINS16(F512)
        TOUCH16(a0, a1, a2, w0, w1, w2, w3, w4, w5);
    }
    __m512 s = acc[0];
    for (int i = 1; i < 16; i++) s = _mm512_add_ps(s, acc[i]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx512f,avx512bf16"))) static float bf16_dot512(long n) {
    __m512 acc[16];
    __m512bh a0 = (__m512bh)_mm512_set1_epi32(0x3F803F80), a1 = (__m512bh)_mm512_set1_epi32(0x3F813F81);
    __m512bh a2 = (__m512bh)_mm512_set1_epi32(0x3F823F82), w0 = (__m512bh)_mm512_set1_epi32(0x3A833A83);
    __m512bh w1 = (__m512bh)_mm512_set1_epi32(0x3B033B03), w2 = (__m512bh)_mm512_set1_epi32(0x3B453B45);
    __m512bh w3 = (__m512bh)_mm512_set1_epi32(0x3B833B83), w4 = (__m512bh)_mm512_set1_epi32(0x3BA33BA3);
    __m512bh w5 = (__m512bh)_mm512_set1_epi32(0x3BC53BC5);
    for (int i = 0; i < 16; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long k = 0; k < n; k++) {
#define BF(i, a, w) acc[i] = _mm512_dpbf16_ps(acc[i], a, w);
        CHAINS16(BF)
        TOUCH16(a0, a1, a2, w0, w1, w2, w3, w4, w5);
    }
    __m512 s = acc[0];
    for (int i = 1; i < 16; i++) s = _mm512_add_ps(s, acc[i]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2"))) static int s16_pairs(long n) {
    __m256i acc[8], a0 = _mm256_set1_epi16(3), a1 = _mm256_set1_epi16(-7);
    __m256i w0 = _mm256_set1_epi16(5), w1 = _mm256_set1_epi16(6), w2 = _mm256_set1_epi16(-8), w3 = _mm256_set1_epi16(9);
    for (int i = 0; i < 8; i++) acc[i] = _mm256_set1_epi32(i);
    for (long k = 0; k < n; k++) {
#define M(i, a, w) acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(a, w));
        CHAINS(M)
        TOUCH(a0, a1, w0, w1, w2, w3);
    }
    __m256i s = acc[0];
    for (int i = 1; i < 8; i++) s = _mm256_add_epi32(s, acc[i]);
    return _mm256_cvtsi256_si32(s);
}

__attribute__((target("avx2"))) static int u8s8_quads(long n) {
    __m256i acc[8], a0 = _mm256_set1_epi8(3), a1 = _mm256_set1_epi8(7), one = _mm256_set1_epi16(1);
    __m256i w0 = _mm256_set1_epi8(5), w1 = _mm256_set1_epi8(6), w2 = _mm256_set1_epi8(-8), w3 = _mm256_set1_epi8(9);
    for (int i = 0; i < 8; i++) acc[i] = _mm256_set1_epi32(i);
    for (long k = 0; k < n; k++) {
#define U(i, a, w) acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(a, w), one));
        CHAINS(U)
        TOUCH(a0, a1, w0, w1, w2, w3);
    }
    __m256i s = acc[0];
    for (int i = 1; i < 8; i++) s = _mm256_add_epi32(s, acc[i]);
    return _mm256_cvtsi256_si32(s);
}

// |a| is taken once per activation vector (it is reused across the weight columns); the
// sign goes onto the weights per product.
__attribute__((target("avx2"))) static int s8s8_sign(long n) {
    __m256i acc[8], a0 = _mm256_set1_epi8(-3), a1 = _mm256_set1_epi8(7), one = _mm256_set1_epi16(1);
    __m256i w0 = _mm256_set1_epi8(5), w1 = _mm256_set1_epi8(6), w2 = _mm256_set1_epi8(-8), w3 = _mm256_set1_epi8(9);
    for (int i = 0; i < 8; i++) acc[i] = _mm256_set1_epi32(i);
    for (long k = 0; k < n; k++) {
        __m256i abs_a0 = _mm256_abs_epi8(a0), abs_a1 = _mm256_abs_epi8(a1);
#define SIGNED(i, a, w) acc[i] = _mm256_add_epi32(acc[i], \
            _mm256_madd_epi16(_mm256_maddubs_epi16(abs_##a, _mm256_sign_epi8(w, a)), one));
        CHAINS(SIGNED)
        TOUCH(a0, a1, w0, w1, w2, w3);
    }
    __m256i s = acc[0];
    for (int i = 1; i < 8; i++) s = _mm256_add_epi32(s, acc[i]);
    return _mm256_cvtsi256_si32(s);
}

__attribute__((target("avxvnni"))) static int vnni256(long n) {
    __m256i acc[8], a0 = _mm256_set1_epi8(3), a1 = _mm256_set1_epi8(7);
    __m256i w0 = _mm256_set1_epi8(5), w1 = _mm256_set1_epi8(6), w2 = _mm256_set1_epi8(-8), w3 = _mm256_set1_epi8(9);
    for (int i = 0; i < 8; i++) acc[i] = _mm256_set1_epi32(i);
    for (long k = 0; k < n; k++) {
#define VNNI(i, a, w) acc[i] = _mm256_dpbusd_avx_epi32(acc[i], a, w);
        CHAINS(VNNI)
        TOUCH(a0, a1, w0, w1, w2, w3);
    }
    __m256i s = acc[0];
    for (int i = 1; i < 8; i++) s = _mm256_add_epi32(s, acc[i]);
    return _mm256_cvtsi256_si32(s);
}

__attribute__((target("avx512f,avx512vnni"))) static int vnni512(long n) {
    __m512i acc[16], a0 = _mm512_set1_epi8(3), a1 = _mm512_set1_epi8(7), a2 = _mm512_set1_epi8(11);
    __m512i w0 = _mm512_set1_epi8(5), w1 = _mm512_set1_epi8(6), w2 = _mm512_set1_epi8(-8), w3 = _mm512_set1_epi8(9);
    __m512i w4 = _mm512_set1_epi8(-10), w5 = _mm512_set1_epi8(12);
    for (int i = 0; i < 16; i++) acc[i] = _mm512_set1_epi32(i);
    for (long k = 0; k < n; k++) {
#define VNNI512(i, a, w) acc[i] = _mm512_dpbusd_epi32(acc[i], a, w);
        CHAINS16(VNNI512)
        TOUCH16(a0, a1, a2, w0, w1, w2, w3, w4, w5);
    }
    __m512i s = acc[0];
    for (int i = 1; i < 16; i++) s = _mm512_add_epi32(s, acc[i]);
    return _mm512_reduce_add_epi32(s);
}

// AMX-TILE and the given AMX product bit (CPUID.7.0:EDX: 22 BF16, 25 INT8), with the tile
// state granted by Linux (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)).
static int amx_ready(int product_bit) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !((d >> 24) & 1) || !((d >> product_bit) & 1)) return 0;
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
}

// Palette 1; tiles 0–7 all 16 rows × 64 bytes.
__attribute__((target("amx-tile"))) static void amx_config(void) {
    _Alignas(64) unsigned char config[64] = {1};
    for (int t = 0; t < 8; t++) {
        config[16 + 2 * t] = 64;
        config[48 + t] = 16;
    }
    _tile_loadconfig(config);
}

#define AMX_LOOP(product)                                                       \
    _Alignas(64) static unsigned char operand[16 * 64];                         \
    _Alignas(64) static float out[16 * 16];                                     \
    amx_config();                                                               \
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);                 \
    _tile_loadd(4, operand, 64); _tile_loadd(5, operand, 64);                   \
    _tile_loadd(6, operand, 64); _tile_loadd(7, operand, 64);                   \
    for (long k = 0; k < n; k++) {                                              \
        product(0, 4, 6); product(1, 4, 7); product(2, 5, 6); product(3, 5, 7); \
    }                                                                           \
    _tile_stored(0, out, 64);                                                   \
    _tile_release();                                                            \
    return out[0];

__attribute__((target("amx-tile,amx-bf16"))) static float amx_bf16(long n) { AMX_LOOP(_tile_dpbf16ps) }
__attribute__((target("amx-tile,amx-int8"))) static float amx_int8(long n) { AMX_LOOP(_tile_dpbssd) }

int main(void) {
    const long n = 100000000;
    // (The compiler runtime's check includes the OS having enabled the registers.)
    int has_avx_vnni = __builtin_cpu_supports("avxvnni");
    int has_avx512_vnni = __builtin_cpu_supports("avx512vnni");
    int has_avx512 = __builtin_cpu_supports("avx512f"), has_bf16 = __builtin_cpu_supports("avx512bf16");
    for (int round = 0; round < 2; round++) {
        double t = now();
        volatile float f = f32_fma(n);
        double fma_rate = n * 8.0 * 8 / (now() - t) / 1e9;
        printf("f32 FMA               %6.1f GMAC/s  1.00x\n", fma_rate);
        t = now();
        volatile int r = s16_pairs(n);
        double rate = n * 8.0 * 16 / (now() - t) / 1e9;
        printf("s16 pairs (vpmaddwd)  %6.1f GMAC/s  %.2fx\n", rate, rate / fma_rate);
        t = now();
        r = u8s8_quads(n);
        rate = n * 8.0 * 32 / (now() - t) / 1e9;
        printf("u8 x s8 (vpmaddubsw)  %6.1f GMAC/s  %.2fx (saturates in int16)\n", rate, rate / fma_rate);
        t = now();
        r = s8s8_sign(n);
        rate = n * 8.0 * 32 / (now() - t) / 1e9;
        printf("s8 x s8 (+vpsignb)    %6.1f GMAC/s  %.2fx\n", rate, rate / fma_rate);
        if (has_avx_vnni) {
            t = now();
            r = vnni256(n);
            rate = n * 8.0 * 32 / (now() - t) / 1e9;
            printf("AVX-VNNI vpdpbusd ymm %6.1f GMAC/s  %.2fx\n", rate, rate / fma_rate);
        }
        if (has_avx512_vnni) {
            t = now();
            r = vnni512(n);
            rate = n * 16.0 * 64 / (now() - t) / 1e9;
            printf("AVX512-VNNI zmm       %6.1f GMAC/s  %.2fx\n", rate, rate / fma_rate);
        }
        if (has_avx512) {
            t = now();
            f = f32_fma512(n);
            rate = n * 16.0 * 16 / (now() - t) / 1e9;
            printf("f32 FMA zmm           %6.1f GMAC/s  %.2fx\n", rate, rate / fma_rate);
        }
        if (has_bf16) {
            t = now();
            f = bf16_dot512(n);
            rate = n * 16.0 * 32 / (now() - t) / 1e9;
            printf("vdpbf16ps zmm         %6.1f GMAC/s  %.2fx\n", rate, rate / fma_rate);
        }
        if (amx_ready(22)) {
            t = now();
            f = amx_bf16(n / 64);
            rate = n / 64 * 4.0 * 8192 / (now() - t) / 1e9;
            printf("AMX tdpbf16ps         %6.1f GMAC/s  %.2fx\n", rate, rate / fma_rate);
        }
        if (amx_ready(25)) {
            t = now();
            f = amx_int8(n / 64);
            rate = n / 64 * 4.0 * 16384 / (now() - t) / 1e9;
            printf("AMX tdpbssd           %6.1f GMAC/s  %.2fx\n", rate, rate / fma_rate);
        }
        (void)f; (void)r;
        printf("\n");
    }
    return 0;
}
