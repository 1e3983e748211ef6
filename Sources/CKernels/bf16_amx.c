// bf16 block product on AMX tiles (Intel Sapphire Rapids and later: TDPBF16PS multiplies a
// 16 × 32 bf16 tile by a 32 × 16 one into 16 × 16 f32 per instruction), behind the same
// contract as pd_bf16_gemm_block. The kernel body (bf16_amx_kernel.h) is built twice: on
// the tile instructions, and on a scalar model of them (tile configuration, loads, stores
// and the dot product as the Intel SDM defines them) that any CPU runs, which is how the
// tests check the body on machines without AMX. Linux hands out the tile state only on
// request (arch_prctl(ARCH_REQ_XCOMP_PERM)); pd_amx_bf16_available asks for it once, and
// then runs the kernel once on a product with a known exact result before any model uses
// it (a hypervisor can list AMX in cpuid and still fault on the tiles).

#include "CKernels.h"

#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>

#pragma clang fp contract(off)

/// The 64-byte operand of LDTILECFG (palette 1).
typedef struct {
    uint8_t palette, start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];  ///< bytes per row of each tile
    uint8_t rows[16];
} pd_tile_config;

_Static_assert(sizeof(pd_tile_config) == 64, "LDTILECFG reads 64 bytes");

/// tmm0–3: 16 × 16 f32 accumulators; tmm4–5: A, 16 rows × 16 pairs; tmm6–7: B, 16 pairs × 16 columns.
static void pd_amx_config_2x2(pd_tile_config *config) {
    memset(config, 0, sizeof *config);
    config->palette = 1;
    for (int t = 0; t < 8; t++) {
        config->rows[t] = 16;
        config->colsb[t] = 64;
    }
}

// MARK: the scalar model (every architecture)

/// One thread's tile registers, as the model holds them.
static _Thread_local struct {
    int configured;
    uint8_t rows[8];
    uint16_t colsb[8];
    _Alignas(64) uint8_t data[8][16][64];
} emu;

/// Operations the hardware would refuse (#UD, or a shape mismatch): the tests require none.
static atomic_long emu_faults;

long pd_amx_emulation_faults(void) { return atomic_load(&emu_faults); }

static int emu_ready(int t) {
    if (emu.configured && t >= 0 && t < 8 && emu.rows[t] > 0) return 1;
    atomic_fetch_add(&emu_faults, 1);
    return 0;
}

static void emu_config(const pd_tile_config *config) {
    memset(&emu, 0, sizeof emu);
    if (config->palette != 1) {
        atomic_fetch_add(&emu_faults, 1);
        return;
    }
    for (int t = 0; t < 8; t++) {
        if (config->rows[t] > 16 || config->colsb[t] > 64) {
            atomic_fetch_add(&emu_faults, 1);
            return;
        }
        emu.rows[t] = config->rows[t];
        emu.colsb[t] = config->colsb[t];
    }
    emu.configured = 1;
}

static void emu_zero(int t) {
    if (emu_ready(t)) memset(emu.data[t], 0, sizeof emu.data[t]);
}

// Rows and bytes past the configured shape read as zero, as on the hardware.
static void emu_load(int t, const void *base, ptrdiff_t stride) {
    if (!emu_ready(t)) return;
    memset(emu.data[t], 0, sizeof emu.data[t]);
    for (int r = 0; r < emu.rows[t]; r++) memcpy(emu.data[t][r], (const uint8_t *)base + r * stride, emu.colsb[t]);
}

static void emu_store(int t, void *base, ptrdiff_t stride) {
    if (!emu_ready(t)) return;
    for (int r = 0; r < emu.rows[t]; r++) memcpy((uint8_t *)base + r * stride, emu.data[t][r], emu.colsb[t]);
}

// bf16 → f32, with DAZ (AMX treats bf16 subnormal inputs as zero).
static float emu_bf16(uint16_t bits) {
    if ((bits & 0x7F80) == 0) bits &= 0x8000;
    uint32_t u = (uint32_t)bits << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// TDPBF16PS as the SDM writes it: for each k pair, C[m][n] += a.lo·b.lo, then += a.hi·b.hi,
// in f32 (each product of two bf16 values is exact in f32, so each step rounds once).
static void emu_dot(int c, int a, int b) {
    if (!emu_ready(c) || !emu_ready(a) || !emu_ready(b)) return;
    const int m_rows = emu.rows[c], n_cols = emu.colsb[c] / 4, k_pairs = emu.colsb[a] / 4;
    if (c == a || c == b || a == b || emu.rows[a] != m_rows || emu.rows[b] != k_pairs ||
        emu.colsb[b] != emu.colsb[c] || emu.colsb[c] % 4 || emu.colsb[a] % 4) {
        atomic_fetch_add(&emu_faults, 1);
        return;
    }
    for (int m = 0; m < m_rows; m++) {
        float *acc = (float *)emu.data[c][m];
        const uint16_t *arow = (const uint16_t *)emu.data[a][m];
        for (int k = 0; k < k_pairs; k++) {
            const uint16_t *brow = (const uint16_t *)emu.data[b][k];
            const float a0 = emu_bf16(arow[2 * k]), a1 = emu_bf16(arow[2 * k + 1]);
            for (int n = 0; n < n_cols; n++) {
                float s = acc[n];
                s += a0 * emu_bf16(brow[2 * n]);
                s += a1 * emu_bf16(brow[2 * n + 1]);
                acc[n] = s;
            }
        }
    }
}

static void emu_release(void) { emu.configured = 0; }

static void epilogue_row_scalar(const float *x, int columns, const float *s, const float *bias,
                                const float *addend, float *y) {
    for (int j = 0; j < columns; j++) {
        float v = x[j];
        if (s) v *= *s;
        if (bias) v += *bias;
        if (addend) v += addend[j];
        y[j] = v;
    }
}

#define PD_AMX_NAME(name) name##_emulated
#define PD_AMX_TARGET
#define PD_TILE_CONFIG(cfg) emu_config(cfg)
#define PD_TILE_ZERO(t) emu_zero(t)
#define PD_TILE_LOAD(t, base, stride) emu_load(t, base, stride)
#define PD_TILE_DOT(c, a, b) emu_dot(c, a, b)
#define PD_TILE_STORE(t, base, stride) emu_store(t, base, stride)
#define PD_TILE_RELEASE() emu_release()
#define PD_AMX_EPILOGUE_ROW epilogue_row_scalar
#include "bf16_amx_kernel.h"
#undef PD_AMX_NAME
#undef PD_AMX_TARGET
#undef PD_TILE_CONFIG
#undef PD_TILE_ZERO
#undef PD_TILE_LOAD
#undef PD_TILE_DOT
#undef PD_TILE_STORE
#undef PD_TILE_RELEASE
#undef PD_AMX_EPILOGUE_ROW

// MARK: the start-up probe

typedef void (*pd_bf16_block_fn)(int, int, int, const uint32_t *, ptrdiff_t, const uint32_t *, ptrdiff_t, float *,
                                 ptrdiff_t, const float *, const float *, const float *);

static sigjmp_buf probe_escape;

static void probe_escape_handler(int signal) {
    (void)signal;
    siglongjmp(probe_escape, 1);
}

static uint32_t bf16_pair_of_integers(int low, int high) {
    float f[2] = {(float)low, (float)high};  // small integers: exact in bf16, so truncation is exact
    uint32_t u[2];
    memcpy(u, f, sizeof u);
    return (u[0] >> 16) | (u[1] & 0xFFFF0000u);
}

// 1 when `kernel` computes a 17 × 33 × 34 product (two row tiles, a partial second panel, a
// tail step) with scale, bias and an addend aliasing C exactly: every operand a small
// integer, so every order of summation gives the same floats. 0 when it differs or the
// kernel raises SIGILL (caught here, the previous handler restored).
static int probe(pd_bf16_block_fn kernel) {
    enum { ROWS = 17, COLUMNS = 33, PAIRS = 17, PADDED_ROWS = 24, PANELS = 2 };
    uint32_t a[PADDED_ROWS * PAIRS] = {0}, b[PANELS * PAIRS * 32] = {0};
    float c[ROWS * COLUMNS], expected[ROWS * COLUMNS], scale[ROWS], bias[ROWS];
    for (int m = 0; m < ROWS; m++) {
        scale[m] = 0.5f;
        bias[m] = (float)(m - 8);
        for (int i = 0; i < PAIRS; i++) a[m * PAIRS + i] = bf16_pair_of_integers((m + 6 * i) % 7 - 3, (m + 6 * i + 3) % 7 - 3);
    }
    for (int n = 0; n < COLUMNS; n++)
        for (int i = 0; i < PAIRS; i++)
            b[(n / 32) * PAIRS * 32 + i * 32 + n % 32] = bf16_pair_of_integers((4 * i + n) % 5 - 2, (4 * i + n + 1) % 5 - 2);
    for (int m = 0; m < ROWS; m++)
        for (int n = 0; n < COLUMNS; n++) {
            int sum = 0;
            for (int i = 0; i < PAIRS; i++)
                sum += ((m + 6 * i) % 7 - 3) * ((4 * i + n) % 5 - 2) + ((m + 6 * i + 3) % 7 - 3) * ((4 * i + n + 1) % 5 - 2);
            c[m * COLUMNS + n] = (float)(m * n % 9);
            expected[m * COLUMNS + n] = (float)sum * 0.5f + bias[m] + c[m * COLUMNS + n];
        }
    struct sigaction guard, saved;
    memset(&guard, 0, sizeof guard);
    guard.sa_handler = probe_escape_handler;
    sigemptyset(&guard.sa_mask);
    if (sigaction(SIGILL, &guard, &saved) != 0) return 0;
    volatile int finished = 0;
    if (sigsetjmp(probe_escape, 1) == 0) {
        kernel(ROWS, COLUMNS, PAIRS, a, PAIRS, b, PAIRS * 32, c, COLUMNS, scale, bias, c);
        finished = 1;
    }
    sigaction(SIGILL, &saved, NULL);
    return finished && memcmp(c, expected, sizeof c) == 0;
}

static void probe_writes_zeros(int rows, int columns, int pairs, const uint32_t *a, ptrdiff_t lda, const uint32_t *b,
                               ptrdiff_t b_panel_stride, float *c, ptrdiff_t ldc, const float *scale,
                               const float *bias, const float *addend) {
    (void)pairs; (void)a; (void)lda; (void)b; (void)b_panel_stride; (void)scale; (void)bias; (void)addend;
    for (int r = 0; r < rows; r++) memset(c + r * ldc, 0, (size_t)columns * sizeof(float));
}

static void probe_illegal_instruction(int rows, int columns, int pairs, const uint32_t *a, ptrdiff_t lda,
                                      const uint32_t *b, ptrdiff_t b_panel_stride, float *c, ptrdiff_t ldc,
                                      const float *scale, const float *bias, const float *addend) {
    (void)rows; (void)columns; (void)pairs; (void)a; (void)lda; (void)b; (void)b_panel_stride; (void)c; (void)ldc;
    (void)scale; (void)bias; (void)addend;
#if defined(__x86_64__)
    __asm__ volatile("ud2");  // what a tile instruction the CPU or hypervisor refuses raises
#else
    raise(SIGILL);
#endif
}

int pd_amx_probe_selftest(int kernel) {
    switch (kernel) {
    case 0: return probe(pd_bf16_gemm_block_amx_emulated);
    case 1: return probe(probe_writes_zeros);
    default: return probe(probe_illegal_instruction);
    }
}

// MARK: the hardware build (x86_64)

#if defined(__x86_64__)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { ARCH_GET_XCOMP_PERM = 0x1022, ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };

static int request_tile_state(void) {
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) return 0;
    unsigned long granted = 0;
    if (syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &granted) != 0) return 0;
    return (granted >> XFEATURE_XTILEDATA) & 1;
}

int pd_amx_bf16_available(void) {
    static atomic_int state = -1;  // -1 unknown; the request is idempotent, so a race only repeats it
    int known = atomic_load(&state);
    if (known >= 0) return known;
    const unsigned needed = PD_CPU_AMX_BF16 | PD_CPU_AVX512_BF16;
    int available = (pd_cpu_features() & needed) == needed && request_tile_state() && probe(pd_bf16_gemm_block_amx);
    atomic_store(&state, available);
    return available;
}

#define PD_AMX_ISA "amx-tile,amx-bf16,avx512f,avx512bw,avx512vl"

__attribute__((target(PD_AMX_ISA)))
static inline void epilogue_row_avx512(const float *x, int columns, const float *s, const float *bias,
                                       const float *addend, float *y) {
    __mmask16 m0 = columns >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << columns) - 1);
    __mmask16 m1 = columns >= 32 ? (__mmask16)0xFFFF
                 : columns <= 16 ? (__mmask16)0 : (__mmask16)((1u << (columns - 16)) - 1);
    __m512 x0 = _mm512_load_ps(x), x1 = _mm512_load_ps(x + 16);
    if (s) {
        x0 = _mm512_mul_ps(x0, _mm512_set1_ps(*s));
        x1 = _mm512_mul_ps(x1, _mm512_set1_ps(*s));
    }
    if (bias) {
        x0 = _mm512_add_ps(x0, _mm512_set1_ps(*bias));
        x1 = _mm512_add_ps(x1, _mm512_set1_ps(*bias));
    }
    if (addend) {
        x0 = _mm512_add_ps(x0, _mm512_maskz_loadu_ps(m0, addend));
        x1 = _mm512_add_ps(x1, _mm512_maskz_loadu_ps(m1, addend + 16));
    }
    _mm512_mask_storeu_ps(y, m0, x0);
    _mm512_mask_storeu_ps(y + 16, m1, x1);
}

#define PD_AMX_NAME(name) name
#define PD_AMX_TARGET __attribute__((target(PD_AMX_ISA)))
#define PD_TILE_CONFIG(cfg) _tile_loadconfig(cfg)
#define PD_TILE_ZERO(t) _tile_zero(t)
#define PD_TILE_LOAD(t, base, stride) _tile_loadd(t, base, stride)
#define PD_TILE_DOT(c, a, b) _tile_dpbf16ps(c, a, b)
#define PD_TILE_STORE(t, base, stride) _tile_stored(t, base, stride)
#define PD_TILE_RELEASE() _tile_release()
#define PD_AMX_EPILOGUE_ROW epilogue_row_avx512
#include "bf16_amx_kernel.h"

#else

int pd_amx_bf16_available(void) { return 0; }

void pd_bf16_gemm_block_amx(int rows, int columns, int pairs, const uint32_t *a, ptrdiff_t lda,
                            const uint32_t *b, ptrdiff_t b_panel_stride, float *c, ptrdiff_t ldc,
                            const float *scale, const float *bias, const float *addend) {
    (void)rows; (void)columns; (void)pairs; (void)a; (void)lda; (void)b;
    (void)b_panel_stride; (void)c; (void)ldc; (void)scale; (void)bias; (void)addend;
}

#endif
