/* jetstream.c: owns the process's JetStream bookkeeping: counters per durable consumer
 * (delivered, acked, redelivered, terminated, pending) for /metrics, the streams the process
 * failed to reach for /healthz, and the list of interruptible JetStream waits (the consumers'
 * long pulls) that the drain wakes so that it does not wait for their expiry. Both tables are
 * bounded (JS_MAX_ENTRIES); the JetStream protocol is in lualib/microservice_jetstream.lua. */
#include "jetstream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define TAG "jetstream"
#define JS_MAX_ENTRIES 256 /* consumers, and streams, tracked */
#define JS_NAME_MAX 128

typedef struct js_consumer {
    char stream[JS_NAME_MAX], consumer[JS_NAME_MAX];
    uint64_t count[JS_COUNTERS];
    uint64_t pending;
} js_consumer;

typedef struct js_stream {
    char name[JS_NAME_MAX];
    bool ok;
} js_stream;

struct jetstream {
    runtime *rt;
    js_consumer consumers[JS_MAX_ENTRIES];
    int nconsumers;
    js_stream streams[JS_MAX_ENTRIES];
    int nstreams;
    js_wait *waits;
    bool stopping;
    bool full_logged;
    uint64_t next_id;
};

struct jetstream *jetstream_new(runtime *rt)
{
    struct jetstream *js = calloc(1, sizeof *js);
    if (js) js->rt = rt;
    return js;
}

void jetstream_free(struct jetstream *js)
{
    free(js);
}

static bool name_ok(const char *s)
{
    return s && *s && strlen(s) < JS_NAME_MAX;
}

static js_consumer *consumer_of(struct jetstream *js, const char *stream, const char *consumer)
{
    if (!name_ok(stream) || !name_ok(consumer)) return NULL;
    for (int i = 0; i < js->nconsumers; i++) {
        js_consumer *c = &js->consumers[i];
        if (strcmp(c->stream, stream) == 0 && strcmp(c->consumer, consumer) == 0) return c;
    }
    if (js->nconsumers == JS_MAX_ENTRIES) {
        if (!js->full_logged)
            log_warn(TAG, "more than %d consumers: not all counted", JS_MAX_ENTRIES);
        js->full_logged = true;
        return NULL;
    }
    js_consumer *c = &js->consumers[js->nconsumers++];
    snprintf(c->stream, sizeof c->stream, "%s", stream);
    snprintf(c->consumer, sizeof c->consumer, "%s", consumer);
    return c;
}

int jetstream_count(struct jetstream *js, const char *stream, const char *consumer,
                    enum js_counter which, uint64_t n)
{
    js_consumer *c = consumer_of(js, stream, consumer);
    if (!c || which >= JS_COUNTERS) return -1;
    c->count[which] += n;
    return 0;
}

int jetstream_set_pending(struct jetstream *js, const char *stream, const char *consumer,
                          uint64_t pending)
{
    js_consumer *c = consumer_of(js, stream, consumer);
    if (!c) return -1;
    c->pending = pending;
    return 0;
}

void jetstream_stream_state(struct jetstream *js, const char *stream, bool ok)
{
    if (!name_ok(stream)) return;
    for (int i = 0; i < js->nstreams; i++) {
        if (strcmp(js->streams[i].name, stream) != 0) continue;
        if (js->streams[i].ok != ok)
            log_info(TAG, "stream %s %s", stream, ok ? "reachable" : "unreachable");
        js->streams[i].ok = ok;
        return;
    }
    if (js->nstreams == JS_MAX_ENTRIES) return;
    js_stream *s = &js->streams[js->nstreams++];
    snprintf(s->name, sizeof s->name, "%s", stream);
    s->ok = ok;
    if (!ok) log_warn(TAG, "stream %s unreachable", stream);
}

void jetstream_wait_add(struct jetstream *js, js_wait *w)
{
    w->prev = NULL;
    w->next = js->waits;
    if (js->waits) js->waits->prev = w;
    js->waits = w;
}

void jetstream_wait_remove(struct jetstream *js, js_wait *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else if (js->waits == w)
        js->waits = w->next;
    if (w->next) w->next->prev = w->prev;
    w->prev = w->next = NULL;
}

void jetstream_shutdown(struct jetstream *js)
{
    if (!js) return;
    js->stopping = true;
    while (js->waits) {
        js_wait *w = js->waits;
        jetstream_wait_remove(js, w);
        w->wake(w);
    }
}

bool jetstream_stopping(const struct jetstream *js)
{
    return js->stopping;
}

uint64_t jetstream_next_id(struct jetstream *js)
{
    return ++js->next_id;
}

static const char *const COUNTER_NAMES[JS_COUNTERS][2] = {
    {"microservice_jetstream_delivered_total", "Messages the durable consumer took (any attempt)."},
    {"microservice_jetstream_acked_total", "Messages acknowledged after their handler returned."},
    {"microservice_jetstream_redelivered_total", "Deliveries that were a retry (delivered > 1)."},
    {"microservice_jetstream_terminated_total", "Messages given up after max_deliver attempts."},
};

void jetstream_metrics(struct jetstream *js, codec_buf *out)
{
    char line[512];
    for (int k = 0; k <= JS_COUNTERS; k++) {
        bool gauge = k == JS_COUNTERS;
        const char *name = gauge ? "microservice_jetstream_pending" : COUNTER_NAMES[k][0];
        const char *help = gauge ? "Messages of the stream the consumer has not delivered yet."
                                 : COUNTER_NAMES[k][1];
        int n = snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
                         gauge ? "gauge" : "counter");
        codec_buf_append(out, line, (size_t)n);
        for (int i = 0; i < js->nconsumers; i++) {
            js_consumer *c = &js->consumers[i];
            n = snprintf(line, sizeof line, "%s{stream=\"%s\",consumer=\"%s\"} %llu\n", name,
                         c->stream, c->consumer,
                         (unsigned long long)(gauge ? c->pending : c->count[k]));
            if (n > 0 && (size_t)n < sizeof line) codec_buf_append(out, line, (size_t)n);
        }
    }
}

int jetstream_health(struct jetstream *js, char *out, size_t cap)
{
    int named = 0;
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < js->nstreams; i++) {
        if (js->streams[i].ok) continue;
        int n = snprintf(out + len, cap - len, "%s\"%s\"",
                         named ? "," : ",\"streams_unreachable\":[", js->streams[i].name);
        if (n < 0 || (size_t)n + 2 >= cap - len) break;
        len += (size_t)n;
        named++;
    }
    if (named)
        snprintf(out + len, cap - len, "]");
    else
        out[0] = '\0';
    return named;
}
