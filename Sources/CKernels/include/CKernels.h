#ifndef POCKETSD_CKERNELS_H
#define POCKETSD_CKERNELS_H

// Kernels Swift's SIMD types cannot express: dot-product instructions on narrow types.
// Each has a portable Swift twin in SDKernels (BF16Gemm.swift) that computes the same
// thing and is the reference in the tests. Callers check `pd_bf16_native_available()`.

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Rows of C per micro-tile and columns per B panel of `pd_bf16_gemm_block`.
enum { PD_BF16_TILE_ROWS = 12, PD_BF16_PANEL_COLUMNS = 32 };

/// 1 when this CPU and OS run the native bf16 kernel (x86_64 AVX-512 BF16 with zmm state
/// enabled), else 0.
int pd_bf16_native_available(void);

/// C[r, p] = acc · scale[r] + bias[r] + addend[r·ldc + p] for r < rows, p < columns, where
/// acc = Σ_k A[r, k] · B[k, p] over `pairs` pairs of k in bfloat16, accumulated in f32.
///   a: rows of `pairs` uint32, `lda` apart, each the bf16 pair (A[r, 2i] low half,
///      A[r, 2i+1] high half); rows up to the next multiple of 12 must be readable (their
///      results are dropped).
///   b: column panels of [pairs][32] uint32, `b_panel_stride` apart, each the pair
///      (B[2i, p] low, B[2i+1, p] high); columns past `columns` are zero.
///   scale, bias, addend may be NULL (1, 0, 0); addend has row stride ldc and may be c.
void pd_bf16_gemm_block(int rows, int columns, int pairs,
                        const uint32_t *a, ptrdiff_t lda,
                        const uint32_t *b, ptrdiff_t b_panel_stride,
                        float *c, ptrdiff_t ldc,
                        const float *scale, const float *bias, const float *addend);

/// Bits of `pd_cpu_features()`: what the CPU has and the OS has enabled (XCR0).
enum {
    PD_CPU_AVX2_FMA = 1,      ///< AVX2 + FMA + F16C, ymm state saved
    PD_CPU_AVX512 = 2,        ///< AVX-512 F/BW/VL, zmm and opmask state saved
    PD_CPU_AVX512_BF16 = 4,   ///< AVX512_BF16 (vdpbf16ps)
    PD_CPU_AMX_BF16 = 8,      ///< AMX-TILE + AMX-BF16, tile state enabled in XCR0 (no kernel uses it yet)
};

/// The PD_CPU_* features of this CPU (0 off x86_64; ARM64 features come from getauxval).
unsigned pd_cpu_features(void);

/// Columns of one packed B micro-panel of the f32 block products (Swift's Gemm: 2 × SIMD8).
enum { PD_F32_PANEL_COLUMNS = 16 };

/// C[r, p] = Σ_k A[r, k] · B[k, p] + bias[r] + addend[r·ldc + p] for r < rows, p < columns
/// (f32 throughout): Gemm.block's contract.
///   a: `rows` rows of `depth` floats, `lda` apart.
///   b: column panels of [depth][16] floats, `panel_stride` floats apart, zero past `columns`.
///   bias, addend may be NULL; addend has row stride ldc and may be c.
/// Only call the variant `pd_cpu_features()` reports (AVX2_FMA, AVX512).
void pd_f32_gemm_block_avx2(int rows, int columns, int depth, const float *a, ptrdiff_t lda,
                            const float *b, ptrdiff_t panel_stride, float *c, ptrdiff_t ldc,
                            const float *bias, const float *addend);
void pd_f32_gemm_block_avx512(int rows, int columns, int depth, const float *a, ptrdiff_t lda,
                              const float *b, ptrdiff_t panel_stride, float *c, ptrdiff_t ldc,
                              const float *bias, const float *addend);

/// `iterations` × 12 independent FMAs on 8 (ymm) or 16 (zmm) lanes: the FMA peak
/// measurement of `pocketsd bench`. Same feature requirements as above.
float pd_fma_loop_avx2(long iterations);
float pd_fma_loop_avx512(long iterations);

/// ARM64 `sdot` int8 product (i8_sdot.c), correctness-tested under qemu by
/// tools/test-arm64.sh: C[r, p] = Σ_k A[r, k] · B[k, p] in int32, A rows of `depth` int8
/// `lda` apart, B packed as [depth/4][columns][4] int8 (depth a multiple of 4, columns a
/// multiple of 4). Returns 0 when the CPU lacks the dot-product extension (and off arm64).
int pd_i8_sdot_available(void);
int pd_i8_gemm_sdot(int rows, int columns, int depth, const int8_t *a, ptrdiff_t lda,
                    const int8_t *b, int32_t *c, ptrdiff_t ldc);
/// The scalar reference of `pd_i8_gemm_sdot` (same layouts), on every architecture.
void pd_i8_gemm_reference(int rows, int columns, int depth, const int8_t *a, ptrdiff_t lda,
                          const int8_t *b, int32_t *c, ptrdiff_t ldc);

#ifdef __cplusplus
}
#endif

#endif
