/* The rows of INT8_DOT Jobs as 8-bit quads (int8_kernel.h's layout): part of the fused_kernel.h template,
 * included by int8_kernel.h, whose QUAD_ZERO says how qa is stored (qa + 128 for vpdpbusd, qa for AVX2).
 * NAME(magnitude_bits) and NAME(quantize) in AVX-512 or AVX2 code, by LANES; NAME(to_quads) from them.
 */

#if LANES == 16
/* The largest |src[k]| of n floats as bits: the unsigned order of finite floats, inf, NaN. */
static inline uint32_t NAME(magnitude_bits)(const float *src, int n) {
    const __m512i magnitude = _mm512_set1_epi32(0x7fffffff);
    __m512i most = _mm512_setzero_si512();
    int k = 0;
    for (; k + 16 <= n; k += 16)
        most = _mm512_max_epu32(most, _mm512_and_si512(_mm512_loadu_si512(src + k), magnitude));
    const __mmask16 tail = (__mmask16)((1u << (n - k)) - 1);
    most = _mm512_max_epu32(most, _mm512_and_si512(_mm512_maskz_loadu_epi32(tail, src + k), magnitude));
    return (uint32_t)_mm512_reduce_max_epu32(most);
}

/* dst[k] = round(src[k] · inverse) + QUAD_ZERO for k < n (to nearest even), then QUAD_ZERO up to `bytes`. */
static inline void NAME(quantize)(uint8_t *dst, const float *src, int n, int bytes, float scaled) {
    const __m512 inverse = _mm512_set1_ps(scaled);
    const __m512i offset = _mm512_set1_epi32(QUAD_ZERO);
    int k = 0;
    for (; k + 16 <= n; k += 16) {
        const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(src + k), inverse));
        _mm_storeu_si128((__m128i *)(void *)(dst + k), _mm512_cvtepi32_epi8(_mm512_add_epi32(q, offset)));
    }
    if (k < bytes) {
        const __m512 rest = _mm512_maskz_loadu_ps((__mmask16)((1u << (n - k)) - 1), src + k);
        const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(rest, inverse));
        _mm512_mask_cvtepi32_storeu_epi8(dst + k, (__mmask16)((1u << (bytes - k)) - 1), _mm512_add_epi32(q, offset));
    }
}
#else
/* Lanes below n of 8: all ones (maskload's mask). */
static inline __m256i NAME(first_lanes)(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static inline uint32_t NAME(magnitude_bits)(const float *src, int n) {
    const __m256i magnitude = _mm256_set1_epi32(0x7fffffff);
    __m256i most = _mm256_setzero_si256();
    int k = 0;
    for (; k + 8 <= n; k += 8) {
        const __m256i bits = _mm256_loadu_si256((const __m256i *)(const void *)(src + k));
        most = _mm256_max_epu32(most, _mm256_and_si256(bits, magnitude));
    }
    const __m256i rest = _mm256_maskload_epi32((const int *)(const void *)(src + k), NAME(first_lanes)(n - k));
    most = _mm256_max_epu32(most, _mm256_and_si256(rest, magnitude));
    __m128i half = _mm_max_epu32(_mm256_castsi256_si128(most), _mm256_extracti128_si256(most, 1));
    half = _mm_max_epu32(half, _mm_shuffle_epi32(half, 0x4e));
    half = _mm_max_epu32(half, _mm_shuffle_epi32(half, 0xb1));
    return (uint32_t)_mm_cvtsi128_si32(half);
}

/* The low bytes of 8 int32 (values in [-128, 127]: their two's complement bytes), in order. */
static inline uint64_t NAME(low_bytes)(__m256i q) {
    const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, /* */
                                          0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m256i bytes = _mm256_shuffle_epi8(q, pick); /* per 128-bit half: its 4 bytes first */
    const __m128i low = _mm256_castsi256_si128(bytes), high = _mm256_extracti128_si256(bytes, 1);
    return (uint64_t)_mm_cvtsi128_si64(_mm_unpacklo_epi32(low, high));
}

static inline void NAME(quantize)(uint8_t *dst, const float *src, int n, int bytes, float scaled) {
    const __m256 inverse = _mm256_set1_ps(scaled);
    const __m256i offset = _mm256_set1_epi32(QUAD_ZERO);
    int k = 0;
    for (; k + 8 <= n; k += 8) {
        const __m256i q32 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(src + k), inverse));
        const uint64_t q = NAME(low_bytes)(_mm256_add_epi32(q32, offset));
        memcpy(dst + k, &q, sizeof q);
    }
    if (k < bytes) {
        const __m256 rest = _mm256_maskload_ps(src + k, NAME(first_lanes)(n - k)); /* zeros after n */
        const uint64_t q = NAME(low_bytes)(_mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(rest, inverse)), offset));
        memcpy(dst + k, &q, (size_t)(bytes - k));
    }
}
#endif

/* n floats from src as 8-bit values qa (+ QUAD_ZERO) at dst, (n + 3) / 4 words (the last one padded with qa = 0);
 * returns their scale sa = max |src| / 127 (0 for none, zeros or values below 3.7e-37, which are taken as zeros;
 * NaN if one is not finite): what the oracle's int8_rows computes. */
static float NAME(to_quads)(uint8_t *dst, const float *src, int n) {
    const uint32_t bits = NAME(magnitude_bits)(src, n);
    float amax;
    memcpy(&amax, &bits, sizeof amax);
    const int bytes = (n + 3) / 4 * 4;
    if (bits >= 0x7f800000u) { /* inf or NaN: the part's products are NaN */
        memset(dst, QUAD_ZERO, (size_t)bytes);
        return __builtin_nanf("");
    }
    const float scaled = 127.0f / amax;
    if (!(scaled < __builtin_inff())) { /* zeros, or values so small (< 3.7e-37) that 127 / amax overflows: zeros */
        memset(dst, QUAD_ZERO, (size_t)bytes);
        return 0.0f;
    }
    NAME(quantize)(dst, src, n, bytes, scaled);
    return amax / 127.0f;
}
