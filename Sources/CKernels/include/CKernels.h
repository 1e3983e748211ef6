#ifndef POCKETSD_CKERNELS_H
#define POCKETSD_CKERNELS_H

// Kernels chosen at run time by what the CPU reports: dot-product instructions on narrow
// types that Swift's SIMD types cannot express, and per-ISA builds of the f32 kernels
// (each function carries its own `target` attribute, so no build flag is needed). Each has
// a portable Swift twin in SDKernels that is the reference in the tests.

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

/// Asks the CPU to bring `bytes` bytes at p into its caches (a hint: no fault, no effect on
/// results; any architecture).
static inline void pd_prefetch(const void *p, long bytes) {
    for (long k = 0; k < bytes; k += 64) __builtin_prefetch((const char *)p + k);
}

/// A row of `count` int8 weights as bf16 pairs (BF16Gemm.packWeights for q8): dst[i] holds
/// src[2i] in its low and src[2i+1] in its high half, the last high half 0 when count is
/// odd. Exact (int8 values fit bf16's 8 significand bits). Only where
/// pd_bf16_native_available() is 1.
void pd_bf16_pack_q8_row(const int8_t *src, int count, uint32_t *dst);

/// 1 when this CPU has AMX-BF16 (and AVX-512 BF16), the OS granted this process the tile
/// state (Linux: arch_prctl(ARCH_REQ_XCOMP_PERM), requested on the first call), and the
/// AMX kernel then computed a small product with a known exact result (a SIGILL from the
/// tiles is caught), else 0.
int pd_amx_bf16_available(void);
/// The start-up probe on a stand-in kernel, for the tests: 0 the AMX body on the tile model
/// (returns 1), 1 a kernel that writes zeros (0), 2 one that executes an illegal
/// instruction (0, the SIGILL caught and the previous handler restored).
int pd_amx_probe_selftest(int kernel);

/// `pd_bf16_gemm_block`'s contract on AMX tiles (bf16_amx.c): 2 × 2 tiles of 16 × 16 per 32
/// rows and B panel. Only where pd_amx_bf16_available() is 1. Each call configures the
/// calling thread's tiles and releases them.
void pd_bf16_gemm_block_amx(int rows, int columns, int pairs, const uint32_t *a, ptrdiff_t lda,
                            const uint32_t *b, ptrdiff_t b_panel_stride, float *c, ptrdiff_t ldc,
                            const float *scale, const float *bias, const float *addend);

/// The same kernel body on a scalar model of the tile instructions (any CPU), for the tests;
/// `pd_amx_emulation_faults()` counts the tile operations the hardware would refuse
/// (unconfigured tiles, mismatched shapes) since the process started.
void pd_bf16_gemm_block_amx_emulated(int rows, int columns, int pairs, const uint32_t *a, ptrdiff_t lda,
                                     const uint32_t *b, ptrdiff_t b_panel_stride, float *c, ptrdiff_t ldc,
                                     const float *scale, const float *bias, const float *addend);
long pd_amx_emulation_faults(void);

/// Bits of `pd_cpu_features()`: what the CPU has and the OS has enabled (XCR0).
enum {
    PD_CPU_AVX2_FMA = 1,      ///< AVX2 + FMA + F16C, ymm state saved
    PD_CPU_AVX512 = 2,        ///< AVX-512 F/BW/VL, zmm and opmask state saved
    PD_CPU_AVX512_BF16 = 4,   ///< AVX512_BF16 (vdpbf16ps)
    PD_CPU_AMX_BF16 = 8,      ///< AMX-TILE + AMX-BF16, tile state enabled in XCR0 (pd_amx_bf16_available also asks Linux for it)
    PD_CPU_AVX512_VNNI = 16,  ///< AVX512_VNNI (vpdpbusd on zmm), with PD_CPU_AVX512
    PD_CPU_AVX_VNNI = 32,     ///< AVX-VNNI (vpdpbusd on ymm, VEX), with PD_CPU_AVX2_FMA
};

/// The PD_CPU_* features of this CPU (0 off x86_64; ARM64 features come from getauxval).
unsigned pd_cpu_features(void);

/// 1 when this x86_64 runs code compiled for `-target-cpu haswell` (AVX2, FMA, F16C, BMI1/2,
/// LZCNT, MOVBE; startup_check.c, whose constructor refuses to start a Haswell build on any
/// other with a one-line error); 0 elsewhere.
int pd_cpu_runs_haswell_code(void);

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

/// The non-product f32 kernels for AVX2 + FMA (f32_vector_math.c), bitwise equal to their
/// Swift twins in SDKernels (VectorMath, Normalization, Attention) whatever flags Swift was
/// built with. Only call them where `pd_cpu_features()` reports PD_CPU_AVX2_FMA.
enum { PD_ACTIVATION_SILU = 0, PD_ACTIVATION_GELU = 1, PD_ACTIVATION_QUICK_GELU = 2 };
/// IEEE half → float, exact (F16C).
void pd_half_to_float_avx2(const uint16_t *x, float *y, ptrdiff_t count);
/// y[i] = f(x[i]) for i < count, f one of PD_ACTIVATION_*; y may be x.
void pd_activate_avx2(int kind, const float *x, float *y, ptrdiff_t count);
/// y[i] = x[i] · gelu(gate[i]).
void pd_geglu_avx2(const float *x, const float *gate, float *y, ptrdiff_t count);
/// Σ (x[i] − shift) and Σ (x[i] − mean)²: f32 partial sums over `chunk` elements, added in double.
double pd_sum_shifted_avx2(const float *x, ptrdiff_t count, float shift, ptrdiff_t chunk);
double pd_sum_of_squares_avx2(const float *x, ptrdiff_t count, float mean, ptrdiff_t chunk);
/// y[i] = (x[i] − mean)·scale + beta (one fused multiply-add), then SiLU when with_silu.
void pd_normalize_avx2(const float *x, float mean, float scale, float beta, int with_silu,
                       ptrdiff_t count, float *y);
/// LayerNorm of the 16 columns at x (rows `columns` apart, `channels` rows), into y.
void pd_layer_norm_columns16_avx2(const float *x, ptrdiff_t columns, int channels, float eps,
                                  const float *gamma, const float *beta, float *y);
/// One key block of the attention's online softmax over a 16-query panel: scores [keys][16]
/// (log2 units) become 2^(score − max); running_max (16) is raised to the block's maxima;
/// block_sum (16) gets the column sums. With `causal`, a key k > query_index[lane] (k =
/// first_key + row) is first replaced by `masked`.
void pd_softmax_block16_avx2(float *scores, int keys, const float *query_index, int first_key,
                             int causal, float masked, float *running_max, float *block_sum);

/// The same kernels 16 wide for AVX-512 F/BW/VL (f32_vector_math_avx512.c), bitwise equal to
/// the same Swift twins (the chunked sums keep the twins' two 8-lane accumulators and their
/// lane order). Only call them where `pd_cpu_features()` reports PD_CPU_AVX512.
void pd_half_to_float_avx512(const uint16_t *x, float *y, ptrdiff_t count);
void pd_activate_avx512(int kind, const float *x, float *y, ptrdiff_t count);
void pd_geglu_avx512(const float *x, const float *gate, float *y, ptrdiff_t count);
double pd_sum_shifted_avx512(const float *x, ptrdiff_t count, float shift, ptrdiff_t chunk);
double pd_sum_of_squares_avx512(const float *x, ptrdiff_t count, float mean, ptrdiff_t chunk);
void pd_normalize_avx512(const float *x, float mean, float scale, float beta, int with_silu,
                         ptrdiff_t count, float *y);
/// LayerNorm of `blocks` (1–4) consecutive blocks of 16 columns, each as
/// pd_layer_norm_columns16_avx2 (more per call: fewer TLB and cache-line misses per row).
void pd_layer_norm_blocks16_avx512(const float *x, ptrdiff_t columns, int channels, int blocks, float eps,
                                   const float *gamma, const float *beta, float *y);
void pd_softmax_block16_avx512(float *scores, int keys, const float *query_index, int first_key,
                               int causal, float masked, float *running_max, float *block_sum);
/// The bf16 attention's softmax of one key block over one panel of PD_BF16_PANEL_COLUMNS (32)
/// queries (Attention.softmaxPackBF16): with scores [keys][32] (log2 units) and the running
/// maxima raised to the block's, p_j = VectorMath.exp2NonPositiveBF16(score_j − max) are
/// summed per column and packed as bf16 pairs (p_2i low, p_2i+1 high; an odd last key paired
/// with 0) into p [⌈keys/2⌉][32] with BF16Gemm.pair's integer rounding. With first_block the
/// sums are stored into running_sum; else running_sum and O (out, [head_dim][32]) are first
/// scaled by exp2(old max − new max) and the sums added.
void pd_softmax_pack_bf16_avx512(const float *scores, int keys, int first_block, float *running_max,
                                 float *running_sum, uint32_t *p, float *out, int head_dim);

/// The tiles of a Winograd F(2×2, 3×3) convolution (SDKernels' `Winograd.Tiles`).
typedef struct {
    int channels, width, height;   ///< input channels and image size
    int tiles_x, tiles_y;          ///< tiles per row and per column of one image
    ptrdiff_t plane_size;          ///< floats between the images of a batch
    ptrdiff_t channel_stride;      ///< floats between channels (below 2³¹)
} pd_winograd_tiles;

/// Winograd F(2×2, 3×3) transforms for AVX-512 (winograd_transforms.c), 16 tiles per
/// vector, bitwise equal to their Swift twins (`Winograd.transformInput` with the f32 or
/// bf16 panel sink, `Winograd.transformOutput`). Only call them where `pd_cpu_features()`
/// reports PD_CPU_AVX512.
///   input:  V of tiles first_tile ..< first_tile + count, all channels, into `panels` panels
///           of `panel_width` (a multiple of 16) lanes: f32 rows per channel, or bf16 pairs.
///   output: y (+ bias[first_row + r], + residual) from m[ξ][r][tile], r < rows.
enum { PD_WINOGRAD_INPUT_MAX_LANES = 512 };  ///< panels × panel_width of one input call, at most
void pd_winograd23_input_avx512(const pd_winograd_tiles *g, const float *x, long first_tile, int count,
                                int panels, int panel_width, int bf16, void *dst, ptrdiff_t xi_stride);
void pd_winograd23_output_avx512(const pd_winograd_tiles *g, const float *m, ptrdiff_t ldm, long first_row,
                                 int rows, long first_tile, int count, const float *bias, const float *residual,
                                 float *y);

///   weights (bf16): U = G g Gᵀ of weight rows first_row ..< first_row + count (`type` 0 f32,
///           1 f16, 2 int8 times scales[row]; rows of `cols` = 9·Cin values) as BF16Gemm A rows
///           at a[ξ·xi_stride + r·⌈Cin/2⌉], rows up to a whole PD_BF16_TILE_ROWS zero
///           (`Winograd.transformWeightsBF16`).
void pd_winograd23_weights_bf16_avx512(int type, const void *data, const float *scales, int cols, long first_row,
                                       int count, uint32_t *a, ptrdiff_t xi_stride);
///   weights (f32): the same U as floats u[ξ·xi_stride + r·Cin + ic] for r < count
///           (`Winograd.transformWeights`, the f32 products' operand).
void pd_winograd23_weights_f32_avx512(int type, const void *data, const float *scales, int cols, long first_row,
                                      int count, float *u, ptrdiff_t xi_stride);

/// Winograd F(4×4, 3×3) transforms for AVX-512 (winograd43_transforms.c; `g` describes 4×4
/// tiles: tiles_x = ⌈width/4⌉), 16 tiles or input channels per vector, bitwise equal to their
/// Swift twins (`Winograd43.transformInput`, `.transformOutput`, `.transformWeights`). Only
/// call them where `pd_cpu_features()` reports PD_CPU_AVX512.
///   input:  V of tiles first_tile ..< first_tile + count, all channels, into `panels` panels
///           of `panel_width` (a multiple of 16) lanes: dst[ξ·xi_stride + panel·Cin·panel_width
///           + ic·panel_width + lane], ξ < 36; lanes past `count` 0.
///   output: y (+ bias[first_row + r], + residual) from m[ξ][r][tile] (row stride ldm, a
///           multiple of 16: whole groups of 16 tiles are read), r < rows.
///   weights: U = G g Gᵀ of weight rows first_row ..< first_row + count (`type` 0 f32, 1 f16,
///           2 int8 times scales[row]; rows of `cols` = 9·Cin values) into f32
///           u[ξ·count·Cin + r·Cin + ic].
enum { PD_WINOGRAD43_MAX_LANES = 512 };  ///< panels × panel_width of an input call, count of an output call, at most
void pd_winograd43_input_avx512(const pd_winograd_tiles *g, const float *x, long first_tile, int count,
                                int panels, int panel_width, float *dst, ptrdiff_t xi_stride);
void pd_winograd43_output_avx512(const pd_winograd_tiles *g, const float *m, ptrdiff_t ldm, long first_row,
                                 int rows, long first_tile, int count, const float *bias, const float *residual,
                                 float *y);
void pd_winograd43_weights_avx512(int type, const void *data, const float *scales, int cols, long first_row,
                                  int count, float *u);

/// int8 products (`Kernels.Precision.int8`, SDKernels' `I8Gemm`): the file's per-row int8
/// weights times activations quantised per column and per block of 32 k (symmetric, scale
/// max|x| / 127: stable-diffusion.cpp's q8_0 for activations), exact int32 sums per block.
enum {
    PD_I8_BLOCK_DEPTH = 32,      ///< k per activation scale
    PD_I8_TILE_ROWS = 12,        ///< A rows readable past `rows`, up to a multiple of this
    PD_I8_PANEL_COLUMNS = 32,    ///< columns per B panel
    /// Bytes of one block of one B panel: q[8][32][4] int8 (the quad k = 4i … 4i+3 of column
    /// p at [i][p]), then scale[32] float, then corr[32] int32 = 128 · Σ_k q[k][p].
    PD_I8_PANEL_BLOCK_BYTES = 32 * 32 + 32 * 4 + 32 * 4,
};

/// C[r, p] = f · scale[r] + bias[r] + addend[r·ldc + p] for r < rows, p < columns, each
/// operation rounded on its own (no fused multiply-add in the epilogue), where
///   f = Σ_b float(s_b) · xscale_b[p] over the blocks b = 0 ..< blocks in order, f starting
///       at +0.0 and each term added by one fused multiply-add: f = fma(float(s_b), xscale_b[p], f);
///   s_b = Σ_{k in block b} A[r, k] · q_b[k, p] − corr_b[p], exact in int32 (= Σ w_q · x_q:
///       A holds each int8 weight plus 128 as uint8, the form x86's u8 × s8 dot products take;
///       corr_b removes the 128s; arm64's s8 × s8 `sdot` flips A back and skips corr).
///   a: rows of blocks · 32 uint8, `lda` bytes apart (a multiple of 4); 128 (weight 0) past
///      the real depth; rows up to the next multiple of PD_I8_TILE_ROWS must be readable (their
///      results are dropped).
///   b: column panels of `blocks` records of PD_I8_PANEL_BLOCK_BYTES each, `b_panel_stride`
///      bytes apart (64-byte aligned); q, scale and corr are 0 for columns past `columns` and
///      q for k past the real depth.
///   last_quads (1 … 8): the quads of k (4 each) of the last block; its quads past them count
///      for nothing and their bytes of B are not read (A rows stay readable to the block's
///      end): attention's head depth of 40 is one block and two quads, not two blocks. Every
///      other block has all 8. corr_b of the last block covers only its quads.
///   scale, bias, addend may be NULL (1, 0, 0); addend has row stride ldc and may be c.
/// `portable` is plain C for every CPU and the reference of the others, which are bitwise equal
/// to it (integer sums are exact in any order; the f32 steps are fixed above).
void pd_i8_gemm_block_portable(int rows, int columns, int blocks, int last_quads, const uint8_t *a, ptrdiff_t lda,
                               const uint8_t *b, ptrdiff_t b_panel_stride, float *c, ptrdiff_t ldc,
                               const float *scale, const float *bias, const float *addend);
/// The same product with vpdpbusd (i8_vnni.c), bitwise equal to `portable`: AVX512-VNNI on zmm
/// (6 × 32 tiles) and AVX-VNNI on ymm (3 × 16 tiles). Only call them where `pd_cpu_features()`
/// reports PD_CPU_AVX512_VNNI or PD_CPU_AVX_VNNI respectively (stubs off x86_64). B is read
/// with unaligned loads, A a 32-bit quad at a time: neither needs more alignment than above.
void pd_i8_gemm_block_avx512vnni(int rows, int columns, int blocks, int last_quads, const uint8_t *a, ptrdiff_t lda,
                                 const uint8_t *b, ptrdiff_t b_panel_stride, float *c, ptrdiff_t ldc,
                                 const float *scale, const float *bias, const float *addend);
void pd_i8_gemm_block_avxvnni(int rows, int columns, int blocks, int last_quads, const uint8_t *a, ptrdiff_t lda,
                              const uint8_t *b, ptrdiff_t b_panel_stride, float *c, ptrdiff_t ldc,
                              const float *scale, const float *bias, const float *addend);

/// One B record of the activations' quantisation (I8Gemm.quantize's rule, 16 columns per
/// zmm; i8_quantize_avx512.c), bitwise equal to the Swift twin: columns 0–15 from
/// `low_half`, 16–31 from `high_half`, row i < depth at + i · row_stride; columns at or past
/// `columns` are zero and not read, as are rows at or past `depth` (≤ 32). AVX-512 F only
/// (stub off x86_64).
void pd_i8_quantize_record_avx512(const float *low_half, const float *high_half, ptrdiff_t row_stride, int depth,
                                  int columns, uint8_t *record);

/// The same product with ARMv8.2's `sdot` (i8_sdot.c; 4-row × 16-column tiles), bitwise equal
/// to `portable` and tested against it under qemu by tools/test-arm64.sh. Call it only where
/// `pd_i8_sdot_available()` returns 1 (the CPU reports HWCAP_ASIMDDP); off arm64 the
/// availability is 0 and the product a stub that does nothing.
int pd_i8_sdot_available(void);
void pd_i8_gemm_block_sdot(int rows, int columns, int blocks, int last_quads, const uint8_t *a, ptrdiff_t lda,
                           const uint8_t *b, ptrdiff_t b_panel_stride, float *c, ptrdiff_t ldc,
                           const float *scale, const float *bias, const float *addend);

/// CPUs in this process's affinity mask (taskset, cpusets; cpu_budget.c), or 0 when it cannot
/// be read (more than 1024 CPUs).
int pd_affinity_cpu_count(void);

#ifdef __cplusplus
}
#endif

#endif
