/* nats_probe.h: finds a reachable NATS server (DNS lookup and TCP connect to each URL of
 * --nats in turn, on the loop) before nats_bridge.c makes its first connection. */
#ifndef MICROSERVICE_NATS_PROBE_H
#define MICROSERVICE_NATS_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

typedef struct nats_probe {
    uv_loop_t *loop;
    const char *urls;              /* "nats://[user:pass@]host[:port],..." */
    void (*on_found)(void *arg);   /* a URL answered: connect now */
    void (*on_none)(void *arg);    /* every URL was tried, none answered */
    void (*on_stopped)(void *arg); /* after nats_probe_stop returned true: its handle is closed */
    void *arg;
    uv_getaddrinfo_t resolve;
    uv_tcp_t tcp;
    uv_connect_t connect;
    int url;       /* the URL being tried */
    bool busy;     /* a lookup or a probe connection is open */
    bool ok;       /* the probe connection succeeded */
    bool stopping; /* see nats_probe_stop */
} nats_probe;

/* Tries the URLs from the first. */
void nats_probe_start(nats_probe *p);
/* At close: whether a lookup or connection is still open (on_stopped then follows once). */
bool nats_probe_stop(nats_probe *p);
/* host and port of the n-th URL of "nats://[user:pass@]host[:port],..."; -1 if there is none */
int nats_probe_url_host_port(const char *urls, int n, char *host, size_t hostlen, char *port,
                             size_t portlen);

#endif
