/* The runner thread of launch() (launcher.h): it runs queued launches' jobs, one launch after another. */
#include "launcher.h"

#if HAVE_LAUNCHER
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <unistd.h>

static void launch_run(Launch *launch) {
    int status = LAUNCH_DONE;
    for (Py_ssize_t i = 0; i < launch->count; i++) {
        Job *job = &launch->jobs[i];
        if (launch->packed_floats[i] > 0 && (job->packed = scratch_for(launch->packed_floats[i])) == NULL) {
            status = LAUNCH_FAILED;
            break;
        }
        if (job->batch > 0) run_job(job);
    }
    atomic_store(&launch->status, status);
    const uint64_t one = 1;
    ssize_t written;
    do {
        written = write(launch->fd, &one, sizeof one);
    } while (written < 0 && errno == EINTR); /* EAGAIN: the reader has wake-ups pending already */
}

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    Launch *head, *tail, *current; /* current: the one running */
    int started;
} runner = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, NULL, 0};

static void *runner_main(void *unused) {
    (void)unused;
    for (;;) {
        pthread_mutex_lock(&runner.lock);
        while (runner.head == NULL) pthread_cond_wait(&runner.wake, &runner.lock);
        Launch *launch = runner.head;
        runner.head = launch->next;
        if (runner.head == NULL) runner.tail = NULL;
        runner.current = launch;
        pthread_mutex_unlock(&runner.lock);
        launch_run(launch);
        pthread_mutex_lock(&runner.lock);
        runner.current = NULL;
        pthread_mutex_unlock(&runner.lock);
    }
    return NULL;
}

int launch_submit(Launch *launch) {
    pthread_mutex_lock(&runner.lock);
    if (!runner.started) {
        sigset_t all, before;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &before);
        pthread_t thread;
        const int failed = pthread_create(&thread, NULL, runner_main, NULL);
        pthread_sigmask(SIG_SETMASK, &before, NULL);
        if (failed) {
            pthread_mutex_unlock(&runner.lock);
            return -1;
        }
        pthread_detach(thread);
        runner.started = 1;
    }
    launch->next = NULL;
    if (runner.tail != NULL)
        runner.tail->next = launch;
    else
        runner.head = launch;
    runner.tail = launch;
    pthread_cond_signal(&runner.wake);
    pthread_mutex_unlock(&runner.lock);
    return 0;
}

/* In a forked child (runner.lock held since before the fork) the runner does not exist: what it was
 * running or had queued never finishes there. */
static void runner_after_fork(void) {
    int queued = LAUNCH_QUEUED;
    if (runner.current != NULL) atomic_compare_exchange_strong(&runner.current->status, &queued, LAUNCH_LOST);
    for (Launch *launch = runner.head; launch != NULL; launch = launch->next)
        atomic_store(&launch->status, LAUNCH_LOST);
    pthread_mutex_init(&runner.lock, NULL);
    pthread_cond_init(&runner.wake, NULL);
    runner.head = runner.tail = runner.current = NULL;
    runner.started = 0;
}

static void runner_before_fork(void) { pthread_mutex_lock(&runner.lock); } /* the queue is whole in the child */

static void runner_in_parent(void) { pthread_mutex_unlock(&runner.lock); }

void launcher_init(void) { pthread_atfork(runner_before_fork, runner_in_parent, runner_after_fork); }

#else

void launcher_init(void) {}

#endif
