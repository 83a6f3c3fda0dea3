/* The fused kernel's tile for a gated layer's last panel of few units, part of the fused_kernel.h template and
 * included by it in the copies with half vectors (LOW_HALVES: the AVX-512 ones). */
#if !LOW_HALVES
#error "fused_low.h is part of fused_kernel.h's AVX-512 copies"
#endif

#if !PAIRS && !QUADS
/* Two half vectors as one: `low` in lanes 0..LANES/2-1, `high` above. */
static inline __attribute__((always_inline)) VF NAME(join)(NAME(vh) low, NAME(vh) high) {
    return (VF)_mm512_insertf32x8(_mm512_castps256_ps512((__m256)low), (__m256)high, 1);
}

/* NAME(accumulate_low) with two slots' halves in each full vector: slots 0 and 1 in the first, 2 and 3 in the
 * second. An Intel core runs a 256-bit FMA at the rate of a 512-bit one (a Zen 4 at twice it), so the halves
 * alone cost it as much as a full panel; joined, half as much (the same sums, lane by lane, in the same order:
 * the same bits). Taken from 3 rows a tile on: fewer have too few sums in flight to cover an FMA's latency. */
static inline __attribute__((always_inline)) void NAME(accumulate_joined)(NAME(vh) acc[][4], const float *const rows[],
                                                                          int n, const WT *w, const int mb) {
    VF joined[MB][2];
    for (int m = 0; m < mb; m++)
        for (int j = 0; j < 2; j++) joined[m][j] = NAME(join)(acc[m][2 * j], acc[m][2 * j + 1]);
    for (int k = 0; k < n; k++, w += 4 * LANES) {
        NAME(vh) h[4];
        NAME(wload2_low)(w, &h[0], &h[1]);
        NAME(wload2_low)(w + 2 * LANES, &h[2], &h[3]);
        const VF w01 = NAME(join)(h[0], h[1]), w23 = NAME(join)(h[2], h[3]);
#pragma GCC unroll 8
        for (int m = 0; m < mb; m++) {
            const float a = rows[m][k];
            joined[m][0] += a * w01;
            joined[m][1] += a * w23;
        }
    }
    for (int m = 0; m < mb; m++)
        for (int j = 0; j < 2; j++) {
            acc[m][2 * j] = (NAME(vh))_mm512_castps512_ps256((__m512)joined[m][j]);
            acc[m][2 * j + 1] = (NAME(vh))_mm512_extractf32x8_ps((__m512)joined[m][j], 1);
        }
}
#endif

/* NAME(tile) for an LSTM or GRU's last panel of at most LANES/2 units (LSTM(200) ends in one of 8, LSTM(100)
 * of 4): the upper half of every slot's vector is padding. Zen 4 runs a 512-bit FMA as two 256-bit halves,
 * so the products over the low halves alone (the same packed weights) take half the time; an Intel core
 * runs a 256-bit FMA at a 512-bit one's rate, so the float copies join two slots' halves in one vector
 * (NAME(accumulate_joined): on a Xeon with AMX, LSTM(200) 119.7 → 122.8 GFLOP/s on one thread, LSTM(100)
 * 95.7 → 99.0; the same number of 256-bit halves on a Zen 4). The sums are widened back, the upper half
 * zero, for NAME(finish_rows), which stores only the panel's units. */
static inline __attribute__((always_inline)) void NAME(tile_low)(const Job *job, int p, int r0, const int mb) {
    const int K1 = job->k_x, K2 = job->k_h, K = K1 + K2;
    const WT *w = (const WT *)job->weights + (size_t)p * K * 4 * LANES;
    const float *bias = job->bias + (size_t)p * 4 * LANES;
    NAME(vh) acc[MB][4];
#pragma GCC unroll 8
    for (int m = 0; m < mb; m++)
        for (int s = 0; s < 4; s++) memcpy(&acc[m][s], bias + s * LANES, sizeof acc[m][s]);
#if PAIRS
    (void)w;
    NAME(tile_pairs_low)(job, p, r0, acc, mb);
#elif QUADS
    (void)w;
    NAME(tile_quads_low)(job, p, r0, acc, mb, 4);
#else
    const float *xrow[MB], *hrow[MB];
    NAME(tile_rows)(job, r0, mb, xrow, hrow);
    if (mb >= 3) { /* constant after inlining */
        NAME(accumulate_joined)(acc, xrow, K1, w, mb);
        NAME(accumulate_joined)(acc, hrow, K2, w + (size_t)K1 * 4 * LANES, mb);
    } else {
        NAME(accumulate_low)(acc, xrow, K1, w, mb, 4);
        NAME(accumulate_low)(acc, hrow, K2, w + (size_t)K1 * 4 * LANES, mb, 4);
    }
#endif
    VF wide[MB][4];
#pragma GCC unroll 8
    for (int m = 0; m < mb; m++)
        for (int s = 0; s < 4; s++) wide[m][s] = (VF)_mm512_zextps256_ps512((__m256)acc[m][s]);
    NAME(finish_rows)(job, p, r0, mb, wide);
}
