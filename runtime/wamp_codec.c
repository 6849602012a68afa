/* wamp_codec.c: owns the two WAMP serializations. JSON goes through jansson (integers stay
 * integers, so 2^53 ids are exact; reals print with 17 significant digits and read back exactly);
 * msgpack goes through msgpack-c and is converted to and from the same jansson values, so the
 * router has one representation whatever the session speaks. Both are counted before they are
 * built (at most max_elements values), and every failure writes err, valid UTF-8, from the
 * message at hand only. msgpack extension values: JavaScript's undefined (fixext 1, type 0,
 * as msgpackr writes it) reads as absent; any other extension reads as null and is reported. */
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

/* JavaScript's undefined as msgpackr writes it: fixext 1, type 0, one zero byte. */
static bool is_undefined(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_EXT && o->via.ext.type == 0 && o->via.ext.size == 1 &&
           o->via.ext.ptr[0] == 0;
}

static json_t *from_msgpack(const msgpack_object *o, int depth, int max_depth, bool *ext, char *err,
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
    case MSGPACK_OBJECT_FLOAT64: {
        json_t *d = json_real(o->via.f64); /* NULL for NaN and the infinities */
        if (!d) snprintf(err, errlen, "a float is NaN or infinite (JSON cannot carry it)");
        return d;
    }
    case MSGPACK_OBJECT_EXT:
        if (is_undefined(o)) return json_null(); /* in a list; a map drops the key */
        if (!*ext)
            snprintf(err, errlen, "msgpack extension type %d is not supported",
                     (int)o->via.ext.type);
        *ext = true;
        return json_null();
    case MSGPACK_OBJECT_STR:
    case MSGPACK_OBJECT_BIN: {
        const char *p = o->type == MSGPACK_OBJECT_STR ? o->via.str.ptr : o->via.bin.ptr;
        size_t n = o->type == MSGPACK_OBJECT_STR ? o->via.str.size : o->via.bin.size;
        /* msgpack-c gives a NULL pointer for an empty string */
        json_t *s = n ? json_stringn(p, n) : json_string(""); /* NULL unless valid UTF-8 */
        if (!s) snprintf(err, errlen, "a string is not valid UTF-8");
        return s;
    }
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; a && i < o->via.array.size; i++) {
            json_t *e = from_msgpack(&o->via.array.ptr[i], depth + 1, max_depth, ext, err, errlen);
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
            if (kv->key.type != MSGPACK_OBJECT_STR ||
                (kv->key.via.str.size && memchr(kv->key.via.str.ptr, 0, kv->key.via.str.size))) {
                /* a NUL in a key could not travel as JSON (jansson refuses it there) */
                snprintf(err, errlen, "a map key is not a string, or contains NUL");
                json_decref(m);
                return NULL;
            }
            if (is_undefined(&kv->val)) continue; /* an undefined value: the key is absent */
            json_t *v = from_msgpack(&kv->val, depth + 1, max_depth, ext, err, errlen);
            const char *key = kv->key.via.str.size ? kv->key.via.str.ptr : "";
            if (!v || json_object_setn_new(m, key, kv->key.via.str.size, v) != 0) {
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

/* Big-endian unsigned of k bytes at p. */
static size_t be(const unsigned char *p, int k)
{
    size_t v = 0;
    for (int i = 0; i < k; i++)
        v = v << 8 | p[i];
    return v;
}

/* What a pre-walk may still accept: depth, and how many values (elements) are left. */
typedef struct walk {
    int max_depth;
    size_t left;
    bool too_many;
} walk;

/* The width of an extension's length field and its fixed data size (-1: read from the field). */
static bool ext_shape(unsigned c, int *lenbytes, long *fixed)
{
    static const long fixsizes[] = {1, 2, 4, 8, 16}; /* 0xd4 .. 0xd8 */
    if (c >= 0xd4 && c <= 0xd8) {
        *lenbytes = 0;
        *fixed = fixsizes[c - 0xd4];
        return true;
    }
    if (c >= 0xc7 && c <= 0xc9) {
        *lenbytes = c == 0xc7 ? 1 : c == 0xc8 ? 2 : 4;
        *fixed = -1;
        return true;
    }
    return false;
}

/* Walks one msgpack object without building it: msgpack-c allocates arrays and maps for the
 * counts the input declares, so a few bytes claiming 2^32 elements would exhaust memory. Every
 * element takes at least one byte, so a count larger than what remains is refused first, and
 * every value counts against w->left (jansson spends tens of bytes on each).
 * Returns the object's length, or 0 when it is malformed, truncated, too deep or too many. */
static size_t mp_walk(const unsigned char *p, size_t len, int depth, walk *w)
{
    if (len < 1 || depth > w->max_depth) return 0;
    if (w->left == 0) {
        w->too_many = true;
        return 0;
    }
    w->left--;
    unsigned c = p[0];
    if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) return 1;
    int lenbytes = 0;      /* size field width after the type byte */
    bool is_items = false; /* the size counts elements (array) or pairs (map), not bytes */
    bool pairs = false;
    size_t size = 0;
    long fixed;
    if (ext_shape(c, &lenbytes, &fixed)) { /* type byte, [length], ext type, data */
        if (len < 1 + (size_t)lenbytes) return 0;
        size = fixed >= 0 ? (size_t)fixed : be(p + 1, lenbytes);
        size_t at = 1 + (size_t)lenbytes + 1;
        return at <= len && size <= len - at ? at + size : 0;
    }
    if ((c & 0xe0) == 0xa0) {
        size = c & 0x1f; /* fixstr */
    } else if ((c & 0xf0) == 0x90) {
        size = c & 0x0f; /* fixarray */
        is_items = true;
    } else if ((c & 0xf0) == 0x80) {
        size = c & 0x0f; /* fixmap */
        is_items = pairs = true;
    } else {
        switch (c) {
        case 0xcc:
        case 0xd0:
            return len >= 2 ? 2 : 0;
        case 0xcd:
        case 0xd1:
            return len >= 3 ? 3 : 0;
        case 0xca:
        case 0xce:
        case 0xd2:
            return len >= 5 ? 5 : 0;
        case 0xcb:
        case 0xcf:
        case 0xd3:
            return len >= 9 ? 9 : 0;
        case 0xd9:
        case 0xc4:
            lenbytes = 1;
            break;
        case 0xda:
        case 0xc5:
            lenbytes = 2;
            break;
        case 0xdb:
        case 0xc6:
            lenbytes = 4;
            break;
        case 0xdc:
            lenbytes = 2;
            is_items = true;
            break;
        case 0xdd:
            lenbytes = 4;
            is_items = true;
            break;
        case 0xde:
            lenbytes = 2;
            is_items = pairs = true;
            break;
        case 0xdf:
            lenbytes = 4;
            is_items = pairs = true;
            break;
        default:
            return 0; /* the reserved byte 0xc1 */
        }
        if (len < 1 + (size_t)lenbytes) return 0;
        size = be(p + 1, lenbytes);
    }
    size_t at = 1 + (size_t)lenbytes;
    if (!is_items) return size <= len - at ? at + size : 0;
    if (pairs) size *= 2;
    if (size > len - at) return 0;
    for (size_t i = 0; i < size; i++) {
        size_t k = mp_walk(p + at, len - at, depth + 1, w);
        if (k == 0) return 0;
        at += k;
    }
    return at;
}

static json_t *decode_msgpack(const char *buf, size_t len, int max_depth, size_t max_elements,
                              bool *ext, char *err, size_t errlen)
{
    walk w = {.max_depth = max_depth, .left = max_elements};
    size_t whole = mp_walk((const unsigned char *)buf, len, 1, &w);
    if (whole == 0 && w.too_many) {
        snprintf(err, errlen, "more than %zu values in one message", max_elements);
        return NULL;
    }
    if (whole == 0) {
        snprintf(err, errlen, "invalid msgpack (malformed, truncated, or nested deeper than %d)",
                 max_depth);
        return NULL;
    }
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
        v = from_msgpack(&u.data, 1, max_depth, ext, err, errlen);
    msgpack_unpacked_destroy(&u);
    return v;
}

/* An upper bound on the values of a JSON text, without parsing it: one per container and one
 * per separator, plus one (strings are skipped). jansson builds the whole value, so a text of
 * many small values is refused before it does. */
static size_t json_values_bound(const char *p, size_t len)
{
    size_t n = 1;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = p[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{' || c == ',') {
            n++;
        }
    }
    return n;
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

/* Replaces every byte that is not part of valid UTF-8 by '?', so that an error text (which may
 * quote the input, as jansson's do) can go into a JSON ABORT and a log line. */
static void utf8_clean(char *s)
{
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        int n = *p < 0x80             ? 0
                : (*p & 0xe0) == 0xc0 ? 1
                : (*p & 0xf0) == 0xe0 ? 2
                : (*p & 0xf8) == 0xf0 ? 3
                                      : -1;
        int k = 1;
        while (n > 0 && k <= n && (p[k] & 0xc0) == 0x80)
            k++;
        bool ok = n == 0 || (n > 0 && k == n + 1);
        /* overlong two-byte forms, surrogates and values past U+10FFFF */
        if (ok && n == 1 && *p < 0xc2) ok = false;
        if (ok && n == 2 && ((*p == 0xe0 && p[1] < 0xa0) || (*p == 0xed && p[1] >= 0xa0)))
            ok = false;
        if (ok && n == 3 &&
            ((*p == 0xf0 && p[1] < 0x90) || *p > 0xf4 || (*p == 0xf4 && p[1] >= 0x90)))
            ok = false;
        if (!ok) {
            *p++ = '?';
            continue;
        }
        p += n + 1;
    }
}

static json_t *decode_json(const char *buf, size_t len, int max_depth, size_t max_elements,
                           char *err, size_t errlen)
{
    if (json_values_bound(buf, len) > max_elements) {
        snprintf(err, errlen, "more than %zu values in one message", max_elements);
        return NULL;
    }
    json_error_t je;
    json_t *v = json_loadb(buf, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!v && strstr(je.text, "too big integer")) {
        /* an integer beyond int64 (JavaScript writes 2**64 as 18446744073709552000): read every
         * number as a double, then give back integers to those that are exact */
        v = json_loadb(buf, len, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, &je);
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

json_t *wamp_decode_msg(enum wamp_serializer ser, const char *buf, size_t len, int max_depth,
                        size_t max_elements, bool *unsupported, char *err, size_t errlen)
{
    bool ext = false;
    if (errlen) err[0] = '\0';
    json_t *v = ser == WAMP_MSGPACK
                    ? decode_msgpack(buf, len, max_depth, max_elements, &ext, err, errlen)
                    : decode_json(buf, len, max_depth, max_elements, err, errlen);
    if (errlen && (!v || ext) && !err[0]) snprintf(err, errlen, "out of memory");
    if (errlen) utf8_clean(err);
    *unsupported = v && ext;
    return v;
}

json_t *wamp_decode(enum wamp_serializer ser, const char *buf, size_t len, int max_depth, char *err,
                    size_t errlen)
{
    bool unsupported;
    json_t *v =
        wamp_decode_msg(ser, buf, len, max_depth, WAMP_MAX_VALUES, &unsupported, err, errlen);
    if (unsupported) {
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
