/* fuzz_wamp.c: libFuzzer target for the WAMP serializations (runtime/wamp_codec.c). The first
 * byte picks JSON or msgpack; what decodes must encode in both and decode back equal. */
#include <stdint.h>
#include <stdlib.h>

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    enum wamp_serializer ser = data[0] & 1 ? WAMP_MSGPACK : WAMP_JSON;
    char err[160];
    json_t *v = wamp_decode(ser, (const char *)data + 1, size - 1, 66, err, sizeof err);
    if (!v) return 0;
    roundtrip(WAMP_JSON, v);
    roundtrip(WAMP_MSGPACK, v);
    json_decref(v);
    return 0;
}
