/* http_client.h: outbound HTTP(S) for services: libcurl's multi-socket API on the runtime's loop,
 * one multi handle (so one connection cache) per process, a bounded number of transfers at once
 * and a bounded FIFO of the others. */
#ifndef MICROSERVICE_HTTP_CLIENT_H
#define MICROSERVICE_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "runtime.h"

typedef struct http_client http_client;
typedef struct http_xfer http_xfer;

enum hc_status {
    HC_OK,          /* a response (any status): res is set */
    HC_UNAVAILABLE, /* no response: refused, DNS, TLS, connection broken, queue full, shut down */
    HC_TIMEOUT,     /* the request's timeout passed */
    HC_TOO_LARGE,   /* the response body is larger than max_body */
};

typedef struct hc_request {
    const char *method;         /* "GET", "POST", ... */
    const char *url;            /* http:// or https:// only */
    const char *const *headers; /* "Name: value" lines */
    int nheaders;
    const char *body; /* NULL: none */
    size_t body_len;
    double timeout; /* seconds, counted from the call (queue time included) */
    bool verify;    /* check the server's certificate and name */
    const char *ca; /* PEM file of CA certificates; NULL: the system's */
    int follow;     /* redirects to follow (0: a 3xx is the response) */
    size_t max_body;
} hc_request;

typedef struct hc_response {
    long status;
    const char *head; /* the header lines of the last response ("Name: value\r\n"...) */
    size_t head_len;
    const char *body;
    size_t body_len;
} hc_response;

/* Runs once on the loop thread, never from inside http_client_request. res is valid during the
 * call only; message explains a failure. */
typedef void (*hc_done_fn)(void *udata, enum hc_status st, const hc_response *res,
                           const char *message);

/* max_active transfers at once; queue_limit (0 or more) more wait in FIFO order. NULL when
 * libcurl cannot be set up (logged). */
http_client *http_client_new(runtime *rt, int max_active, int queue_limit);
/* Starts (or queues) a request; everything given is copied. NULL when it is refused at once
 * (queue full, bad option): fn will not run and err says why. */
http_xfer *http_client_request(http_client *c, const hc_request *req, hc_done_fn fn, void *udata,
                               char *err, size_t errlen);
/* fn will not run; a transfer under way is aborted (its connection closed). */
void http_client_xfer_abort(http_xfer *x);
int http_client_active(const http_client *c);
int http_client_queued(const http_client *c);
/* Fails what is left (HC_UNAVAILABLE), closes the connections and the loop handles; the client
 * frees itself once they are closed. */
void http_client_close(http_client *c);

#endif
