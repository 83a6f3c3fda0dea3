/* The fused step kernel, compiled for AVX-512, AVX2 and plain x86-64 (or any CPU), chosen at import.
 *
 * Each variant is fused_kernel.h compiled under its own `#pragma GCC target`, with its vector width
 * and tile sizes, twice: for float32 weights and for bfloat16 weights; the copies' names end in the
 * instruction set's suffix (and _bf16). The headers come first, so
 * that nothing they declare is compiled for a wider instruction set than the CPU may have.
 */
#include "kernel.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "work_pool.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,fma")
#define LANES 16
#define MB 6
#define BLOCKED 0 /* 6 x 4-vector tiles run near peak unblocked; blocked ran 2-5% slower on a Zen 5 */
#define WT float
#define NAME(x) x##_avx512
#include "fused_kernel.h"
#undef WT
#undef NAME
#define WT uint16_t
#define NAME(x) x##_avx512_bf16
#include "fused_kernel.h"
#undef WT
#undef NAME
#undef LANES
#undef MB
#undef BLOCKED
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define LANES 8
#define MB 2
#define BLOCKED 1
#define WT float
#define NAME(x) x##_avx2
#include "fused_kernel.h"
#undef WT
#undef NAME
#define WT uint16_t
#define NAME(x) x##_avx2_bf16
#include "fused_kernel.h"
#undef WT
#undef NAME
#undef LANES
#undef MB
#undef BLOCKED
#pragma GCC pop_options
#endif

#define LANES 4
#define MB 2
#define BLOCKED 1
#define WT float
#define NAME(x) x##_portable
#include "fused_kernel.h"
#undef WT
#undef NAME
#define WT uint16_t
#define NAME(x) x##_portable_bf16
#include "fused_kernel.h"
#undef WT
#undef NAME
#undef LANES
#undef MB
#undef BLOCKED

Isa chosen = {"portable", 4, 1, run_portable, run_portable_bf16};

void run_job(const Job *job) {
    if (job->bf16)
        chosen.run_bf16(job);
    else
        chosen.run(job);
}

void choose_isa(void) {
    const char *wanted = getenv("RNNSTREAM_KERNEL_ISA");
    int allow_avx512 = wanted == NULL || strcmp(wanted, "avx512") == 0;
    int allow_avx2 = allow_avx512 || strcmp(wanted, "avx2") == 0;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (allow_avx512 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl")) {
        chosen = (Isa){"avx512", 16, 0, run_avx512, run_avx512_bf16};
    } else if (allow_avx2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        chosen = (Isa){"avx2", 8, 1, run_avx2, run_avx2_bf16};
    }
#else
    (void)allow_avx2;
#endif
}

/* Kept per thread, so a step allocates nothing once the largest batch has been seen. */
static _Thread_local float *scratch;
static _Thread_local size_t scratch_floats;

float *scratch_for(size_t floats) {
    if (floats > scratch_floats) {
        free(scratch);
        scratch_floats = 0;
        scratch = aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64);
        if (scratch == NULL) return NULL;
        scratch_floats = floats;
    }
    return scratch;
}
