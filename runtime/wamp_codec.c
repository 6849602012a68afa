/* wamp_codec.c: owns the two WAMP serializations. JSON goes through jansson (integers stay
 * integers, so 2^53 ids are exact; reals print with 17 significant digits and read back exactly);
 * msgpack goes through msgpack-c and is converted to and from the same jansson values, so the
 * router has one representation whatever the session speaks. */
#include "wamp_codec.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int depth_ok(const json_t *v, int depth, int max_depth)
{
    if (depth > max_depth) return 0;
    size_t i;
    const char *key;
    json_t *child;
    if (json_is_array(v)) {
        json_array_foreach(v, i, child) if (!depth_ok(child, depth + 1, max_depth)) return 0;
    } else if (json_is_object(v)) {
        json_object_foreach((json_t *)v, key,
                            child) if (!depth_ok(child, depth + 1, max_depth)) return 0;
    }
    return 1;
}

/* Replaces integral reals within +-2^53 by integers, in place; returns v (or its replacement). */
static json_t *exact_integers(json_t *v)
{
    size_t i;
    const char *key;
    json_t *child;
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d >= -9007199254740992.0 && d <= 9007199254740992.0 && d == (double)(json_int_t)d) {
            json_decref(v);
            return json_integer((json_int_t)d);
        }
        return v;
    }
    if (json_is_array(v)) {
        json_array_foreach(v, i, child)
            json_array_set_new(v, i, exact_integers(json_incref(child)));
    } else if (json_is_object(v)) {
        json_object_foreach(v, key, child)
            json_object_set_new(v, key, exact_integers(json_incref(child)));
    }
    return v;
}

/* ---- msgpack -> jansson ---- */

static json_t *from_msgpack(const msgpack_object *o, int depth, int max_depth, char *err,
                            size_t errlen)
{
    if (depth > max_depth) {
        snprintf(err, errlen, "nesting deeper than %d", max_depth);
        return NULL;
    }
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > (uint64_t)INT64_MAX) return json_real((double)o->via.u64);
        return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return json_real(o->via.f64);
    case MSGPACK_OBJECT_STR:
    case MSGPACK_OBJECT_BIN: {
        const char *p = o->type == MSGPACK_OBJECT_STR ? o->via.str.ptr : o->via.bin.ptr;
        size_t n = o->type == MSGPACK_OBJECT_STR ? o->via.str.size : o->via.bin.size;
        json_t *s = json_stringn(p, n); /* NULL unless valid UTF-8 */
        if (!s) snprintf(err, errlen, "a string is not valid UTF-8");
        return s;
    }
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; a && i < o->via.array.size; i++) {
            json_t *e = from_msgpack(&o->via.array.ptr[i], depth + 1, max_depth, err, errlen);
            if (!e || json_array_append_new(a, e) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *m = json_object();
        for (uint32_t i = 0; m && i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR) {
                snprintf(err, errlen, "a map key is not a string");
                json_decref(m);
                return NULL;
            }
            json_t *v = from_msgpack(&kv->val, depth + 1, max_depth, err, errlen);
            if (!v || json_object_setn_new(m, kv->key.via.str.ptr, kv->key.via.str.size, v) != 0) {
                if (v) snprintf(err, errlen, "a map key is not valid UTF-8");
                json_decref(m);
                return NULL;
            }
        }
        return m;
    }
    default:
        snprintf(err, errlen, "unsupported msgpack type %d", (int)o->type);
        return NULL;
    }
}

static json_t *decode_msgpack(const char *buf, size_t len, int max_depth, char *err, size_t errlen)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    json_t *v = NULL;
    msgpack_unpack_return rc = msgpack_unpack_next(&u, buf, len, &off);
    if (rc != MSGPACK_UNPACK_SUCCESS)
        snprintf(err, errlen, "invalid msgpack");
    else if (off != len)
        snprintf(err, errlen, "unexpected data after the msgpack message");
    else
        v = from_msgpack(&u.data, 1, max_depth, err, errlen);
    msgpack_unpacked_destroy(&u);
    return v;
}

/* ---- jansson -> msgpack ---- */

static int to_msgpack(msgpack_packer *pk, const json_t *v)
{
    size_t i;
    const char *key;
    json_t *child;
    switch (json_typeof(v)) {
    case JSON_NULL:
        return msgpack_pack_nil(pk);
    case JSON_TRUE:
        return msgpack_pack_true(pk);
    case JSON_FALSE:
        return msgpack_pack_false(pk);
    case JSON_INTEGER:
        return msgpack_pack_int64(pk, json_integer_value(v));
    case JSON_REAL:
        return msgpack_pack_double(pk, json_real_value(v));
    case JSON_STRING: {
        size_t n = json_string_length(v);
        if (msgpack_pack_str(pk, n) != 0) return -1;
        return msgpack_pack_str_body(pk, json_string_value(v), n);
    }
    case JSON_ARRAY:
        if (msgpack_pack_array(pk, json_array_size(v)) != 0) return -1;
        json_array_foreach(v, i, child) if (to_msgpack(pk, child) != 0) return -1;
        return 0;
    case JSON_OBJECT:
        if (msgpack_pack_map(pk, json_object_size(v)) != 0) return -1;
        json_object_foreach((json_t *)v, key, child)
        {
            size_t n = strlen(key);
            if (msgpack_pack_str(pk, n) != 0 || msgpack_pack_str_body(pk, key, n) != 0 ||
                to_msgpack(pk, child) != 0)
                return -1;
        }
        return 0;
    }
    return -1;
}

static int buf_write(void *data, const char *p, size_t n)
{
    return codec_buf_append(data, p, n);
}

/* ---- public ---- */

json_t *wamp_decode(enum wamp_serializer ser, const char *buf, size_t len, int max_depth, char *err,
                    size_t errlen)
{
    if (ser == WAMP_MSGPACK) return decode_msgpack(buf, len, max_depth, err, errlen);
    json_error_t je;
    json_t *v = json_loadb(buf, len, JSON_DECODE_ANY, &je);
    if (!v && strstr(je.text, "too big integer")) {
        /* an integer beyond int64 (JavaScript writes 2**64 as 18446744073709552000): read every
         * number as a double, then give back integers to those that are exact */
        v = json_loadb(buf, len, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, &je);
        if (v) v = exact_integers(v);
    }
    if (!v) {
        snprintf(err, errlen, "invalid JSON: %s", je.text);
        return NULL;
    }
    if (!depth_ok(v, 1, max_depth)) {
        snprintf(err, errlen, "nesting deeper than %d", max_depth);
        json_decref(v);
        return NULL;
    }
    return v;
}

int wamp_encode(enum wamp_serializer ser, const json_t *v, codec_buf *out)
{
    if (ser == WAMP_MSGPACK) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, out, buf_write);
        return to_msgpack(&pk, v) == 0 ? 0 : -1;
    }
    char *dump = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
    if (!dump) return -1;
    int rc = codec_buf_append(out, dump, strlen(dump));
    free(dump);
    return rc;
}
