/* ceiling.c: the benchmark's ceiling for this design (see bench/README.md).
 *
 * The same HTTP -> NATS request -> reply round trip as `microservice` serving
 * greeting_service.hello, with no Lua: the project's own runtime (h2o gateway, NATS bridge, loop)
 * starts with an empty services folder, and a C callback on the loop thread answers
 * greeting_service.hello (same subject and queue group as the Lua service) with the fixed reply
 * [["Hello, Bob Ross"],{}]. What separates `microservice` from this program is therefore only the
 * Lua side: envelope decode, parameter binding, the coroutine, the call and the reply encode.
 *
 *   bench_ceiling [--http HOST:PORT] [--nats URL]
 *
 * Never run both this program and `microservice` on the same NATS server at the same time: they
 * would share the queue group. SIGINT/SIGTERM drain and exit like `microservice`. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "nats_bridge.h"
#include "options.h"
#include "runtime.h"

#define SUBJECT "greeting_service.hello"

static const char REPLY[] = "[[\"Hello, Bob Ross\"],{}]";

static nb_sub *hello_sub;
static uv_prepare_t watch; /* notices the runtime's drain and drains our subscription too */
static char empty_dir[] = "/tmp/bench_ceiling.XXXXXX";

static void on_hello(void *udata, natsMsg *m)
{
    runtime *rt = udata;
    const char *reply = natsMsg_GetReply(m);
    if (reply) nats_bridge_publish(rt->nats, reply, NULL, REPLY, sizeof REPLY - 1, NULL);
    natsMsg_Destroy(m);
}

static void watch_closed(uv_handle_t *h)
{
    (void)h;
}

/* The runtime drains the Lua services' subscriptions on SIGTERM and waits until none is left;
 * ours is not one of them, so drain it here, or shutdown would wait for the drain deadline. */
static void watch_cb(uv_prepare_t *h)
{
    runtime *rt = h->data;
    if (!rt->shutting_down) return;
    if (hello_sub) nb_sub_drain(hello_sub);
    hello_sub = NULL;
    uv_close((uv_handle_t *)h, watch_closed);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"http", required_argument, NULL, 'H'},
        {"nats", required_argument, NULL, 'N'},
        {NULL, 0, NULL, 0},
    };
    runtime_config cfg;
    runtime_config_defaults(&cfg);
    cfg.tls_cert = cfg.tls_key = NULL; /* plain HTTP only, whatever $TLS_CERT says */
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'H' && options_set(&cfg, options_find("http"), optarg) == 0) continue;
        if (c == 'N') {
            cfg.nats_url = optarg;
            continue;
        }
        fprintf(stderr, "usage: bench_ceiling [--http HOST:PORT] [--nats URL]\n");
        return 2;
    }
    if (!mkdtemp(empty_dir)) {
        perror("bench_ceiling: mkdtemp");
        return 1;
    }
    cfg.services_dir = empty_dir; /* no Lua service is loaded */
    cfg.drain_timeout = 2.0;
    signal(SIGPIPE, SIG_IGN);

    static runtime rt;
    int rc = runtime_init(&rt, &cfg);
    rmdir(empty_dir);
    if (rc != 0) {
        log_error("ceiling", "start-up failed");
        return 1;
    }
    hello_sub = nats_bridge_subscribe(rt.nats, SUBJECT, SUBJECT, on_hello, &rt);
    if (!hello_sub) return 1;
    nats_bridge_confirm(rt.nats); /* /healthz answers 200 once the server has the subscription */
    uv_prepare_init(&rt.loop, &watch);
    watch.data = &rt;
    uv_prepare_start(&watch, watch_cb);
    uv_unref((uv_handle_t *)&watch);
    log_info("ceiling", "answering %s from C", SUBJECT);
    return runtime_run(&rt);
}
