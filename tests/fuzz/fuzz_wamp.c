/* fuzz_wamp.c: libFuzzer target for the WAMP serializations (runtime/wamp_codec.c). The first
 * byte picks JSON or msgpack; what decodes must encode in both and decode back equal. Every input
 * is decoded twice with different garbage in the error buffer: the outcome and the error text
 * must be the same, the text one of the codec's own messages and valid UTF-8 (error_oracle.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error_oracle.h"
#include "wamp_codec.h"

static void roundtrip(enum wamp_serializer ser, const json_t *v)
{
    codec_buf b;
    codec_buf_init(&b);
    char err[160];
    if (wamp_encode(ser, v, &b) != 0) abort();
    json_t *back = wamp_decode(ser, b.data, b.len, 66, err, sizeof err);
    /* JSON may lose the sign of -0.0 or the kind of an integral real; shapes must survive */
    if (!back || json_typeof(back) != json_typeof(v)) abort();
    json_decref(back);
    codec_buf_free(&b);
}

/* The texts wamp_codec.c writes (jansson's own follow "invalid JSON: "). */
static void known_error(const char *err)
{
    static const char *const known[] = {
        "invalid JSON: ",
        "nesting deeper than ",
        "more than ",
        "invalid msgpack",
        "unexpected data after the msgpack message",
        "a string is not valid UTF-8",
        "a map key is not",
        "a float is NaN or infinite",
        "msgpack extension type ",
        "unsupported msgpack type ",
        "out of memory",
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strncmp(err, known[i], strlen(known[i])) == 0) return;
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    enum wamp_serializer ser = data[0] & 1 ? WAMP_MSGPACK : WAMP_JSON;
    const char *in = (const char *)data + 1;
    char err[160], err2[160];
    bool ext, ext2;
    oracle_garbage(err, sizeof err, 0);
    oracle_garbage(err2, sizeof err2, 1);
    /* a small element bound too, so that the count is exercised on short inputs */
    size_t max_values = data[0] & 2 ? 64 : WAMP_MAX_VALUES;
    json_t *v = wamp_decode_msg(ser, in, size - 1, 66, max_values, &ext, err, sizeof err);
    json_t *v2 = wamp_decode_msg(ser, in, size - 1, 66, max_values, &ext2, err2, sizeof err2);
    if (!v != !v2 || ext != ext2) abort();
    if (v && !json_equal(v, v2)) abort();
    json_decref(v2);
    if (!v || ext) {
        oracle_same_error(err, err2, sizeof err);
        known_error(err);
    }
    if (!v) return 0;
    roundtrip(WAMP_JSON, v);
    roundtrip(WAMP_MSGPACK, v);
    json_decref(v);
    return 0;
}
