/* trace.h: W3C trace context (traceparent) ids: parsing, making and formatting. */
#ifndef MICROSERVICE_TRACE_H
#define MICROSERVICE_TRACE_H

#include <stdbool.h>
#include <stddef.h>

#define TRACE_HEADER "traceparent"
#define TRACE_ID_LEN 32    /* hex digits of a trace id */
#define TRACEPARENT_LEN 55 /* "00-" trace id "-" parent id (16) "-" flags (2) */

/* The trace id (32 lower-case hex digits and a NUL) of a valid traceparent value. */
bool trace_parse(const char *value, size_t len, char trace_id[TRACE_ID_LEN + 1]);
/* A new random trace id. */
void trace_new_id(char trace_id[TRACE_ID_LEN + 1]);
/* "00-<trace_id>-<new parent id>-01": what a call passes on. */
void trace_format(char out[TRACEPARENT_LEN + 1], const char *trace_id);

#endif
