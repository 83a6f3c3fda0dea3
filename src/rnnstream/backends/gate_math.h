/* The gate math of the fused kernel's epilogues, part of the fused_kernel.h template (on its VF and VI vectors of
 * LANES floats and ints, with its NAME, splat and select): e^x, σ, tanh and σ(a)·tanh(b), which an LSTM's
 * epilogue takes twice (σ(i)·tanh(g) and σ(o)·tanh(c')) for one division instead of two.
 *
 * σ and tanh are within 2e-7 of the exact values in absolute terms, σ(a)·tanh(b) within 3e-7 (the roundings of
 * 1 + e^{-a}, the product and the division add up to 2.6e-7 where the product is near ±1; tanh and σ rounded
 * apart and multiplied were 2.2e-7 off), and NaN stays NaN (tests/backends/test_gate_math.py sweeps them).
 *
 * The AVX-512 copies (LANES 16) round and scale by 2^n in one instruction each (vrndscaleps, vscalefps); they and
 * the AVX2 copies clamp with vmaxps and vminps; the portable build spells it all out in generic vector code.
 */
#if !defined(VF) || !defined(VI) || !defined(LANES)
#error "gate_math.h is part of fused_kernel.h: include that"
#endif

#if LANES == 16
/* x within [-c, c]; a NaN stays NaN (vmaxps and vminps return their second operand if either is NaN) */
static inline __attribute__((always_inline)) VF NAME(clamp)(VF x, float c) {
    return (VF)_mm512_min_ps((__m512)NAME(splat)(c), _mm512_max_ps((__m512)NAME(splat)(-c), (__m512)x));
}
#elif LANES == 8
static inline __attribute__((always_inline)) VF NAME(clamp)(VF x, float c) {
    return (VF)_mm256_min_ps((__m256)NAME(splat)(c), _mm256_max_ps((__m256)NAME(splat)(-c), (__m256)x));
}
#else
static inline __attribute__((always_inline)) VF NAME(clamp)(VF x, float c) {
    x = NAME(select)(x < -c, NAME(splat)(-c), x); /* a NaN compares false: it stays */
    return NAME(select)(x > c, NAME(splat)(c), x);
}
#endif

/* 1.5·2^23 + 127: y + EXP_SHIFTER rounds y (|y| < 2^22) to an integer n and leaves n + 127, the exponent bits
 * of 2^n, in the sum's low mantissa bits. */
#define EXP_SHIFTER 12583039.0f

/* e^{a·x} for a = -1 or -2 (a constant after inlining), a·x clamped to [-bound, bound] (bound <= 87): a·x =
 * n·ln2 + r with |r| <= ln2/2, and e^r ≈ 1 + r + r²·((c2 + c3·r) + r²·(c4 + c5·r)), its coefficients fitted for
 * the least maximum relative error on that interval, 1.1e-7 (the Taylor series to r^5 is 3e-6 off, to r^6 1.6e-7).
 * Grouped so (Estrin's scheme), a chain of 3 FMAs after r², not Horner's 5: an epilogue waits on its e^x.
 *
 * Computed on r/a = x - n·ln2/a, with the coefficients times a^k: a power of two, so the same bits as on r,
 * without negating or doubling x first. r takes one FMA with ln2 rounded to float32, 2e-9 off: n·2e-9 more
 * relative error (the portable build, without FMA, adds the product's rounding, up to n·4e-8), which grows only
 * where |x| is large and σ and tanh are flat. */
static inline __attribute__((always_inline)) VF NAME(exp_times)(VF x, const float a, const float bound) {
    x = NAME(clamp)(x, bound / (a < 0 ? -a : a));
#if LANES == 16
    const VF n = (VF)_mm512_roundscale_ps((__m512)(x * (a * 1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
    const VF shifted = x * (a * 1.44269504088896341f) + EXP_SHIFTER;
    const VF n = shifted - EXP_SHIFTER;
#endif
    const VF r = x - n * (0.693147182f / a);
    const VF r2 = r * r;
    const VF high = (r * (8.312525228e-3f * (a * a * a * a * a)) + 4.189011455e-2f * (a * a * a * a)) * r2 +
                    (r * (1.666711420e-1f * (a * a * a)) + 4.999923110e-1f * (a * a));
    const VF p = high * r2 + (r * a + 1.0f);
#if LANES == 16
    return (VF)_mm512_scalef_ps((__m512)p, (__m512)n); /* p·2^n */
#else
    typedef unsigned int NAME(vu) __attribute__((vector_size(LANES * 4)));
    return p * (VF)((NAME(vu))shifted << 23); /* p·2^n, 2^n built in the exponent bits (n + 127 in [1, 253]) */
#endif
}

/* On Zen 4, vdivps (one instruction, then the divider works beside the FMA units) took an LSTM(200) step ~2.5%
 * faster than vrcp14ps and a Newton step (three instructions). */
static inline __attribute__((always_inline)) VF NAME(sigmoid)(VF x) {
    return 1.0f / (1.0f + NAME(exp_times)(x, -1.0f, 87.0f));
}

/* tanh x = (1 - t)/(1 + t) with t = e^{-2x}: absolute error below 2e-7 (near 0 a large relative error, which a
 * sum into a state does not notice); ±inf give ±1, NaN gives NaN. */
static inline __attribute__((always_inline)) VF NAME(tanh)(VF x) {
    const VF t = NAME(exp_times)(x, -2.0f, 87.0f);
    return (1.0f - t) / (1.0f + t);
}

/* σ(a)·tanh(b) = (1 - t)/((1 + e)(1 + t)) with e = e^{-a}, t = e^{-2b}: one division. Both exponents are clamped
 * to ±44 so that the denominator stays below 2^128 (e^88); beyond them σ is below 8e-20 and tanh is ±1 in
 * float32. */
static inline __attribute__((always_inline)) VF NAME(sigmoid_tanh)(VF a, VF b) {
    const VF e = NAME(exp_times)(a, -1.0f, 44.0f), t = NAME(exp_times)(b, -2.0f, 44.0f);
    return (1.0f - t) / ((1.0f + e) * (1.0f + t));
}

static inline __attribute__((always_inline)) VF NAME(activate)(int act, VF z) {
    switch (act) {
        case ACT_TANH: return NAME(tanh)(z);
        case ACT_SIGMOID: return NAME(sigmoid)(z);
        case ACT_RELU: return NAME(select)(z > 0.0f, z, NAME(splat)(0.0f));
        default: return z;
    }
}

#undef EXP_SHIFTER
