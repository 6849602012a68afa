/* fuzz_envelope.c: libFuzzer target for the RPC envelope codec (runtime/codec.c). Every input is
 * validated without Lua and decoded into Lua; the two must agree, and whatever decodes must
 * encode back, decode again and encode to a text of the same length. A metered decode (a budget
 * taken from the input's first byte, counted by mlua_memory's allocator) must refuse what is
 * invalid, may stop valid input only with CODEC_TOO_LARGE, leaves the stack as it was when it
 * fails and allocates at most its budget plus one element's worth. A refused input gets the same
 * error text from both decodes, whatever garbage was in the buffer before, valid UTF-8
 * (error_oracle.h). */
#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "error_oracle.h"
#include "mlua_memory.h"

static lua_State *L;
static mlua_memory mem;

static void metered(const uint8_t *data, size_t size, int valid)
{
    codec_error err;
    int top = lua_gettop(L);
    codec_meter meter = {&mem.allocated, size ? (size_t)data[0] * 64 : 0};
    size_t before = mem.allocated;
    int rc = codec_decode_envelope_metered(L, (const char *)data, size, 64, &meter, &err);
    if (!valid && rc == 0) abort();
    if (valid && rc != 0 && rc != CODEC_TOO_LARGE) abort();
    if (rc != 0 && lua_gettop(L) != top) abort();
    if (rc == 0 && lua_gettop(L) != top + 2) abort();
    /* one element past the budget: a string of at most the input, or an array's growth */
    if (mem.allocated - before > meter.max + 4 * size + 4096) abort();
    lua_settop(L, top);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!L) {
        L = luaL_newstate();
        codec_init(L);
        mlua_memory_attach(&mem, L, 0);
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
    metered(data, size, valid);
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}
