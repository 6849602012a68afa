/* test_codec.c: unit tests for runtime/codec.c (JSON decode/encode, the RPC envelope, limits).
 * Every decode case runs twice, with a lua_State and in validation mode (L == NULL), and both must
 * agree (same result, same message). No framework: CHECK counts and reports, main returns 1 on
 * any failure. Also: table sizes around the decoder's stack collection, and the meter (the Lua
 * memory a decode may allocate). */
#include "codec.h"

#include <lauxlib.h>
#include <lualib.h>

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "mlua_memory.h"
#define DIAG diag

static lua_State *L;
static codec_buf out;

static int str_eq(const char *got, size_t glen, const char *want, size_t wlen)
{
    if (glen == wlen && memcmp(got, want, glen) == 0) return 1;
    if (glen < 300 && wlen < 300)
        return DIAG("got  %.*s\n    want %.*s", (int)glen, got, (int)wlen, want);
    return DIAG("strings differ (lengths %zu and %zu)", glen, wlen);
}

static int is_array_marked(int idx)
{
    int marked = 0;
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    if (lua_getmetatable(L, idx)) {
        luaL_getmetatable(L, CODEC_ARRAY_MT);
        marked = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    return marked;
}

static int table_is_empty(int idx)
{
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    if (!lua_istable(L, idx)) return 0;
    lua_pushnil(L);
    if (lua_next(L, idx)) {
        lua_pop(L, 2);
        return 0;
    }
    return 1;
}

/* Encodes the value at idx with codec_encode; returns 1 if the text is `want`. */
static int encodes_as(int idx, const char *want)
{
    codec_error err;
    int top = lua_gettop(L);
    codec_buf_reset(&out);
    if (codec_encode(L, idx, &out, 64, &err) != 0)
        return DIAG("encode refused: %s (want %s)", err.msg, want);
    if (lua_gettop(L) != top)
        return DIAG("encode left the stack at %d, not %d", lua_gettop(L), top);
    return str_eq(out.data, out.len, want, strlen(want));
}

/* --- decoding helpers --- */

/* Decodes in both modes, then encodes; 1 if the text is `want` (want NULL: the input itself). */
static int roundtrip_n(const char *in, size_t len, const char *want, size_t wlen)
{
    codec_error err;
    int top = lua_gettop(L);
    if (codec_decode(NULL, in, len, 64, &err) != 0)
        return DIAG("validation refused %.*s: %s", (int)(len < 200 ? len : 200), in, err.msg);
    if (codec_decode(L, in, len, 64, &err) != 0)
        return DIAG("decode refused %.*s: %s", (int)(len < 200 ? len : 200), in, err.msg);
    if (lua_gettop(L) != top + 1) return DIAG("decode pushed %d values", lua_gettop(L) - top);
    codec_buf_reset(&out);
    int rc = codec_encode(L, -1, &out, 64, &err);
    lua_settop(L, top);
    if (rc != 0) return DIAG("encode refused: %s", err.msg);
    return want ? str_eq(out.data, out.len, want, wlen) : str_eq(out.data, out.len, in, len);
}

static int roundtrip(const char *in, const char *want)
{
    return roundtrip_n(in, strlen(in), want, want ? strlen(want) : 0);
}

/* Both modes refuse, push nothing, and give the same non-empty message containing `part`. */
static int refused_with(int (*fn)(lua_State *, const char *, size_t, int, codec_error *),
                        const char *in, size_t len, int depth, const char *part)
{
    codec_error e1, e2;
    int top = lua_gettop(L);
    if (fn(NULL, in, len, depth, &e1) != -1)
        return DIAG("validation accepted %.*s", (int)(len < 200 ? len : 200), in);
    if (fn(L, in, len, depth, &e2) != -1)
        return DIAG("decode accepted %.*s", (int)(len < 200 ? len : 200), in);
    if (lua_gettop(L) != top) return DIAG("a refused decode left %d values", lua_gettop(L) - top);
    if (e1.msg[0] == '\0' || strcmp(e1.msg, e2.msg) != 0)
        return DIAG("messages '%s' and '%s'", e1.msg, e2.msg);
    if (part && !strstr(e2.msg, part)) return DIAG("message '%s' lacks '%s'", e2.msg, part);
    return 1;
}

static int refused_n(const char *in, size_t len, const char *part)
{
    return refused_with(codec_decode, in, len, 64, part);
}

static int refused(const char *in, const char *part)
{
    return refused_n(in, strlen(in), part);
}

static int env_refused(const char *in, const char *part)
{
    return refused_with(codec_decode_envelope, in, strlen(in), 64, part);
}

static int error_is(const char *in, const char *want)
{
    codec_error err;
    if (codec_decode(L, in, strlen(in), 64, &err) != -1) return DIAG("accepted %s", in);
    return str_eq(err.msg, strlen(err.msg), want, strlen(want));
}

/* Envelope decode in both modes: args must be array-marked, kwargs a plain table, and they must
 * encode as want_args and want_kwargs. */
static int envelope_is(const char *in, size_t len, const char *want_args, const char *want_kwargs,
                       int depth)
{
    codec_error err;
    int top = lua_gettop(L);
    if (codec_decode_envelope(NULL, in, len, depth, &err) != 0)
        return DIAG("validation refused %.*s: %s", (int)(len < 200 ? len : 200), in, err.msg);
    if (codec_decode_envelope(L, in, len, depth, &err) != 0)
        return DIAG("decode refused %.*s: %s", (int)(len < 200 ? len : 200), in, err.msg);
    int ok = lua_gettop(L) == top + 2 || DIAG("pushed %d values", lua_gettop(L) - top);
    ok = ok && (is_array_marked(-2) || DIAG("args not array-marked"));
    ok = ok && (!is_array_marked(-1) || DIAG("kwargs array-marked"));
    ok = ok && (!want_args || encodes_as(-2, want_args));
    ok = ok && (!want_kwargs || encodes_as(-1, want_kwargs));
    lua_settop(L, top);
    return ok;
}

static int env_ok(const char *in, const char *want_args, const char *want_kwargs)
{
    return envelope_is(in, strlen(in), want_args, want_kwargs, 64);
}

/* Decodes a string literal and compares the Lua string with `want` (wlen bytes). */
static int string_is(const char *in, const char *want, size_t wlen)
{
    codec_error err;
    int top = lua_gettop(L);
    if (codec_decode(NULL, in, strlen(in), 64, &err) != 0)
        return DIAG("validation refused %s: %s", in, err.msg);
    if (codec_decode(L, in, strlen(in), 64, &err) != 0)
        return DIAG("decode refused %s: %s", in, err.msg);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    int ok = lua_type(L, -1) == LUA_TSTRING && str_eq(s, len, want, wlen);
    lua_settop(L, top);
    return ok;
}

static int same_bits(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0 || DIAG("%.17g != %.17g", a, b);
}

/* Decodes `in` (must give exactly `value`), encodes it (must give `text`), decodes that again
 * (must give the same bits). */
static int number_is(const char *in, double value, const char *text)
{
    codec_error err;
    int top = lua_gettop(L);
    if (codec_decode(L, in, strlen(in), 64, &err) != 0 ||
        codec_decode(NULL, in, strlen(in), 64, &err))
        return DIAG("refused %s: %s", in, err.msg);
    double d = lua_tonumber(L, -1);
    int ok = same_bits(d, value) && encodes_as(-1, text);
    lua_settop(L, top);
    if (ok && codec_decode(L, out.data, out.len, 64, &err) == 0) {
        ok = same_bits(lua_tonumber(L, -1), value);
        lua_settop(L, top);
    }
    return ok;
}

static char *nested(int levels, const char *open, const char *inner, const char *close)
{
    size_t lo = strlen(open), lc = strlen(close), li = strlen(inner);
    char *s = malloc((size_t)levels * (lo + lc) + li + 1), *p = s;
    for (int i = 0; i < levels; i++, p += lo)
        memcpy(p, open, lo);
    memcpy(p, inner, li);
    p += li;
    for (int i = 0; i < levels; i++, p += lc)
        memcpy(p, close, lc);
    *p = '\0';
    return s;
}

/* --- encoding helpers --- */

/* Runs a Lua chunk that returns `n` values and leaves them on the stack. */
static int run_lua(const char *code, int n)
{
    if (luaL_loadstring(L, code) || lua_pcall(L, 0, n, 0)) {
        DIAG("Lua error: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return 0;
    }
    return 1;
}

static int lua_encodes_as(const char *code, const char *want)
{
    int top = lua_gettop(L);
    if (!run_lua(code, 1)) return 0;
    int ok = encodes_as(-1, want);
    lua_settop(L, top);
    return ok;
}

static int lua_encode_refused(const char *code, const char *part)
{
    codec_error err;
    int top = lua_gettop(L);
    if (!run_lua(code, 1)) return 0;
    codec_buf_reset(&out);
    int rc = codec_encode(L, -1, &out, 64, &err);
    int ok = (rc == -1 && lua_gettop(L) == top + 1) || DIAG("encode of %s accepted", code);
    ok = ok && ((err.msg[0] && strstr(err.msg, part)) || DIAG("message '%s'", err.msg));
    lua_settop(L, top);
    return ok;
}

/* `code` returns args, kwargs; encodes them as an envelope (want NULL: must be refused with
 * `part` in the message). */
static int lua_envelope(const char *code, const char *want, const char *part)
{
    codec_error err;
    int top = lua_gettop(L);
    if (!run_lua(code, 2)) return 0;
    codec_buf_reset(&out);
    int rc = codec_encode_envelope(L, -2, -1, &out, 64, &err);
    int ok = lua_gettop(L) == top + 2 || DIAG("stack moved");
    if (want)
        ok = ok && (rc == 0 || DIAG("refused: %s", err.msg)) &&
             str_eq(out.data, out.len, want, strlen(want));
    else
        ok = ok && (rc == -1 || DIAG("accepted %s", code)) &&
             (strstr(err.msg, part) || DIAG("message '%s'", err.msg));
    lua_settop(L, top);
    return ok;
}

/* ------------------------------------------------------------------------------------------ */

static void test_roundtrips(void)
{
    CHECK(roundtrip("[[],{}]", NULL));
    CHECK(roundtrip("[[\"Bob\"],{\"last_name\":\"Ross\"}]", NULL));
    CHECK(roundtrip("[[\"Bob\"], {\"last_name\": \"Ross\"}]",
                    "[[\"Bob\"],{\"last_name\":\"Ross\"}]"));
    CHECK(roundtrip("{\"a\":[]}", NULL));
    CHECK(roundtrip("{\"a\":{}}", NULL));
    CHECK(roundtrip("[]", NULL));
    CHECK(roundtrip("{}", NULL));
    CHECK(roundtrip("[[[[]]],[{}],{\"x\":[[],[1,[2,[3]]]]}]", NULL));
    CHECK(roundtrip("{\"a\":{\"b\":{\"c\":[true,false,null]}}}", NULL));
    CHECK(roundtrip("[1,null,3]", NULL));
    CHECK(roundtrip("[null]", NULL));
    CHECK(roundtrip("{\"a\":null}", NULL));
    CHECK(roundtrip("{\"1\":2}", NULL));                /* numeric-looking keys stay strings */
    CHECK(roundtrip("{\"a\":1,\"a\":2}", "{\"a\":2}")); /* last duplicate wins */
    CHECK(roundtrip("null", NULL));
    CHECK(roundtrip("true", NULL));
    CHECK(roundtrip("false", NULL));
    CHECK(roundtrip("\"\"", NULL));
    CHECK(roundtrip(" \t\r\n[1] \n\t\r ", "[1]"));
    CHECK(roundtrip("[ 1 , 2 ]", "[1,2]"));
    CHECK(roundtrip("{ \"a\" : 1 }", "{\"a\":1}"));
}

static void test_decoded_values(void)
{
    codec_error err;
    int top = lua_gettop(L);
    CHECK(codec_decode(L, "[1,null,3]", 10, 64, &err) == 0);
    CHECK(lua_objlen(L, -1) == 3);
    CHECK(is_array_marked(-1));
    lua_rawgeti(L, -1, 2);
    CHECK(lua_type(L, -1) == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL);
    lua_settop(L, top);

    CHECK(codec_decode(L, "{\"k\":[]}", 8, 64, &err) == 0);
    CHECK(!is_array_marked(-1));
    lua_getfield(L, -1, "k");
    CHECK(is_array_marked(-1) && table_is_empty(-1));
    lua_settop(L, top);

    /* the array metatable is the one in the registry, named "array" */
    luaL_getmetatable(L, CODEC_ARRAY_MT);
    CHECK(lua_istable(L, -1));
    lua_getfield(L, -1, "__name");
    CHECK(lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "array") == 0);
    lua_settop(L, top);
}

static void test_numbers(void)
{
    CHECK(roundtrip("[0,-1,9007199254740992,-9007199254740992,123456789012345]", NULL));
    CHECK(number_is("0", 0.0, "0"));
    CHECK(number_is("-1", -1.0, "-1"));
    CHECK(number_is("9007199254740992", 9007199254740992.0, "9007199254740992"));
    CHECK(number_is("-9007199254740992", -9007199254740992.0, "-9007199254740992"));
    CHECK(number_is("123456789012345", 123456789012345.0, "123456789012345"));
    CHECK(number_is("9007199254740991", 9007199254740991.0, "9007199254740991"));
    CHECK(number_is("0.1", 0.1, "0.1"));
    CHECK(number_is("1e300", 1e300, "1e+300"));
    CHECK(number_is("5e-324", 5e-324, "4.94065645841247e-324"));
    CHECK(number_is("1.7976931348623157e308", 1.7976931348623157e308, "1.7976931348623157e+308"));
    CHECK(number_is("3.141592653589793", 3.141592653589793, "3.141592653589793"));
    CHECK(number_is("-2.5", -2.5, "-2.5"));
    CHECK(number_is("1E2", 100.0, "100"));
    CHECK(number_is("1e+2", 100.0, "100"));
    CHECK(number_is("0.5e-3", 0.0005, "0.0005"));
    CHECK(number_is("100.000", 100.0, "100"));
    CHECK(number_is("0.30000000000000004", 0.30000000000000004, "0.30000000000000004"));
    CHECK(number_is("12345678901234567890", 12345678901234567890.0, "1.2345678901234567e+19"));
    CHECK(number_is("9223372036854775807", 9223372036854775807.0, "9.223372036854776e+18"));
    CHECK(number_is("-9223372036854774784", -9223372036854774784.0, "-9223372036854774784"));
    CHECK(number_is("1e-400", 0.0, "0"));
    CHECK(number_is("2.2250738585072011e-308", 2.2250738585072011e-308, "2.225073858507201e-308"));
    CHECK(number_is("123456789012345678901234567890e-10", 12345678901234567890.1234567890,
                    "1.2345678901234567e+19"));
    CHECK(number_is("0.000001", 1e-6, "1e-06"));

    /* -0 may print as 0 or -0, but must decode to a zero */
    CHECK(roundtrip("-0", "0") || roundtrip("-0", "-0"));

    const char *bad[] = {"01",        "-01", "+1",    "0x10",   ".5",          "1.",  "1.e5",
                         "1e",        "1e+", "-",     "--1",    "NaN",         "nan", "Infinity",
                         "-Infinity", "inf", "1e400", "-1e400", "[1.5e99999]", "00",  "-.5"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(refused(bad[i], NULL));
    CHECK(refused("1e400", "out of range"));
    CHECK(refused("01", "leading zero"));
}

/* Encodes d and decodes the text again: 1 if the same bits come back. */
static int encodes_as_value(double d)
{
    codec_error err;
    int top = lua_gettop(L);
    lua_pushnumber(L, d);
    codec_buf_reset(&out);
    int ok = codec_encode(L, -1, &out, 64, &err) == 0 &&
             codec_decode(L, out.data, out.len, 64, &err) == 0 &&
             memcmp(&d, &(double){lua_tonumber(L, -1)}, sizeof d) == 0;
    lua_settop(L, top);
    return ok;
}

/* The fast decimal path must agree with strtod on many random inputs. */
static void test_numbers_against_strtod(void)
{
    codec_error err;
    char text[64];
    int bad = 0, top = lua_gettop(L);
    uint64_t x = 0x9E3779B97F4A7C15u;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        double d;
        memcpy(&d, &x, sizeof d);
        if (isnan(d) || isinf(d)) continue;
        switch (i % 4) {
        case 0:
            snprintf(text, sizeof text, "%.17g", d);
            break;
        case 1:
            snprintf(text, sizeof text, "%.15g", d);
            break;
        case 2:
            snprintf(text, sizeof text, "%.*f", (int)(x % 8), (double)(x % 100000000) / 1e3);
            break;
        default:
            snprintf(text, sizeof text, "%llue%d", (unsigned long long)(x % 10000000000000000u),
                     (int)(x >> 58) - 32);
            break;
        }
        if (codec_decode(L, text, strlen(text), 64, &err) != 0) {
            bad += DIAG("refused %s: %s", text, err.msg) == 0;
            continue;
        }
        double want = strtod(text, NULL), got = lua_tonumber(L, -1);
        lua_settop(L, top);
        if (memcmp(&want, &got, sizeof got) != 0 && bad++ < 5)
            DIAG("%s: got %.17g want %.17g", text, got, want);
        /* and printing round-trips */
        if (encodes_as_value(got) == 0 && bad++ < 5) DIAG("%.17g does not print back exactly", got);
    }
    CHECK(bad == 0);
}

static void test_strings(void)
{
    CHECK(string_is("\"\xc3\xa9\"", "\xc3\xa9", 2));
    CHECK(string_is("\"\xe6\x97\xa5\xe6\x9c\xac\"", "\xe6\x97\xa5\xe6\x9c\xac", 6));
    CHECK(string_is("\"\\u00e9\"", "\xc3\xa9", 2));
    CHECK(string_is("\"\\u65E5\\u672c\"", "\xe6\x97\xa5\xe6\x9c\xac", 6));
    CHECK(string_is("\"\\ud83d\\ude00\"", "\xf0\x9f\x98\x80", 4));
    CHECK(string_is("\"\\uD83D\\uDE00x\"", "\xf0\x9f\x98\x80x", 5));
    CHECK(string_is("\"\xf0\x9f\x98\x80\"", "\xf0\x9f\x98\x80", 4));
    CHECK(string_is("\"\\u0000\"", "\0", 1));
    CHECK(string_is("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"", "a\"b\\c/d\b\f\n\r\t", 12));
    CHECK(string_is("\"\xf4\x8f\xbf\xbf\"", "\xf4\x8f\xbf\xbf", 4)); /* U+10FFFF */
    CHECK(string_is("\"\xed\x9f\xbf\xee\x80\x80\"", "\xed\x9f\xbf\xee\x80\x80", 6));
    CHECK(string_is("\"\x7f\"", "\x7f", 1));

    /* canonical output: raw UTF-8, '/' unescaped, short escapes, \u00XX for other controls */
    CHECK(roundtrip("\"\\u00e9\\/\\ud83d\\ude00\"", "\"\xc3\xa9/\xf0\x9f\x98\x80\""));
    CHECK(roundtrip("\"\\u0001\\u001f\\u0000\\b\\f\\n\\r\\t\\\"\\\\\"", NULL));
    CHECK(roundtrip("\"ab\\ncd\\u00e9ef\\\"\"", "\"ab\\ncd\xc3\xa9"
                                                "ef\\\"\""));
    CHECK(roundtrip("[\"\xc3\xa9\",\"\xe6\x97\xa5\xe6\x9c\xac\"]", NULL));
    CHECK(roundtrip("{\"\xc3\xa9\":\"\\n\"}", NULL));

    /* invalid UTF-8 */
    CHECK(refused("\"\xff\"", "invalid UTF-8 in string at byte 1"));
    CHECK(refused("\"\xc0\xaf\"", "invalid UTF-8"));
    CHECK(refused("\"\xe0\x80\xaf\"", "invalid UTF-8"));
    CHECK(refused("\"\xf0\x80\x80\xaf\"", "invalid UTF-8"));
    CHECK(refused("\"\xe6\x97\"", "invalid UTF-8"));
    CHECK(refused("\"ab\xe6\"", "invalid UTF-8 in string at byte 3"));
    CHECK(refused("\"\xed\xa0\x80\"", "invalid UTF-8"));
    CHECK(refused("\"\xed\xbf\xbf\"", "invalid UTF-8"));
    CHECK(refused("\"\xf4\x90\x80\x80\"", "invalid UTF-8"));
    CHECK(refused("\"\xf8\x88\x80\x80\x80\"", "invalid UTF-8"));
    CHECK(refused("\"\x80\"", "invalid UTF-8"));
    CHECK(refused("\"a\\n\xff\"", "invalid UTF-8 in string at byte 4")); /* slow path too */
    CHECK(refused("{\"\xff\":1}", "invalid UTF-8"));
    CHECK(refused_n("\"\xf0\x9f\x98", 4, NULL)); /* truncated at the end of input */

    /* escapes */
    CHECK(refused("\"\\ud83d\"", "lone surrogate"));
    CHECK(refused("\"\\ude00\"", "lone surrogate"));
    CHECK(refused("\"\\ud83d\\u0041\"", "lone surrogate"));
    CHECK(refused("\"\\ud83dx\"", "lone surrogate"));
    CHECK(refused("\"\\ud83d\\ud83d\"", "lone surrogate"));
    CHECK(refused("\"\\x41\"", "invalid escape"));
    CHECK(refused("\"\\U0041\"", "invalid escape"));
    CHECK(refused("\"\\u12\"", "hex"));
    CHECK(refused("\"\\uZZZZ\"", "hex"));
    CHECK(refused("\"\\", "unterminated"));

    /* raw control characters */
    CHECK(refused("\"a\x01z\"", "control character"));
    CHECK(refused("\"a\nz\"", "control character"));
    CHECK(refused("\"a\tz\"", "control character"));
    CHECK(refused_n("\"a\0z\"", 5, "control character"));
    CHECK(refused("\"\\n\x1f\"", "control character"));
    CHECK(refused("\"abc", "unterminated"));
}

static void test_big_strings(void)
{
    size_t n = 1u << 20;
    char *json = malloc(n + 3);
    json[0] = '"';
    for (size_t i = 0; i < n; i++)
        json[i + 1] = (char)('a' + i % 26);
    json[n + 1] = '"';
    json[n + 2] = '\0';
    CHECK(roundtrip_n(json, n + 2, NULL, 0));

    /* with escapes and multibyte characters, through the luaL_Buffer path */
    for (size_t i = 1; i + 2 < n; i += 997)
        memcpy(json + i, "\\n", 2);
    for (size_t i = 500; i + 2 < n; i += 1009)
        if (json[i] != '\\' && json[i - 1] != '\\' && json[i + 1] != '\\')
            memcpy(json + i, "\xc3\xa9", 2);
    CHECK(roundtrip_n(json, n + 2, NULL, 0));
    free(json);
}

static void test_malformed(void)
{
    const char *bad[] = {"",           " ",
                         "[",          "]",
                         "[1,]",       "[,1]",
                         "[1 2]",      "{",
                         "{\"a\"}",    "{\"a\":}",
                         "{\"a\":1,}", "{a:1}",
                         "{1:2}",      "{\"a\" 1}",
                         "'x'",        "tru",
                         "nul",        "fals",
                         "truex",      "[1]]",
                         "[] x",       "{}{}",
                         "1 2",        "\"a\"\"b\"",
                         "[1]\x01",    "{\"a\":1 \"b\":2}",
                         "[\"a\",]",   "/* c */ 1",
                         "[1;2]",      "\xef\xbb\xbf[]"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(refused(bad[i], "invalid JSON at byte"));
    CHECK(refused_n("[1]\0", 4, "unexpected data after the value"));
    CHECK(error_is("[1,2 3]", "invalid JSON at byte 5: expected ',' or ']'"));
    CHECK(error_is("{\"a\":1 x", "invalid JSON at byte 7: expected ',' or '}'"));
    CHECK(error_is("[] x", "invalid JSON at byte 3: unexpected data after the value"));
    CHECK(error_is("", "invalid JSON at byte 0: unexpected end of input, expected a value"));
    CHECK(error_is("{1:2}", "invalid JSON at byte 1: expected a string key"));
}

static void test_depth(void)
{
    char *s;
    /* codec_decode, max_depth 64: 64 levels accepted, 65 refused */
    s = nested(64, "[", "", "]");
    CHECK(roundtrip(s, NULL));
    free(s);
    s = nested(65, "[", "", "]");
    CHECK(refused(s, "nesting deeper than 64"));
    free(s);
    s = nested(64, "{\"a\":", "1", "}");
    CHECK(roundtrip(s, NULL));
    free(s);
    s = nested(65, "{\"a\":", "1", "}");
    CHECK(refused(s, "nesting deeper than 64"));
    free(s);
    s = nested(32, "[{\"k\":", "[]", "}]");
    CHECK(refused(s, "nesting deeper than 64")); /* 65 levels, mixed */
    free(s);
    s = nested(10, "[", "", "]");
    CHECK(refused_with(codec_decode, s, strlen(s), 9, "nesting deeper than 9"));
    CHECK(codec_decode(NULL, s, strlen(s), 10, NULL) == 0);
    free(s);
    s = nested(1000, "[", "", "]"); /* max_depth <= 0 means the default, 64 */
    CHECK(refused_with(codec_decode, s, strlen(s), 0, "nesting deeper than 64"));
    free(s);

    /* the envelope's brackets count: a body nested 64 deep passes, 65 is refused */
    s = nested(64, "[", "", "]");
    CHECK(envelope_is(s, strlen(s), NULL, "{}", 64));
    free(s);
    s = nested(65, "[", "", "]");
    CHECK(env_refused(s, "nesting deeper than 64"));
    free(s);
    s = nested(62, "{\"a\":", "1", "}"); /* [[], {62 levels}] is 63 deep */
    char *body = malloc(strlen(s) + 8);
    sprintf(body, "[[],%s]", s);
    CHECK(envelope_is(body, strlen(body), "[]", s, 64));
    CHECK(refused_with(codec_decode_envelope, body, strlen(body), 62, "nesting deeper than 62"));
    free(body);
    free(s);

    /* encoding counts the same way; cycles are caught by the limit */
    s = nested(63, "[", "{}", "]"); /* 64 tables */
    CHECK(lua_encodes_as("local t = {} for i = 1, 63 do t = {t} end return t", s));
    free(s);
    CHECK(lua_encode_refused("local t = {} for i = 1, 64 do t = {t} end return t",
                             "nesting deeper than 64"));
    CHECK(lua_encode_refused("local t = {} t[1] = t return t", "nesting deeper than 64"));
    CHECK(lua_encode_refused("local t = {} t.a = t return t", "nesting deeper than 64"));
    s = nested(63, "[", "", "]");
    body = malloc(strlen(s) + 8);
    sprintf(body, "[%s,{}]", s);
    CHECK(lua_envelope("local t = setmetatable({}, debug.getregistry()['microservice.array']) "
                       "for i = 1, 62 do t = {t} end return t, nil",
                       body, NULL));
    CHECK(lua_envelope("local t = {} for i = 1, 63 do t = {t} end return t, nil", NULL,
                       "nesting deeper than 64"));
    free(body);
    free(s);
}

static void test_envelope_decode(void)
{
    CHECK(env_ok("[[],{}]", "[]", "{}"));
    CHECK(
        env_ok("[[\"Bob\"], {\"last_name\": \"Ross\"}]", "[\"Bob\"]", "{\"last_name\":\"Ross\"}"));
    CHECK(env_ok("[[\"x\"]]", "[\"x\"]", "{}"));
    CHECK(env_ok("[]", "[]", "{}"));
    CHECK(env_ok("", "[]", "{}"));
    CHECK(env_ok(" \t\r\n ", "[]", "{}"));
    CHECK(env_ok(" [ [ 1 , null ] , { \"a\" : [ ] } ] \n", "[1,null]", "{\"a\":[]}"));
    CHECK(env_ok("[[[]],{\"a\":{}}]", "[[]]", "{\"a\":{}}"));
    CHECK(envelope_is(NULL, 0, "[]", "{}", 64)); /* a NULL body of length 0 is empty */

    /* the pushed values for an empty body: an empty array-marked table and an empty table */
    codec_error err;
    int top = lua_gettop(L);
    CHECK(codec_decode_envelope(L, "", 0, 64, &err) == 0);
    CHECK(lua_gettop(L) == top + 2);
    CHECK(lua_istable(L, -2) && table_is_empty(-2) && is_array_marked(-2));
    CHECK(lua_istable(L, -1) && table_is_empty(-1) && !is_array_marked(-1));
    lua_settop(L, top);
    CHECK(codec_decode_envelope(L, "[[\"x\"]]", 7, 64, &err) == 0);
    CHECK(lua_istable(L, -1) && table_is_empty(-1));
    lua_rawgeti(L, -2, 1);
    CHECK(lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "x") == 0);
    lua_settop(L, top);

    const char *shape = "expected [args, kwargs] with args an array and kwargs an object";
    CHECK(env_refused("1", shape));
    CHECK(env_refused("{}", shape));
    CHECK(env_refused("{\"args\":[]}", shape));
    CHECK(env_refused("\"x\"", shape));
    CHECK(env_refused("null", shape));
    CHECK(env_refused("[1, 2]", "args must be an array"));
    CHECK(env_refused("[{}, {}]", "args must be an array"));
    CHECK(env_refused("[null]", "args must be an array"));
    CHECK(env_refused("[\"a\"]", "args must be an array"));
    CHECK(env_refused("[[], []]", "kwargs must be an object"));
    CHECK(env_refused("[[], null]", "kwargs must be an object"));
    CHECK(env_refused("[[], 1]", "kwargs must be an object"));
    CHECK(env_refused("[[], {}, 3]", "envelope has more than two elements"));
    CHECK(env_refused("[[], {}, {}]", "envelope has more than two elements"));
    CHECK(env_refused("[[],{}] x", "unexpected data after the value"));
    CHECK(env_refused("[[],{}][]", "unexpected data after the value"));
    CHECK(env_refused("[[],{}", "invalid JSON"));
    CHECK(env_refused("[[1,],{}]", "invalid JSON"));
    CHECK(env_refused("[[],{\"a\"}]", "invalid JSON"));
    CHECK(env_refused("[[\"a\",\"b\"],{\"x\":1,", "invalid JSON"));
    CHECK(env_refused("[[],]", "invalid JSON"));
    CHECK(env_refused("[,]", "invalid JSON"));
    CHECK(env_refused("[", "invalid JSON"));
    CHECK(env_refused("x", "invalid JSON"));
    CHECK(env_refused("[[] {}]", "invalid JSON"));
    CHECK(env_refused("[[\"\xff\"],{}]", "invalid UTF-8"));
}

static void test_encode(void)
{
    CHECK(lua_encodes_as("return {1, 2, 3}", "[1,2,3]"));
    CHECK(lua_encodes_as("return {a = 1}", "{\"a\":1}"));
    CHECK(lua_encodes_as("return {}", "{}"));
    CHECK(lua_encodes_as("return nil", "null"));
    CHECK(lua_encodes_as("return null", "null"));
    CHECK(lua_encodes_as("return {null, 1}", "[null,1]"));
    CHECK(lua_encodes_as("return true", "true"));
    CHECK(lua_encodes_as("return false", "false"));
    CHECK(lua_encodes_as("return 0.5", "0.5"));
    CHECK(lua_encodes_as("return 2^53", "9007199254740992"));
    CHECK(lua_encodes_as("return -2^53", "-9007199254740992"));
    CHECK(lua_encodes_as("return 2^63", "9.223372036854776e+18"));
    CHECK(lua_encodes_as("return 1e21", "1e+21"));
    CHECK(lua_encodes_as("return 'a\"b\\\\c\\nd\\1e'", "\"a\\\"b\\\\c\\nd\\u0001e\""));
    CHECK(lua_encodes_as("return '\\t\\r\\8\\12/\\127\\0'", "\"\\t\\r\\b\\f/\x7f\\u0000\""));
    CHECK(lua_encodes_as("return '\xc3\xa9\xf0\x9f\x98\x80'", "\"\xc3\xa9\xf0\x9f\x98\x80\""));
    CHECK(lua_encodes_as("return {a = {1, 2, {b = {}}}}", "{\"a\":[1,2,{\"b\":{}}]}"));
    CHECK(lua_encodes_as("return {[1] = 'x', [2] = 'y'}", "[\"x\",\"y\"]"));
    CHECK(
        lua_encodes_as("return setmetatable({}, debug.getregistry()['microservice.array'])", "[]"));
    /* a hole below lua_objlen (LuaJIT keeps #t == 4 here) is null */
    CHECK(lua_encodes_as("local t = setmetatable({1, 2, 3, 4}, "
                         "debug.getregistry()['microservice.array']) t[3] = nil return t",
                         "[1,2,null,4]"));

    CHECK(lua_encode_refused("return 0/0", "NaN or infinity"));
    CHECK(lua_encode_refused("return math.huge", "NaN or infinity"));
    CHECK(lua_encode_refused("return {-math.huge}", "NaN or infinity"));
    CHECK(lua_encode_refused("return print", "cannot encode a value of type function"));
    CHECK(lua_encode_refused("return {f = print}", "cannot encode a value of type function"));
    CHECK(lua_encode_refused("return coroutine.create(print)", "type thread"));
    CHECK(lua_encode_refused("return newproxy()", "type userdata"));
    CHECK(lua_encode_refused("return {1, 2, a = 3}", "mixed or sparse keys"));
    CHECK(lua_encode_refused("return {a = 3, 1}", "mixed or sparse keys"));
    CHECK(lua_encode_refused("return {[1] = 1, [3] = 3}", "mixed or sparse keys"));
    CHECK(lua_encode_refused("return {[2] = 1}", "mixed or sparse keys"));
    CHECK(lua_encode_refused("return {[0] = 1}", "mixed or sparse keys"));
    CHECK(lua_encode_refused("return {[1.5] = 1}", "mixed or sparse keys"));
    CHECK(lua_encode_refused("return {[true] = 1}", "mixed or sparse keys"));
    CHECK(lua_encode_refused("return {[{}] = 1}", "mixed or sparse keys"));
    CHECK(lua_encode_refused("return '\\255'", "not valid UTF-8"));
    CHECK(lua_encode_refused("return 'a\\192\\175'", "not valid UTF-8 (byte 1)"));
    CHECK(lua_encode_refused("return '\\230\\151'", "not valid UTF-8"));
    CHECK(lua_encode_refused("return '\\237\\160\\128'", "not valid UTF-8"));
    CHECK(lua_encode_refused("return {['\\255'] = 1}", "not valid UTF-8"));

    /* a non-NULL light userdata is not null */
    int top = lua_gettop(L);
    codec_error err;
    lua_pushlightuserdata(L, &err);
    codec_buf_reset(&out);
    CHECK(codec_encode(L, -1, &out, 64, &err) == -1 && strstr(err.msg, "userdata"));
    lua_settop(L, top);

    /* codec_encode_string directly */
    codec_buf_reset(&out);
    CHECK(codec_encode_string(&out, "a\"b\\c\nd\x01", 8) == 0);
    CHECK(str_eq(out.data, out.len, "\"a\\\"b\\\\c\\nd\\u0001\"", 18));
    const char *invalid[] = {"\xff", "\xc0\xaf", "\xe6\x97", "\xed\xa0\x80", "\xf4\x90\x80\x80"};
    for (size_t i = 0; i < sizeof invalid / sizeof *invalid; i++) {
        codec_buf_reset(&out);
        CHECK(codec_encode_string(&out, invalid[i], strlen(invalid[i])) == -1);
    }
    codec_buf_reset(&out);
    CHECK(codec_encode_string(&out, "", 0) == 0 && str_eq(out.data, out.len, "\"\"", 2));
}

static void test_envelope_encode(void)
{
    codec_error err;
    int top = lua_gettop(L);
    codec_buf_reset(&out);
    CHECK(codec_encode_envelope(L, 0, 0, &out, 64, &err) == 0);
    CHECK(str_eq(out.data, out.len, "[[],{}]", 7));
    CHECK(lua_gettop(L) == top);

    CHECK(lua_envelope("return nil, nil", "[[],{}]", NULL));
    CHECK(lua_envelope("return {}, {}", "[[],{}]", NULL));
    CHECK(lua_envelope("return {}, nil", "[[],{}]", NULL));
    CHECK(lua_envelope("return {'x'}, {a = 1}", "[[\"x\"],{\"a\":1}]", NULL));
    CHECK(lua_envelope("return {'Hello, Bob Ross'}, {}", "[[\"Hello, Bob Ross\"],{}]", NULL));
    CHECK(lua_envelope("return {null}, {a = null}", "[[null],{\"a\":null}]", NULL));
    CHECK(lua_envelope("return {{}}, {a = {}}", "[[{}],{\"a\":{}}]", NULL));
    CHECK(
        lua_envelope("return {'q\"b\\\\n\\n\\1'}, nil", "[[\"q\\\"b\\\\n\\n\\u0001\"],{}]", NULL));
    CHECK(lua_envelope("local a = debug.getregistry()['microservice.array'] "
                       "return setmetatable({}, a), setmetatable({}, a)",
                       "[[],{}]", NULL));
    CHECK(lua_envelope("return {a = 1}, nil", NULL, "args must be an array"));
    CHECK(lua_envelope("return 'x', nil", NULL, "args must be an array"));
    CHECK(lua_envelope("return 1, nil", NULL, "args must be an array"));
    CHECK(lua_envelope("return nil, {1}", NULL, "kwargs must be an object"));
    CHECK(lua_envelope("return nil, 5", NULL, "kwargs must be an object"));
    CHECK(lua_envelope("return nil, null", NULL, "kwargs must be an object"));
    CHECK(lua_envelope("return {1, a = 2}, nil", NULL, "mixed or sparse keys"));
    CHECK(lua_envelope("return {0/0}, nil", NULL, "NaN"));
    CHECK(lua_envelope("return nil, {f = print}", NULL, "type function"));

    /* decode then re-encode keeps the empty array an array */
    CHECK(codec_decode_envelope(L, "[[],{}]", 7, 64, &err) == 0);
    codec_buf_reset(&out);
    CHECK(codec_encode_envelope(L, -2, -1, &out, 64, &err) == 0);
    CHECK(str_eq(out.data, out.len, "[[],{}]", 7));
    lua_settop(L, top);
    const char *bob = "[[\"Bob\"],{\"last_name\":\"Ross\"}]";
    CHECK(codec_decode_envelope(L, bob, strlen(bob), 64, &err) == 0);
    codec_buf_reset(&out);
    CHECK(codec_encode_envelope(L, top + 1, top + 2, &out, 64, &err) == 0);
    CHECK(str_eq(out.data, out.len, bob, strlen(bob)));
    lua_settop(L, top);

    /* appends to what the buffer holds */
    codec_buf_reset(&out);
    CHECK(codec_buf_append(&out, "x", 1) == 0);
    CHECK(codec_encode_envelope(L, 0, 0, &out, 64, &err) == 0);
    CHECK(str_eq(out.data, out.len, "x[[],{}]", 8));
}

static void test_buf(void)
{
    codec_buf b;
    codec_buf_init(&b);
    CHECK(b.data == NULL && b.len == 0);
    CHECK(codec_buf_append(&b, "", 0) == 0);
    int ok = 1;
    for (int i = 0; i < 100000; i++)
        ok &= codec_buf_append(&b, "0123456789", 10) == 0;
    CHECK(ok && b.len == 1000000 && b.cap >= b.len);
    CHECK(memcmp(b.data + 999990, "0123456789", 10) == 0);
    codec_buf_reset(&b);
    CHECK(b.len == 0);
    codec_buf_free(&b);
    CHECK(b.data == NULL && b.cap == 0);
}

/* Arrays and objects around the size at which the decoder stops collecting on the stack (16). */
static void test_table_sizes(void)
{
    static const int sizes[] = {1, 2, 15, 16, 17, 31, 32, 33, 100};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        char arr[1024], obj[2048];
        size_t a = 0, o = 0;
        arr[a++] = '[';
        obj[o++] = '{';
        for (int i = 1; i <= sizes[k]; i++) {
            a += (size_t)snprintf(arr + a, sizeof arr - a, "%s%d", i > 1 ? "," : "", i);
            o +=
                (size_t)snprintf(obj + o, sizeof obj - o, "%s\"k%d\":[%d]", i > 1 ? "," : "", i, i);
        }
        arr[a++] = ']';
        arr[a] = '\0';
        obj[o++] = '}';
        obj[o] = '\0';
        CHECK(roundtrip(arr, NULL) || diag("%d elements", sizes[k]));
        codec_error err;
        CHECK(codec_decode(L, obj, o, 64, &err) == 0);
        lua_getfield(L, -1, "k1");
        CHECK(lua_objlen(L, -1) == 1);
        lua_pop(L, 1);
        lua_pushfstring(L, "k%d", sizes[k]);
        lua_rawget(L, -2);
        lua_rawgeti(L, -1, 1);
        CHECK(lua_tonumber(L, -1) == sizes[k]);
        lua_settop(L, 0);
    }
    /* a duplicate key on either side of the collection boundary: the last one wins */
    codec_error err;
    const char *dup = "{\"a\":1,\"b\":0,\"c\":0,\"d\":0,\"e\":0,\"f\":0,\"g\":0,\"h\":0,"
                      "\"i\":0,\"j\":0,\"k\":0,\"l\":0,\"m\":0,\"n\":0,\"o\":0,\"p\":0,"
                      "\"q\":0,\"a\":2,\"b\":3}";
    CHECK(codec_decode(L, dup, strlen(dup), 64, &err) == 0);
    lua_getfield(L, -1, "a");
    lua_getfield(L, -2, "b");
    CHECK(lua_tonumber(L, -2) == 2 && lua_tonumber(L, -1) == 3);
    lua_settop(L, 0);
}

/* A body of n copies of `unit` as the args of an envelope: [[unit,unit,...]]. */
static char *envelope_of(const char *unit, int n, size_t *len)
{
    size_t ul = strlen(unit);
    char *b = malloc((ul + 1) * (size_t)n + 8);
    size_t k = 0;
    b[k++] = '[';
    b[k++] = '[';
    for (int i = 0; i < n; i++) {
        if (i) b[k++] = ',';
        memcpy(b + k, unit, ul);
        k += ul;
    }
    b[k++] = ']';
    b[k++] = ']';
    *len = k;
    return b;
}

/* The meter: the Lua memory a decode allocates (mlua_memory's count) against a bound. */
static void test_meter(void)
{
    lua_State *M = luaL_newstate();
    codec_init(M);
    mlua_memory mem;
    memset(&mem, 0, sizeof mem);
    mlua_memory_attach(&mem, M, 0);
    size_t len;
    char *body = envelope_of("[0]", 10000, &len);
    codec_error err;

    size_t before = mem.allocated;
    codec_meter unbounded = {&mem.allocated, (size_t)1 << 40};
    CHECK(codec_decode_envelope_metered(M, body, len, 64, &unbounded, &err) == 0);
    CHECK(lua_gettop(M) == 2);
    size_t per = (mem.allocated - before) / 10000;
    /* 64 bytes of table, 16 of array part (one slot and LuaJIT's slot 0), 8 in the outer array
     * and its growth; a size hint of 4 took 40 more */
    CHECK(per >= 80 && per <= 110 ? 1 : diag("%zu bytes of Lua memory per [0]", per));
    lua_settop(M, 0);

    codec_meter tight = {&mem.allocated, 64 * 1024};
    before = mem.allocated;
    CHECK(codec_decode_envelope_metered(M, body, len, 64, &tight, &err) == CODEC_TOO_LARGE);
    CHECK(lua_gettop(M) == 0);
    CHECK(strstr(err.msg, "too large once decoded: over 65536 bytes") != NULL ||
          diag("message: %s", err.msg));
    CHECK(mem.allocated - before < 64 * 1024 + 4096 || diag("%zu", mem.allocated - before));
    CHECK(codec_decode_metered(M, body, len, 64, &tight, &err) == CODEC_TOO_LARGE);
    CHECK(lua_gettop(M) == 0);
    /* validation only allocates nothing on L: no bound; a malformed body is still -1 */
    CHECK(codec_decode_envelope_metered(NULL, body, len, 64, &tight, &err) == 0);
    CHECK(codec_decode_envelope_metered(M, "[[1,]]", 6, 64, &tight, &err) == -1);
    free(body);

    /* a long string is checked once it is made (equal strings are one: LuaJIT interns them) */
    char *s = malloc(100 * 1024);
    memset(s, 'x', 100 * 1024 - 1);
    s[0] = s[100 * 1024 - 2] = '"';
    s[100 * 1024 - 1] = '\0';
    body = envelope_of(s, 1, &len);
    CHECK(codec_decode_envelope_metered(M, body, len, 64, &tight, &err) == CODEC_TOO_LARGE);
    CHECK(lua_gettop(M) == 0);
    free(body);
    free(s);

    mlua_memory_detach(&mem);
    lua_close(M);
}

int main(void)
{
    L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "luaL_newstate failed\n");
        return 1;
    }
    luaL_openlibs(L);
    codec_init(L);
    codec_init(L); /* idempotent */
    lua_pushlightuserdata(L, NULL);
    lua_setglobal(L, "null");
    codec_buf_init(&out);

    test_roundtrips();
    test_decoded_values();
    test_numbers();
    test_numbers_against_strtod();
    test_strings();
    test_big_strings();
    test_malformed();
    test_depth();
    test_envelope_decode();
    test_encode();
    test_envelope_encode();
    test_buf();
    test_table_sizes();
    test_meter();
    CHECK(lua_gettop(L) == 0);

    codec_buf_free(&out);
    lua_close(L);
    return check_summary();
}
