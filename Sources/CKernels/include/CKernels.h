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

#ifdef __cplusplus
}
#endif

#endif
