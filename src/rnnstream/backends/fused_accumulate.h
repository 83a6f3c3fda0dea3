/* The fused kernel's product loop, part of the fused_kernel.h template and included by it once per vector
 * type: with these macros set (besides the template's own, LANES, WT and NAME):
 *   V       the accumulators' vector type: LANES floats, or the low half of them (NAME(tile_low))
 *   ACC(x)  x with the copy's suffix, and "_low" for the half vectors
 * The weights' layout is the same for both (4 slots of LANES floats per input): the half vectors read the
 * first half of each slot's LANES.
 */
#if !defined(V) || !defined(ACC)
#error "fused_accumulate.h is part of fused_kernel.h: define V and ACC(x) before including it"
#endif

/* Two slots' weight vectors as floats, from p: as they are, or from bfloat16 weights packed in pairs
 * (packing.py): 32-bit word j holds lane j of the first slot in its low half and of the second in its
 * high half, so one load, a shift and a mask widen both, with no shuffle. */
static inline __attribute__((always_inline)) void ACC(wload2)(const WT *p, V *first, V *second) {
    if (sizeof(WT) == sizeof(float)) {
        memcpy(first, p, sizeof *first);
        memcpy(second, (const float *)(const void *)p + LANES, sizeof *second);
        return;
    }
    typedef unsigned int ACC(vu) __attribute__((vector_size(sizeof(V))));
    ACC(vu) words; /* unsigned: the shift into the sign bit is well defined */
    memcpy(&words, p, sizeof words);
    *first = (V)(words << 16);
    *second = (V)(words & 0xffff0000u);
}

/* acc[m][s] += sum over k < n of rows[m][k] · w[k][s], for mb rows and the first `slots` slots (both constants
 * after inlining: the other slots' weights are never loaded, their accumulators never touched). */
static inline __attribute__((always_inline)) void ACC(accumulate)(V acc[][4], const float *const rows[], int n,
                                                                  const WT *w, const int mb, const int slots) {
    int k = 0;
    if (mb == 1) {
        /* One row has 4 accumulators: each FMA would wait for the last one (latency 4). A second set for
         * odd k keeps 8 in flight. */
        V odd[4] = {{0}, {0}, {0}, {0}};
        for (; k + 1 < n; k += 2, w += 8 * LANES) {
            const float a = rows[0][k], b = rows[0][k + 1];
            V we[4], wo[4];
            ACC(wload2)(w, &we[0], &we[1]);
            ACC(wload2)(w + 2 * LANES, &we[2], &we[3]);
            ACC(wload2)(w + 4 * LANES, &wo[0], &wo[1]);
            ACC(wload2)(w + 6 * LANES, &wo[2], &wo[3]);
            for (int s = 0; s < slots; s++) {
                acc[0][s] += a * we[s];
                odd[s] += b * wo[s];
            }
        }
        for (int s = 0; s < slots; s++) acc[0][s] += odd[s];
    }
    for (; k < n; k++, w += 4 * LANES) {
        V ws[4];
        ACC(wload2)(w, &ws[0], &ws[1]);
        ACC(wload2)(w + 2 * LANES, &ws[2], &ws[3]);
#pragma GCC unroll 8
        for (int m = 0; m < mb; m++) {
            float a = rows[m][k];
#pragma GCC unroll 4
            for (int s = 0; s < slots; s++) acc[m][s] += a * ws[s];
        }
    }
}
