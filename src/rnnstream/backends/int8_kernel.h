/* The INT8_DOT product: int8 weights times 8-bit rows, summed exactly in int32.
 *
 * Part of the fused_kernel.h template (included by it when QUADS is 1, which kernel.c sets for its AVX512_VNNI
 * and its AVX2 copies). The math (rnnstream.precision, int8):
 *
 *   - each weight matrix (Wx, Wh) is quantized per column j: w[k][j] ≈ sw[j]·qw[k][j], qw in [-127, 127],
 *     sw[j] = max_k |w[k][j]| / 127 (packing.int8_quads; the NumPy oracle holds sw[j]·qw[k][j]);
 *   - each part of a row (its x, its h) is quantized at every step by its own scale: a[k] ≈ sa·qa[k],
 *     sa = max_k |a[k]| / 127, qa = round(a[k] · (127 / max_k |a[k]|)) (in float32, to nearest even, as
 *     the oracle's np.rint: the same integers), in [-127, 127];
 *   - so a part's product is sa·sw[j]·Σ_k qa[k]·qw[k][j], the sum exact in int32: |Σ| <= 127²·K < 2^31
 *     for a part of K <= INT8_MAX_ROWS rows (make_plan refuses more). The running sums below may wrap
 *     (the adds are modulo 2^32), the final one is exact.
 *
 * Each instruction set sums four products per int32 lane j of a row's word a (4 bytes, broadcast) and a weight
 * vector w (byte i of lane j: qw of row 4·word+i, column j), in its own way (NAME(dot_quads)):
 *
 *   - AVX512_VNNI: one vpdpbusd, whose first operand is unsigned: a row is stored as qa + 128 (in [1, 255]) and
 *     the 128·Σ_k qw[k][j] this adds is taken back by starting the sums at -128·Σ_k qw[k][j] (Job.quant);
 *   - AVX2: vpmaddubsw multiplies unsigned by signed bytes and adds pairs into int16 with saturation, so its
 *     operands are |qw| (a vpsignb per weight vector, which a tile's rows share) and qa·sign(qw) (a vpsignb per
 *     row): a pair of products is at most 2·127² = 32,258, exact in int16; vpmaddwd by ones adds the pairs into
 *     int32, and vpaddd into the sums. A row is stored as qa (a signed byte) and the sums start at 0. Four
 *     instructions per row for 32 products, where an FMA does 8.
 *
 * The layouts:
 *
 *   - a row in Job.packed: its x part in words of 4 bytes (byte i of word w is row 4w+i), the last word
 *     padded with qa = 0 (QUAD_ZERO), then its h part likewise (int8_row_words in kernel.h); after the
 *     batch's rows, two floats per row: sa of its x part and of its h part (NaN where a value is not finite,
 *     so that the outputs are NaN, as the oracle's);
 *   - the weights (packing.int8_quads): for each panel, each row quad w and each of the 4 slots, LANES
 *     words, word j holding qw of rows 4w..4w+3 of that slot's column j; zero rows pad each part's quads;
 *   - Job.quant, per panel: 4 x 4 slots x LANES 32-bit words: sw of the x part's and the h part's columns
 *     (float), then -128·Σ_k qw over the x part's and the h part's rows (int32; read by AVX512_VNNI only).
 */
#if !QUADS || (LANES != 16 && LANES != 8)
#error "int8_kernel.h is part of fused_kernel.h's AVX512_VNNI and AVX2 copies (QUADS 1, LANES 16 or 8): see kernel.c"
#endif

#if LANES == 16
#define QUAD_ZERO 128 /* a row's byte for qa = 0 */
#else
#define QUAD_ZERO 0
#endif

#include "int8_rows.h"

/* Row b's scales (x part, h part), after the batch's rows in Job.packed. */
static inline float *NAME(quad_scales)(const Job *job, long b) {
    const size_t words = (size_t)int8_row_words(job->k_x, job->k_h);
    return (float *)(void *)job->packed + (size_t)job->batch * words + 2 * (size_t)b;
}

/* Rows lo..hi-1 of [x, h] as 8-bit quads into Job.packed, and their scales. */
static void NAME(round_rows)(const Job *job, long lo, long hi, const void *ctx) {
    (void)ctx;
    const int words = int8_row_words(job->k_x, job->k_h), x_words = int8_x_words(job->k_x);
    for (long b = lo; b < hi; b++) {
        uint8_t *dst = (uint8_t *)(void *)((uint32_t *)(void *)job->packed + b * words);
        float *scales = NAME(quad_scales)(job, b);
        scales[0] = NAME(to_quads)(dst, job->x + b * job->x_stride, job->k_x);
        scales[1] = NAME(to_quads)(dst + 4 * x_words, job->h + b * job->h_stride, job->k_h);
    }
}

/* Where tile rows r0..r0+mb-1 and panel p's weights and quant words start. */
static inline __attribute__((always_inline)) const uint32_t *NAME(quad_rows_of)(const Job *job, int p, int r0,
                                                                               const int mb, const uint32_t *rows[],
                                                                               const int32_t **quant) {
    const int words = int8_row_words(job->k_x, job->k_h);
#pragma GCC unroll 8
    for (int m = 0; m < mb; m++) rows[m] = (const uint32_t *)(const void *)job->packed + (size_t)(r0 + m) * words;
    *quant = job->quant + (size_t)p * 16 * LANES;
    return (const uint32_t *)job->weights + (size_t)p * words * 4 * LANES;
}

/* NAME(accumulate_quads) and NAME(tile_quads) on LANES-lane vectors, and on AVX-512 NAME(accumulate_quads_low) and
 * NAME(tile_quads_low) on their low halves (NAME(tile_low): a gated layer's last panel of few units). */
#define QV VF
#define QI VI
#define QACC(x) NAME(x)
#if LANES == 16
#define QDOT(acc, a, w) (VI) _mm512_dpbusd_epi32((__m512i)(acc), (__m512i)(a), (__m512i)(w))
#else
/* acc + the four products of a's and w's signed bytes per lane, by way of vpmaddubsw (see above). */
static inline __attribute__((always_inline)) VI NAME(dot_quads)(VI acc, VI a, VI w) {
    const __m256i magnitude = _mm256_sign_epi8((__m256i)w, (__m256i)w);
    const __m256i signed_a = _mm256_sign_epi8((__m256i)a, (__m256i)w);
    const __m256i pairs = _mm256_maddubs_epi16(magnitude, signed_a); /* |each pair| <= 2·127²: no saturation */
    return (VI)_mm256_add_epi32((__m256i)acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}
#define QDOT(acc, a, w) NAME(dot_quads)(acc, a, w)
#endif
#include "int8_accumulate.h"
#undef QV
#undef QI
#undef QDOT
#undef QACC
#if LANES == 16
typedef int NAME(vhi) __attribute__((vector_size(LANES * 2)));
#define QV NAME(vh)
#define QI NAME(vhi)
#define QDOT(acc, a, w) (NAME(vhi)) _mm256_dpbusd_epi32((__m256i)(acc), (__m256i)(a), (__m256i)(w))
#define QACC(x) NAME(x##_low)
#include "int8_accumulate.h"
#undef QV
#undef QI
#undef QDOT
#undef QACC
#endif
#undef QUAD_ZERO
