/* A narrow Dense or SimpleRNN layer (at most NARROW_UNITS units: a model's output head, such as the seed model's
 * Dense(1)) with float32 weights, from NARROW_MIN_BATCH rows (kernel.h), part of the fused_kernel.h template
 * (included by its float copies, once per instruction set).
 *
 * The panel path computes a whole panel's 4·LANES columns for each row, and the blocked path first copies every
 * row into tiles: for Dense(1) over 200 inputs at 256 rows that took 57 µs on a Zen 3 core, for 0.1 MFLOP (3% of
 * the seed model's step). Here each output is a dot product along k instead, LANES inputs a vector, read where
 * the rows are (13 µs at 256 rows, 55 µs at 1,024 against 232, a stepper's call included):
 *
 *     y[b][j] = act(bias[j] + sum_k a[b][k] · w[k][j])        a[b] = [x[b], h[b]]
 *
 * over each unit's weights as one contiguous column (Job.columns, copied out of the panel when the plan is made).
 * Each dot product's lanes are summed by halves, and the outputs of LANES / units rows share one vector for the
 * activation: on an AVX-512 Xeon that took a Dense(1) layer at 256 rows 0.66x its time with a chain of scalar
 * additions and an activation per row on one thread (20.6 -> 13.6 µs, a stepper's call included; four alternated
 * pairs), 0.91x on two, where handing half the rows to the helper weighs more.
 */

/* sum_k a[k] · w[k] over n inputs, in two vectors of partial sums (two chains of FMAs in flight). */
static inline __attribute__((always_inline)) VF NAME(dot)(const float *a, const float *w, int n) {
    VF even = NAME(splat)(0.0f), odd = NAME(splat)(0.0f);
    int k = 0;
    for (; k + 2 * LANES <= n; k += 2 * LANES) {
        even += NAME(load)(a + k) * NAME(load)(w + k);
        odd += NAME(load)(a + k + LANES) * NAME(load)(w + k + LANES);
    }
    for (; k < n; k += LANES) even += NAME(load_part)(a + k, n - k) * NAME(load_part)(w + k, n - k);
    return even + odd;
}

/* The sum of v's lanes, by halves: a tree log2(LANES) additions deep, not a chain of LANES - 1. */
static inline __attribute__((always_inline)) float NAME(hsum)(VF v) {
    float lanes[LANES];
    NAME(store)(lanes, v);
    for (int width = LANES / 2; width > 0; width /= 2)
        for (int i = 0; i < width; i++) lanes[i] += lanes[i + width];
    return lanes[0];
}

/* Rows lo .. hi-1, LANES / units at a time: row r0 + r's unit j in lane r·units + j of one vector, so that one
 * activation serves them all. ctx: the gathered columns, unit j's at j·K. */
static void NAME(narrow_range)(const Job *job, long lo, long hi, const void *ctx) {
    const float *columns = ctx;
    const int units = job->units, K1 = job->k_x, K = job->k_x + job->k_h, group = LANES / units;
    float tiled[LANES]; /* the bias, unit j in every lane r·units + j */
    for (int i = 0; i < LANES; i++) tiled[i] = job->bias[i % units];
    const VF bias = NAME(load)(tiled);
    for (long r0 = lo; r0 < hi; r0 += group) {
        const int rows = hi - r0 < group ? (int)(hi - r0) : group;
        float sums[LANES] = {0}, ys[LANES];
        for (int r = 0; r < rows; r++) {
            const float *x = job->x + (r0 + r) * job->x_stride, *h = job->h + (r0 + r) * job->h_stride;
            for (int j = 0; j < units; j++) {
                const float *w = columns + (size_t)j * K;
                sums[r * units + j] = NAME(hsum)(NAME(dot)(x, w, K1) + NAME(dot)(h, w + K1, K - K1));
            }
        }
        NAME(store)(ys, NAME(activate)(job->activation, NAME(load)(sums) + bias));
        for (int r = 0; r < rows; r++)
            memcpy(job->out + (r0 + r) * job->out_stride, ys + r * units, (size_t)units * sizeof(float));
    }
}

/* Runs the Job and returns 1 if it is a narrow layer's (Job.columns set); else 0. */
static int NAME(run_narrow)(const Job *job) {
    if (job->columns == NULL) return 0;
    const long share = 2L * job->threads, rows = (job->batch + share - 1) / share;
    parallel_range(job, job->batch, rows > 64 ? rows : 64, NAME(narrow_range), job->columns);
    return 1;
}
