/* trace.c: owns the W3C traceparent format (https://www.w3.org/TR/trace-context/): which values
 * are taken from a caller, and the ids made here (random, from uv_random). The trace id of a
 * task lives on the task (scheduler.h); services.c takes it from a message, mlua_api.c and
 * mlua_http.c pass it on. */
#include "trace.h"

#include <stdio.h>
#include <string.h>
#include <uv.h>

static bool is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return true;
}

static bool all_zero(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != '0') return false;
    return true;
}

bool trace_parse(const char *v, size_t len, char trace_id[TRACE_ID_LEN + 1])
{
    if (!v || len < TRACEPARENT_LEN || !is_hex(v, 2) || memcmp(v, "ff", 2) == 0) return false;
    /* version 00 is exactly 55 characters; a later one may append fields after a dash */
    bool v00 = memcmp(v, "00", 2) == 0;
    if (len > TRACEPARENT_LEN && (v00 || v[TRACEPARENT_LEN] != '-')) return false;
    if (v[2] != '-' || v[35] != '-' || v[52] != '-' || !is_hex(v + 53, 2)) return false;
    if (!is_hex(v + 3, TRACE_ID_LEN) || all_zero(v + 3, TRACE_ID_LEN)) return false;
    if (!is_hex(v + 36, 16) || all_zero(v + 36, 16)) return false;
    memcpy(trace_id, v + 3, TRACE_ID_LEN);
    trace_id[TRACE_ID_LEN] = '\0';
    return true;
}

static void random_hex(char *out, size_t bytes)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char rnd[16];
    if (bytes > sizeof rnd) bytes = sizeof rnd;
    if (uv_random(NULL, NULL, rnd, bytes, 0, NULL) != 0) { /* no entropy: from the clock */
        unsigned long long t = uv_hrtime();
        for (size_t i = 0; i < bytes; i++)
            rnd[i] = (unsigned char)(t >> (8 * (i % 8))) ^ (unsigned char)(i * 37);
    }
    for (size_t i = 0; i < bytes; i++) {
        out[2 * i] = digits[rnd[i] >> 4];
        out[2 * i + 1] = digits[rnd[i] & 15];
    }
    out[2 * bytes] = '\0';
}

void trace_new_id(char trace_id[TRACE_ID_LEN + 1])
{
    random_hex(trace_id, TRACE_ID_LEN / 2);
}

void trace_format(char out[TRACEPARENT_LEN + 1], const char *trace_id)
{
    char parent[17];
    random_hex(parent, 8);
    snprintf(out, TRACEPARENT_LEN + 1, "00-%.32s-%s-01", trace_id, parent);
}
