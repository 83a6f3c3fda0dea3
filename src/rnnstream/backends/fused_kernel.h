/* The fused step kernel, written once and compiled per instruction set by _fused.c.
 *
 * _fused.c includes this file several times, each time under a different `#pragma GCC target`
 * and with these macros set:
 *   LANES   floats per vector (16 for AVX-512, 8 for AVX2, 4 for the portable build)
 *   MB      batch rows per register tile (the tile keeps MB x 4 accumulator vectors in registers)
 *   NAME(x) x with the instruction set's suffix, so the copies do not collide
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
 */

typedef float NAME(vf) __attribute__((vector_size(LANES * 4)));
typedef int NAME(vi) __attribute__((vector_size(LANES * 4)));
#define VF NAME(vf)
#define VI NAME(vi)

static inline __attribute__((always_inline)) VF NAME(load)(const float *p) {
    VF v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline __attribute__((always_inline)) void NAME(store)(float *p, VF v) { memcpy(p, &v, sizeof v); }

static inline __attribute__((always_inline)) VF NAME(splat)(float a) { return (VF){0} + a; }

static inline __attribute__((always_inline)) VF NAME(select)(VI mask, VF yes, VF no) {
    return (VF)(((VI)yes & mask) | ((VI)no & ~mask));
}

/* e^x for x in [-87, 88]: x = n·ln2 + r with |r| <= ln2/2, e^r by its Taylor series to r^7 (relative
 * error below 1e-8), 2^n built in the exponent bits. */
static inline __attribute__((always_inline)) VF NAME(exp)(VF x) {
    const VF lo = NAME(splat)(-87.0f), hi = NAME(splat)(88.0f);
    x = NAME(select)(x < lo, lo, x);
    x = NAME(select)(x > hi, hi, x);
    const VF shifter = NAME(splat)(12582912.0f); /* 1.5·2^23: adding it rounds to an integer */
    VF n = (x * 1.44269504088896341f + shifter) - shifter;
    VF r = x - n * 0.693359375f - n * -2.12194440e-4f; /* ln2 split in two for an exact product */
    VF p = NAME(splat)(1.0f / 5040.0f);
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    VI bits = (__builtin_convertvector(n, VI) + 127) << 23;
    return p * (VF)bits;
}

static inline __attribute__((always_inline)) VF NAME(sigmoid)(VF x) { return 1.0f / (1.0f + NAME(exp)(-x)); }

/* tanh x = sign(x)·(1 - e^{-2|x|}) / (1 + e^{-2|x|}); absolute error ~1e-7 */
static inline __attribute__((always_inline)) VF NAME(tanh)(VF x) {
    const VI sign = (VI)NAME(splat)(-0.0f);
    VI ax_bits = (VI)x & ~sign;
    VF t = NAME(exp)((VF)ax_bits * -2.0f);
    VF y = (1.0f - t) / (1.0f + t);
    return (VF)((VI)y | ((VI)x & sign));
}

static inline __attribute__((always_inline)) VF NAME(activate)(int act, VF z) {
    switch (act) {
        case ACT_TANH: return NAME(tanh)(z);
        case ACT_SIGMOID: return NAME(sigmoid)(z);
        case ACT_RELU: return NAME(select)(z > 0.0f, z, NAME(splat)(0.0f));
        default: return z;
    }
}

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

/* acc[m][s] += sum over k < n of rows[m][k] · w[k][s], for mb rows (a constant after inlining). */
static inline __attribute__((always_inline)) void NAME(accumulate)(VF acc[][4], const float *const rows[], int n,
                                                                   const float *w, const int mb) {
    int k = 0;
    if (mb == 1) {
        /* One row has 4 accumulators: each FMA would wait for the last one (latency 4). A second set for
         * odd k keeps 8 in flight. */
        VF odd[4] = {{0}, {0}, {0}, {0}};
        for (; k + 1 < n; k += 2, w += 8 * LANES) {
            const float a = rows[0][k], b = rows[0][k + 1];
            for (int s = 0; s < 4; s++) {
                acc[0][s] += a * NAME(load)(w + s * LANES);
                odd[s] += b * NAME(load)(w + (4 + s) * LANES);
            }
        }
        for (int s = 0; s < 4; s++) acc[0][s] += odd[s];
    }
    for (; k < n; k++, w += 4 * LANES) {
        VF w0 = NAME(load)(w), w1 = NAME(load)(w + LANES), w2 = NAME(load)(w + 2 * LANES),
           w3 = NAME(load)(w + 3 * LANES);
#pragma GCC unroll 8
        for (int m = 0; m < mb; m++) {
            float a = rows[m][k];
            acc[m][0] += a * w0;
            acc[m][1] += a * w1;
            acc[m][2] += a * w2;
            acc[m][3] += a * w3;
        }
    }
}

/* One tile: batch rows r0..r0+mb-1 of panel p. Inlined with a constant mb, so the accumulators
 * live in registers. */
static inline __attribute__((always_inline)) void NAME(tile)(const Job *job, int p, int r0, const int mb) {
    const int K1 = job->k_x, K2 = job->k_h, K = K1 + K2;
    const float *w = job->weights + (size_t)p * K * 4 * LANES;
    const float *bias = job->bias + (size_t)p * 4 * LANES;
    VF acc[MB][4];
#pragma GCC unroll 8
    for (int m = 0; m < mb; m++)
        for (int s = 0; s < 4; s++) acc[m][s] = NAME(load)(bias + s * LANES);

    const float *xrow[MB], *hrow[MB];
#pragma GCC unroll 8
    for (int m = 0; m < mb; m++) {
        xrow[m] = job->x + (size_t)(r0 + m) * job->x_stride;
        hrow[m] = job->h + (size_t)(r0 + m) * job->h_stride;
    }
    NAME(accumulate)(acc, xrow, K1, w, mb);
    NAME(accumulate)(acc, hrow, K2, w + (size_t)K1 * 4 * LANES, mb);

#pragma GCC unroll 8
    for (int m = 0; m < mb; m++) {
        const size_t row = (size_t)(r0 + m);
        float *out = job->out + row * job->out_stride;
        if (job->epilogue == EPI_LSTM) {
            const int u0 = p * LANES, n = job->units - u0;
            VF c = NAME(load_part)(job->c + row * job->c_stride + u0, n);
            VF c_new = NAME(sigmoid)(acc[m][1]) * c + NAME(sigmoid)(acc[m][0]) * NAME(tanh)(acc[m][2]);
            VF h_new = NAME(sigmoid)(acc[m][3]) * NAME(tanh)(c_new);
            NAME(store_part)(out + u0, h_new, n);
            NAME(store_part)(job->out_c + row * job->out_c_stride + u0, c_new, n);
        } else if (job->epilogue == EPI_GRU) {
            const int u0 = p * LANES, n = job->units - u0;
            VF h = NAME(load_part)(hrow[m] + u0, n);
            VF z = NAME(sigmoid)(acc[m][0]);
            VF cand = NAME(tanh)(acc[m][2] + NAME(sigmoid)(acc[m][1]) * acc[m][3]);
            NAME(store_part)(out + u0, z * h + (1.0f - z) * cand, n);
        } else {
            for (int s = 0; s < 4; s++) {
                const int u0 = (p * 4 + s) * LANES;
                NAME(store_part)(out + u0, NAME(activate)(job->activation, acc[m][s]), job->units - u0);
            }
        }
    }
}

#define TILE_FIXED(M)                                                                                      \
    static void NAME(tile_##M)(const Job *job, int p, int r0) { NAME(tile)(job, p, r0, M); }
TILE_FIXED(1)
TILE_FIXED(2)
#if MB > 2
TILE_FIXED(3)
#endif
#if MB > 3
TILE_FIXED(4)
TILE_FIXED(5)
TILE_FIXED(6)
#endif
#undef TILE_FIXED

static void NAME(run)(const Job *job) {
    static void (*const tiles[])(const Job *, int, int) = {
        NULL, NAME(tile_1), NAME(tile_2),
#if MB > 2
        NAME(tile_3),
#endif
#if MB > 3
        NAME(tile_4), NAME(tile_5), NAME(tile_6),
#endif
    };
    const int row_blocks = (job->batch + MB - 1) / MB;
    const long tiles_total = (long)job->panels * row_blocks;
    if (job->threads <= 1) { /* no OpenMP team at all: it costs a microsecond even with one thread */
        for (long t = 0; t < tiles_total; t++) {
            const int p = (int)(t / row_blocks), r0 = (int)(t % row_blocks) * MB;
            tiles[job->batch - r0 < MB ? job->batch - r0 : MB](job, p, r0);
        }
        return;
    }
    /* Panel-major order in chunks of a sixteenth of a thread's share: each thread mostly keeps the
     * same panels' weights in its cache, and when the OS preempts one thread (a shared 2-core machine)
     * the others take over its remaining chunks instead of waiting for it. */
    const long chunk = tiles_total / (16L * job->threads) > 1 ? tiles_total / (16L * job->threads) : 1;
#pragma omp parallel for schedule(dynamic, chunk) num_threads(job->threads)
    for (long t = 0; t < tiles_total; t++) {
        const int p = (int)(t / row_blocks), r0 = (int)(t % row_blocks) * MB;
        tiles[job->batch - r0 < MB ? job->batch - r0 : MB](job, p, r0);
    }
}

#undef VF
#undef VI
