/* test_wamp_codec.c: the WAMP serializations (runtime/wamp_codec.c): JSON and msgpack decode to
 * the same values, encode back exactly (2^53 ids, doubles, empty containers, unicode), and refuse
 * malformed input (bad JSON, bad msgpack, trailing bytes, invalid UTF-8, nesting past the limit,
 * non-string map keys). */
#include <msgpack.h>
#include <stdio.h>
#include <string.h>

#include "wamp_codec.h"

#include "check.h"

static json_t *decode_json(const char *text)
{
    char err[160];
    return wamp_decode(WAMP_JSON, text, strlen(text), 64, err, sizeof err);
}

/* JSON text -> value -> msgpack -> value -> JSON text: must equal the canonical text. */
static void roundtrip(const char *text, const char *canonical)
{
    json_t *v = decode_json(text);
    CHECK(v != NULL);
    if (!v) return;
    codec_buf mp, js;
    codec_buf_init(&mp);
    codec_buf_init(&js);
    CHECK(wamp_encode(WAMP_MSGPACK, v, &mp) == 0);
    char err[160];
    json_t *back = wamp_decode(WAMP_MSGPACK, mp.data, mp.len, 64, err, sizeof err);
    CHECK(back != NULL);
    CHECK(back && json_equal(v, back));
    CHECK(back && wamp_encode(WAMP_JSON, back, &js) == 0);
    CHECK(js.len == strlen(canonical) && memcmp(js.data, canonical, js.len) == 0);
    if (js.len != strlen(canonical) || memcmp(js.data, canonical, js.len) != 0)
        fprintf(stderr, "  got %.*s, want %s\n", (int)js.len, js.data, canonical);
    json_decref(v);
    json_decref(back);
    codec_buf_free(&mp);
    codec_buf_free(&js);
}

static void refused(enum wamp_serializer ser, const char *buf, size_t len, const char *why)
{
    char err[160] = "";
    json_t *v = wamp_decode(ser, buf, len, 64, err, sizeof err);
    CHECK(v == NULL);
    CHECK(err[0] != '\0');
    if (v) fprintf(stderr, "  accepted: %s\n", why);
    json_decref(v);
}

static void test_roundtrips(void)
{
    roundtrip("[1, \"realm1\", {}]", "[1,\"realm1\",{}]");
    roundtrip("[48, 9007199254740992, {}, \"a.b\", [], {}]",
              "[48,9007199254740992,{},\"a.b\",[],{}]");
    roundtrip("[0.5, -1.25, 1e300, 3.141592653589793]",
              "[0.5,-1.25,1.0000000000000001e300,3.1415926535897931]");
    roundtrip("[\"\\u00e9\\u65e5\\ud83d\\ude00\", null, true, false]",
              "[\"\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80\",null,true,false]");
    roundtrip("{\"a\": [[], {}], \"b\": -9007199254740992}",
              "{\"a\":[[],{}],\"b\":-9007199254740992}");
}

static void test_doubles_exact(void)
{
    const double values[] = {0.1, 1.0 / 3.0, 5e-324, 1.7976931348623157e308, -0.0};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        json_t *v = json_pack("[f]", values[i]);
        codec_buf b;
        codec_buf_init(&b);
        CHECK(wamp_encode(WAMP_JSON, v, &b) == 0);
        char err[160];
        json_t *back = wamp_decode(WAMP_JSON, b.data, b.len, 64, err, sizeof err);
        CHECK(back && json_real_value(json_array_get(back, 0)) == values[i]);
        json_decref(back);
        codec_buf_free(&b);
        codec_buf_init(&b);
        CHECK(wamp_encode(WAMP_MSGPACK, v, &b) == 0);
        back = wamp_decode(WAMP_MSGPACK, b.data, b.len, 64, err, sizeof err);
        CHECK(back && json_real_value(json_array_get(back, 0)) == values[i]);
        json_decref(back);
        codec_buf_free(&b);
        json_decref(v);
    }
}

static void test_refusals(void)
{
    refused(WAMP_JSON, "[1, ", 4, "truncated JSON");
    refused(WAMP_JSON, "[1] x", 5, "trailing garbage");
    refused(WAMP_JSON, "[\"\xff\"]", 5, "invalid UTF-8");
    refused(WAMP_JSON, "", 0, "empty");
    char deep[200];
    memset(deep, '[', 65);
    memset(deep + 65, ']', 65);
    refused(WAMP_JSON, deep, 130, "65 levels");
    char ok[200];
    memset(ok, '[', 64);
    memset(ok + 64, ']', 64);
    char err[160];
    json_t *v = wamp_decode(WAMP_JSON, ok, 128, 64, err, sizeof err);
    CHECK(v != NULL);
    json_decref(v);

    refused(WAMP_MSGPACK, "\xc1", 1, "reserved msgpack byte");
    refused(WAMP_MSGPACK, "\x92\x01", 2, "truncated msgpack array");
    refused(WAMP_MSGPACK, "\x91\x01\x01", 3, "trailing msgpack bytes");
    refused(WAMP_MSGPACK, "\x91\xa1\xff", 3, "invalid UTF-8 msgpack string");
    refused(WAMP_MSGPACK, "\x81\x01\x01", 3, "msgpack map with an integer key");
    char mdeep[100];
    memset(mdeep, 0x91, 65);
    mdeep[65] = 0x01;
    refused(WAMP_MSGPACK, mdeep, 66, "65 levels of msgpack");
}

/* Regression cases found by tests/fuzz: a tiny message declaring 2^32 elements must be refused
 * before msgpack-c allocates for them; empty strings and keys survive; NUL in a key is refused. */
static void test_fuzz_regressions(void)
{
    refused(WAMP_MSGPACK, "\xdd\xff\xff\xff\xff\x01", 6, "array32 claiming 2^32 elements");
    refused(WAMP_MSGPACK, "\xdf\x7f\xff\xff\xff\x01\x01", 7, "map32 claiming 2^31 pairs");
    refused(WAMP_MSGPACK, "\x81\xa2J\x00\x01", 5, "NUL inside a map key");
    roundtrip("[\"\", {\"\": \"\"}]", "[\"\",{\"\":\"\"}]");
    roundtrip("[\"a\\u0000b\"]", "[\"a\\u0000b\"]");
}

static void test_big_unsigned(void)
{
    /* a msgpack uint64 above INT64_MAX cannot be a JSON integer here: it becomes a double */
    const char mp[] = "\x91\xcf\xff\xff\xff\xff\xff\xff\xff\xff";
    char err[160];
    json_t *v = wamp_decode(WAMP_MSGPACK, mp, sizeof mp - 1, 64, err, sizeof err);
    CHECK(v && json_is_real(json_array_get(v, 0)));
    json_decref(v);
}

/* Issue 12: NaN and infinities get an error text (the buffer was left unwritten), undefined
 * reads as absent, other extensions are reported, the value count is bounded. */
static void test_issue12(void)
{
    char err[160];
    for (int k = 0; k < 3; k++) {
        unsigned char nan[] = {0x93, 0x01, 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0, 0x80};
        if (k == 1) nan[4] = 0xf0;                /* +Infinity */
        if (k == 2) nan[3] = 0xff, nan[4] = 0xf0; /* -Infinity */
        memset(err, 0xff, sizeof err);
        CHECK(wamp_decode(WAMP_MSGPACK, (const char *)nan, sizeof nan, 64, err, sizeof err) ==
              NULL);
        CHECK(strcmp(err, "a float is NaN or infinite (JSON cannot carry it)") == 0);
    }
    /* [1, undefined, {"a": undefined, "b": 2}] -> [1, null, {"b": 2}] */
    const unsigned char undef[] = {0x93, 0x01, 0xd4, 0x00, 0x00, 0x82, 0xa1, 'a',
                                   0xd4, 0x00, 0x00, 0xa1, 'b',  0x02, 0x00};
    bool ext = true;
    json_t *v = wamp_decode_msg(WAMP_MSGPACK, (const char *)undef, sizeof undef - 1, 64, 100, &ext,
                                err, sizeof err);
    json_t *want = json_loads("[1, null, {\"b\": 2}]", 0, NULL);
    CHECK(v && !ext && json_equal(v, want));
    json_decref(v);
    json_decref(want);
    /* [1, ext 5] -> [1, null], reported */
    const unsigned char other[] = {0x92, 0x01, 0xc7, 0x02, 0x05, 0xaa, 0xbb};
    v = wamp_decode_msg(WAMP_MSGPACK, (const char *)other, sizeof other, 64, 100, &ext, err,
                        sizeof err);
    CHECK(v && ext && strcmp(err, "msgpack extension type 5 is not supported") == 0);
    json_decref(v);
    CHECK(wamp_decode(WAMP_MSGPACK, (const char *)other, sizeof other, 64, err, sizeof err) ==
          NULL);
    /* a truncated extension is malformed */
    CHECK(wamp_decode(WAMP_MSGPACK, (const char *)other, sizeof other - 1, 64, err, sizeof err) ==
          NULL);
    /* the value count: [[], [], []] is 4 values */
    const unsigned char arrays[] = {0x93, 0x90, 0x90, 0x90};
    for (int json = 0; json < 2; json++) {
        enum wamp_serializer ser = json ? WAMP_JSON : WAMP_MSGPACK;
        const char *buf = json ? "[[],[],[]]" : (const char *)arrays;
        size_t len = json ? strlen(buf) : sizeof arrays;
        v = wamp_decode_msg(ser, buf, len, 64, json ? 7 : 4, &ext, err, sizeof err);
        CHECK(v != NULL);
        json_decref(v);
        v = wamp_decode_msg(ser, buf, len, 64, 3, &ext, err, sizeof err);
        CHECK(v == NULL && strcmp(err, "more than 3 values in one message") == 0);
    }
    /* an error text quoting invalid UTF-8 is cleaned */
    CHECK(wamp_decode(WAMP_JSON, "[1, \xff\xfe]", 7, 64, err, sizeof err) == NULL);
    for (const unsigned char *p = (const unsigned char *)err; *p; p++)
        CHECK(*p < 0x80);
}

int main(void)
{
    test_issue12();
    test_roundtrips();
    test_doubles_exact();
    test_refusals();
    test_big_unsigned();
    test_fuzz_regressions();
    return check_summary();
}
