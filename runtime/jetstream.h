/* jetstream.h: what the process knows about its JetStream use: per durable consumer counters
 * (for /metrics), the streams it could not reach (for /healthz), and the JetStream API requests
 * its Lua tasks wait on (so that the drain can wake the consumers' idle pulls). The protocol
 * itself (streams, consumers, publish, KV) is lualib/microservice_jetstream.lua over
 * runtime/mlua_jetstream.c. */
#ifndef MICROSERVICE_JETSTREAM_H
#define MICROSERVICE_JETSTREAM_H

#include <stdbool.h>
#include <stdint.h>

#include "codec.h"
#include "runtime.h"

struct jetstream;
typedef struct js_wait js_wait;

/* A request a task waits on that the drain may interrupt: wake(w) runs once at the drain. */
struct js_wait {
    void (*wake)(js_wait *w);
    js_wait *prev, *next;
};

enum js_counter { JS_DELIVERED, JS_ACKED, JS_REDELIVERED, JS_TERMINATED, JS_COUNTERS };

struct jetstream *jetstream_new(runtime *rt);
void jetstream_free(struct jetstream *js);

/* Adds n to a counter of the durable consumer stream/consumer (made on first use). -1 when
 * the table is full or memory is exhausted. */
int jetstream_count(struct jetstream *js, const char *stream, const char *consumer,
                    enum js_counter c, uint64_t n);
/* The consumer's messages not yet delivered, as the server last said. */
int jetstream_set_pending(struct jetstream *js, const char *stream, const char *consumer,
                          uint64_t pending);
/* The last attempt to reach stream: ok, or not (then /healthz names it). */
void jetstream_stream_state(struct jetstream *js, const char *stream, bool ok);

void jetstream_wait_add(struct jetstream *js, js_wait *w);
void jetstream_wait_remove(struct jetstream *js, js_wait *w);
/* The drain: every interruptible wait is woken, and later ones are refused. */
void jetstream_shutdown(struct jetstream *js);
bool jetstream_stopping(const struct jetstream *js);
/* A number unique in the process (private inbox subjects). */
uint64_t jetstream_next_id(struct jetstream *js);

/* Prometheus lines of every durable consumer. */
void jetstream_metrics(struct jetstream *js, codec_buf *out);
/* Writes ,"streams_unreachable":["A",...] into out (cap bytes, truncated at a name) and returns
 * how many streams it names; 0: out is "". */
int jetstream_health(struct jetstream *js, char *out, size_t cap);

#endif
