/* codec.h: the JSON codec between wire bytes and Lua values (the RPC envelope and plain JSON).
 *
 * Why our own codec and not lua-cjson: Debian's lua-cjson 2.1.0 prints at most 14 significant
 * digits (2^53 and WAMP ids come out corrupted), decodes [] into a table that re-encodes as {},
 * and has no nesting or UTF-8 policy we can set. The wire must be exact, so this file parses and
 * prints JSON itself, straight from bytes to the Lua stack and back; cjson stays available to
 * scripts as a plain module.
 *
 * Lua conventions:
 *   - JSON null <-> lightuserdata NULL (the same value as cjson.null, exported as
 * microservice.null).
 *   - JSON arrays decode to tables carrying the array metatable (registry key CODEC_ARRAY_MT, one
 * table shared by all of them), so an empty array stays an array through decode and encode.
 *   - Encoding a table: the array metatable -> array; keys exactly 1..n -> array; only string keys
 *     -> object; an empty table without the metatable -> {}; anything else is an error.
 *   - Numbers: integral doubles with |x| < 2^63 print as integers, other doubles with the
 *     shortest of %.15g/%.16g/%.17g that reads back exactly; NaN and infinities are refused.
 *   - Strings must be valid UTF-8 both ways; \u escapes with surrogate pairs are decoded, lone
 *     surrogates and raw control characters are refused.
 */
#ifndef MICROSERVICE_CODEC_H
#define MICROSERVICE_CODEC_H

#include <stddef.h>
#include <lua.h>

#define CODEC_DEFAULT_MAX_DEPTH 64
#define CODEC_ARRAY_MT "microservice.array"

typedef struct codec_error {
    char msg[200]; /* human readable: what was expected, and where (byte offset) */
} codec_error;

/* A growable output buffer owned by the caller; codec_buf_free releases it. */
typedef struct codec_buf {
    char *data;
    size_t len;
    size_t cap;
} codec_buf;

void codec_buf_init(codec_buf *b);
void codec_buf_free(codec_buf *b);
void codec_buf_reset(codec_buf *b);
int codec_buf_append(codec_buf *b, const void *p, size_t n); /* 0, or -1 on allocation failure */

/* Must be called once per lua_State before decoding: creates the array metatable in the registry.
 */
void codec_init(lua_State *L);

/* Decode one JSON text (surrounding whitespace allowed). With L != NULL, push the value and return
 * 0; with L == NULL only validate. On error return -1, push nothing, fill err. */
int codec_decode(lua_State *L, const char *buf, size_t len, int max_depth, codec_error *err);

/* Decode an RPC envelope: [args, kwargs] with args an array and kwargs an object, both optional
 * ("", whitespace, [], [args] are accepted). With L != NULL push args (array-marked table) and
 * kwargs (table) and return 0; with L == NULL only validate. On error return -1, push nothing,
 * fill err with a message that says what was expected. */
int codec_decode_envelope(lua_State *L, const char *buf, size_t len, int max_depth,
                          codec_error *err);

/* A bound on the Lua memory a decode may take. counter points at a count of the bytes allocated on
 * L that only grows (mlua_memory's `allocated`); the decode stops, pushes nothing and returns
 * CODEC_TOO_LARGE once that count has grown by more than max since it began (checked after each
 * element: it stops at most one element past the bound; what it made is garbage then). */
typedef struct codec_meter {
    const size_t *counter;
    size_t max;
} codec_meter;

#define CODEC_TOO_LARGE (-2)

/* codec_decode and codec_decode_envelope with a meter (NULL: unbounded, as they are). */
int codec_decode_metered(lua_State *L, const char *buf, size_t len, int max_depth,
                         const codec_meter *meter, codec_error *err);
int codec_decode_envelope_metered(lua_State *L, const char *buf, size_t len, int max_depth,
                                  const codec_meter *meter, codec_error *err);

/* Append the JSON text of the value at idx to out. 0 or -1 (err filled; out may hold a partial
 * text, so the caller resets it). */
int codec_encode(lua_State *L, int idx, codec_buf *out, int max_depth, codec_error *err);

/* Append an envelope [args, kwargs]: args_idx/kwargs_idx may be 0 or hold nil, meaning [] and {};
 * an empty table in the args place is [] and in the kwargs place {}. */
int codec_encode_envelope(lua_State *L, int args_idx, int kwargs_idx, codec_buf *out, int max_depth,
                          codec_error *err);

/* 1 if s is well-formed UTF-8 (the codec's rules), else 0. */
int codec_utf8_valid(const char *s, size_t len);

/* Append a JSON string literal (quotes and escapes) for s; -1 if s is not valid UTF-8. */
int codec_encode_string(codec_buf *out, const char *s, size_t len);

#endif
