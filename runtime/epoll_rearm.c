/* epoll_rearm.c: owns the one place where the runtime reaches into libuv's private state, to
 * save two system calls per HTTP/1 request.
 *
 * Why: h2o 2.2 stops reading an HTTP/1 connection while it handles a request and starts again
 * once the response is written (uv_read_stop, then uv_read_start). libuv 1.44 keeps the
 * descriptor registered in epoll across the stop (it drops it lazily, only when epoll reports it
 * while stopped) but forgets that it did: the start queues the watcher as new, and the next poll
 * makes EPOLL_CTL_ADD, which fails with EEXIST, then EPOLL_CTL_MOD. Measured on this machine (a
 * paravirtualized VM, where system calls are dear) that pair was 13% of the CPU time of the hello
 * round trip; nginx makes neither.
 *
 * What: when the caller knows that the loop has not polled since the stop, the descriptor is
 * still registered, for reading only (libuv's own invariant: outside the poll, the kernel's mask
 * of a watcher that is not queued is its `events`; the stop zeroed `events` because reading was
 * all it watched). epoll_rearm_stream then sets `events` back and takes the watcher off the
 * loop's queue of changes: the next poll has nothing to tell the kernel.
 *
 * Conditions checked here, any failing leaves libuv to do its usual calls:
 * - libuv is 1.44.x at build and run time, on Linux (the fields and queue layout below are
 *   those of its uv/unix.h and src/queue.h; 1.45 changed the poller);
 * - the watcher wants reading and nothing else, is queued as a change, and believes it is not
 *   registered; the loop still points at it;
 * - the loop's table of watchers has at most 1,023 entries: then at most 1,023 descriptors are
 *   registered, fewer than libuv's 1,024 events per epoll_wait, so a poll is one epoll_wait and
 *   cannot have reported (and dropped) the descriptor after its own read callback stopped it.
 * The caller's part (the loop has not polled since the stop) is http_gateway.c's turn count. */
#include "epoll_rearm.h"

#include <poll.h>

#define MAX_WATCHERS 1023 /* see above: libuv polls 1,024 events at a time */

bool epoll_rearm_supported(void)
{
#if defined(__linux__) && UV_VERSION_MAJOR == 1 && UV_VERSION_MINOR == 44
    return (uv_version() >> 8) == ((1u << 8) | 44u);
#else
    return false;
#endif
}

#if defined(__linux__) && UV_VERSION_MAJOR == 1 && UV_VERSION_MINOR == 44
/* libuv's intrusive queue (src/queue.h): a node is void *[2], {next, prev}. */
static bool queue_empty(void **q)
{
    return q[0] == (void *)q;
}

static void queue_remove(void **q)
{
    void **next = q[0], **prev = q[1];
    prev[0] = next;
    next[1] = prev;
    q[0] = q[1] = q;
}

bool epoll_rearm_stream(uv_stream_t *s)
{
    uv__io_t *w = &s->io_watcher;
    uv_loop_t *loop = s->loop;
    if (!epoll_rearm_supported() || uv_is_closing((uv_handle_t *)s)) return false;
    if (w->fd < 0 || loop->nwatchers > MAX_WATCHERS || (unsigned)w->fd >= loop->nwatchers)
        return false;
    if (w->pevents != POLLIN || w->events != 0 || queue_empty(w->watcher_queue) ||
        loop->watchers[w->fd] != w)
        return false;
    queue_remove(w->watcher_queue);
    w->events = w->pevents;
    return true;
}
#else
bool epoll_rearm_stream(uv_stream_t *s)
{
    (void)s;
    return false;
}
#endif
