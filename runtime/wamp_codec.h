/* wamp_codec.h: WAMP messages between wire bytes (wamp.2.json, wamp.2.msgpack) and jansson
 * values, which the router works on. */
#ifndef MICROSERVICE_WAMP_CODEC_H
#define MICROSERVICE_WAMP_CODEC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "codec.h"

enum wamp_serializer { WAMP_JSON, WAMP_MSGPACK };

/* Parses one message (any JSON value / one msgpack object, nothing after it), nested at most
 * max_depth deep, strings valid UTF-8. NULL with err filled on failure. */
json_t *wamp_decode(enum wamp_serializer ser, const char *buf, size_t len, int max_depth, char *err,
                    size_t errlen);
/* Appends the encoding of v to out. 0 or -1. */
int wamp_encode(enum wamp_serializer ser, const json_t *v, codec_buf *out);

#endif
