/* How one kernel call's tiles are shared between the calling thread and the work pool's helpers: part of the
 * fused_kernel.h template (included by it, once per instruction set, after the tiles it runs: NAME(tile_fns)).
 *
 * NAME(run) is the copy's entry point. A narrow layer's Job runs its dot products (fused_narrow.h), and with
 * BLOCKED, a Job with Job.packed set the blocked path (fused_kernel.h). Otherwise, small batches go tile by tile
 * in panel-major order, so that each thread reads its share of the weights from its own core's cache; large ones
 * row block by row block, so that each thread keeps the same rows through every layer and step (see NAME(run)
 * for when, and what it measured).
 */

/* The most tiles per row block on the row-major path (NAME(block_range)): 48 rows at MB 6, which share each
 * panel's weights while they are in cache. Every row block reads all of the layer's weights: blocks of fewer
 * tiles only for layers of at most ROW_BLOCK_WEIGHTS bytes of weights, which stay in the caches (the large
 * model's LSTM(512), 8 MB, stepped 4% slower at 64 rows in blocks of 2 tiles, the seed model 10-22% faster). */
#define ROW_BLOCK_TILES 8
#define ROW_BLOCK_WEIGHTS (1L << 20)

/* Tiles lo .. hi-1 in panel-major order: tile t is panel t / row_blocks, rows from (t % row_blocks)·MB. */
static void NAME(tile_range)(const Job *job, long lo, long hi, const void *ctx) {
    (void)ctx;
    const int row_blocks = (job->batch + MB - 1) / MB;
    for (long t = lo; t < hi; t++) {
        const int p = (int)(t / row_blocks), r0 = (int)(t % row_blocks) * MB;
        NAME(tile_fns)[job->batch - r0 < MB ? job->batch - r0 : MB][NAME(shape_of)(job, p)](job, p, r0);
    }
}

/* The row-major path's blocks. With bfloat16 or int8 rows (PAIRS, QUADS), each block's rows are rounded into
 * Job.packed by the first thread to reach one of its items, just before its tiles read them: by the core that
 * wrote them and will read them, without a pass of its own over every row first (a task, a barrier and, at
 * 256 rows, 5-17 µs per layer on two threads: more than on one). */
#define ROUNDED_BLOCKS 1024 /* more blocks than this: every row rounded first, by NAME(round_all_rows) */
typedef struct {
    int block_tiles;
    _Atomic int *rounded; /* per block: 0 not yet, 1 being rounded, 2 done; NULL: no rounding (float rows), or done */
} NAME(Blocks);

#if PAIRS || QUADS
/* Block `block`'s rows into Job.packed, once: the first thread to come rounds them, a second waits for it. */
static void NAME(round_block)(const Job *job, const NAME(Blocks) *blocks, int block) {
    _Atomic int *flag = &blocks->rounded[block];
    int seen = atomic_load_explicit(flag, memory_order_acquire);
    if (seen == 2) return;
    if (seen == 0 && atomic_compare_exchange_strong(flag, &seen, 1)) {
        const long r0 = (long)block * blocks->block_tiles * MB, r1 = r0 + (long)blocks->block_tiles * MB;
        NAME(round_rows)(job, r0, r1 < job->batch ? r1 : job->batch, NULL);
        atomic_store_explicit(flag, 2, memory_order_release);
        return;
    }
    wait_until(flag, 2);
}
#endif

/* Item (block, p): the tiles of row block `block` (blocks->block_tiles tiles of MB rows) in panel p, its rows
 * rounded first where they need it. */
static inline void NAME(row_block_item)(const Job *job, const NAME(Blocks) *blocks, int block, int p) {
#if PAIRS || QUADS
    if (blocks->rounded != NULL) NAME(round_block)(job, blocks, block);
#endif
    const int row_blocks = (job->batch + MB - 1) / MB, shape = NAME(shape_of)(job, p);
    const int first = block * blocks->block_tiles;
    const int last = first + blocks->block_tiles < row_blocks ? first + blocks->block_tiles : row_blocks;
    for (int b = first; b < last; b++) {
        const int r0 = b * MB;
        NAME(tile_fns)[job->batch - r0 < MB ? job->batch - r0 : MB][shape](job, p, r0);
    }
}

/* Items lo .. hi-1 in row-block-major order: item t is (block t / panels, panel t % panels). All of them at once
 * means one thread runs the task alone (work_pool.c: a late helper, a busy pool), which goes panel by panel
 * instead, so that each panel's weights are read once, not once per block. */
static void NAME(block_range)(const Job *job, long lo, long hi, const void *ctx) {
    const NAME(Blocks) *blocks = ctx;
    const int count = (int)((((job->batch + MB - 1) / MB) + blocks->block_tiles - 1) / blocks->block_tiles);
    if (lo == 0 && hi == (long)count * job->panels) {
        for (int p = 0; p < job->panels; p++)
            for (int block = 0; block < count; block++) NAME(row_block_item)(job, blocks, block, p);
        return;
    }
    for (long t = lo; t < hi; t++) NAME(row_block_item)(job, blocks, (int)(t / job->panels), (int)(t % job->panels));
}

static void NAME(run)(const Job *job) {
#if !PAIRS && !QUADS
    if (NAME(run_narrow)(job)) return; /* a narrow layer's, from NARROW_MIN_BATCH rows (Job.columns) */
#endif
#if BLOCKED
    if (job->packed != NULL) {
        NAME(run_blocked)(job);
        return;
    }
#endif
    /* Which thread computes what. Tiles in panel-major order give each thread the same panels from one call to
     * the next (the caller claims from the front, helpers from the back: work_pool.c), so a small batch reads
     * its share of the weights from its own core's cache. From two row blocks of two tiles or more per thread
     * on, items in row-block-major order give each thread the same rows instead: every layer's and every
     * step's outputs of a row are then written and read again by one core. Split by panels, half of each
     * row's inputs were written by the other core, and on a 2-core Zen 4 VM whose cores are ~170 ns apart (a
     * cache line's one-way trip) rounding the rows to bfloat16 took 14-50 µs instead of 9 at batch 256. This
     * order took the seed model's bf16 step at 256 rows 2-18% faster, int8 2-19%, fp32 at 1,024 rows 9-13%;
     * at 64 rows (blocks of 2 tiles) fp32 10%, bf16 14%, int8 22%. */
    const long row_blocks = (job->batch + MB - 1) / MB, per_thread = row_blocks / (2L * job->threads);
    const int block_tiles = per_thread < ROW_BLOCK_TILES ? (int)per_thread : ROW_BLOCK_TILES;
    const long weight_bytes = (long)job->panels * (job->k_x + job->k_h) * 4 * LANES * (long)sizeof(WT);
    const int cached = weight_bytes <= ROW_BLOCK_WEIGHTS;
    if (job->threads > 1 && (block_tiles == ROW_BLOCK_TILES || (block_tiles >= 2 && cached))) {
        const long count = (row_blocks + block_tiles - 1) / block_tiles, items = count * job->panels;
        const long chunk = items / (16L * job->threads) > 1 ? items / (16L * job->threads) : 1;
        NAME(Blocks) blocks = {block_tiles, NULL};
#if PAIRS || QUADS
        _Atomic int rounded[ROUNDED_BLOCKS];
        if (count <= ROUNDED_BLOCKS) {
            for (long i = 0; i < count; i++) atomic_init(&rounded[i], 0);
            blocks.rounded = rounded;
        } else {
            NAME(round_all_rows)(job);
        }
#endif
        parallel_range(job, items, chunk, NAME(block_range), &blocks);
        return;
    }
#if PAIRS || QUADS
    NAME(round_all_rows)(job);
#endif
    const long tiles_total = (long)job->panels * row_blocks;
    /* Chunks of a sixteenth of a thread's share: a helper the OS has not scheduled leaves its share to the
     * others (work_pool.h). */
    const long chunk = tiles_total / (16L * job->threads) > 1 ? tiles_total / (16L * job->threads) : 1;
    parallel_range(job, tiles_total, chunk, NAME(tile_range), NULL);
}
