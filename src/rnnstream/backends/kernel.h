/* The fused step kernel's interface: the task one call runs (Job) and the compiled variant this CPU runs.
 *
 * The extension's translation units share it: kernel.c compiles the kernel (fused_kernel.h) once per
 * instruction set and picks one at import, work_pool.c shares a Job's work with helper threads,
 * launcher.c runs Jobs on a background thread, and _fused.c, the Python module, builds Jobs from plans
 * and arrays.
 */
#ifndef RNNSTREAM_KERNEL_H
#define RNNSTREAM_KERNEL_H

#include <Python.h> /* Py_ssize_t */
#include <stddef.h>
#include <stdint.h>

/* Only PyInit__fused leaves the extension: the names shared between its files stay inside it. */
#pragma GCC visibility push(hidden)

enum { EPI_ACT = 0, EPI_LSTM = 1, EPI_GRU = 2 };
enum { ACT_LINEAR = 0, ACT_TANH = 1, ACT_SIGMOID = 2, ACT_RELU = 3 };
enum { BF16_WIDEN = 1, BF16_DOT = 2, INT8_DOT = 3 }; /* Job.weight_type, besides 0: float32 */

typedef struct {
    int epilogue, activation, batch, panels, k_x, k_h, units, threads;
    const void *weights; /* float, bfloat16 (uint16_t) or int8_t, as weight_type says */
    const float *bias, *x, *h, *c;
    float *out, *out_c;
    Py_ssize_t x_stride, h_stride, c_stride, out_stride, out_c_stride; /* in floats */
    float *packed; /* non-NULL: take the blocked path, packing the rows here (batch rounded up to BR, x K); on the
                    * BF16_DOT and INT8_DOT paths, the rows as their products read them */
    const float *columns; /* non-NULL: a narrow layer's Job (NARROW_UNITS): unit j's weights at j·K .. j·K+K-1 */
    int weight_type; /* 0: float32 weights; BF16_WIDEN: bfloat16 weights widened on load; BF16_DOT: bfloat16
                      * weights in k-pairs, the rows rounded to bfloat16 into `packed` (vdpbf16ps, dot_kernel.h);
                      * INT8_DOT: int8 weights in k-quads, the rows quantized to 8 bits into `packed` (vpdpbusd,
                      * or AVX2's vpmaddubsw: int8_kernel.h), with their per-column scales and sums in `quant` */
    const int32_t *quant; /* INT8_DOT: per panel, 4 x 4 slots x LANES words (int8_kernel.h) */
    long flops;    /* batch x the node's FLOPs per row */
} Job;

/* The blocked path (fused_kernel.h): BR x BV tiles, KC inputs per k-block, at most RB_MAX rows per block. */
#define BR 6
#define BV 2 /* fused_kernel.h loads the weights of slot pairs at once */
#define KC 256
#define RB_MAX 48
#define BLOCK_FLOATS 32768 /* 128 KB */

/* A Dense or SimpleRNN layer of at most NARROW_UNITS units (an output head) with float32 weights keeps its
 * weights' columns, k-contiguous, beside the panel (_fused.c: make_plan); from NARROW_MIN_BATCH rows on its Job
 * gets them (Job.columns) and runs one dot product per output along the inputs (fused_narrow.h). */
#define NARROW_UNITS 4
#define NARROW_MIN_BATCH 8

typedef struct {
    const char *name;
    int lanes, blocked;
    void (*run)(const Job *); /* float32 weights */
    void (*run_bf16)(const Job *);
    void (*run_dot)(const Job *); /* BF16_DOT Jobs; NULL where the CPU lacks AVX512_BF16 */
    int amx; /* BF16_DOT Jobs of a few rows and more run on AMX tiles (amx_kernel.h; kernel.c: amx_min_batch) */
    int dot_fast; /* BF16_DOT runs faster than bfloat16 weights widened to float32 (kernel.c: choose_isa) */
    void (*run_int8)(const Job *); /* INT8_DOT Jobs; NULL on the portable build and on AVX-512 without VNNI */
} Isa;

/* The variant that runs every Job: the portable one until choose_isa(). */
extern Isa chosen;

/* One Job, by the chosen variant for its weights' type. */
void run_job(const Job *job);

/* The widest instruction set this CPU has; RNNSTREAM_KERNEL_ISA=avx2|portable asks for a narrower one
 * (the tests use it to check every compiled variant on one machine); with AVX512_BF16, run_dot, and AMX
 * where the CPU and the OS allow it (RNNSTREAM_AMX=0: not; =n: from batch n). Once, at import. */
void choose_isa(void);

/* Words (uint32: a pair of bfloat16) of one row [x, h] on the BF16_DOT path: each part in pairs, the odd one
 * padded with a zero (dot_used_words), then zeros up to a multiple of DOT_CHUNK (an AMX tile's 16 words:
 * amx_kernel.h). The weights of a BF16_DOT plan hold 4·lanes words per row pair of each panel, as many. */
#define DOT_CHUNK 16
#define AMX_ROWS 32 /* the AMX path steps blocks of 32 rows: its scratch holds the batch rounded up to them */
static inline int dot_used_words(int k_x, int k_h) { return (k_x + 1) / 2 + (k_h + 1) / 2; }
static inline int dot_row_words(int k_x, int k_h) {
    return (dot_used_words(k_x, k_h) + DOT_CHUNK - 1) / DOT_CHUNK * DOT_CHUNK;
}

/* Words (uint32: four 8-bit values) of one row [x, h] on the INT8_DOT path: each part in quads, its last word
 * padded (int8_kernel.h); the weights of an INT8_DOT plan hold 4·lanes words per row quad of each panel, as
 * many. After a batch's rows, Job.packed holds two floats per row: the scales of its x and h parts. */
#define INT8_MAX_ROWS 133000 /* rows of one part (x or h): 127 · 127 · 133,000 < 2^31, its int32 sums exact */
static inline int int8_x_words(int k_x) { return (k_x + 3) / 4; }
static inline int int8_row_words(int k_x, int k_h) { return int8_x_words(k_x) + (k_h + 3) / 4; }

/* The blocked path's packed rows: at least `floats` floats, 64-byte aligned, one buffer per calling
 * thread, grown as needed and kept (NULL when out of memory). */
float *scratch_for(size_t floats);

#pragma GCC visibility pop

#endif
