/* The INT8_DOT product loop, part of int8_kernel.h and included by it once per vector type: with these macros
 * set (besides fused_kernel.h's LANES, MB and NAME):
 *   QV             the float vector type the sums are added to (LANES floats, or the low half of them)
 *   QI             the int32 vector type of as many lanes
 *   QDOT(acc,a,w)  acc plus, in each lane, the four products of a's and w's bytes (int8_kernel.h: NAME(dot_quads))
 *   QACC(x)        x with the copy's suffix, and "_low" for the half vectors
 * The weights' layout is the same for both (4 slots of LANES words per row quad): the half vectors read the
 * first half of each slot's words.
 */
#if !defined(QV) || !defined(QI) || !defined(QDOT) || !defined(QACC)
#error "int8_accumulate.h is part of int8_kernel.h: define QV, QI, QDOT and QACC before including it"
#endif

typedef unsigned QACC(vu) __attribute__((vector_size(sizeof(QI)))); /* sums that wrap, with no overflow */
typedef int QACC(vw) __attribute__((vector_size(sizeof(QI)), aligned(4), may_alias)); /* a weight vector in place */

/* The weight vector at p, loaded as one: GCC compiled the AVX2 copy's four memcpy into a vector array as one
 * 128-byte copy through the stack, 16 bytes at a time, whose 32-byte reloads then waited for the stores. */
static inline __attribute__((always_inline)) QI QACC(wload)(const uint32_t *p) {
    return (QI) * (const QACC(vw) *)(const void *)p;
}

/* acc[m][s] += the products of mb rows' `words` quads (rows[m]) with the panel's weights w, for its first `slots`
 * slots (mb and slots constants after inlining); the sums wrap modulo 2^32, the final ones exact. */
static inline __attribute__((always_inline)) void QACC(accumulate_quads)(QI acc[][4], const uint32_t *const rows[],
                                                                         int words, const uint32_t *w, const int mb,
                                                                         const int slots) {
    int k = 0;
    if (mb == 1) { /* 4 accumulators would wait on each other: a second set for odd words keeps 8 in flight */
        QI odd[4] = {{0}, {0}, {0}, {0}};
        for (; k + 1 < words; k += 2, w += 8 * LANES) {
            const QI a = (QI){0} + (int)rows[0][k], b = (QI){0} + (int)rows[0][k + 1];
            for (int s = 0; s < slots; s++) {
                acc[0][s] = QDOT(acc[0][s], a, QACC(wload)(w + s * LANES));
                odd[s] = QDOT(odd[s], b, QACC(wload)(w + (4 + s) * LANES));
            }
        }
        for (int s = 0; s < slots; s++) acc[0][s] = (QI)((QACC(vu))acc[0][s] + (QACC(vu))odd[s]);
    }
    for (; k < words; k++, w += 4 * LANES) {
        QI ws[4];
        for (int s = 0; s < slots; s++) ws[s] = QACC(wload)(w + s * LANES);
#pragma GCC unroll 8
        for (int m = 0; m < mb; m++) {
            const QI a = (QI){0} + (int)rows[m][k];
            for (int s = 0; s < slots; s++) acc[m][s] = QDOT(acc[m][s], a, ws[s]);
        }
    }
}

/* acc[m][s] (the bias) += the products of tile rows r0..r0+mb-1 with panel p's first `slots` slots: for each
 * part (x, then h), its int32 sums (with vpdpbusd started at the columns' -128·Σ q), times the row's and the
 * column's scales. */
static inline __attribute__((always_inline)) void QACC(tile_quads)(const Job *job, int p, int r0, QV acc[][4],
                                                                   const int mb, const int slots) {
    const uint32_t *rows[MB];
    const int32_t *quant;
    const uint32_t *w = NAME(quad_rows_of)(job, p, r0, mb, rows, &quant);
    const int part_words[2] = {int8_x_words(job->k_x), int8_row_words(job->k_x, job->k_h) - int8_x_words(job->k_x)};
    for (int part = 0; part < 2; part++) {
        if (part_words[part] == 0) continue;
        QI sums[MB][4];
#pragma GCC unroll 8
        for (int m = 0; m < mb; m++)
            for (int s = 0; s < slots; s++) {
                if (QUAD_ZERO) /* the rows' offset, taken back */
                    memcpy(&sums[m][s], quant + (2 + part) * 4 * LANES + s * LANES, sizeof(QI));
                else
                    sums[m][s] = (QI){0};
            }
        QACC(accumulate_quads)(sums, rows, part_words[part], w, mb, slots);
#pragma GCC unroll 8
        for (int m = 0; m < mb; m++) {
            const float row_scale = NAME(quad_scales)(job, r0 + m)[part];
            for (int s = 0; s < slots; s++) {
                QV column_scale;
                memcpy(&column_scale, quant + part * 4 * LANES + s * LANES, sizeof column_scale);
                acc[m][s] += __builtin_convertvector(sums[m][s], QV) * (column_scale * row_scale);
            }
        }
#pragma GCC unroll 8
        for (int m = 0; m < mb; m++) rows[m] += part_words[0];
        w += (size_t)part_words[0] * 4 * LANES;
    }
}
