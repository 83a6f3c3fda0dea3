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

/* Rows lo .. hi-1; ctx: the gathered columns, unit j's at j·K. */
static void NAME(narrow_range)(const Job *job, long lo, long hi, const void *ctx) {
    const float *columns = ctx;
    const int K1 = job->k_x, K = job->k_x + job->k_h;
    const VF bias = NAME(load)(job->bias); /* panel 0, slot 0: unit j in lane j */
    for (long b = lo; b < hi; b++) {
        const float *x = job->x + b * job->x_stride, *h = job->h + b * job->h_stride;
        float sums[LANES] = {0};
        for (int j = 0; j < job->units; j++) {
            const VF v = NAME(dot)(x, columns + (size_t)j * K, K1) + NAME(dot)(h, columns + (size_t)j * K + K1, K - K1);
            float lanes[LANES];
            NAME(store)(lanes, v);
            for (int i = 0; i < LANES; i++) sums[j] += lanes[i];
        }
        NAME(store_part)(job->out + b * job->out_stride, NAME(activate)(job->activation, NAME(load)(sums) + bias),
                         job->units);
    }
}

/* Runs the Job and returns 1 if it is a narrow layer's (Job.columns set); else 0. */
static int NAME(run_narrow)(const Job *job) {
    if (job->columns == NULL) return 0;
    const long share = 2L * job->threads, rows = (job->batch + share - 1) / share;
    parallel_range(job, job->batch, rows > 64 ? rows : 64, NAME(narrow_range), job->columns);
    return 1;
}
