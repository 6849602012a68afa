/* auth_limit.c: owns the table of failed sign-ins per client address and per authid (see
 * auth_limit.h). The table has AUTH_LIMIT_SLOTS slots and never grows: a key hashes (with a
 * random seed, so a client cannot aim at a slot) to a run of PROBE slots; a new key takes an
 * empty or expired slot of its run, else the one whose last failure is oldest (a key that is
 * refused right now only when every slot of the run is). So memory is fixed, and pushing a
 * key out takes many failures, which the per-address count limits in turn. */
#include "auth_limit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"

#define PROBE 8
#define KEY_MAX (2 + AUTH_ID_MAX) /* "a:" or "u:", then the address or the authid */

typedef struct slot {
    char key[KEY_MAX]; /* "": empty */
    uint32_t count;    /* failures (and checks in flight) since start_ms */
    uint64_t start_ms, last_ms;
} slot;

struct auth_limit {
    int max_failures;
    uint64_t window_ms;
    uint64_t seed;
    unsigned long long failures, refusals;
    slot slots[AUTH_LIMIT_SLOTS];
};

auth_limit *auth_limit_new(int max_failures, double window_s)
{
    auth_limit *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->max_failures = max_failures;
    l->window_ms = (uint64_t)(window_s * 1000.0);
    if (RAND_bytes((unsigned char *)&l->seed, sizeof l->seed) != 1) l->seed = (uintptr_t)l;
    return l;
}

void auth_limit_free(auth_limit *l)
{
    free(l);
}

void auth_limit_peer(const struct sockaddr *sa, socklen_t len, char out[AUTH_PEER_MAX])
{
    out[0] = '\0';
    if (len >= sizeof(struct sockaddr_in) && sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, AUTH_PEER_MAX);
        return;
    }
    if (len < sizeof(struct sockaddr_in6) || sa->sa_family != AF_INET6) return;
    struct in6_addr a = ((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&a)) {
        inet_ntop(AF_INET, &a.s6_addr[12], out, AUTH_PEER_MAX);
        return;
    }
    memset(&a.s6_addr[8], 0, 8);
    char text[INET6_ADDRSTRLEN];
    if (inet_ntop(AF_INET6, &a, text, sizeof text)) snprintf(out, AUTH_PEER_MAX, "%s/64", text);
}

static uint64_t hash(uint64_t seed, const char *key)
{
    uint64_t h = 1469598103934665603ULL ^ seed; /* FNV-1a, then a final mix */
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    return h ^ (h >> 33);
}

static bool live(const auth_limit *l, const slot *e, uint64_t now_ms)
{
    return e->key[0] && now_ms - e->start_ms < l->window_ms;
}

static bool blocked(const auth_limit *l, const slot *e, uint64_t now_ms)
{
    return live(l, e, now_ms) && e->count >= (uint32_t)l->max_failures;
}

/* Rank of a slot as the place for a new key: lower is better. */
static uint64_t victim_rank(const auth_limit *l, const slot *e, uint64_t now_ms)
{
    if (!live(l, e, now_ms)) return 0;
    return (blocked(l, e, now_ms) ? (1ULL << 62) : (1ULL << 61)) + e->last_ms;
}

/* The slot of key ("" or an over-long key: none); create: make one if there is none. */
static slot *find(auth_limit *l, char kind, const char *name, uint64_t now_ms, bool create)
{
    char key[KEY_MAX];
    if (!name || !name[0] || strlen(name) + 2 >= sizeof key) return NULL;
    snprintf(key, sizeof key, "%c:%s", kind, name);
    uint64_t h = hash(l->seed, key);
    slot *victim = NULL;
    uint64_t best = UINT64_MAX;
    for (int i = 0; i < PROBE; i++) {
        slot *e = &l->slots[(h + (uint64_t)i) & (AUTH_LIMIT_SLOTS - 1)];
        if (e->key[0] && strcmp(e->key, key) == 0) return e;
        uint64_t rank = victim_rank(l, e, now_ms);
        if (rank < best) {
            best = rank;
            victim = e;
        }
    }
    if (!create) return NULL;
    snprintf(victim->key, sizeof victim->key, "%s", key);
    victim->count = 0;
    victim->start_ms = victim->last_ms = now_ms;
    return victim;
}

bool auth_limit_admit(auth_limit *l, uint64_t now_ms, const char *peer, const char *authid)
{
    if (!l || l->max_failures <= 0) return true;
    const slot *a = find(l, 'a', peer, now_ms, false), *u = find(l, 'u', authid, now_ms, false);
    if ((a && blocked(l, a, now_ms)) || (u && blocked(l, u, now_ms))) {
        l->refusals++;
        return false;
    }
    return true;
}

static void charge_one(auth_limit *l, char kind, const char *name, uint64_t now_ms)
{
    slot *e = find(l, kind, name, now_ms, true);
    if (!e) return;
    if (!live(l, e, now_ms)) { /* a new window */
        e->count = 0;
        e->start_ms = now_ms;
    }
    e->count++;
    e->last_ms = now_ms;
}

void auth_limit_charge(auth_limit *l, uint64_t now_ms, const char *peer, const char *authid)
{
    if (!l || l->max_failures <= 0) return;
    charge_one(l, 'a', peer, now_ms);
    charge_one(l, 'u', authid, now_ms);
}

static void refund_one(auth_limit *l, char kind, const char *name, uint64_t now_ms)
{
    slot *e = find(l, kind, name, now_ms, false);
    if (e && live(l, e, now_ms) && e->count > 0) e->count--;
}

void auth_limit_settle(auth_limit *l, uint64_t now_ms, const char *peer, const char *authid,
                       bool ok)
{
    if (!l) return;
    if (!ok) {
        l->failures++;
        return;
    }
    if (l->max_failures <= 0) return;
    refund_one(l, 'a', peer, now_ms);
    refund_one(l, 'u', authid, now_ms);
}

void auth_limit_get_stats(const auth_limit *l, uint64_t now_ms, auth_limit_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!l) return;
    out->failures = l->failures;
    out->refusals = l->refusals;
    out->max_failures = l->max_failures;
    out->window_s = (double)l->window_ms / 1000.0;
    for (int i = 0; l->max_failures > 0 && i < AUTH_LIMIT_SLOTS; i++)
        if (blocked(l, &l->slots[i], now_ms)) out->blocked++;
}
