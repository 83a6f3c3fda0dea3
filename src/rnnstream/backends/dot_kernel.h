/* The BF16_DOT product: bfloat16 weights times bfloat16 rows, summed in float32 by vdpbf16ps.
 *
 * Part of the fused_kernel.h template (included by it when PAIRS is 1, which kernel.c sets for its
 * AVX512_BF16 copy, compiled with `#pragma GCC target("avx512bf16,...")` and <immintrin.h>). One
 * _mm512_dpbf16_ps adds, in each of its 16 float32 lanes j, a[2j]·b[2j] + a[2j+1]·b[2j+1]: two
 * products per lane, both operands bfloat16. So:
 *
 *   - a row [x, h] is rounded to bfloat16 first (round to nearest even, _mm512_cvtne2ps_pbh), into
 *     Job.packed, as pairs: word i of its x part holds x[2i] (low half) and x[2i+1] (high half), an odd
 *     part's last word a zero in its high half; its h part follows (dot_row_words in kernel.h);
 *   - the weights (packing.bf16_dot_pairs) hold, for each panel, each row pair i and each of the 4 slots,
 *     LANES words: word j is (W[2i][slot][j], W[2i+1][slot][j]), the same halves as the row's word; rows
 *     and weights end in zeros up to dot_row_words (AMX tiles take 16 words at a time: amx_kernel.h);
 *   - one word of a row, broadcast, times a slot's LANES words adds both rows of the pair to the slot's
 *     LANES accumulators.
 *
 * Products of two bfloat16 values are exact in float32, so the result differs from float32 sums of the
 * same rounded values (the NumPy oracle at precision "bf16-dot") only in the order of the sums. The
 * instruction treats subnormal inputs as zeros (below 1.2e-38: nothing a step notices).
 */
#if !PAIRS || LANES != 16
#error "dot_kernel.h is part of fused_kernel.h's AVX512_BF16 copy (PAIRS 1, LANES 16): see kernel.c"
#endif

/* n floats from src as (n + 1) / 2 bfloat16 pairs at dst (an odd n's last pair padded with a zero). */
static void NAME(to_pairs)(uint32_t *dst, const float *src, int n) {
    int k = 0;
    for (; k + 32 <= n; k += 32) {
        const __m512 lo = _mm512_loadu_ps(src + k), hi = _mm512_loadu_ps(src + k + 16);
        _mm512_storeu_si512(dst + k / 2, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
    if (k < n) {
        const int left = n - k, words = (left + 1) / 2;
        const __mmask16 lo_mask = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
        const __mmask16 hi_mask = left > 16 ? (__mmask16)((1u << (left - 16)) - 1) : 0;
        const __m512 lo = _mm512_maskz_loadu_ps(lo_mask, src + k), hi = _mm512_maskz_loadu_ps(hi_mask, src + k + 16);
        _mm512_mask_storeu_epi32(dst + k / 2, (__mmask16)((1u << words) - 1), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
}

/* Rows lo..hi-1 of [x, h] as bfloat16 pairs into Job.packed, dot_row_words apart (zeros after them). */
static void NAME(round_rows)(const Job *job, long lo, long hi, const void *ctx) {
    (void)ctx;
    const int x_words = (job->k_x + 1) / 2, words = dot_row_words(job->k_x, job->k_h);
    const int used = dot_used_words(job->k_x, job->k_h);
    uint32_t *rows = (uint32_t *)(void *)job->packed;
    for (long b = lo; b < hi; b++) {
        uint32_t *dst = rows + b * words;
        NAME(to_pairs)(dst, job->x + b * job->x_stride, job->k_x);
        NAME(to_pairs)(dst + x_words, job->h + b * job->h_stride, job->k_h);
        memset(dst + used, 0, (size_t)(words - used) * sizeof *dst); /* zero weights times zeros, never NaN */
    }
}

static inline __attribute__((always_inline)) void NAME(dot)(VF *acc, __m512bh a, __m512bh w) {
    *acc = (VF)_mm512_dpbf16_ps((__m512)*acc, a, w);
}

/* acc[m][s] += the products of mb rows' `words` pairs (rows[m]) with the panel's weights w, for its first `slots`
 * slots (mb and slots constants after inlining). */
static inline __attribute__((always_inline)) void NAME(accumulate_pairs)(VF acc[][4], const uint32_t *const rows[],
                                                                         int words, const uint32_t *w, const int mb,
                                                                         const int slots) {
    int k = 0;
    if (mb == 1) { /* 4 accumulators would wait on each other: a second set for odd words keeps 8 in flight */
        VF odd[4] = {{0}, {0}, {0}, {0}};
        for (; k + 1 < words; k += 2, w += 8 * LANES) {
            const __m512bh a = (__m512bh)_mm512_set1_epi32((int)rows[0][k]);
            const __m512bh b = (__m512bh)_mm512_set1_epi32((int)rows[0][k + 1]);
            for (int s = 0; s < slots; s++) {
                NAME(dot)(&acc[0][s], a, (__m512bh)_mm512_loadu_si512(w + s * LANES));
                NAME(dot)(&odd[s], b, (__m512bh)_mm512_loadu_si512(w + (4 + s) * LANES));
            }
        }
        for (int s = 0; s < slots; s++) acc[0][s] += odd[s];
    }
    for (; k < words; k++, w += 4 * LANES) {
        __m512bh ws[4];
        for (int s = 0; s < slots; s++) ws[s] = (__m512bh)_mm512_loadu_si512(w + s * LANES);
#pragma GCC unroll 8
        for (int m = 0; m < mb; m++) {
            const __m512bh a = (__m512bh)_mm512_set1_epi32((int)rows[m][k]);
            for (int s = 0; s < slots; s++) NAME(dot)(&acc[m][s], a, ws[s]);
        }
    }
}

/* NAME(accumulate_pairs) over the low half of each slot's LANES words, on 256-bit vectors (NAME(tile_low): a
 * gated layer's last panel of at most LANES/2 units). */
static inline __attribute__((always_inline)) void NAME(accumulate_pairs_low)(NAME(vh) acc[][4],
                                                                             const uint32_t *const rows[], int words,
                                                                             const uint32_t *w, const int mb) {
    for (int k = 0; k < words; k++, w += 4 * LANES) {
        __m256bh ws[4];
        for (int s = 0; s < 4; s++) ws[s] = (__m256bh)_mm256_loadu_si256((const __m256i *)(const void *)(w + s * LANES));
#pragma GCC unroll 8
        for (int m = 0; m < mb; m++) {
            const __m256bh a = (__m256bh)_mm256_set1_epi32((int)rows[m][k]);
            for (int s = 0; s < 4; s++) acc[m][s] = (NAME(vh))_mm256_dpbf16_ps((__m256)acc[m][s], a, ws[s]);
        }
    }
}

/* The rows of tile rows r0..r0+mb-1 as bfloat16 pairs (Job.packed), and panel p's weights. */
static inline __attribute__((always_inline)) const uint32_t *NAME(pair_rows_of)(const Job *job, int p, int r0,
                                                                               const int mb, const uint32_t *rows[]) {
    const int words = dot_row_words(job->k_x, job->k_h);
#pragma GCC unroll 8
    for (int m = 0; m < mb; m++) rows[m] = (const uint32_t *)(const void *)job->packed + (size_t)(r0 + m) * words;
    return (const uint32_t *)job->weights + (size_t)p * words * 4 * LANES;
}

static inline __attribute__((always_inline)) void NAME(tile_pairs_low)(const Job *job, int p, int r0,
                                                                       NAME(vh) acc[][4], const int mb) {
    const uint32_t *rows[MB];
    const uint32_t *w = NAME(pair_rows_of)(job, p, r0, mb, rows);
    NAME(accumulate_pairs_low)(acc, rows, dot_used_words(job->k_x, job->k_h), w, mb);
}

/* The products of tile rows r0..r0+mb-1 with panel p's first `slots` slots (their pairs already in Job.packed). */
static inline __attribute__((always_inline)) void NAME(tile_pairs)(const Job *job, int p, int r0, VF acc[][4],
                                                                   const int mb, const int slots) {
    const uint32_t *rows[MB];
    const uint32_t *w = NAME(pair_rows_of)(job, p, r0, mb, rows);
    NAME(accumulate_pairs)(acc, rows, dot_used_words(job->k_x, job->k_h), w, mb, slots); /* the rest: zeros */
}
