/* epoll_rearm.h: saves the two epoll_ctl calls that libuv 1.44 makes when a stream starts reading
 * again soon after it stopped (h2o stops reading an HTTP/1 connection for each request). See
 * epoll_rearm.c for why it is safe and when it may be used. */
#ifndef MICROSERVICE_EPOLL_REARM_H
#define MICROSERVICE_EPOLL_REARM_H

#include <stdbool.h>
#include <uv.h>

/* True when the libuv this process runs is one whose poller epoll_rearm_stream knows (1.44.x on
 * Linux, built against the same headers). Otherwise epoll_rearm_stream does nothing. */
bool epoll_rearm_supported(void);

/* s stopped reading and started again, and the loop has not polled since it stopped (so its
 * descriptor is still registered for reading only): marks its watcher as registered, so the
 * next poll makes no epoll_ctl for it. Does nothing (returns false) unless the watcher is in
 * exactly that state. Call it between the start and the next poll (a uv_prepare callback). */
bool epoll_rearm_stream(uv_stream_t *s);

#endif
