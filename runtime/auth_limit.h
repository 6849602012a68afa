/* auth_limit.h: the limiter of failed sign-ins (--auth-max-failures per --auth-failure-window):
 * failures are counted per client address and per authid in one table of fixed size; once
 * either reaches the limit within the window, further sign-ins from that address or for that
 * authid are refused without doing the work, until the window (counted from the first failure)
 * has passed. Loop thread only. See docs/auth.md. */
#ifndef MICROSERVICE_AUTH_LIMIT_H
#define MICROSERVICE_AUTH_LIMIT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#define AUTH_PEER_MAX 56 /* a client address's text ("<IPv6>/64"), with its NUL */
#define AUTH_LIMIT_SLOTS 4096

typedef struct auth_limit auth_limit;

/* max_failures 0: no limit (nothing is counted per key, only the totals). */
auth_limit *auth_limit_new(int max_failures, double window_s);
void auth_limit_free(auth_limit *l);

/* The key of a client address (len bytes at sa, as getpeername gives it): the IPv4 address, or
 * the /64 prefix of an IPv6 one (one host usually holds a whole /64); "" for anything else. */
void auth_limit_peer(const struct sockaddr *sa, socklen_t len, char out[AUTH_PEER_MAX]);

/* Whether a sign-in from peer (may be "" or NULL) for authid (may be NULL) may go on at now_ms
 * (loop time); a refusal is counted. */
bool auth_limit_admit(auth_limit *l, uint64_t now_ms, const char *peer, const char *authid);
/* Counts a sign-in about to be checked as failed in advance, so that checks in flight count
 * too; auth_limit_settle then gives it back (ok) or keeps it. */
void auth_limit_charge(auth_limit *l, uint64_t now_ms, const char *peer, const char *authid);
void auth_limit_settle(auth_limit *l, uint64_t now_ms, const char *peer, const char *authid,
                       bool ok);

/* For /metrics. */
typedef struct auth_limit_stats {
    unsigned long long failures; /* sign-ins that failed */
    unsigned long long refusals; /* sign-ins refused by the limiter */
    int blocked;                 /* addresses and authids refused right now */
    int max_failures;
    double window_s;
} auth_limit_stats;
void auth_limit_get_stats(const auth_limit *l, uint64_t now_ms, auth_limit_stats *out);

#endif
