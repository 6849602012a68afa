/* nats_micro.c: owns the NATS service API (ADR-32, the protocol of `nats micro`), which Debian's
 * nats.c 3.4.1 predates: every loaded Lua service answers $SRV.PING, $SRV.INFO and $SRV.STATS,
 * plain and with the .<name> and .<name>.<id> suffixes, with the io.nats.micro.v1.*_response
 * documents. The subscriptions are per process (not queue groups: every instance answers), and a
 * request without a name gets one reply per service of the process. */
#include "nats_micro.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "nats_bridge.h"
#include "services.h"

#define TAG "service-api"

enum verb { PING, INFO, STATS };

struct nats_micro {
    runtime *rt;
    nb_sub *subs[6];
};

typedef struct request {
    struct nats_micro *api;
    enum verb verb;
    const char *name; /* NULL: any */
    const char *id;   /* NULL: any */
    const char *reply;
    json_t *endpoints; /* built per service */
} request;

static void iso8601(double t, char *out, size_t len)
{
    time_t secs = (time_t)t;
    struct tm tm;
    gmtime_r(&secs, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, len, "%s.%06dZ", base, (int)((t - (double)secs) * 1e6));
}

static void add_endpoint(void *u, const rpc_stats *st)
{
    request *r = u;
    json_t *ep = json_pack("{ss ss ss s{}}", "name", st->method, "subject", st->subject,
                           "queue_group", st->subject, "metadata");
    if (r->verb == STATS) {
        json_object_set_new(ep, "num_requests", json_integer((json_int_t)st->calls));
        json_object_set_new(ep, "num_errors", json_integer((json_int_t)st->errors));
        json_object_set_new(ep, "last_error", json_string(st->last_error));
        json_object_set_new(ep, "processing_time", json_integer((json_int_t)st->time_ns));
        json_object_set_new(ep, "average_processing_time",
                            json_integer(st->calls ? (json_int_t)(st->time_ns / st->calls) : 0));
        /* ADR-32's custom stats of the endpoint; nats.py's micro client requires the key */
        json_object_set_new(ep, "data", json_null());
    }
    json_array_append_new(r->endpoints, ep);
}

static void answer(void *u, const service_desc *d)
{
    request *r = u;
    if (r->name && strcmp(r->name, d->name) != 0) return;
    if (r->id && strcmp(r->id, d->id) != 0) return;
    static const char *const types[] = {"io.nats.micro.v1.ping_response",
                                        "io.nats.micro.v1.info_response",
                                        "io.nats.micro.v1.stats_response"};
    json_t *meta = json_loads(d->metadata_json, 0, NULL);
    json_t *doc = json_pack("{ss ss ss ss so}", "type", types[r->verb], "name", d->name, "id",
                            d->id, "version", d->version, "metadata", meta ? meta : json_object());
    if (r->verb != PING) {
        r->endpoints = json_array();
        services_each_rpc(r->api->rt->services, d->file, add_endpoint, r);
        json_object_set_new(doc, "endpoints", r->endpoints);
    }
    if (r->verb == INFO) json_object_set_new(doc, "description", json_string(d->description));
    if (r->verb == STATS) {
        char started[48];
        iso8601(d->started, started, sizeof started);
        json_object_set_new(doc, "started", json_string(started));
    }
    char *text = json_dumps(doc, JSON_COMPACT);
    if (text) nats_bridge_publish(r->api->rt->nats, r->reply, NULL, text, strlen(text), NULL);
    free(text);
    json_decref(doc);
}

/* $SRV.<VERB>[.<name>[.<id>]] */
static void on_request(void *udata, natsMsg *m)
{
    struct nats_micro *api = udata;
    char subject[256], reply[256];
    snprintf(subject, sizeof subject, "%s", natsMsg_GetSubject(m));
    snprintf(reply, sizeof reply, "%s", natsMsg_GetReply(m) ? natsMsg_GetReply(m) : "");
    nats_bridge_release(api->rt->nats, m);
    if (!reply[0]) return;
    char *save = NULL;
    strtok_r(subject, ".", &save); /* $SRV */
    const char *verb = strtok_r(NULL, ".", &save);
    request r = {.api = api, .reply = reply};
    if (!verb) return;
    if (strcmp(verb, "PING") == 0)
        r.verb = PING;
    else if (strcmp(verb, "INFO") == 0)
        r.verb = INFO;
    else if (strcmp(verb, "STATS") == 0)
        r.verb = STATS;
    else
        return;
    r.name = strtok_r(NULL, ".", &save);
    r.id = strtok_r(NULL, ".", &save);
    if (strtok_r(NULL, ".", &save)) return; /* too many tokens */
    services_each_service(api->rt->services, answer, &r);
}

struct nats_micro *nats_micro_start(runtime *rt)
{
    struct nats_micro *api = calloc(1, sizeof *api);
    if (!api) return NULL;
    api->rt = rt;
    static const char *const subjects[] = {"$SRV.PING",   "$SRV.INFO",   "$SRV.STATS",
                                           "$SRV.PING.>", "$SRV.INFO.>", "$SRV.STATS.>"};
    for (int i = 0; i < 6; i++) {
        api->subs[i] = nats_bridge_subscribe(rt->nats, subjects[i], NULL, on_request, api);
        if (!api->subs[i]) log_warn(TAG, "cannot subscribe %s", subjects[i]);
    }
    return api;
}

void nats_micro_stop(struct nats_micro *api)
{
    if (!api) return;
    for (int i = 0; i < 6; i++)
        if (api->subs[i]) nb_sub_close(api->subs[i]);
    free(api);
}
