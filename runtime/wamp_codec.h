/* wamp_codec.h: WAMP messages between wire bytes (wamp.2.json, wamp.2.msgpack) and jansson
 * values, which the router works on. */
#ifndef MICROSERVICE_WAMP_CODEC_H
#define MICROSERVICE_WAMP_CODEC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "codec.h"

enum wamp_serializer { WAMP_JSON, WAMP_MSGPACK };

/* Values (elements, containers included) one decoded message may hold. */
#define WAMP_MAX_VALUES 100000

/* Parses one message (any JSON value / one msgpack object, nothing after it), nested at most
 * max_depth deep, at most max_elements values, strings valid UTF-8. NULL with err filled on
 * failure; err is always written (valid UTF-8, about this input only). A msgpack extension value
 * other than undefined (fixext 1 type 0, read as absent in a map and null in a list) leaves null
 * in its place: the value is returned with *unsupported set and err saying which type. */
json_t *wamp_decode_msg(enum wamp_serializer ser, const char *buf, size_t len, int max_depth,
                        size_t max_elements, bool *unsupported, char *err, size_t errlen);
/* wamp_decode_msg with WAMP_MAX_VALUES; an unsupported extension is a failure. */
json_t *wamp_decode(enum wamp_serializer ser, const char *buf, size_t len, int max_depth, char *err,
                    size_t errlen);
/* Appends the encoding of v to out. 0 or -1. */
int wamp_encode(enum wamp_serializer ser, const json_t *v, codec_buf *out);

#endif
