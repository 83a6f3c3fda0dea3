/* The work pool (work_pool.h): helper threads that claim chunks of the caller's task. */
#define _GNU_SOURCE /* pthread_setname_np */
#include "work_pool.h"

#if HAVE_WORK_POOL
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#define POOL_MAX_HELPERS 63
/* How long an idle helper polls for the next task before it sleeps: pool_spin_us(), RNNSTREAM_SPIN_US. It must
 * outlast the wait for the next task, up to a chunk of the caller's plus the Python between two layers: a helper
 * that slept is woken onto the caller's core and helps little. With ~30 µs of polls the large model at batch 256
 * stepped at one thread's speed (6–7 ms instead of 3.8) whenever another process had used the other core. Timed,
 * not counted: 4,000 polls took ~115 µs on a Zen 5 and ~150 on another, and steps that come back to back
 * (run_small_alone) are those within three quarters of it. A longer spin keeps the helper for a stream stepped
 * at a steady rate, its core busy the while (seed model, batch 1, a 2-core Zen 5, a 0.1 ms sleep before each
 * step, ~174 µs: 6.8–10.6 µs a step with 1,000 µs, 13.1–13.6 with the default). 0: a helper sleeps at once. */
static _Atomic long long spin_ns = 150000; /* set by pool_spin_us() while helpers read it */
#define SPIN_US_MAX 1000000
/* After its first POOL_HOT_NS of polls, every POOL_YIELD_EVERY-th poll an idle helper yields:
 * when another library's threads (ONNX Runtime's pool, OpenBLAS) wait for the core it polls on, they run at
 * once instead of after its time slice. Not sooner: a yield is a system call (~0.6 µs on a Zen 4), and
 * a helper inside one notices the next task late; yielding from the first poll on made a batch-1 step of
 * the seed model (two layers, two tasks) 11.4 µs instead of 8.7. */
#define POOL_HOT_NS 26000
#define POOL_YIELD_EVERY 64
/* A helper is late when the caller, out of work, waits for its claimed chunks longer than this many
 * chunks of its own (plus LATE_SLACK_NS): it was preempted, most likely by another pool spinning in the
 * same process. When helpers are late in LATE_TASKS tasks in a row, the next `solo` tasks run on the caller
 * alone, a number that doubles (to SOLO_MAX) while helpers keep being late and halves when they are not.
 * Not after one late task: a spinning neighbour makes every task late, but a helper also arrives late once
 * in a while without one (on a 2-core Zen 3 VM, one of the first steps after a pause), and a stretch alone
 * decided on that ran a bench round's 256-row steps at one core's speed (over 1.8 ms instead of 1.1) in 16
 * of 42 rounds; on two, in 4 of 42. */
/* A task of fewer FLOPs than this (~40 µs of one core) runs on the caller alone while a helper sleeps: waking
 * one costs more than such a task lasts. Measured on a 2-core Zen 4 VM: the waker spends ~10 µs in
 * pthread_cond_broadcast and the helper runs ~45 µs later; the seed model's batch-1 step after 200 µs idle
 * took 19.5 µs on one thread and 30 µs waking a helper into it; back to back (the helper polling), 14.5 µs
 * on two threads. See run_small_alone for when they are woken. */
#define WAKE_MIN_FLOPS 4000000L
#define LOOP_TASKS 8
#define LATE_CHUNKS 3
#define LATE_TASKS 2
#define LATE_SLACK_NS 20000
#define SOLO_MAX 1024
/* Lateness is forgotten after this long without a task: longer than another library's pool spins after its
 * last call (ONNX Runtime's ~38 ms, OpenBLAS's ~98 ms of CPU, measured on a Zen 4), so steps that resume
 * after a pause share their work again instead of inheriting a stretch alone decided beside a neighbour that
 * has gone quiet since. */
#define LATE_FORGOTTEN_NS 250000000LL

typedef struct {
    RangeFn fn;
    const Job *job;
    const void *ctx;
    long total, chunk;
    int helpers; /* helpers 0 .. helpers-1 take part */
} Task;

static struct {
    pthread_mutex_t lock; /* guards task, started and the helpers' sleep */
    pthread_cond_t wake;
    pthread_mutex_t busy; /* held by the one caller using the pool */
    Task task;
    int started;                /* helper threads running */
    _Atomic uint64_t published; /* generation of the latest task */
    _Atomic uint64_t claim;     /* claim_word(): generation, indices claimed from either end */
    _Atomic long done;          /* indices finished in the latest task */
    int solo, backoff;          /* tasks left to run alone; the next such run's length (both under busy) */
    int late_tasks;             /* tasks in a row whose helpers were late (under busy) */
    _Atomic int sleeping;       /* helpers asleep on `wake` (not polling) */
    long long last_end;         /* when the last task ended (under busy) */
    int streak;                 /* small tasks run alone back to back while helpers sleep (under busy) */
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_MUTEX_INITIALIZER};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* The claim word: generation (24 bits), indices claimed from the front (20 bits) and from the back (20 bits). */
#define INDEX_BITS 20
#define INDEX_MASK ((1L << INDEX_BITS) - 1)
#define TAG_SHIFT (2 * INDEX_BITS)

static inline uint64_t claim_word(uint64_t generation, long front, long back) {
    return (generation & 0xffffffu) << TAG_SHIFT | (uint64_t)front << INDEX_BITS | (uint64_t)back;
}

/* How many of the `left` indices one claim takes. A task cut into fine chunks (more than two per thread: the
 * kernel's tiles and row-block items) is claimed a chunk at a time, and near its end (less than two chunks per
 * thread left) a share of what is left, down to one index, so that the threads run out of work together: with
 * whole chunks to the end, a thread could wait up to a chunk for the other's last one (at 1,024 rows of the
 * seed model's LSTM(200), chunks of 8 row-block items, ~90 µs on an AVX-512 Xeon). A task cut into a chunk or
 * two per thread (rows rounded or packed, a narrow layer's rows) keeps its chunks whole. */
static inline long claim_size(const Task *task, long left) {
    const long threads = task->helpers + 1, tail = 2 * threads * task->chunk;
    if (task->chunk == 1 || left >= tail || task->total <= tail) return left < task->chunk ? left : task->chunk;
    const long share = left / (2 * threads);
    return share > 1 ? share : 1;
}

/* Claim and run chunks of the task of `generation` until none is left (or a later task replaced it). The
 * caller claims from the front and helpers from the back: from one call to the next each thread mostly gets
 * the same panels, whose weights stay in its core's cache (a batch-1 step of a model over 1 MB of weights
 * reads its half from L2 instead of L3), or at large batches the same rows (fused_split.h: NAME(run)). */
static long pool_work(uint64_t generation, const Task *task, int from_back) {
    const uint64_t tag = claim_word(generation, 0, 0);
    long ran = 0;
    for (;;) {
        uint64_t seen = atomic_load(&pool.claim);
        if ((seen & ~(((uint64_t)1 << TAG_SHIFT) - 1)) != tag) return ran;
        const long front = (long)(seen >> INDEX_BITS) & INDEX_MASK, back = (long)seen & INDEX_MASK;
        const long left = task->total - front - back;
        if (left <= 0) return ran;
        const long n = claim_size(task, left);
        const long lo = from_back ? task->total - back - n : front;
        const uint64_t next = from_back ? claim_word(generation, front, back + n) : claim_word(generation, front + n, back);
        if (!atomic_compare_exchange_weak(&pool.claim, &seen, next)) continue;
        task->fn(task->job, lo, lo + n, task->ctx);
        atomic_fetch_add(&pool.done, n);
        ran += n;
    }
}

/* One poll of a thread waiting for another of the same task: spin a while, then give the core away (the
 * other thread may be waiting for one). */
static void wait_turn(long spins) {
    if (spins < 20000)
        cpu_relax();
    else
        sched_yield();
}

void wait_until(_Atomic int *flag, int value) {
    for (long spins = 0; atomic_load_explicit(flag, memory_order_acquire) != value; spins++) wait_turn(spins);
}

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* After a task: were the helpers late (see LATE_CHUNKS)? Sets how many tasks the caller runs alone next. */
static void judge_helpers(const Task *task, long mine, long long working_ns, long long waiting_ns) {
    const int late = mine > 0 && mine < task->total &&
                     waiting_ns > LATE_CHUNKS * task->chunk * (working_ns / mine) + LATE_SLACK_NS;
    pool.late_tasks = !late ? 0 : pool.late_tasks < LATE_TASKS ? pool.late_tasks + 1 : LATE_TASKS;
    if (pool.late_tasks >= LATE_TASKS) {
        pool.backoff = pool.backoff < 8 ? 8 : pool.backoff * 2 > SOLO_MAX ? SOLO_MAX : pool.backoff * 2;
        pool.solo = pool.backoff;
    } else if (!late) {
        pool.backoff /= 2;
    }
}

static void *pool_helper(void *arg) {
    const int index = (int)(intptr_t)arg;
#if defined(__linux__)
    pthread_setname_np(pthread_self(), "rnnstream-pool"); /* what top -H and /proc/<pid>/task/<id>/comm show */
#endif
    uint64_t seen = atomic_load(&pool.published);
    for (;;) {
        const long long idle_since = now_ns();
        for (long i = 0; atomic_load(&pool.published) == seen; i++) {
            if (i % POOL_YIELD_EVERY == 0) { /* the clock at the first poll too: a spin of 0 polls not at all */
                const long long polled = now_ns() - idle_since;
                if (polled >= atomic_load_explicit(&spin_ns, memory_order_relaxed)) break;
                if (polled >= POOL_HOT_NS) sched_yield();
            }
            cpu_relax();
        }
        pthread_mutex_lock(&pool.lock);
        atomic_fetch_add(&pool.sleeping, 1);
        while (atomic_load(&pool.published) == seen) pthread_cond_wait(&pool.wake, &pool.lock);
        atomic_fetch_sub(&pool.sleeping, 1);
        seen = atomic_load(&pool.published);
        const Task task = pool.task;
        pthread_mutex_unlock(&pool.lock);
        if (index < task.helpers) (void)pool_work(seen, &task, 1);
    }
    return NULL;
}

/* Publish task (helpers 0 .. task.helpers-1 take part; total 0: they only wake) and wake sleeping helpers, starting
 * them on first need; its generation. Under busy. */
static uint64_t publish(const Task *task) {
    pthread_mutex_lock(&pool.lock);
    if (pool.started < task->helpers) { /* started on first need, then kept; signals stay with Python's threads */
        sigset_t all, before;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &before);
        while (pool.started < task->helpers) {
            pthread_t thread;
            if (pthread_create(&thread, NULL, pool_helper, (void *)(intptr_t)pool.started) != 0) break;
            pthread_detach(thread);
            pool.started++;
        }
        pthread_sigmask(SIG_SETMASK, &before, NULL);
    }
    const uint64_t generation = atomic_load(&pool.published) + 1;
    pool.task = *task;
    atomic_store(&pool.done, 0);
    atomic_store(&pool.claim, claim_word(generation, 0, 0));
    atomic_store(&pool.published, generation);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    return generation;
}

/* A small task while a helper sleeps (WAKE_MIN_FLOPS) runs on the caller. Waking the helpers only pays when
 * more tasks follow at once (a loop of steps): after LOOP_TASKS such tasks, each within three quarters of the
 * helpers' spin of the last (sooner than a woken helper stops polling), they are woken (to an empty task) and
 * poll for the next; steps that come farther apart (a stream stepped once a millisecond, by default) never pay
 * for a wake. Under busy. */
static void run_small_alone(const Task *task) {
    const long long start = now_ns();
    const long long spin = atomic_load_explicit(&spin_ns, memory_order_relaxed);
    pool.streak = start - pool.last_end < spin - spin / 4 ? pool.streak + 1 : 0;
    if (pool.streak >= LOOP_TASKS) {
        const Task wake = {task->fn, task->job, task->ctx, 0, task->chunk, task->helpers};
        (void)publish(&wake);
        pool.streak = 0;
    }
    task->fn(task->job, 0, task->total, task->ctx);
}

void parallel_range(const Job *job, long total, long chunk, RangeFn fn, const void *ctx) {
    const int helpers = job->threads - 1 < POOL_MAX_HELPERS ? job->threads - 1 : POOL_MAX_HELPERS;
    if (helpers <= 0 || total <= chunk || total > INDEX_MASK || pthread_mutex_trylock(&pool.busy) != 0) {
        fn(job, 0, total, ctx);
        return;
    }
    const Task task = {fn, job, ctx, total, chunk, helpers};
    if ((pool.solo > 0 || pool.backoff > 0 || pool.late_tasks > 0) && now_ns() - pool.last_end > LATE_FORGOTTEN_NS)
        pool.solo = pool.backoff = pool.late_tasks = 0; /* lateness gone stale */
    if (pool.solo > 0) { /* helpers were late lately: step on this thread alone */
        pool.solo--;
        fn(job, 0, total, ctx);
    } else if (job->flops < WAKE_MIN_FLOPS && atomic_load(&pool.sleeping) > 0) {
        run_small_alone(&task);
    } else {
        const uint64_t generation = publish(&task);
        const long long start = now_ns();
        const long mine = pool_work(generation, &task, 0);
        const long long worked = now_ns();
        /* Only chunks a helper claimed are left, each a small share of the task. */
        for (long spins = 0; atomic_load(&pool.done) < total; spins++) wait_turn(spins);
        judge_helpers(&task, mine, worked - start, now_ns() - worked);
    }
    pool.last_end = now_ns();
    pthread_mutex_unlock(&pool.busy);
}

long pool_spin_us(long us) {
    if (us >= 0) atomic_store(&spin_ns, (us < SPIN_US_MAX ? us : SPIN_US_MAX) * 1000LL);
    return (long)(atomic_load(&spin_ns) / 1000);
}

/* In a forked child the helpers do not exist and a lock may have been held: start afresh. */
static void pool_after_fork(void) {
    atomic_store(&pool.sleeping, 0);
    pthread_mutex_init(&pool.lock, NULL);
    pthread_mutex_init(&pool.busy, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pool.started = 0;
    pool.solo = pool.backoff = pool.late_tasks = pool.streak = 0;
}

void pool_init(void) { pthread_atfork(NULL, NULL, pool_after_fork); }

#else

void parallel_range(const Job *job, long total, long chunk, RangeFn fn, const void *ctx) {
    (void)chunk;
    fn(job, 0, total, ctx);
}

void pool_init(void) {}

long pool_spin_us(long us) {
    (void)us;
    return 0;
}

void wait_until(_Atomic int *flag, int value) {
    while (atomic_load_explicit(flag, memory_order_acquire) != value) {
    }
}

#endif
