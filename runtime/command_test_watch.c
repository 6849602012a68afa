/* command_test_watch.c: owns `microservice test --watch`: the test run happens in a child process
 * (the same program, without --watch), so every run starts from freshly loaded services; the parent
 * waits with inotify for a saved .lua or .sql file in the watched folders and runs again. The
 * watched folders: the services folder and its migrations/, the folder of each test file given,
 * and, without files, the folders searched for them (lualib/microservice_test.lua). */
#include "command_test_watch.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/wait.h>
#include <unistd.h>

#define WATCH_EVENTS (IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE)
#define WATCH_QUIET_MS 150 /* events closer than this are one save (editors write in steps) */

static void watch_dir(int fd, const char *dir)
{
    if (inotify_add_watch(fd, dir, WATCH_EVENTS | IN_ONLYDIR) < 0 && errno != ENOENT)
        fprintf(stderr, "microservice test: cannot watch %s: %s\n", dir, strerror(errno));
}

static void watch_parent_of(int fd, const char *file)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(file, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - file), file);
    watch_dir(fd, dir);
}

static void watch_all(int fd, int argc, char **argv, const char *services_dir, bool services_given,
                      int first_file)
{
    char path[PATH_MAX];
    watch_dir(fd, services_dir);
    snprintf(path, sizeof path, "%s/migrations", services_dir);
    watch_dir(fd, path);
    for (int i = first_file; i < argc; i++)
        watch_parent_of(fd, argv[i]);
    if (first_file < argc) return;
    if (!services_given) {
        watch_dir(fd, "tests/services");
        return;
    }
    const char *name = strrchr(services_dir, '/');
    snprintf(path, sizeof path, "%s/../tests", services_dir);
    watch_dir(fd, path);
    snprintf(path, sizeof path, "%s/../tests/%s", services_dir, name ? name + 1 : services_dir);
    watch_dir(fd, path);
}

/* True when the events in buf name a .lua or .sql file. */
static bool relevant(const char *buf, ssize_t len)
{
    for (const char *p = buf; p < buf + len;) {
        const struct inotify_event *ev = (const struct inotify_event *)p;
        size_t n = ev->len ? strlen(ev->name) : 0;
        if (n > 4 &&
            (strcmp(ev->name + n - 4, ".lua") == 0 || strcmp(ev->name + n - 4, ".sql") == 0))
            return true;
        p += sizeof *ev + ev->len;
    }
    return false;
}

/* Waits for a change, then for WATCH_QUIET_MS without events. */
static int wait_change(int fd)
{
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool changed = false;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, changed ? WATCH_QUIET_MS : -1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) return 0;
        ssize_t len = read(fd, buf, sizeof buf);
        if (len < 0 && errno != EINTR && errno != EAGAIN) return -1;
        if (len > 0 && relevant(buf, len)) changed = true;
    }
}

static void run_once(char **child_argv)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "microservice test: cannot fork: %s\n", strerror(errno));
        return;
    }
    if (pid == 0) {
        execv("/proc/self/exe", child_argv);
        fprintf(stderr, "microservice test: cannot run /proc/self/exe: %s\n", strerror(errno));
        _exit(2);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    fprintf(stderr, "microservice test: watching for saved .lua and .sql files (Ctrl-C stops)\n");
}

int command_test_watch(int argc, char **argv, const char *services_dir, bool services_given,
                       int first_file)
{
    int fd = inotify_init1(IN_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "microservice test: --watch: inotify: %s\n", strerror(errno));
        return 2;
    }
    char **child_argv = calloc((size_t)argc + 2, sizeof *child_argv);
    if (!child_argv) {
        close(fd);
        return 2;
    }
    child_argv[0] = "microservice";
    for (int i = 0; i < argc; i++)
        child_argv[i + 1] = argv[i];
    watch_all(fd, argc, argv, services_dir, services_given, first_file);
    for (;;) {
        run_once(child_argv);
        if (wait_change(fd) != 0) break;
        printf("\n");
    }
    fprintf(stderr, "microservice test: --watch: %s\n", strerror(errno));
    free(child_argv);
    close(fd);
    return 2;
}
