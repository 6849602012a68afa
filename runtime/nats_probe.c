/* nats_probe.c: owns the search for a reachable NATS server before the first connection.
 * nats.c's own retry on a failed first connect cannot be used with its libuv adapter (the
 * adapter's first attach must happen on the loop thread, and the retry runs on nats.c's reconnect
 * thread, so it fails forever). So the loop finds a reachable server itself without blocking: an
 * asynchronous DNS lookup and TCP connect to each URL in turn, and only when one answers does
 * nats_bridge.c call natsConnection_Connect (quick, the server is known to be there). Once
 * connected, nats.c reconnects by itself. */
#include "nats_probe.h"

#include <stdio.h>
#include <string.h>

static void probe_next(nats_probe *p);

int nats_probe_url_host_port(const char *urls, int n, char *host, size_t hostlen, char *port,
                             size_t portlen)
{
    const char *p = urls;
    for (int i = 0; i < n && p; i++) {
        p = strchr(p, ',');
        if (p) p++;
    }
    if (!p || !*p) return -1;
    while (*p == ' ')
        p++;
    const char *end = strchr(p, ',');
    if (!end) end = p + strlen(p);
    const char *scheme = strstr(p, "://");
    if (scheme && scheme < end) p = scheme + 3;
    const char *at = NULL; /* the last '@', as nats.c reads it (a password may hold one) */
    for (const char *q = p; q < end; q++)
        if (*q == '@') at = q;
    if (at) p = at + 1;
    const char *colon;
    if (*p == '[') { /* [::1]:4222 */
        const char *close = memchr(p, ']', (size_t)(end - p));
        if (!close) return -1;
        snprintf(host, hostlen, "%.*s", (int)(close - p - 1), p + 1);
        colon = close[1] == ':' ? close + 1 : NULL;
    } else {
        colon = memchr(p, ':', (size_t)(end - p));
        snprintf(host, hostlen, "%.*s", (int)((colon ? colon : end) - p), p);
    }
    if (colon)
        snprintf(port, portlen, "%.*s", (int)(end - colon - 1), colon + 1);
    else
        snprintf(port, portlen, "4222");
    return host[0] ? 0 : -1;
}

static void probe_handle_closed(uv_handle_t *h)
{
    nats_probe *p = h->data;
    p->busy = false;
    if (p->stopping) {
        p->on_stopped(p->arg);
        return;
    }
    if (p->ok) {
        p->ok = false;
        p->on_found(p->arg);
        return;
    }
    p->url++;
    probe_next(p);
}

static void probe_connected(uv_connect_t *req, int status)
{
    nats_probe *p = req->data;
    p->ok = status == 0;
    uv_close((uv_handle_t *)&p->tcp, probe_handle_closed);
}

static void probe_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    nats_probe *p = req->data;
    if (status != 0 || !res || p->stopping) {
        if (res) uv_freeaddrinfo(res);
        p->busy = false;
        if (p->stopping) {
            p->on_stopped(p->arg);
            return;
        }
        p->url++;
        probe_next(p);
        return;
    }
    uv_tcp_init(p->loop, &p->tcp);
    p->tcp.data = p;
    p->connect.data = p;
    if (uv_tcp_connect(&p->connect, &p->tcp, res->ai_addr, probe_connected) != 0) {
        p->ok = false;
        uv_close((uv_handle_t *)&p->tcp, probe_handle_closed);
    }
    uv_freeaddrinfo(res);
}

static void probe_next(nats_probe *p)
{
    char host[256], port[16];
    if (nats_probe_url_host_port(p->urls, p->url, host, sizeof host, port, sizeof port) != 0) {
        p->on_none(p->arg); /* every URL tried */
        return;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    p->resolve.data = p;
    p->busy = true;
    if (uv_getaddrinfo(p->loop, &p->resolve, probe_resolved, host, port, &hints) != 0) {
        p->busy = false;
        p->url++;
        probe_next(p);
    }
}

void nats_probe_start(nats_probe *p)
{
    p->url = 0;
    probe_next(p);
}

bool nats_probe_stop(nats_probe *p)
{
    p->stopping = true;
    return p->busy;
}
