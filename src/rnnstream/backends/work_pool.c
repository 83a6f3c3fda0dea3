/* The work pool (work_pool.h): helper threads that claim chunks of the caller's task. */
#include "work_pool.h"

#if HAVE_WORK_POOL
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>

#define POOL_MAX_HELPERS 63
/* Polls (~150 µs on a Zen 5) before an idle helper sleeps. It must outlast the wait for the next task,
 * up to a chunk of the caller's plus the Python between two layers: a helper that slept is woken onto
 * the caller's core and helps little. With 800 polls (~30 µs) the large model at batch 256 stepped at
 * one thread's speed (6–7 ms instead of 3.8) whenever another process had used the other core. */
#define POOL_SPIN 4000

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
    _Atomic uint64_t claim;     /* generation << 32 | next unclaimed index */
    _Atomic long done;          /* indices finished in the latest task */
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_MUTEX_INITIALIZER};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Claim and run chunks of the task of `generation` until none is left (or a later task replaced it). */
static void pool_work(uint64_t generation, const Task *task) {
    const uint64_t tag = (generation & 0xffffffffu) << 32;
    for (;;) {
        uint64_t seen = atomic_load(&pool.claim);
        if ((seen & ~(uint64_t)0xffffffffu) != tag) return;
        const long lo = (long)(seen & 0xffffffffu);
        if (lo >= task->total) return;
        const long hi = task->total - lo > task->chunk ? lo + task->chunk : task->total;
        if (!atomic_compare_exchange_weak(&pool.claim, &seen, tag | (uint64_t)hi)) continue;
        task->fn(task->job, lo, hi, task->ctx);
        atomic_fetch_add(&pool.done, hi - lo);
    }
}

static void *pool_helper(void *arg) {
    const int index = (int)(intptr_t)arg;
    uint64_t seen = atomic_load(&pool.published);
    for (;;) {
        for (int i = 0; i < POOL_SPIN && atomic_load(&pool.published) == seen; i++) cpu_relax();
        pthread_mutex_lock(&pool.lock);
        while (atomic_load(&pool.published) == seen) pthread_cond_wait(&pool.wake, &pool.lock);
        seen = atomic_load(&pool.published);
        const Task task = pool.task;
        pthread_mutex_unlock(&pool.lock);
        if (index < task.helpers) pool_work(seen, &task);
    }
    return NULL;
}

void parallel_range(const Job *job, long total, long chunk, RangeFn fn, const void *ctx) {
    const int helpers = job->threads - 1 < POOL_MAX_HELPERS ? job->threads - 1 : POOL_MAX_HELPERS;
    if (helpers <= 0 || total <= chunk || total > 0xffffffffL || pthread_mutex_trylock(&pool.busy) != 0) {
        fn(job, 0, total, ctx);
        return;
    }
    pthread_mutex_lock(&pool.lock);
    if (pool.started < helpers) { /* started on first need, then kept; signals stay with Python's threads */
        sigset_t all, before;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &before);
        while (pool.started < helpers) {
            pthread_t thread;
            if (pthread_create(&thread, NULL, pool_helper, (void *)(intptr_t)pool.started) != 0) break;
            pthread_detach(thread);
            pool.started++;
        }
        pthread_sigmask(SIG_SETMASK, &before, NULL);
    }
    const uint64_t generation = atomic_load(&pool.published) + 1;
    const Task task = {fn, job, ctx, total, chunk, helpers};
    pool.task = task;
    atomic_store(&pool.done, 0);
    atomic_store(&pool.claim, (generation & 0xffffffffu) << 32);
    atomic_store(&pool.published, generation);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    pool_work(generation, &task);
    /* Only chunks a helper claimed are left, each a small share of the task. */
    for (long spins = 0; atomic_load(&pool.done) < total; spins++) {
        if (spins < 20000)
            cpu_relax();
        else
            sched_yield(); /* the helper holding a chunk waits for a core: give it ours */
    }
    pthread_mutex_unlock(&pool.busy);
}

/* In a forked child the helpers do not exist and a lock may have been held: start afresh. */
static void pool_after_fork(void) {
    pthread_mutex_init(&pool.lock, NULL);
    pthread_mutex_init(&pool.busy, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pool.started = 0;
}

void pool_init(void) { pthread_atfork(NULL, NULL, pool_after_fork); }

#else

void parallel_range(const Job *job, long total, long chunk, RangeFn fn, const void *ctx) {
    (void)chunk;
    fn(job, 0, total, ctx);
}

void pool_init(void) {}

#endif
