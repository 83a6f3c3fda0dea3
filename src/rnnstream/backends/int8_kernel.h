/* The INT8_DOT product: int8 weights times 8-bit rows, summed exactly in int32 by vpdpbusd.
 *
 * Part of the fused_kernel.h template (included by it when QUADS is 1, which kernel.c sets for its
 * AVX512_VNNI copy). One _mm512_dpbusd_epi32 adds, in each of its 16 int32 lanes j, the four products
 * a[4j+i]·b[4j+i] of an unsigned byte of a and a signed byte of b. The math (rnnstream.precision, int8):
 *
 *   - each weight matrix (Wx, Wh) is quantized per column j: w[k][j] ≈ sw[j]·qw[k][j], qw in [-127, 127],
 *     sw[j] = max_k |w[k][j]| / 127 (packing.int8_quads; the NumPy oracle holds sw[j]·qw[k][j]);
 *   - each part of a row (its x, its h) is quantized at every step by its own scale: a[k] ≈ sa·qa[k],
 *     sa = max_k |a[k]| / 127, qa = round(a[k] · (127 / max_k |a[k]|)) (in float32, to nearest even, as
 *     the oracle's np.rint: the same integers), in [-127, 127];
 *   - so a part's product is sa·sw[j]·Σ_k qa[k]·qw[k][j], the sum exact in int32: |Σ| <= 127²·K < 2^31
 *     for a part of K <= INT8_MAX_ROWS rows (make_plan refuses more). The running sums below may wrap
 *     (vpdpbusd and the adds are modulo 2^32), the final one is exact.
 *
 * vpdpbusd wants one operand unsigned: a row is stored as qa + 128 (in [1, 255]) and the 128·Σ_k qw[k][j]
 * this adds is taken back by starting the sums at -128·Σ_k qw[k][j] (Job.quant). The layouts:
 *
 *   - a row in Job.packed: its x part in words of 4 bytes (byte i of word w is row 4w+i), the last word
 *     padded with 128s (qa = 0), then its h part likewise (int8_row_words in kernel.h); after the batch's
 *     rows, two floats per row: sa of its x part and of its h part (NaN where a value is not finite, so
 *     that the outputs are NaN, as the oracle's);
 *   - the weights (packing.int8_quads): for each panel, each row quad w and each of the 4 slots, LANES
 *     words, word j holding qw of rows 4w..4w+3 of that slot's column j; zero rows pad each part's quads;
 *   - Job.quant, per panel: 4 x 4 slots x LANES 32-bit words: sw of the x part's and the h part's columns
 *     (float), then -128·Σ_k qw over the x part's and the h part's rows (int32).
 */
#if !QUADS || LANES != 16
#error "int8_kernel.h is part of fused_kernel.h's AVX512_VNNI copy (QUADS 1, LANES 16): see kernel.c"
#endif

/* n floats from src as 8-bit values + 128 at dst, (n + 3) / 4 words (the last one padded with 128s);
 * returns their scale sa = max |src| / 127 (0 for none, zeros or values below 3.7e-37, which are taken as zeros;
 * NaN if one is not finite): what the oracle's int8_rows computes. */
static float NAME(to_quads)(uint8_t *dst, const float *src, int n) {
    const __m512i magnitude = _mm512_set1_epi32(0x7fffffff);
    __m512i most = _mm512_setzero_si512(); /* |x| as bits: the unsigned order of finite floats, inf, NaN */
    int k = 0;
    for (; k + 16 <= n; k += 16) most = _mm512_max_epu32(most, _mm512_and_si512(_mm512_loadu_si512(src + k), magnitude));
    const __mmask16 tail = (__mmask16)((1u << (n - k)) - 1);
    most = _mm512_max_epu32(most, _mm512_and_si512(_mm512_maskz_loadu_epi32(tail, src + k), magnitude));
    const uint32_t bits = (uint32_t)_mm512_reduce_max_epu32(most);
    float amax;
    memcpy(&amax, &bits, sizeof amax);
    const int bytes = (n + 3) / 4 * 4;
    if (bits >= 0x7f800000u) { /* inf or NaN: the part's products are NaN */
        memset(dst, 128, (size_t)bytes);
        return __builtin_nanf("");
    }
    const float scaled = 127.0f / amax;
    if (!(scaled < __builtin_inff())) { /* zeros, or values so small (< 3.7e-37) that 127 / amax overflows: zeros */
        memset(dst, 128, (size_t)bytes);
        return 0.0f;
    }
    const __m512 inverse = _mm512_set1_ps(scaled);
    const __m512i offset = _mm512_set1_epi32(128);
    for (k = 0; k + 16 <= n; k += 16) {
        const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(src + k), inverse)); /* to nearest even */
        _mm_storeu_si128((__m128i *)(void *)(dst + k), _mm512_cvtepi32_epi8(_mm512_add_epi32(q, offset)));
    }
    if (k < bytes) { /* the rest, zeros (128s) up to the word's end */
        const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(tail, src + k), inverse));
        _mm512_mask_cvtepi32_storeu_epi8(dst + k, (__mmask16)((1u << (bytes - k)) - 1), _mm512_add_epi32(q, offset));
    }
    return amax / 127.0f;
}

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

/* NAME(accumulate_quads) and NAME(tile_quads) on LANES-lane vectors, and NAME(accumulate_quads_low) and
 * NAME(tile_quads_low) on their low halves (NAME(tile_low): a gated layer's last panel of few units). */
typedef int NAME(vhi) __attribute__((vector_size(LANES * 2)));
#define QV VF
#define QI VI
#define QDOT(acc, a, w) (VI) _mm512_dpbusd_epi32((__m512i)(acc), (__m512i)(a), (__m512i)(w))
#define QACC(x) NAME(x)
#include "int8_accumulate.h"
#undef QV
#undef QI
#undef QDOT
#undef QACC
#define QV NAME(vh)
#define QI NAME(vhi)
#define QDOT(acc, a, w) (NAME(vhi)) _mm256_dpbusd_epi32((__m256i)(acc), (__m256i)(a), (__m256i)(w))
#define QACC(x) NAME(x##_low)
#include "int8_accumulate.h"
#undef QV
#undef QI
#undef QDOT
#undef QACC
