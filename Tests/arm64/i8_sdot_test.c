// Unit test of the ARM64 `sdot` int8 block product (pd_i8_gemm_block_sdot, i8_sdot.c)
// against the portable reference (pd_i8_gemm_block_portable, i8_gemm.c), contract in
// CKernels.h: every output float must be equal (`==` and bit for bit), and nothing outside
// C's rows × columns may change. The reference is itself checked against a naive computation
// of the contract's definition, from the unpacked operands, so a wrong reference cannot hide
// a wrong kernel. A, B, a separate addend and C's trailing padding end at an unreadable page:
// a read past what the contract allows (or a write far past C) is reported as a fault.
// Built and run by tools/test-arm64.sh (cross-compiled, run under qemu-aarch64-static on
// x86_64 hosts), with -ffp-contract=off: the contract's epilogue has no fused multiply-add.
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "CKernels.h"

enum { W = PD_I8_PANEL_COLUMNS, D = PD_I8_BLOCK_DEPTH, RECORD = PD_I8_PANEL_BLOCK_BYTES, PAD = 16 };
static const uint32_t sentinel = 0x7FA5A5A5u;  // a NaN no product writes

static uint64_t state = 0x9E3779B97F4A7C15ull;
static uint32_t next_u32(void) {
    state ^= state << 13; state ^= state >> 7; state ^= state << 17;
    return (uint32_t)(state >> 32);
}
static int uniform(int lo, int hi) { return lo + (int)(next_u32() % (uint32_t)(hi - lo + 1)); }
// Values of varied magnitude: mantissa in [1, 2), exponent in [lo, hi].
static float magnitude(int lo, int hi) { return ldexpf(1.0f + (float)(next_u32() >> 8) / 16777216.0f, uniform(lo, hi)); }

// `bytes` ending where an unreadable page begins (64-byte aligned when `bytes` is a multiple of 64).
typedef struct { void *map; size_t length; } mapping;
static void *guarded(size_t bytes, mapping *m) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE), body = (bytes + page - 1) / page * page;
    if (body == 0) body = page;
    m->length = body + page;
    m->map = mmap(NULL, m->length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m->map == MAP_FAILED || mprotect((char *)m->map + body, page, PROT_NONE) != 0) {
        perror("i8_sdot_test: mmap");
        exit(2);
    }
    return (char *)m->map + body - bytes;
}
static size_t round64(size_t n) { return (n + 63) / 64 * 64; }

static uint32_t bits(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
static float from_bits(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }

// The contract's definition, element by element, from the unpacked operands: w[r][k] int8
// weights, x[k][p] int8 activations, xs[b][p] their block scales. Volatile stores keep each
// epilogue step rounded on its own whatever the compiler's contraction setting.
static float naive(int r, int p, int blocks, int depth, const int8_t *w, int wk, const int8_t *x, int columns,
                   const float *xs, const float *scale, const float *bias, const float *addend, ptrdiff_t ldc,
                   int *overflow) {
    float f = 0.0f;
    for (int b = 0; b < blocks; b++) {
        int64_t s = 0;
        for (int k = b * D; k < (b + 1) * D && k < depth; k++) s += (int64_t)w[r * wk + k] * x[k * columns + p];
        if (s != (int32_t)s) *overflow = 1;
        f = fmaf((float)(int32_t)s, xs[b * columns + p], f);
    }
    volatile float product = f * (scale ? scale[r] : 1.0f);
    volatile float value = product + (bias ? bias[r] : 0.0f);
    if (addend) value = value + addend[r * ldc + p];
    return value;
}

typedef struct { int scale, bias, addend, alias; } epilogue;

static sigjmp_buf fault_jump;
static void on_fault(int sig) { siglongjmp(fault_jump, sig); }

// Both products on the same operands into their own C: 0, or 1 (sdot) or 2 (portable) when
// that one touched an unreadable page.
static int run_products(int rows, int columns, int blocks, int last_quads, const uint8_t *a, ptrdiff_t lda, const uint8_t *b,
                        ptrdiff_t stride, float *ck, float *cp, ptrdiff_t ldc, const float *scale, const float *bias,
                        const float *addend, int alias) {
    volatile int stage = 1;
    if (sigsetjmp(fault_jump, 1) != 0) return stage;
    pd_i8_gemm_block_sdot(rows, columns, blocks, last_quads, a, lda, b, stride, ck, ldc, scale, bias, alias ? ck : addend);
    stage = 2;
    pd_i8_gemm_block_portable(rows, columns, blocks, last_quads, a, lda, b, stride, cp, ldc, scale, bias, alias ? cp : addend);
    return 0;
}

int main(void) {
    if (!pd_i8_sdot_available()) {
        fprintf(stderr, "i8_sdot_test: the CPU (or emulator) reports no dot-product extension\n");
        return 1;
    }
    const int row_counts[] = {1, 4, 5, 12, 13, 25}, column_counts[] = {1, 7, 16, 31, 32, 33, 100};
    // (blocks, quads of the last one): whole blocks, and partial last blocks (attention's
    // d = 40 ends after 2 quads), whose skipped bytes of B are garbage below.
    const int depths[][2] = {{1, 8}, {2, 8}, {12, 8}, {1, 2}, {2, 2}, {12, 5}};
    // Every combination of scale, bias and addend, and the addend as C itself.
    epilogue epilogues[12];
    int ne = 0;
    for (int m = 0; m < 8; m++) epilogues[ne++] = (epilogue){m & 1, (m >> 1) & 1, (m >> 2) & 1, 0};
    for (int m = 0; m < 4; m++) epilogues[ne++] = (epilogue){m & 1, (m >> 1) & 1, 1, 1};

    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_fault;
    sigemptyset(&action.sa_mask);
    sigaction(SIGSEGV, &action, NULL);
    sigaction(SIGBUS, &action, NULL);

    int shapes = 0, failed = 0;
    long compared = 0;
    for (size_t ri = 0; ri < sizeof row_counts / sizeof *row_counts; ri++)
    for (size_t ci = 0; ci < sizeof column_counts / sizeof *column_counts; ci++)
    for (size_t bi = 0; bi < sizeof depths / sizeof *depths; bi++) {
        int rows = row_counts[ri], columns = column_counts[ci], blocks = depths[bi][0], last_quads = depths[bi][1];
        // The k the product covers; a shorter real depth for some shapes: A 128 and q 0 past it.
        int covered = (blocks - 1) * D + 4 * last_quads;
        int depth = covered - (blocks == 2 ? (last_quads == 8 ? 9 : 3) : blocks == 12 ? 1 : 0), wk = blocks * D;
        int readable = (rows + PD_I8_TILE_ROWS - 1) / PD_I8_TILE_ROWS * PD_I8_TILE_ROWS;
        int panels = (columns + W - 1) / W;

        // Unpacked operands.
        int8_t *w = malloc((size_t)rows * wk), *x = malloc((size_t)wk * columns);
        float *xs = malloc(sizeof(float) * blocks * columns), *scale = malloc(sizeof(float) * rows);
        float *bias = malloc(sizeof(float) * rows);
        for (int r = 0; r < rows; r++)
            for (int k = 0; k < wk; k++) w[r * wk + k] = (int8_t)(k < depth ? uniform(-127, 127) : 0);
        for (int k = 0; k < wk; k++)
            for (int p = 0; p < columns; p++) x[k * columns + p] = (int8_t)(k < depth ? uniform(-127, 127) : 0);
        if (blocks == 12) {  // extreme block sums: −127·127·32 and +127·127·32
            for (int k = 5 * D; k < 6 * D; k++) {
                w[k] = -127;
                x[k * columns] = 127;
                if (rows > 1) w[wk + k] = 127;
                if (columns > 1) x[k * columns + 1] = 127;
            }
        }
        if (columns > 2)  // a zero column: f = +0, × a negative row scale = −0, + bias 0 = +0
            for (int k = 0; k < wk; k++) x[k * columns + 2] = 0;
        for (int i = 0; i < blocks * columns; i++) xs[i] = magnitude(-30, 6);  // activation scales: positive
        for (int r = 0; r < rows; r++) {
            scale[r] = (next_u32() & 1 ? -1.0f : 1.0f) * magnitude(-12, 2);
            bias[r] = (next_u32() & 1 ? -1.0f : 1.0f) * magnitude(-10, 3);
        }

        // A: weight + 128 as uint8, 128 past the depth, arbitrary bytes past the covered quads;
        // rows up to the next multiple of PD_I8_TILE_ROWS readable (arbitrary bytes); the bytes
        // between rows arbitrary.
        ptrdiff_t lda = wk + (columns % 2 ? 8 : 0);
        size_t a_bytes = (size_t)(readable - 1) * lda + wk;
        mapping am, bm;
        uint8_t *a = guarded(a_bytes, &am);
        for (size_t i = 0; i < a_bytes; i++) a[i] = (uint8_t)next_u32();
        for (int r = 0; r < rows; r++)
            for (int k = 0; k < covered; k++) a[r * lda + k] = (uint8_t)(w[r * wk + k] + 128);  // garbage past it

        // B: panels of `blocks` records, 64 arbitrary bytes between panels.
        ptrdiff_t stride = (ptrdiff_t)blocks * RECORD + 64;
        size_t b_bytes = (size_t)(panels - 1) * stride + (size_t)blocks * RECORD;
        uint8_t *bpack = guarded(round64(b_bytes), &bm);
        for (size_t i = 0; i < b_bytes; i++) bpack[i] = (uint8_t)next_u32();
        for (int pn = 0; pn < panels; pn++)
            for (int b = 0; b < blocks; b++) {
                uint8_t *record = bpack + pn * stride + (ptrdiff_t)b * RECORD;
                float rscale[W];
                int32_t corr[W];
                for (int p = 0; p < W; p++) {
                    int col = pn * W + p, sum = 0;
                    for (int k = 0; k < D; k++) {
                        if (b * D + k >= covered) {  // skipped: garbage the kernel must not read
                            record[((k / 4) * W + p) * 4 + k % 4] = (uint8_t)(next_u32() | 1);
                            continue;
                        }
                        int8_t q = col < columns ? x[(b * D + k) * columns + col] : 0;
                        record[((k / 4) * W + p) * 4 + k % 4] = (uint8_t)q;
                        sum += q;
                    }
                    rscale[p] = col < columns ? xs[b * columns + col] : 0.0f;
                    corr[p] = 128 * sum;
                }
                memcpy(record + D * W, rscale, sizeof rscale);
                memcpy(record + D * W + sizeof rscale, corr, sizeof corr);
            }

        int bad_kernel = 0, bad_pad = 0, bad_ref = 0, overflow = 0, faults = 0;
        long floats = 0;
        for (int e = 0; e < ne; e++) {
            epilogue ep = epilogues[e];
            ptrdiff_t ldc = e % 2 ? columns : columns + 5;
            size_t total = PAD + (size_t)rows * ldc + PAD;
            mapping km, pm;
            uint32_t *ck = guarded(4 * total, &km), *cp = guarded(4 * total, &pm);
            for (size_t i = 0; i < total; i++) ck[i] = sentinel;
            // The addend: C's own values (alias) or its own array ending at an unreadable page.
            mapping dm = {0};
            float *add = NULL;
            if (ep.addend && !ep.alias) {
                size_t n = (size_t)(rows - 1) * ldc + columns;
                add = guarded(round64(4 * n), &dm);
                add = (float *)((char *)add + round64(4 * n) - 4 * n);
            }
            for (int r = 0; r < rows; r++)
                for (int p = 0; p < columns; p++) {
                    float v = (next_u32() & 1 ? -1.0f : 1.0f) * magnitude(-8, 8);
                    if (add) add[r * ldc + p] = v;
                    else if (ep.alias) ck[PAD + r * ldc + p] = bits(v);
                }
            memcpy(cp, ck, 4 * total);
            float *fk = (float *)(void *)(ck + PAD), *fp = (float *)(void *)(cp + PAD);
            // Expected values first: with the alias the addend is C before the call.
            float *expect = malloc(sizeof(float) * rows * columns);
            for (int r = 0; r < rows; r++)
                for (int p = 0; p < columns; p++)
                    expect[r * columns + p] = naive(r, p, blocks, depth, w, wk, x, columns, xs, ep.scale ? scale : NULL,
                                                    ep.bias ? bias : NULL, ep.alias ? fp : add, ldc, &overflow);
            const float *sk = ep.scale ? scale : NULL, *bk = ep.bias ? bias : NULL;
            int fault = run_products(rows, columns, blocks, last_quads, a, lda, bpack, stride, fk, fp, ldc, sk, bk, add, ep.alias);
            if (fault && faults++ == 0)
                printf("  epilogue %d: %s touched an unreadable page\n", e, fault == 1 ? "sdot" : "portable");
            for (size_t i = 0; !fault && i < total; i++) {
                ptrdiff_t j = (ptrdiff_t)i - PAD, r = j >= 0 ? j / ldc : -1, p = j >= 0 ? j % ldc : -1;
                if (j >= 0 && r < rows && p < columns) {
                    float kv = from_bits(ck[i]), pv = from_bits(cp[i]), nv = expect[r * columns + p];
                    int differ = !(kv == pv) || ck[i] != cp[i];
                    if (differ && bad_kernel++ == 0)
                        printf("  epilogue %d (scale %d bias %d addend %d alias %d) r %td p %td: sdot %.9g portable %.9g\n",
                               e, ep.scale, ep.bias, ep.addend, ep.alias, r, p, kv, pv);
                    if ((!(pv == nv) || cp[i] != bits(nv)) && bad_ref++ == 0)
                        printf("  epilogue %d r %td p %td: portable %.9g naive %.9g\n", e, r, p, pv, nv);
                    floats++;
                } else {
                    if (ck[i] != sentinel && bad_pad++ == 0)
                        printf("  epilogue %d: sdot wrote outside C at offset %td\n", e, j);
                    if (cp[i] != sentinel && bad_pad++ == 0)
                        printf("  epilogue %d: portable wrote outside C at offset %td\n", e, j);
                }
            }
            free(expect);
            munmap(km.map, km.length); munmap(pm.map, pm.length);
            if (dm.map) munmap(dm.map, dm.length);
        }
        int fail = bad_kernel || bad_pad || bad_ref || overflow || faults;
        printf("%s rows %d columns %d blocks %d, last %d quads (depth %d): %d epilogues, %ld floats: %d differ from portable, "
               "%d padding words changed, %d faults, portable %s naive%s\n",
               fail ? "FAIL" : "ok", rows, columns, blocks, last_quads, depth, ne, floats, bad_kernel, bad_pad, faults,
               bad_ref ? "differs from" : "equals", overflow ? ", int32 overflow in a block sum" : "");
        shapes++;
        failed += fail;
        compared += floats;
        munmap(am.map, am.length); munmap(bm.map, bm.length);
        free(w); free(x); free(xs); free(scale); free(bias);
    }
    printf("i8_sdot_test: %d shapes, %ld floats compared: %s\n", shapes, compared,
           failed ? "FAILED" : "all passed");
    if (failed) printf("i8_sdot_test: %d of %d shapes failed\n", failed, shapes);
    return failed ? 1 : 0;
}
