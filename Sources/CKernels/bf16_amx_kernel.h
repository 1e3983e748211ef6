// The AMX body of `pd_bf16_gemm_block`, included twice by bf16_amx.c: once on the real
// tile instructions (x86_64 with AMX-BF16), once on a scalar model of them that runs on any
// CPU, so the blocking, tails, strides and tile configuration are tested where no AMX
// exists. The includer defines:
//   PD_AMX_NAME(name)       the function name of this build
//   PD_AMX_TARGET           the build's target attribute (or nothing)
//   PD_TILE_CONFIG(cfg)     ldtilecfg of a 64-byte pd_tile_config
//   PD_TILE_ZERO(t), PD_TILE_LOAD(t, base, stride_bytes), PD_TILE_DOT(c, a, b),
//   PD_TILE_STORE(t, base, stride_bytes), PD_TILE_RELEASE()
//   PD_AMX_EPILOGUE_ROW(x, columns, s, bias, addend, y): y[j] = x[j] (· s) (+ bias)
//                           (+ addend[j]) for j < columns, the optional terms when non-NULL
//
// Blocking: 2 × 2 tiles of 16 × 16 f32 (tmm0–3) per 32 rows × one 32-column B panel, each
// step of 16 k pairs loading two A tiles (tmm4, tmm5: 16 rows × 16 pairs) and two B tiles
// (tmm6, tmm7: 16 pairs × 16 columns, the panel's halves, 128 bytes apart). The panel
// layout ([pairs][32] uint32) is AMX's B layout, so B is read in place. What a full tile
// cannot read in place goes through zero-padded copies: the last step when `pairs` is not
// a multiple of 16 (both operands: reading on would multiply the next row's data), and A
// rows past `rows` (the caller pads A to 12 rows, not 16).

PD_AMX_TARGET
void PD_AMX_NAME(pd_bf16_gemm_block_amx)(int rows, int columns, int pairs, const uint32_t *a, ptrdiff_t lda,
                                         const uint32_t *b, ptrdiff_t b_panel_stride, float *c, ptrdiff_t ldc,
                                         const float *scale, const float *bias, const float *addend) {
    if (rows <= 0 || columns <= 0) return;
    pd_tile_config config;
    pd_amx_config_2x2(&config);
    _Alignas(64) float acc[32 * 32];
    _Alignas(64) uint32_t a_copy[2][16 * 16];
    _Alignas(64) uint32_t b_copy[16 * 32];
    const int steps = pairs / 16, tail = pairs % 16;
    PD_TILE_CONFIG(&config);
    for (int p0 = 0; p0 < columns; p0 += 32) {
        const uint32_t *panel = b + (p0 / 32) * b_panel_stride;
        const int cols = columns - p0 < 32 ? columns - p0 : 32;
        if (tail) {
            memset(b_copy, 0, sizeof b_copy);
            memcpy(b_copy, panel + steps * 16 * 32, (size_t)tail * 32 * sizeof(uint32_t));
        }
        for (int r0 = 0; r0 < rows; r0 += 32) {
            const int rs = rows - r0 < 32 ? rows - r0 : 32;
            const int halves = rs > 16 ? 2 : 1;
            PD_TILE_ZERO(0);
            PD_TILE_ZERO(1);
            PD_TILE_ZERO(2);
            PD_TILE_ZERO(3);
            for (int step = 0; step <= steps; step++) {
                const int width = step < steps ? 16 : tail;  // pairs in this step
                if (width == 0) break;
                const uint32_t *a_tile[2];
                ptrdiff_t a_stride[2];
                for (int h = 0; h < halves; h++) {
                    const int valid = rs - 16 * h < 16 ? rs - 16 * h : 16;  // A rows present
                    const uint32_t *src = a + (ptrdiff_t)(r0 + 16 * h) * lda + step * 16;
                    if (width == 16 && valid == 16) {
                        a_tile[h] = src;
                        a_stride[h] = lda * (ptrdiff_t)sizeof(uint32_t);
                    } else {
                        memset(a_copy[h], 0, sizeof a_copy[h]);
                        for (int r = 0; r < valid; r++)
                            memcpy(a_copy[h] + r * 16, src + r * lda, (size_t)width * sizeof(uint32_t));
                        a_tile[h] = a_copy[h];
                        a_stride[h] = 16 * sizeof(uint32_t);
                    }
                }
                const uint32_t *b_tile = width == 16 ? panel + step * 16 * 32 : b_copy;
                PD_TILE_LOAD(6, b_tile, 32 * sizeof(uint32_t));
                PD_TILE_LOAD(7, b_tile + 16, 32 * sizeof(uint32_t));
                PD_TILE_LOAD(4, a_tile[0], a_stride[0]);
                PD_TILE_DOT(0, 4, 6);
                PD_TILE_DOT(1, 4, 7);
                if (halves == 2) {
                    PD_TILE_LOAD(5, a_tile[1], a_stride[1]);
                    PD_TILE_DOT(2, 5, 6);
                    PD_TILE_DOT(3, 5, 7);
                }
            }
            PD_TILE_STORE(0, acc, 32 * sizeof(float));
            PD_TILE_STORE(1, acc + 16, 32 * sizeof(float));
            if (halves == 2) {
                PD_TILE_STORE(2, acc + 16 * 32, 32 * sizeof(float));
                PD_TILE_STORE(3, acc + 16 * 32 + 16, 32 * sizeof(float));
            }
            for (int r = 0; r < rs; r++) {
                const int row = r0 + r;
                PD_AMX_EPILOGUE_ROW(acc + r * 32, cols, scale ? scale + row : NULL, bias ? bias + row : NULL,
                                    addend ? addend + row * ldc + p0 : NULL, c + row * ldc + p0);
            }
        }
    }
    PD_TILE_RELEASE();
}
