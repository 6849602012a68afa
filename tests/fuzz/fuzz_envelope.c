/* fuzz_envelope.c: libFuzzer target for the RPC envelope codec (runtime/codec.c). Every input is
 * validated without Lua and decoded into Lua; the two must agree, and whatever decodes must
 * encode back, decode again and encode to a text of the same length. A refused input gets the same
 * error text from both, whatever garbage was in the buffer before, valid UTF-8 (error_oracle.h). */
#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "error_oracle.h"

static lua_State *L;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!L) {
        L = luaL_newstate();
        codec_init(L);
    }
    codec_error err, err2;
    oracle_garbage(err.msg, sizeof err.msg, 0);
    oracle_garbage(err2.msg, sizeof err2.msg, 1);
    int valid = codec_decode_envelope(NULL, (const char *)data, size, 64, &err) == 0;
    int top = lua_gettop(L);
    int decoded = codec_decode_envelope(L, (const char *)data, size, 64, &err2) == 0;
    if (valid != decoded) abort(); /* validation and decoding disagree */
    if (!valid) oracle_same_error(err.msg, err2.msg, sizeof err.msg);
    if (decoded) {
        codec_buf a, b;
        codec_buf_init(&a);
        codec_buf_init(&b);
        if (codec_encode_envelope(L, top + 1, top + 2, &a, 64, &err) != 0) abort();
        lua_settop(L, top);
        if (codec_decode_envelope(L, a.data, a.len, 64, &err) != 0) abort();
        if (codec_encode_envelope(L, top + 1, top + 2, &b, 64, &err) != 0) abort();
        /* the same length both times (object keys may come out in another order) */
        if (a.len != b.len) abort();
        codec_buf_free(&a);
        codec_buf_free(&b);
    }
    lua_settop(L, top);
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}
