/* workers.c: owns the parent process of --workers N. The parent runs no loop and no Lua: it forks
 * N workers, each a complete runtime (own libuv loop, Lua state, NATS connection) listening on the
 * same HTTP port with SO_REUSEPORT, so the kernel spreads connections and the NATS queue groups
 * spread calls. Signals are handled synchronously (blocked, then sigtimedwait): SIGTERM or SIGINT
 * is forwarded to every worker and the parent waits for them to drain; a worker that dies
 * otherwise is restarted, after a delay that grows while it keeps dying young. */
#include "workers.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define TAG "workers"
#define MAX_WORKERS 256
#define YOUNG_S 10 /* a worker that dies sooner than this is restarted with a growing delay */
#define MAX_DELAY_S 30

typedef struct worker {
    pid_t pid; /* 0: not running */
    time_t started;
    time_t restart_at; /* 0: no restart pending */
    int delay;         /* seconds before the next restart */
} worker;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static pid_t spawn(runtime_config *cfg, int index, const sigset_t *old_mask)
{
    pid_t pid = fork();
    if (pid != 0) return pid; /* parent (or -1) */
    sigprocmask(SIG_SETMASK, old_mask, NULL);
    char label[16];
    snprintf(label, sizeof label, "w%d", index + 1);
    log_set_process_label(label);
    static runtime rt; /* this worker's one runtime */
    if (runtime_init(&rt, cfg) != 0) _exit(1);
    _exit(runtime_run(&rt));
}

static void start(worker *w, runtime_config *cfg, int index, const sigset_t *old_mask)
{
    w->pid = spawn(cfg, index, old_mask);
    w->started = (time_t)now_s();
    w->restart_at = 0;
    if (w->pid < 0) {
        log_error(TAG, "cannot start worker %d: %s", index + 1, strerror(errno));
        w->pid = 0;
        w->restart_at = w->started + 1;
        return;
    }
    log_info(TAG, "worker %d started (pid %d)", index + 1, (int)w->pid);
}

/* Reaps every worker that ended; returns how many are still running. */
static int reap(worker *ws, int n, bool stopping, int *failures)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int i = 0; i < n; i++) {
            if (ws[i].pid != pid) continue;
            ws[i].pid = 0;
            bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
            if (!clean) ++*failures;
            if (stopping) {
                log_info(TAG, "worker %d (pid %d) stopped%s", i + 1, (int)pid,
                         clean ? "" : " with an error");
                break;
            }
            time_t lived = (time_t)now_s() - ws[i].started;
            ws[i].delay = lived < YOUNG_S ? (ws[i].delay ? ws[i].delay * 2 : 1) : 1;
            if (ws[i].delay > MAX_DELAY_S) ws[i].delay = MAX_DELAY_S;
            ws[i].restart_at = (time_t)now_s() + ws[i].delay;
            if (WIFSIGNALED(status))
                log_warn(TAG, "worker %d (pid %d) killed by signal %d; restarting in %d s", i + 1,
                         (int)pid, WTERMSIG(status), ws[i].delay);
            else
                log_warn(TAG, "worker %d (pid %d) exited with %d; restarting in %d s", i + 1,
                         (int)pid, WEXITSTATUS(status), ws[i].delay);
            break;
        }
    }
    int running = 0;
    for (int i = 0; i < n; i++)
        running += ws[i].pid != 0;
    return running;
}

int workers_run(runtime_config *cfg)
{
    int n = cfg->workers > MAX_WORKERS ? MAX_WORKERS : cfg->workers;
    cfg->reuse_port = true;
    sigset_t set, old_mask;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, &old_mask);
    log_set_process_label("main");
    log_info(TAG, "starting %d workers", n);
    worker ws[MAX_WORKERS];
    memset(ws, 0, sizeof ws);
    for (int i = 0; i < n; i++)
        start(&ws[i], cfg, i, &old_mask);
    bool stopping = false;
    int failures = 0;
    for (;;) {
        struct timespec wait = {.tv_sec = 0, .tv_nsec = 250 * 1000 * 1000};
        siginfo_t info;
        int sig = sigtimedwait(&set, &info, &wait);
        if ((sig == SIGTERM || sig == SIGINT) && !stopping) {
            stopping = true;
            log_info(TAG, "%s: draining the workers", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            for (int i = 0; i < n; i++)
                if (ws[i].pid) kill(ws[i].pid, sig);
        } else if ((sig == SIGTERM || sig == SIGINT) && stopping) {
            log_warn(TAG, "second signal: stopping the workers at once");
            for (int i = 0; i < n; i++)
                if (ws[i].pid) kill(ws[i].pid, SIGKILL);
        }
        int running = reap(ws, n, stopping, &failures);
        if (stopping) {
            if (running == 0) break;
            continue;
        }
        time_t t = (time_t)now_s();
        for (int i = 0; i < n; i++)
            if (!ws[i].pid && ws[i].restart_at && t >= ws[i].restart_at)
                start(&ws[i], cfg, i, &old_mask);
    }
    log_info(TAG, "stopped");
    return 0;
}
