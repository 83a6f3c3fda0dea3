/* The fused step kernel, compiled for AVX-512, AVX2 and plain x86-64 (or any CPU), chosen at import, and
 * for AVX512_BF16 and AMX (bfloat16 weights times bfloat16 rows, BF16_DOT Jobs) and AVX512_VNNI or AVX2 (int8
 * weights times 8-bit rows, INT8_DOT Jobs) where the CPU has them.
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
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

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

/* AVX512_BF16 (Intel Sapphire Rapids and later, AMD Zen 4 and later): bfloat16 weights times rows rounded
 * to bfloat16, two products per lane and instruction (dot_kernel.h). */
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw,avx512bf16,fma")
#define LANES 16
#define MB 6
#define BLOCKED 0
#define PAIRS 1
#define WT uint16_t
#define NAME(x) x##_avx512_dot
#include "fused_kernel.h"
#undef WT
#undef NAME
#undef LANES
#undef MB
#undef BLOCKED
#undef PAIRS
#pragma GCC pop_options

/* AVX512_VNNI (Intel Cascade Lake and later, AMD Zen 4 and later): int8 weights times rows quantized to 8
 * bits, four products per lane and instruction, summed in int32 (int8_kernel.h). */
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw,avx512vnni,fma")
#define LANES 16
#define MB 6
#define BLOCKED 0
#define QUADS 1
#define WT int8_t
#define NAME(x) x##_avx512_int8
#include "fused_kernel.h"
#undef WT
#undef NAME
#undef LANES
#undef MB
#undef BLOCKED
#undef QUADS
#pragma GCC pop_options

/* AMX (Sapphire Rapids and later): BF16_DOT Jobs of amx_min_batch rows and more, on tiles. */
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw,avx512bf16,fma,amx-tile,amx-bf16")
#include "amx_kernel.h"
#pragma GCC pop_options

/* Batches from this size step on AMX tiles (in blocks of AMX_ROWS rows, the last one partly empty): measured
 * on a Sapphire Rapids Xeon (one thread), AMX against vdpbf16ps took 57 against 25 µs at batch 1 of the
 * seed model, 72 against 91 at 8, 108 against 339 at 32; 2 x LSTM(512): 360 against 330 µs at 1, 389
 * against 847 at 8. RNNSTREAM_AMX=n sets it (0: never AMX). */
static int amx_min_batch = 8;

static void run_dot_any(const Job *job) {
    if (chosen.amx && job->batch >= amx_min_batch)
        run_amx(job);
    else
        run_avx512_dot(job);
}

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

/* AVX2: int8 weights times rows quantized to 8 bits by vpmaddubsw and vpmaddwd, the same exact int32 sums as
 * AVX512_VNNI's (int8_kernel.h), for CPUs without AVX-512 (AMD Zen 1 to 3, Intel's client cores). */
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define LANES 8
#define MB 3
#define BLOCKED 0
#define QUADS 1
#define WT int8_t
#define NAME(x) x##_avx2_int8
#include "fused_kernel.h"
#undef WT
#undef NAME
#undef LANES
#undef MB
#undef BLOCKED
#undef QUADS
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

Isa chosen = {"portable", 4, 1, run_portable, run_portable_bf16, NULL, 0, 0};

void run_job(const Job *job) {
    switch (job->weight_type) { /* make_plan() refuses BF16_DOT and INT8_DOT weights where their run is NULL */
        case BF16_DOT: chosen.run_dot(job); break;
        case INT8_DOT: chosen.run_int8(job); break;
        case BF16_WIDEN: chosen.run_bf16(job); break;
        default: chosen.run(job);
    }
}

void choose_isa(void) {
    const char *wanted = getenv("RNNSTREAM_KERNEL_ISA");
    int allow_avx512 = wanted == NULL || strcmp(wanted, "avx512") == 0;
    int allow_avx2 = allow_avx512 || strcmp(wanted, "avx2") == 0;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (allow_avx512 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl")) {
        chosen = (Isa){"avx512", 16, 0, run_avx512, run_avx512_bf16, NULL, 0, 0};
        if (__builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw")) {
            const char *amx = getenv("RNNSTREAM_AMX");
            chosen.run_dot = run_dot_any;
            chosen.amx = (amx == NULL || strcmp(amx, "0") != 0) && amx_enable();
            if (amx != NULL && atoi(amx) > 0) amx_min_batch = atoi(amx);
            /* vdpbf16ps does twice an FMA's products per instruction on AMD (Zen 4: seed model, 2 threads,
             * bf16-dot against bf16-widen took 13.2 against 14.1 µs at batch 1, 26 against 45 at 8, 513
             * against 971 at 256, 2,032 against 3,897 at 1,024); on a Sapphire Rapids Xeon it ran at half
             * FMA's rate, so there only AMX makes it the faster. */
            chosen.dot_fast = chosen.amx || __builtin_cpu_is("amd");
        }
        if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw"))
            chosen.run_int8 = run_avx512_int8;
    } else if (allow_avx2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        chosen = (Isa){"avx2", 8, 1, run_avx2, run_avx2_bf16, NULL, 0, 0, run_avx2_int8};
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
