/* The fused step kernel, written once and compiled per instruction set by kernel.c.
 *
 * A template, hence no include guard: kernel.c includes this file several times, each time under a
 * different `#pragma GCC target` and with these macros set:
 *   LANES   floats per vector (16 for AVX-512, 8 for AVX2, 4 for the portable build)
 *   MB      batch rows per register tile (the tile keeps MB x 4 accumulator vectors in registers)
 *   BLOCKED 1: batches of BR rows and more may take the blocked path (Job.packed set)
 *   WT      the weights' type: float, or uint16_t for bfloat16 weights (the high half of a float32: a
 *           load widens them to float32, so products and sums stay float32 and the bytes read halve;
 *           see wload2 in fused_accumulate.h for their layout)
 *   NAME(x) x with the instruction set's (and weight type's) suffix, so the copies do not collide
 *   PAIRS   1 (optional): the AVX512_BF16 copy, whose products are dot_kernel.h's (BF16_DOT Jobs)
 *   QUADS   1 (optional): the AVX512_VNNI and AVX2 int8 copies, whose products are int8_kernel.h's (INT8_DOT Jobs)
 * Each copy defines static functions only; its entry point is NAME(run)(const Job *).
 *
 * One call of NAME(run) computes, for every batch row b and every panel p of packed weights,
 *
 *     acc[s] = bias[p][s] + sum_k a[b][k] * W[p][k][s]          (4 slots s of LANES columns)
 *
 * where a[b] is the row [x[b], h[b]] (read in place, never copied), and then applies the
 * layer's epilogue to the accumulators while they are still in registers:
 *
 *     LSTM   slots i, f, g, o of LANES units:  c' = σ(f)·c + σ(i)·tanh(g),  h' = σ(o)·tanh(c')
 *     GRU    slots z, r, n_x, n_h (reset after): n = tanh(n_x + σ(r)·n_h),  h' = σ(z)·h + (1-σ(z))·n
 *     ACT    slots are 4·LANES consecutive units: y = act(acc)   (Dense, SimpleRNN)
 *
 * σ and tanh take one e^x each (a degree-5 polynomial: see gate_math.h) and one division, within 2e-7 of the
 * exact values, σ(a)·tanh(b) two e^x and one division, within 3e-7; on a Zen 4 the LSTM epilogue thus cost ~4%
 * of a step at batch 256, not ~9% (before gate_math.h's shorter chains, which took a third to a half off it on
 * a Zen 3).
 *
 * Two ways to get there. Small batches (and builds with BLOCKED 0) keep an MB-row tile's 4 slots in
 * registers for all K inputs. With BLOCKED 1, batches of BR rows and more pack their rows into tiles
 * and run the product in cache-sized blocks (see "the blocked path" below); on the AVX2 machine this
 * took an LSTM(512) step from ~45 to ~60-75 GFLOP/s per core. A narrow Dense or SimpleRNN layer (at most
 * 4 units) from 8 rows on takes neither: one dot product per output along the inputs (fused_narrow.h).
 */
#if !defined(LANES) || !defined(MB) || !defined(BLOCKED) || !defined(NAME) || !defined(WT)
#error "fused_kernel.h is a template: define LANES, MB, BLOCKED, WT and NAME(x) before including it (see kernel.c)"
#endif

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "kernel.h"
#include "work_pool.h"

typedef float NAME(vf) __attribute__((vector_size(LANES * 4)));
typedef int NAME(vi) __attribute__((vector_size(LANES * 4)));
#define VF NAME(vf)
#define VI NAME(vi)
/* The AVX-512 copies: NAME(tile_low) for a gated layer's last panel of few units, on half vectors */
#if LANES == 16
#define LOW_HALVES 1
typedef float NAME(vh) __attribute__((vector_size(LANES * 2)));
#else
#define LOW_HALVES 0
#endif

static inline __attribute__((always_inline)) VF NAME(load)(const float *p) {
    VF v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline __attribute__((always_inline)) void NAME(store)(float *p, VF v) { memcpy(p, &v, sizeof v); }

static inline __attribute__((always_inline)) VF NAME(splat)(float a) { return (VF){0} + a; }

#if PAIRS
#include "dot_kernel.h"
#elif QUADS
#include "int8_kernel.h"
#endif
#if PAIRS || QUADS
/* Every row of the Job into Job.packed (NAME(round_rows): bfloat16 pairs, or int8 quads and their scales), before
 * any tile: on this thread for a few rows, else shared like the tiles. The row-block path rounds each block's rows
 * as it reaches them instead (NAME(round_block)). */
static void NAME(round_all_rows)(const Job *job) {
    if (job->threads <= 1 || job->batch < 64) {
        NAME(round_rows)(job, 0, job->batch, NULL);
        return;
    }
    const long share = 2L * job->threads;
    parallel_range(job, job->batch, (job->batch + share - 1) / share, NAME(round_rows), NULL);
}
#endif

static inline __attribute__((always_inline)) VF NAME(select)(VI mask, VF yes, VF no) {
    return (VF)(((VI)yes & mask) | ((VI)no & ~mask));
}

#include "gate_math.h"

/* Read `n` floats (n <= LANES) into a vector, zeros after them. */
static inline __attribute__((always_inline)) VF NAME(load_part)(const float *p, int n) {
    if (n >= LANES) return NAME(load)(p);
    float tmp[LANES] = {0};
    memcpy(tmp, p, (size_t)(n > 0 ? n : 0) * sizeof(float));
    return NAME(load)(tmp);
}

static inline __attribute__((always_inline)) void NAME(store_part)(float *p, VF v, int n) {
    if (n >= LANES) {
        NAME(store)(p, v);
    } else if (n > 0) {
        float tmp[LANES];
        NAME(store)(tmp, v);
        memcpy(p, tmp, (size_t)n * sizeof(float));
    }
}

/* NAME(wload2) and NAME(accumulate), on LANES-float vectors; the AVX-512 float32 and bf16-widen copies also
 * have NAME(wload2_low) and NAME(accumulate_low), the same on the low halves of the slots' vectors (see
 * NAME(tile_low)). */
#define V VF
#define ACC(x) NAME(x)
#include "fused_accumulate.h"
#undef V
#undef ACC
#if LOW_HALVES
#define V NAME(vh)
#define ACC(x) NAME(x##_low)
#include "fused_accumulate.h"
#undef V
#undef ACC
#endif

/* The layer's epilogue for batch rows r0..r0+count-1 of panel p, from their 4 accumulator vectors each (which it
 * may overwrite). A gated layer's runs in two passes over the rows: each pass's chain of dependent operations is
 * two e^x and a division, half the chain of one row's whole epilogue, so the CPU overlaps more rows of it. On a
 * Zen 3 (AVX2, one thread, 256 rows) the epilogue of an LSTM(200) step took 95 µs in one pass and 66-75 in two,
 * of LSTM(100) 51 and 32 (before gate_math.h's shorter e^x and σ(a)·tanh(b): 124-127 and 67-68). */
static inline __attribute__((always_inline)) void NAME(finish_rows)(const Job *job, int p, int r0, const int count,
                                                                    VF acc[][4]) {
    const int u0 = p * LANES, n = job->units - u0;
    if (job->epilogue == EPI_LSTM) {
#pragma GCC unroll 8
        for (int m = 0; m < count; m++) { /* c' = σ(f)·c + σ(i)·tanh(g), into acc[m][1] */
            const size_t row = (size_t)(r0 + m);
            const VF c = NAME(load_part)(job->c + row * job->c_stride + u0, n);
            acc[m][1] = NAME(sigmoid)(acc[m][1]) * c + NAME(sigmoid_tanh)(acc[m][0], acc[m][2]);
            NAME(store_part)(job->out_c + row * job->out_c_stride + u0, acc[m][1], n);
        }
#pragma GCC unroll 8
        for (int m = 0; m < count; m++) /* h' = σ(o)·tanh(c') */
            NAME(store_part)(job->out + (size_t)(r0 + m) * job->out_stride + u0,
                             NAME(sigmoid_tanh)(acc[m][3], acc[m][1]), n);
    } else if (job->epilogue == EPI_GRU) {
#pragma GCC unroll 8
        for (int m = 0; m < count; m++) { /* z into acc[m][0], n's pre-activation n_x + σ(r)·n_h into acc[m][2] */
            acc[m][0] = NAME(sigmoid)(acc[m][0]);
            acc[m][2] += NAME(sigmoid)(acc[m][1]) * acc[m][3];
        }
#pragma GCC unroll 8
        for (int m = 0; m < count; m++) { /* h' = z·h + (1 - z)·tanh(n) */
            const size_t row = (size_t)(r0 + m);
            const VF h = NAME(load_part)(job->h + row * job->h_stride + u0, n), z = acc[m][0];
            NAME(store_part)(job->out + row * job->out_stride + u0, z * h + (1.0f - z) * NAME(tanh)(acc[m][2]), n);
        }
    } else {
#pragma GCC unroll 8
        for (int m = 0; m < count; m++) {
            float *out = job->out + (size_t)(r0 + m) * job->out_stride;
            for (int s = 0; s < 4 && (p * 4 + s) * LANES < job->units; s++) { /* a last panel's used slots */
                const int v0 = (p * 4 + s) * LANES;
                NAME(store_part)(out + v0, NAME(activate)(job->activation, acc[m][s]), job->units - v0);
            }
        }
    }
}

/* The input rows x[b] and h[b] of tile rows r0..r0+mb-1. */
static inline __attribute__((always_inline)) void NAME(tile_rows)(const Job *job, int r0, const int mb,
                                                                  const float *xrow[], const float *hrow[]) {
#pragma GCC unroll 8
    for (int m = 0; m < mb; m++) {
        xrow[m] = job->x + (size_t)(r0 + m) * job->x_stride;
        hrow[m] = job->h + (size_t)(r0 + m) * job->h_stride;
    }
}

/* One tile: batch rows r0..r0+mb-1 of panel p, all K at once, its first `slots` slots (4 but in a Dense or
 * SimpleRNN layer's last panel: NAME(slots_of)). Inlined with constant mb and slots, so the accumulators
 * live in registers. */
static inline __attribute__((always_inline)) void NAME(tile)(const Job *job, int p, int r0, const int mb,
                                                             const int slots) {
    const int K1 = job->k_x, K2 = job->k_h, K = K1 + K2;
    const WT *w = (const WT *)job->weights + (size_t)p * K * 4 * LANES;
    const float *bias = job->bias + (size_t)p * 4 * LANES;
    VF acc[MB][4];
#pragma GCC unroll 8
    for (int m = 0; m < mb; m++)
        for (int s = 0; s < 4; s++) acc[m][s] = s < slots ? NAME(load)(bias + s * LANES) : NAME(splat)(0.0f);
#if PAIRS
    (void)w;
    NAME(tile_pairs)(job, p, r0, acc, mb, slots);
#elif QUADS
    (void)w;
    NAME(tile_quads)(job, p, r0, acc, mb, slots);
#else
    const float *xrow[MB], *hrow[MB];
    NAME(tile_rows)(job, r0, mb, xrow, hrow);
    NAME(accumulate)(acc, xrow, K1, w, mb, slots);
    NAME(accumulate)(acc, hrow, K2, w + (size_t)K1 * 4 * LANES, mb, slots);
#endif
    NAME(finish_rows)(job, p, r0, mb, acc);
}

#if LOW_HALVES
#include "fused_low.h"
#endif

/* The slots panel p computes: a Dense or SimpleRNN panel holds 4 slots of LANES units, of which the last
 * panel may need fewer (Dense(1) one); an LSTM or GRU panel needs all 4 (its gates). */
static inline int NAME(slots_of)(const Job *job, int p) {
    const int left = job->units - p * 4 * LANES;
    return job->epilogue != EPI_ACT || left >= 4 * LANES ? 4 : (left + LANES - 1) / LANES;
}

#if BLOCKED
/* ---- the blocked path, for batches of BR rows and more ------------------------------------------
 *
 * First the batch's input rows [x, h] are copied into tiles of BR rows, k-major (`packed[t][k][m]`,
 * zeros past the last row), so that a tile's product reads one sequential stream. A work item is
 * then a block of up to RB_MAX rows and one panel. Its products run in k-blocks of KC inputs and in
 * passes of BV of the panel's 4 slots: a pass's KC·BV weight vectors stay in L1 while every tile of
 * the block reads them, and the block's packed rows stay in L2 for the next panel. The partial sums
 * wait in `z` (RB_MAX rows of 4 slots) until the last k-block; the epilogue reads them from there.
 * BR·BV accumulators, BV weight vectors and a broadcast fill the 16 registers. */

/* z[m] = (first ? bias : z[m]) + sum over k < n of a[k][m] · w[k][v], for v < BV and BR rows.
 * Meanwhile, next_n lines of weights from `next` on (one per k, 4·LANES floats apart) are fetched into cache. */
static void NAME(block_tile)(float *z, const float *a, int n, const WT *w, const float *bias, int first,
                             const WT *next, int next_n) {
    VF acc[BR][BV];
    for (int m = 0; m < BR; m++)
        for (int v = 0; v < BV; v++) acc[m][v] = NAME(load)((first ? bias : z + m * 4 * LANES) + v * LANES);
#pragma GCC unroll 4
    for (int k = 0; k < n; k++, w += 4 * LANES, a += BR) {
        if (k < next_n) __builtin_prefetch(next + (size_t)k * 4 * LANES);
        VF wv[BV];
        NAME(wload2)(w, &wv[0], &wv[1]); /* BV is 2: one pair of slots */
        for (int m = 0; m < BR; m++)
            for (int v = 0; v < BV; v++) acc[m][v] += a[m] * wv[v];
    }
    for (int m = 0; m < BR; m++)
        for (int v = 0; v < BV; v++) NAME(store)(z + m * 4 * LANES + v * LANES, acc[m][v]);
}

/* Tiles t0..t1-1 of the batch's rows into `packed`. */
static void NAME(pack_tiles)(const Job *job, float *packed, int t0, int t1) {
    const int K = job->k_x + job->k_h;
    for (int t = t0; t < t1; t++) {
        float *dst = packed + (size_t)t * K * BR;
        for (int m = 0; m < BR; m++) {
            const int row = t * BR + m;
            if (row >= job->batch) {
                for (int k = 0; k < K; k++) dst[k * BR + m] = 0.0f;
                continue;
            }
            const float *x = job->x + (size_t)row * job->x_stride, *h = job->h + (size_t)row * job->h_stride;
            for (int k = 0; k < job->k_x; k++) dst[k * BR + m] = x[k];
            for (int k = 0; k < job->k_h; k++) dst[(job->k_x + k) * BR + m] = h[k];
        }
    }
}

/* Rows r0..r0+count-1 (r0 a multiple of BR, count <= RB_MAX) of panel p. */
static void NAME(block_item)(const Job *job, const float *packed, int p, int r0, int count) {
    VF z[RB_MAX][4]; /* the rows' 4 slots' sums, as in block_tile's stores */
    const int K = job->k_x + job->k_h, tiles = (count + BR - 1) / BR;
    const WT *panel = (const WT *)job->weights + (size_t)p * K * 4 * LANES;
    const float *bias = job->bias + (size_t)p * 4 * LANES;
    const float *rows = packed + (size_t)r0 * K;
    const int slots = NAME(slots_of)(job, p);
    for (int k0 = 0; k0 < K; k0 += KC) {
        const int n = K - k0 < KC ? K - k0 : KC;
        for (int v0 = 0; v0 < slots; v0 += BV) {
            const WT *w = panel + (size_t)k0 * 4 * LANES + v0 * LANES;
            /* The last tile fetches the next pass's weights into cache (measured faster than spreading
             * the fetches over every tile): the other slots of this k-block, the next k-block or the
             * next panel. */
            const WT *next = w + BV * LANES;
            int next_n = n;
            if (v0 + BV >= slots) {
                const int next_k0 = k0 + KC < K ? k0 + KC : 0;
                next = panel + (size_t)(next_k0 == 0 ? K : next_k0) * 4 * LANES;
                next_n = next_k0 > 0 ? (K - next_k0 < KC ? K - next_k0 : KC) : p + 1 < job->panels ? n : 0;
            }
            for (int t = 0; t < tiles; t++)
                NAME(block_tile)((float *)(z[t * BR] + v0), rows + ((size_t)t * K + k0) * BR, n, w,
                                 bias + v0 * LANES, k0 == 0, next, t == tiles - 1 ? next_n : 0);
        }
    }
    NAME(finish_rows)(job, p, r0, count, z);
}

/* Rows per block: as many as keep a block's packed rows (RB·K floats) within BLOCK_FLOATS (L2), in
 * whole tiles. */
static int NAME(block_rows)(const Job *job) {
    const int K = job->k_x + job->k_h;
    int rows = (BLOCK_FLOATS / K) / BR * BR;
    if (rows > RB_MAX) rows = RB_MAX;
    return rows < BR ? BR : rows;
}

/* Work item t, in block-major order: the threads share one block's rows while each reads different panels. */
static void NAME(block_item_at)(const Job *job, long t, int rb) {
    const int r0 = (int)(t / job->panels) * rb, p = (int)(t % job->panels);
    NAME(block_item)(job, job->packed, p, r0, job->batch - r0 < rb ? job->batch - r0 : rb);
}

static void NAME(pack_range)(const Job *job, long lo, long hi, const void *ctx) {
    (void)ctx;
    NAME(pack_tiles)(job, job->packed, (int)lo, (int)hi);
}

static void NAME(item_range)(const Job *job, long lo, long hi, const void *ctx) {
    const int rb = *(const int *)ctx;
    for (long t = lo; t < hi; t++) NAME(block_item_at)(job, t, rb);
}

static void NAME(run_blocked)(const Job *job) {
    const int rb = NAME(block_rows)(job), blocks = (job->batch + rb - 1) / rb;
    const long tiles = (job->batch + BR - 1) / BR, items = (long)blocks * job->panels;
    const long share = 2L * job->threads;
    parallel_range(job, tiles, (tiles + share - 1) / share, NAME(pack_range), NULL); /* every tile, then: */
    const long chunk = items / (16L * job->threads) > 1 ? items / (16L * job->threads) : 1;
    parallel_range(job, items, chunk, NAME(item_range), &rb);
}
#endif

/* tile_fns[mb][shape]: NAME(tile) for each tile height and slot count (shape slots - 1), and NAME(tile_low)
 * (shape TILE_LOW) where this copy has it. */
#define TILE_LOW 4
#define TILE_FIXED(M, S)                                                                                   \
    static void NAME(tile_##M##_##S)(const Job *job, int p, int r0) { NAME(tile)(job, p, r0, M, S); }
#if LOW_HALVES
#define TILE_ROW(M)                                                                                        \
    TILE_FIXED(M, 1) TILE_FIXED(M, 2) TILE_FIXED(M, 3) TILE_FIXED(M, 4)                                    \
    static void NAME(tile_##M##_low)(const Job *job, int p, int r0) { NAME(tile_low)(job, p, r0, M); }
#define TILE_FNS(M)                                                                                        \
    {NAME(tile_##M##_1), NAME(tile_##M##_2), NAME(tile_##M##_3), NAME(tile_##M##_4), NAME(tile_##M##_low)}
#else
#define TILE_ROW(M) TILE_FIXED(M, 1) TILE_FIXED(M, 2) TILE_FIXED(M, 3) TILE_FIXED(M, 4)
#define TILE_FNS(M) {NAME(tile_##M##_1), NAME(tile_##M##_2), NAME(tile_##M##_3), NAME(tile_##M##_4), NULL}
#endif
TILE_ROW(1)
TILE_ROW(2)
#if MB > 2
TILE_ROW(3)
#endif
#if MB > 3
TILE_ROW(4)
TILE_ROW(5)
TILE_ROW(6)
#endif

static void (*const NAME(tile_fns)[][5])(const Job *, int, int) = {
    {NULL}, TILE_FNS(1), TILE_FNS(2),
#if MB > 2
    TILE_FNS(3),
#endif
#if MB > 3
    TILE_FNS(4), TILE_FNS(5), TILE_FNS(6),
#endif
};

/* Panel p's shape in tile_fns. */
static inline int NAME(shape_of)(const Job *job, int p) {
    if (LOW_HALVES && job->epilogue != EPI_ACT && job->units - p * LANES <= LANES / 2) return TILE_LOW;
    return NAME(slots_of)(job, p) - 1;
}
#undef TILE_FIXED
#undef TILE_ROW
#undef TILE_FNS
#undef TILE_LOW

#if !PAIRS && !QUADS
#include "fused_narrow.h"
#endif
#include "fused_split.h"

#undef VF
#undef VI
#undef LOW_HALVES
