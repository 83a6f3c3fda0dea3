/* The BF16_DOT product on AMX tiles (Intel Sapphire Rapids and later): blocks of AMX_ROWS batch rows.
 *
 * Part of kernel.c, included after fused_kernel.h's AVX512_BF16 copy (whose row pairing and epilogue
 * it reuses: round_all_rows_avx512_dot, finish_rows_avx512_dot) under `#pragma GCC target("amx-tile,amx-bf16")`.
 * The same numbers as dot_kernel.h: bfloat16 rows times bfloat16 weights, exact products summed in
 * float32, in another order. `_tile_dpbf16ps(c, a, b)` adds to a 16 x 16 float32 tile c the products of
 * a (16 rows x 16 words of bfloat16 pairs) and b (16 words x 16 columns of pairs), which is how the rows
 * (Job.packed) and the weights (one slot of a panel: 16 columns, 4 slots x 16 words apart) are laid out
 * already: no copy. Eight tiles: C 0-3 (rows 0-15 and 16-31 x two slots), A 4-5 (the two row halves),
 * B 6-7 (the two slots): each tile loaded serves two products.
 *
 * Linux hands a process the AMX state only when asked (arch_prctl ARCH_REQ_XCOMP_PERM): amx_enable().
 */
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} TileConfig;

/* Whether this CPU has AMX-BF16 and the OS lets this process use it (asked once, at import). */
static int amx_enable(void) {
    unsigned int a, b, c, d;
    __asm__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
    const int amx_bf16 = (d >> 22) & 1, amx_tile = (d >> 24) & 1;
    return amx_bf16 && amx_tile && syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

/* z[row][slot][lane] (AMX_ROWS x 4 x 16 floats) = the products of rows r0.. with panel p, slots s and s + 1. */
static void amx_slot_pair(const Job *job, int p, int r0, int s, float *z) {
    const int words = dot_row_words(job->k_x, job->k_h);
    const uint32_t *rows = (const uint32_t *)(const void *)job->packed + (size_t)r0 * words;
    const uint32_t *w = (const uint32_t *)job->weights + (size_t)p * words * 64 + s * 16;
    const size_t row_bytes = (size_t)words * 4;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int k = 0; k < words; k += DOT_CHUNK) {
        _tile_loadd(4, rows + k, row_bytes);
        _tile_loadd(5, rows + 16 * (size_t)words + k, row_bytes);
        _tile_loadd(6, w + (size_t)k * 64, 256);
        _tile_loadd(7, w + (size_t)k * 64 + 16, 256);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, z + s * 16, 256);
    _tile_stored(1, z + (s + 1) * 16, 256);
    _tile_stored(2, z + 16 * 64 + s * 16, 256);
    _tile_stored(3, z + 16 * 64 + (s + 1) * 16, 256);
}

/* Items lo..hi-1: item t is panel t / blocks, rows from (t % blocks)·AMX_ROWS (panel-major: a panel's
 * weights stay in cache while its row blocks pass). */
static void amx_items(const Job *job, long lo, long hi, const void *ctx) {
    (void)ctx;
    TileConfig config;
    memset(&config, 0, sizeof config);
    config.palette = 1;
    for (int t = 0; t < 8; t++) {
        config.rows[t] = 16;
        config.colsb[t] = 64;
    }
    _tile_loadconfig(&config);
    float z[AMX_ROWS * 64] __attribute__((aligned(64)));
    const int blocks = (job->batch + AMX_ROWS - 1) / AMX_ROWS;
    for (long t = lo; t < hi; t++) {
        const int p = (int)(t / blocks), r0 = (int)(t % blocks) * AMX_ROWS;
        const int count = job->batch - r0 < AMX_ROWS ? job->batch - r0 : AMX_ROWS;
        amx_slot_pair(job, p, r0, 0, z);
        amx_slot_pair(job, p, r0, 2, z);
        const float *bias = job->bias + (size_t)p * 64;
        vf_avx512_dot acc[AMX_ROWS][4];
        for (int m = 0; m < count; m++)
            for (int s = 0; s < 4; s++)
                acc[m][s] = load_avx512_dot(z + m * 64 + s * 16) + load_avx512_dot(bias + s * 16);
        finish_rows_avx512_dot(job, p, r0, count, acc);
    }
    _tile_release();
}

static void run_amx(const Job *job) {
    round_all_rows_avx512_dot(job);
    const long items = (long)job->panels * ((job->batch + AMX_ROWS - 1) / AMX_ROWS);
    const long chunk = items / (8L * job->threads) > 1 ? items / (8L * job->threads) : 1;
    parallel_range(job, items, chunk, amx_items, NULL);
}
