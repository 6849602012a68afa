/* test_jetstream.c: the JetStream bookkeeping (runtime/jetstream.c): counters per consumer, the
 * unreachable streams /healthz names (and its bound), the drain waking interruptible waits. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "jetstream.h"

static int woken;
static void wake(js_wait *w)
{
    (void)w;
    woken++;
}

static int contains(const codec_buf *b, const char *text)
{
    return memmem(b->data, b->len, text, strlen(text)) != NULL ? 1 : diag("missing: %s", text);
}

int main(void)
{
    runtime rt;
    memset(&rt, 0, sizeof rt);
    struct jetstream *js = jetstream_new(&rt);
    CHECK(js != NULL);

    CHECK(jetstream_count(js, "ORDERS", "billing", JS_DELIVERED, 3) == 0);
    CHECK(jetstream_count(js, "ORDERS", "billing", JS_ACKED, 2) == 0);
    CHECK(jetstream_set_pending(js, "ORDERS", "billing", 7) == 0);
    CHECK(jetstream_count(js, "", "billing", JS_ACKED, 1) == -1); /* no name: refused */
    codec_buf out;
    codec_buf_init(&out);
    jetstream_metrics(js, &out);
    CHECK(contains(
        &out,
        "microservice_jetstream_delivered_total{stream=\"ORDERS\",consumer=\"billing\"} 3\n"));
    CHECK(contains(
        &out, "microservice_jetstream_acked_total{stream=\"ORDERS\",consumer=\"billing\"} 2\n"));
    CHECK(contains(
        &out,
        "microservice_jetstream_terminated_total{stream=\"ORDERS\",consumer=\"billing\"} 0\n"));
    CHECK(contains(&out,
                   "microservice_jetstream_pending{stream=\"ORDERS\",consumer=\"billing\"} 7\n"));
    codec_buf_free(&out);

    char health[64];
    CHECK(jetstream_health(js, health, sizeof health) == 0 && health[0] == '\0');
    jetstream_stream_state(js, "ORDERS", false);
    jetstream_stream_state(js, "AUDIT", false);
    CHECK(jetstream_health(js, health, sizeof health) == 2);
    CHECK(strcmp(health, ",\"streams_unreachable\":[\"ORDERS\",\"AUDIT\"]") == 0 ||
          diag("got %s", health));
    char small[40]; /* room for one name only: the list stays valid JSON */
    CHECK(jetstream_health(js, small, sizeof small) == 1);
    CHECK(strcmp(small, ",\"streams_unreachable\":[\"ORDERS\"]") == 0 || diag("got %s", small));
    jetstream_stream_state(js, "ORDERS", true);
    jetstream_stream_state(js, "AUDIT", true);
    CHECK(jetstream_health(js, health, sizeof health) == 0);

    js_wait a = {.wake = wake}, b = {.wake = wake}, c = {.wake = wake};
    jetstream_wait_add(js, &a);
    jetstream_wait_add(js, &b);
    jetstream_wait_add(js, &c);
    jetstream_wait_remove(js, &b);
    CHECK(!jetstream_stopping(js));
    jetstream_shutdown(js);
    CHECK(woken == 2);
    CHECK(jetstream_stopping(js));
    CHECK(jetstream_next_id(js) == 1 && jetstream_next_id(js) == 2);
    jetstream_free(js);
    return check_summary();
}
