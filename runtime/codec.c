/* codec.c: owns the wire JSON codec: parsing JSON bytes straight onto the Lua stack (or only
 * validating them), printing Lua values back as JSON, the RPC envelope [args, kwargs] both ways,
 * and the growable output buffer. The conventions are documented in codec.h.
 *
 * Decisions the header leaves open:
 *   - Byte offsets in error messages count from 0 (the first byte of the body is byte 0).
 *   - Depth counts containers: a top-level [] or {} is depth 1, [[]] is depth 2, and so on; a
 *     text is refused when its depth exceeds max_depth (so with 64, 64 levels pass and 65 fail).
 *     The envelope's own brackets count: in [args, kwargs] the args table is at depth 2. Encoding
 *     counts the same way, so whatever decodes also encodes (and a cycle is caught as too deep).
 *   - max_depth <= 0 means CODEC_DEFAULT_MAX_DEPTH.
 *   - Numbers are parsed and printed in the "C" numeric locale (the runtime never changes
 *     LC_NUMERIC); underflow to zero or a subnormal is accepted, overflow to infinity is refused.
 */
#include "codec.h"

#include <lauxlib.h>

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Shared helpers                                                                              */
/* ------------------------------------------------------------------------------------------ */

/* 1 for the bytes a JSON string holds as they are: printable ASCII except '"' and '\\'. Every
 * other byte (control, quote, backslash, non-ASCII) needs a look in both directions. */
static const unsigned char plain[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x00 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x10 */
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x20: '"' */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x30 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x40 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, /* 0x50: '\\' */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x60 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x70 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x80: UTF-8 from here */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x90 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0xa0 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0xb0 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0xc0 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0xd0 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0xe0 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0xf0 */
};

static int set_error(codec_error *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int norm_depth(int max_depth)
{
    return max_depth > 0 ? max_depth : CODEC_DEFAULT_MAX_DEPTH;
}

/* Relative stack indexes (-1 is the top) become absolute; pseudo-indexes and 0 stay as they are. */
static int abs_index(lua_State *L, int idx)
{
    return (idx < 0 && idx > LUA_REGISTRYINDEX) ? lua_gettop(L) + idx + 1 : idx;
}

/* Length of the well-formed UTF-8 sequence that starts at s (whose lead byte is >= 0x80), or 0:
 * overlong forms, encoded surrogates (U+D800..U+DFFF), code points above U+10FFFF, stray
 * continuation bytes and truncated sequences are all refused. */
static size_t utf8_seq(const unsigned char *s, const unsigned char *end)
{
    size_t avail = (size_t)(end - s);
    unsigned c = s[0];
    if (c < 0xC2 || c > 0xF4) return 0;
    if (c < 0xE0) return (avail >= 2 && (s[1] & 0xC0) == 0x80) ? 2 : 0;
    if (c < 0xF0) {
        if (avail < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] >= 0xA0)) return 0;
        return 3;
    }
    if (avail < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
        return 0;
    if ((c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] >= 0x90)) return 0;
    return 4;
}

int codec_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        if (*p < 0x80) {
            p++;
            continue;
        }
        size_t n = utf8_seq(p, end);
        if (n == 0) return 0;
        p += n;
    }
    return 1;
}

static size_t utf8_put(char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* The array metatable is also kept in the registry under this address, a lookup that needs no
 * string hashing (the name CODEC_ARRAY_MT is for Lua code and other C files). */
static const char array_mt_key = 'a';

/* Pushes the array metatable (creating it if codec_init was not called) and returns its index. */
static int push_array_mt(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&array_mt_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        codec_init(L);
        lua_pushlightuserdata(L, (void *)&array_mt_key);
        lua_rawget(L, LUA_REGISTRYINDEX);
    }
    return lua_gettop(L);
}

void codec_init(lua_State *L)
{
    if (luaL_newmetatable(L, CODEC_ARRAY_MT)) {
        lua_pushliteral(L, "array");
        lua_setfield(L, -2, "__name");
    }
    lua_pushlightuserdata(L, (void *)&array_mt_key);
    lua_pushvalue(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
}

/* ------------------------------------------------------------------------------------------ */
/* Output buffer                                                                               */
/* ------------------------------------------------------------------------------------------ */

void codec_buf_init(codec_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void codec_buf_free(codec_buf *b)
{
    free(b->data);
    codec_buf_init(b);
}

void codec_buf_reset(codec_buf *b)
{
    b->len = 0;
}

static int buf_grow(codec_buf *b, size_t need)
{
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < need) {
        if (cap > SIZE_MAX / 2) return -1;
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (!p) return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

static inline int buf_reserve(codec_buf *b, size_t need)
{
    return (b->cap - b->len >= need) ? 0 : buf_grow(b, need);
}

int codec_buf_append(codec_buf *b, const void *p, size_t n)
{
    if (n == 0) return 0;
    if (buf_reserve(b, n)) return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Decoding                                                                                    */
/* ------------------------------------------------------------------------------------------ */

typedef struct parser {
    lua_State *L; /* NULL: validate only */
    const char *start;
    const char *p;
    const char *end;
    int depth;
    int max_depth;
    int mt;              /* absolute stack index of the array metatable (Lua mode) */
    const size_t *meter; /* codec_meter: the counter, NULL when the decode is not bounded */
    size_t meter_max;    /* the bound, for the message */
    size_t meter_end;    /* the value of *meter past which the decode stops */
    int too_large;       /* stopped by the meter: CODEC_TOO_LARGE */
    codec_error *err;
} parser;

static int parse_value(parser *ps);

static int perr(parser *ps, const char *at, const char *what)
{
    return set_error(ps->err, "invalid JSON at byte %zu: %s", (size_t)(at - ps->start), what);
}

static inline void skip_ws(parser *ps)
{
    const char *p = ps->p;
    while (p < ps->end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    ps->p = p;
}

static inline int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int starts_value(char c)
{
    return c == '[' || c == '{' || c == '"' || c == '-' || is_digit(c) || c == 't' || c == 'f' ||
           c == 'n';
}

/* Table sizing. LuaJIT's lua_createtable sizes the array and hash parts exactly, and a table that
 * grows rehashes and doubles. The first RUN_MAX elements of an array (pairs of an object) are
 * therefore collected on the Lua stack and the table is made once their count is known: [0] gets
 * an array part of one slot, not four (a fixed hint of 4 made a body of [0],[0],... take 28x its
 * size in Lua memory; 22x now, LuaJIT's floor being 64 bytes per table). Longer ones are made
 * with room for 2 x RUN_MAX and grow from there. */
#define RUN_MAX 16

static int enter(parser *ps)
{
    size_t at = (size_t)(ps->p - ps->start);
    if (++ps->depth > ps->max_depth)
        return set_error(ps->err, "nesting deeper than %d at byte %zu", ps->max_depth, at);
    if (ps->L && !lua_checkstack(ps->L, 2 * RUN_MAX + 3))
        return set_error(ps->err, "nesting too deep for the Lua stack at byte %zu", at);
    return 0;
}

/* With a meter (codec_decode_envelope_metered): -1 once the decode has allocated more than its
 * bound. Checked after each element, so a decode stops at most one element past it. */
static inline int check_meter(parser *ps)
{
    if (!ps->meter || *ps->meter <= ps->meter_end) return 0;
    ps->too_large = 1;
    return set_error(ps->err, "too large once decoded: over %zu bytes of Lua memory at byte %zu",
                     ps->meter_max, (size_t)(ps->p - ps->start));
}

static void push_array(parser *ps, int narr)
{
    lua_createtable(ps->L, narr, 0);
    lua_pushvalue(ps->L, ps->mt);
    lua_setmetatable(ps->L, -2);
}

/* The n values on top of the stack become the elements 1..n of a new array table with room for
 * `size`, left in their place. */
static void flush_array(parser *ps, int n, int size)
{
    push_array(ps, size);
    lua_insert(ps->L, -(n + 1));
    int t = lua_gettop(ps->L) - n;
    for (int i = n; i >= 1; i--)
        lua_rawseti(ps->L, t, i);
}

/* The n key/value pairs on top of the stack go, in order (a duplicate key: the last one wins),
 * into a new table with room for `size` keys, left in their place. */
static void flush_object(parser *ps, int n, int size)
{
    lua_State *L = ps->L;
    int first = lua_gettop(L) - 2 * n + 1;
    lua_createtable(L, 0, size);
    int t = lua_gettop(L);
    for (int i = 0; i < n; i++) {
        lua_pushvalue(L, first + 2 * i);
        lua_pushvalue(L, first + 2 * i + 1);
        lua_rawset(L, t);
    }
    lua_replace(L, first);
    lua_settop(L, first);
}

/* --- strings --- */

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* Decodes the \uXXXX escape at q (the backslash), combining a surrogate pair; advances *qp. */
static int unicode_escape(parser *ps, const char **qp, unsigned *cp)
{
    const char *q = *qp;
    if (ps->end - q < 6 || hex4(q + 2, cp)) return perr(ps, q, "expected 4 hex digits after \\u");
    q += 6;
    if (*cp >= 0xDC00 && *cp <= 0xDFFF) return perr(ps, q - 6, "lone surrogate in \\u escape");
    if (*cp >= 0xD800 && *cp <= 0xDBFF) {
        unsigned lo = 0;
        if (ps->end - q < 6 || q[0] != '\\' || q[1] != 'u' || hex4(q + 2, &lo) || lo < 0xDC00 ||
            lo > 0xDFFF)
            return perr(ps, q - 6, "lone surrogate in \\u escape");
        *cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
        q += 6;
    }
    *qp = q;
    return 0;
}

/* Decodes the escape at q (a backslash) into out; returns its length or -1; advances *qp. */
static int escape(parser *ps, const char **qp, char *out)
{
    const char *q = *qp;
    if (ps->end - q < 2) return perr(ps, q, "unterminated string");
    char c = q[1], r;
    switch (c) {
    case '"':
    case '\\':
    case '/':
        r = c;
        break;
    case 'b':
        r = '\b';
        break;
    case 'f':
        r = '\f';
        break;
    case 'n':
        r = '\n';
        break;
    case 'r':
        r = '\r';
        break;
    case 't':
        r = '\t';
        break;
    case 'u': {
        unsigned cp = 0;
        if (unicode_escape(ps, qp, &cp)) return -1;
        return (int)utf8_put(out, cp);
    }
    default:
        return perr(ps, q, "invalid escape in string");
    }
    *qp = q + 2;
    out[0] = r;
    return 1;
}

/* Checks the non-plain byte at *qp that is neither '"' nor '\\': a UTF-8 sequence is skipped,
 * a control character refused. */
static int special_byte(parser *ps, const char **qp)
{
    const unsigned char *q = (const unsigned char *)*qp;
    if (*q < 0x20) return perr(ps, *qp, "raw control character in string");
    size_t n = utf8_seq(q, (const unsigned char *)ps->end);
    if (n == 0)
        return set_error(ps->err, "invalid UTF-8 in string at byte %zu", (size_t)(*qp - ps->start));
    *qp += n;
    return 0;
}

static inline const char *skip_plain(const char *q, const char *end)
{
    while (q < end && plain[(unsigned char)*q])
        q++;
    return q;
}

/* The slow path, from the first backslash at q: collects the decoded text in a luaL_Buffer. */
static int parse_string_escaped(parser *ps, const char *run, const char *q)
{
    lua_State *L = ps->L;
    luaL_Buffer b;
    if (L) {
        if (!lua_checkstack(L, LUA_MINSTACK))
            return perr(ps, q, "string too complex for the Lua stack");
        luaL_buffinit(L, &b);
    }
    for (;;) {
        q = skip_plain(q, ps->end);
        if (q == ps->end) return perr(ps, q, "unterminated string");
        if (*q == '\\') {
            char tmp[4];
            if (L) luaL_addlstring(&b, run, (size_t)(q - run));
            int n = escape(ps, &q, tmp);
            if (n < 0) return -1;
            if (L) luaL_addlstring(&b, tmp, (size_t)n);
            run = q;
        } else if (*q == '"') {
            if (L) {
                luaL_addlstring(&b, run, (size_t)(q - run));
                luaL_pushresult(&b);
            }
            ps->p = q + 1;
            return 0;
        } else if (special_byte(ps, &q)) {
            return -1;
        }
    }
}

/* ps->p is at the opening quote. Strings without escapes are pushed straight from the input. */
static int parse_string(parser *ps)
{
    const char *begin = ps->p + 1, *q = begin;
    for (;;) {
        q = skip_plain(q, ps->end);
        if (q == ps->end) return perr(ps, q, "unterminated string");
        if (*q == '"') break;
        if (*q == '\\') return parse_string_escaped(ps, begin, q);
        if (special_byte(ps, &q)) return -1;
    }
    if (ps->L) lua_pushlstring(ps->L, begin, (size_t)(q - begin));
    ps->p = q + 1;
    return 0;
}

/* --- numbers --- */

static const double pow10_exact[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                       1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                       1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

typedef struct numtok {
    uint64_t mant; /* the first 19 significant digits */
    int sig;       /* significant digits seen (leading zeros excluded) */
    int frac;      /* digits after the decimal point */
    long exp;      /* the explicit exponent, saturated */
} numtok;

static const char *scan_digits(const char *q, const char *end, numtok *t)
{
    for (; q < end && is_digit(*q); q++) {
        unsigned d = (unsigned)(*q - '0');
        if (t->sig == 0 && d == 0) continue;
        if (++t->sig <= 19) t->mant = t->mant * 10 + d;
    }
    return q;
}

/* Exact conversions without strtod: integers of up to 19 digits (one correctly rounded
 * conversion), and up to 15 significant digits scaled by an exact power of ten (one correctly
 * rounded multiplication or division). */
static int number_fast(const numtok *t, double *out)
{
    long e = t->exp - t->frac;
    if (t->sig == 0) {
        *out = 0.0;
        return 1;
    }
    if (e == 0 && t->sig <= 19) {
        *out = (double)t->mant;
        return 1;
    }
    if (t->sig > 15 || e < -22 || e > 22) return 0;
    *out = e < 0 ? (double)t->mant / pow10_exact[-e] : (double)t->mant * pow10_exact[e];
    return 1;
}

static int number_slow(parser *ps, const char *s, const char *q, double *out)
{
    size_t n = (size_t)(q - s);
    char small[64], *tmp = n < sizeof small ? small : malloc(n + 1);
    if (!tmp) return perr(ps, s, "out of memory");
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    *out = strtod(tmp, NULL);
    if (tmp != small) free(tmp);
    if (isinf(*out)) return perr(ps, s, "number out of range");
    return 0;
}

static const char *scan_exponent(const char *q, const char *end, numtok *t)
{
    int neg = 0;
    if (q < end && (*q == '+' || *q == '-')) neg = *q++ == '-';
    if (q == end || !is_digit(*q)) return NULL;
    for (; q < end && is_digit(*q); q++)
        if (t->exp < 100000) t->exp = t->exp * 10 + (*q - '0');
    if (neg) t->exp = -t->exp;
    return q;
}

/* JSON grammar exactly: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int parse_number(parser *ps)
{
    const char *s = ps->p, *q = s, *end = ps->end;
    numtok t = {0, 0, 0, 0};
    int neg = *q == '-';
    q += neg;
    if (q == end || !is_digit(*q)) return perr(ps, s, "invalid number");
    if (*q == '0' && q + 1 < end && is_digit(q[1]))
        return perr(ps, s, "invalid number (leading zero)");
    q = scan_digits(q, end, &t);
    if (q < end && *q == '.') {
        const char *f = ++q;
        if (q == end || !is_digit(*q))
            return perr(ps, s, "invalid number (expected a digit after '.')");
        q = scan_digits(q, end, &t);
        t.frac = (int)(q - f);
    }
    if (q < end && (*q == 'e' || *q == 'E')) {
        q = scan_exponent(q + 1, end, &t);
        if (!q) return perr(ps, s, "invalid number (expected a digit in the exponent)");
    }
    double d = 0.0;
    if (number_fast(&t, &d))
        d = neg ? -d : d;
    else if (number_slow(ps, s, q, &d))
        return -1;
    if (ps->L) lua_pushnumber(ps->L, d);
    ps->p = q;
    return 0;
}

/* --- literals, arrays, objects --- */

static int parse_literal(parser *ps, const char *word, size_t n)
{
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
        return perr(ps, ps->p, "expected a value");
    ps->p += n;
    if (!ps->L) return 0;
    if (word[0] == 'n')
        lua_pushlightuserdata(ps->L, NULL);
    else
        lua_pushboolean(ps->L, word[0] == 't');
    return 0;
}

/* After an element or member: 1 at the closing bracket (consumed), 0 after a ',', -1 on error. */
static int next_item(parser *ps, char close)
{
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ',') {
        ps->p++;
        return 0;
    }
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        ps->depth--;
        return 1;
    }
    return perr(ps, ps->p, close == ']' ? "expected ',' or ']'" : "expected ',' or '}'");
}

/* Opens a container: 1 if it is empty (consumed, and pushed in Lua mode), 0 otherwise. */
static int open_container(parser *ps, char close)
{
    if (enter(ps)) return -1;
    ps->p++;
    skip_ws(ps);
    if (ps->p == ps->end || *ps->p != close) return 0;
    ps->p++;
    ps->depth--;
    if (ps->L) {
        if (close == ']')
            push_array(ps, 0);
        else
            lua_createtable(ps->L, 0, 0);
    }
    return 1;
}

/* Pushes a key and its value. */
static int parse_member(parser *ps)
{
    skip_ws(ps);
    if (ps->p == ps->end || *ps->p != '"') return perr(ps, ps->p, "expected a string key");
    if (parse_string(ps)) return -1;
    skip_ws(ps);
    if (ps->p == ps->end || *ps->p != ':') return perr(ps, ps->p, "expected ':'");
    ps->p++;
    return parse_value(ps);
}

/* An array (close ']') or an object ('}'), its elements or members first collected on the stack
 * (see RUN_MAX). */
static int parse_container(parser *ps, char close)
{
    int rc = open_container(ps, close), array = close == ']';
    if (rc) return rc < 0 ? -1 : 0;
    int run = 0; /* elements or pairs on the stack, no table made yet; -1 once it is */
    for (int i = 1;; i++) {
        if (array ? parse_value(ps) : parse_member(ps)) return -1;
        if (ps->L && run < 0) {
            if (array)
                lua_rawseti(ps->L, -2, i);
            else
                lua_rawset(ps->L, -3); /* a duplicate key overwrites: the last one wins */
        } else if (ps->L && ++run == RUN_MAX) {
            (array ? flush_array : flush_object)(ps, run, 2 * RUN_MAX);
            run = -1;
        }
        if (check_meter(ps) || (rc = next_item(ps, close)) < 0) return -1;
        if (rc == 1) break;
    }
    if (run > 0) (array ? flush_array : flush_object)(ps, run, run);
    return check_meter(ps);
}

static int parse_array(parser *ps)
{
    return parse_container(ps, ']');
}

static int parse_object(parser *ps)
{
    return parse_container(ps, '}');
}

static int parse_value(parser *ps)
{
    skip_ws(ps);
    if (ps->p == ps->end) return perr(ps, ps->p, "unexpected end of input, expected a value");
    switch (*ps->p) {
    case '[':
        return parse_array(ps);
    case '{':
        return parse_object(ps);
    case '"':
        return parse_string(ps);
    case 't':
        return parse_literal(ps, "true", 4);
    case 'f':
        return parse_literal(ps, "false", 5);
    case 'n':
        return parse_literal(ps, "null", 4);
    default:
        if (*ps->p == '-' || is_digit(*ps->p)) return parse_number(ps);
        return perr(ps, ps->p, "expected a value");
    }
}

/* --- entry points --- */

/* Sets up ps; in Lua mode pushes the array metatable. Returns the stack top to restore. */
static int parser_open(parser *ps, lua_State *L, const char *buf, size_t len, int max_depth,
                       const codec_meter *meter, codec_error *err)
{
    if (!buf) buf = "";
    ps->meter = meter && L ? meter->counter : NULL;
    ps->meter_max = ps->meter ? meter->max : 0;
    ps->meter_end = ps->meter ? *ps->meter + ps->meter_max : 0;
    if (ps->meter_end < ps->meter_max) ps->meter_end = SIZE_MAX; /* no wrap-around */
    ps->too_large = 0;
    ps->L = L;
    ps->start = buf;
    ps->p = buf;
    ps->end = buf + len;
    ps->depth = 0;
    ps->max_depth = norm_depth(max_depth);
    ps->mt = 0;
    ps->err = err;
    if (err) err->msg[0] = '\0';
    if (!L) return 0;
    int base = lua_gettop(L);
    if (!lua_checkstack(L, 4)) return -1;
    ps->mt = push_array_mt(L);
    return base;
}

/* Checks that only whitespace follows, then drops the metatable (success) or everything pushed
 * since base (failure). */
static int parser_close(parser *ps, int base, int rc)
{
    if (rc == 0) {
        skip_ws(ps);
        if (ps->p != ps->end) rc = perr(ps, ps->p, "unexpected data after the value");
    }
    if (ps->L) {
        if (rc == 0)
            lua_remove(ps->L, ps->mt);
        else
            lua_settop(ps->L, base);
    }
    return rc && ps->too_large ? CODEC_TOO_LARGE : rc;
}

int codec_decode_metered(lua_State *L, const char *buf, size_t len, int max_depth,
                         const codec_meter *meter, codec_error *err)
{
    parser ps;
    int base = parser_open(&ps, L, buf, len, max_depth, meter, err);
    if (base < 0) return set_error(err, "Lua stack overflow");
    return parser_close(&ps, base, parse_value(&ps));
}

int codec_decode(lua_State *L, const char *buf, size_t len, int max_depth, codec_error *err)
{
    return codec_decode_metered(L, buf, len, max_depth, NULL, err);
}

static const char ENVELOPE_SHAPE[] =
    "expected [args, kwargs] with args an array and kwargs an object";

static void push_empty(parser *ps, int args, int kwargs)
{
    if (!ps->L) return;
    if (args) push_array(ps, 0);
    if (kwargs) lua_createtable(ps->L, 0, 0);
}

/* Parses the value at ps->p if it opens with `open`; otherwise explains what was expected. */
static int envelope_part(parser *ps, char open, const char *what)
{
    skip_ws(ps);
    if (ps->p == ps->end) return perr(ps, ps->p, "unexpected end of input, expected a value");
    if (*ps->p == open) return open == '[' ? parse_array(ps) : parse_object(ps);
    if (starts_value(*ps->p))
        return set_error(ps->err, "%s (byte %zu)", what, (size_t)(ps->p - ps->start));
    return perr(ps, ps->p, "expected a value");
}

/* After the args: ']' or ',' kwargs ']'. */
static int envelope_tail(parser *ps)
{
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ']') {
        ps->p++;
        push_empty(ps, 0, 1);
        return 0;
    }
    if (ps->p == ps->end || *ps->p != ',') return perr(ps, ps->p, "expected ',' or ']'");
    ps->p++;
    if (envelope_part(ps, '{', "kwargs must be an object")) return -1;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ',')
        return set_error(ps->err, "envelope has more than two elements (byte %zu)",
                         (size_t)(ps->p - ps->start));
    if (ps->p == ps->end || *ps->p != ']') return perr(ps, ps->p, "expected ']'");
    ps->p++;
    return 0;
}

static int parse_envelope(parser *ps)
{
    skip_ws(ps);
    if (ps->p == ps->end) {
        push_empty(ps, 1, 1);
        return 0;
    }
    if (*ps->p != '[') {
        if (starts_value(*ps->p)) return set_error(ps->err, "%s", ENVELOPE_SHAPE);
        return perr(ps, ps->p, "expected a value");
    }
    if (enter(ps)) return -1;
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ']') {
        ps->p++;
        push_empty(ps, 1, 1);
        return 0;
    }
    if (envelope_part(ps, '[', "args must be an array")) return -1;
    return envelope_tail(ps);
}

int codec_decode_envelope_metered(lua_State *L, const char *buf, size_t len, int max_depth,
                                  const codec_meter *meter, codec_error *err)
{
    parser ps;
    int base = parser_open(&ps, L, buf, len, max_depth, meter, err);
    if (base < 0) return set_error(err, "Lua stack overflow");
    return parser_close(&ps, base, parse_envelope(&ps));
}

int codec_decode_envelope(lua_State *L, const char *buf, size_t len, int max_depth,
                          codec_error *err)
{
    return codec_decode_envelope_metered(L, buf, len, max_depth, NULL, err);
}

/* ------------------------------------------------------------------------------------------ */
/* Encoding                                                                                    */
/* ------------------------------------------------------------------------------------------ */

typedef struct encoder {
    lua_State *L;
    codec_buf *out;
    int depth;
    int max_depth;
    int mt; /* absolute stack index of the array metatable */
    codec_error *err;
} encoder;

enum { WANT_ANY, WANT_ARRAY, WANT_OBJECT };
enum { KIND_EMPTY, KIND_ARRAY, KIND_OBJECT, KIND_BAD };

static int encode_value(encoder *e, int idx);

static int oom(encoder *e)
{
    return set_error(e->err, "out of memory");
}

static int put(encoder *e, const char *s, size_t n)
{
    return codec_buf_append(e->out, s, n) ? oom(e) : 0;
}

static inline int put_char(encoder *e, char c)
{
    if (buf_reserve(e->out, 1)) return oom(e);
    e->out->data[e->out->len++] = c;
    return 0;
}

/* --- strings --- */

static int put_escape(codec_buf *out, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[6] = {'\\', 0, 0, 0, 0, 0};
    size_t n = 2;
    switch (c) {
    case '"':
        tmp[1] = '"';
        break;
    case '\\':
        tmp[1] = '\\';
        break;
    case '\n':
        tmp[1] = 'n';
        break;
    case '\r':
        tmp[1] = 'r';
        break;
    case '\t':
        tmp[1] = 't';
        break;
    case '\b':
        tmp[1] = 'b';
        break;
    case '\f':
        tmp[1] = 'f';
        break;
    default:
        memcpy(tmp + 1, "u00", 3);
        tmp[4] = hex[c >> 4];
        tmp[5] = hex[c & 15];
        n = 6;
    }
    return codec_buf_append(out, tmp, n);
}

/* 0, -1 for invalid UTF-8 (*bad = its offset), -2 for allocation failure. */
static int put_string(codec_buf *out, const char *s, size_t len, size_t *bad)
{
    const char *p = s, *end = s + len, *run = s;
    if (buf_reserve(out, len + 2)) return -2;
    out->data[out->len++] = '"';
    for (;;) {
        p = skip_plain(p, end);
        if (p == end) break;
        unsigned char c = (unsigned char)*p;
        if (c >= 0x80) {
            size_t n = utf8_seq((const unsigned char *)p, (const unsigned char *)end);
            if (n == 0) {
                *bad = (size_t)(p - s);
                return -1;
            }
            p += n;
            continue;
        }
        if (codec_buf_append(out, run, (size_t)(p - run)) || put_escape(out, c)) return -2;
        run = ++p;
    }
    if (codec_buf_append(out, run, (size_t)(p - run)) || codec_buf_append(out, "\"", 1)) return -2;
    return 0;
}

int codec_encode_string(codec_buf *out, const char *s, size_t len)
{
    size_t bad;
    return put_string(out, s ? s : "", len, &bad) ? -1 : 0;
}

static int encode_string(encoder *e, int idx)
{
    size_t len, bad = 0;
    const char *s = lua_tolstring(e->L, idx, &len);
    int rc = put_string(e->out, s, len, &bad);
    if (rc == -1)
        return set_error(e->err, "cannot encode a string that is not valid UTF-8 (byte %zu)", bad);
    return rc ? oom(e) : 0;
}

/* --- numbers --- */

static size_t fmt_int(char *out, int64_t v)
{
    static const char digits2[] = "00010203040506070809101112131415161718192021222324252627282930"
                                  "31323334353637383940414243444546474849505152535455565758596061"
                                  "62636465666768697071727374757677787980818283848586878889909192"
                                  "93949596979899";
    char tmp[24];
    char *p = tmp + sizeof tmp;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    while (u >= 100) {
        unsigned r = (unsigned)(u % 100);
        u /= 100;
        p -= 2;
        memcpy(p, digits2 + 2 * r, 2);
    }
    if (u >= 10) {
        p -= 2;
        memcpy(p, digits2 + 2 * u, 2);
    } else {
        *--p = (char)('0' + u);
    }
    if (v < 0) *--p = '-';
    size_t n = (size_t)(tmp + sizeof tmp - p);
    memcpy(out, p, n);
    return n;
}

/* The shortest of %.15g, %.16g, %.17g that reads back as exactly d (%.17g always does). */
static size_t fmt_double(char *out, size_t size, double d)
{
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(out, size, "%.*g", prec, d);
        if (prec == 17 || strtod(out, NULL) == d) break;
    }
    return (size_t)n;
}

static int encode_number(encoder *e, double d)
{
    char tmp[40];
    size_t n;
    if (isnan(d) || isinf(d)) return set_error(e->err, "cannot encode NaN or infinity");
    if (d > -9223372036854775808.0 && d < 9223372036854775808.0 && d == (double)(int64_t)d)
        n = fmt_int(tmp, (int64_t)d);
    else
        n = fmt_double(tmp, sizeof tmp, d);
    return put(e, tmp, n);
}

/* --- tables --- */

static int is_array_marked(encoder *e, int idx)
{
    if (!lua_getmetatable(e->L, idx)) return 0;
    int marked = lua_rawequal(e->L, -1, e->mt);
    lua_pop(e->L, 1);
    return marked;
}

/* Counts the keys of a table whose first key is a number: an array iff they are exactly 1..n. */
static int sequence_kind(lua_State *L, int idx, size_t *n)
{
    size_t count = 0;
    double max = 0;
    do {
        if (lua_type(L, -2) != LUA_TNUMBER) {
            lua_pop(L, 2);
            return KIND_BAD;
        }
        double k = lua_tonumber(L, -2);
        if (!(k >= 1 && k <= 9007199254740992.0 && k == floor(k))) {
            lua_pop(L, 2);
            return KIND_BAD;
        }
        count++;
        max = k > max ? k : max;
        lua_pop(L, 1);
    } while (lua_next(L, idx));
    *n = count;
    return max == (double)count ? KIND_ARRAY : KIND_BAD;
}

/* An object is only recognised by its first key here: that key and its value stay pushed for
 * emit_object, which checks the other keys. */
static int table_kind(encoder *e, int idx, size_t *n)
{
    lua_State *L = e->L;
    if (is_array_marked(e, idx)) {
        *n = lua_objlen(L, idx);
        return KIND_ARRAY;
    }
    lua_pushnil(L);
    if (!lua_next(L, idx)) return KIND_EMPTY;
    if (lua_type(L, -2) == LUA_TSTRING) return KIND_OBJECT;
    return sequence_kind(L, idx, n);
}

static int emit_array(encoder *e, int idx, size_t n)
{
    if (put_char(e, '[')) return -1;
    for (size_t i = 1; i <= n; i++) {
        if (i > 1 && put_char(e, ',')) return -1;
        lua_rawgeti(e->L, idx, (int)i);
        if (encode_value(e, lua_gettop(e->L))) return -1;
        lua_pop(e->L, 1);
    }
    return put_char(e, ']');
}

static int mixed_keys(encoder *e)
{
    return set_error(e->err, "cannot encode a table with mixed or sparse keys");
}

/* Starts with the first key and value pushed by table_kind. */
static int emit_object(encoder *e, int idx)
{
    lua_State *L = e->L;
    int first = 1;
    if (put_char(e, '{')) return -1;
    do {
        if (lua_type(L, -2) != LUA_TSTRING) return mixed_keys(e);
        if ((!first && put_char(e, ',')) || encode_string(e, -2) || put_char(e, ':')) return -1;
        if (encode_value(e, lua_gettop(L))) return -1;
        lua_pop(L, 1);
        first = 0;
    } while (lua_next(L, idx));
    return put_char(e, '}');
}

/* On any error the functions below return at once and leave their stack slots; the entry points
 * reset the stack. */
static int encode_table(encoder *e, int idx, int want)
{
    size_t n = 0;
    if (++e->depth > e->max_depth)
        return set_error(e->err, "cannot encode: nesting deeper than %d (or a cycle)",
                         e->max_depth);
    if (!lua_checkstack(e->L, 4))
        return set_error(e->err, "cannot encode: nesting too deep for the Lua stack");
    int kind = table_kind(e, idx, &n);
    int rc;
    if (kind == KIND_BAD)
        rc = mixed_keys(e);
    else if (kind == KIND_EMPTY || (kind == KIND_ARRAY && n == 0 && want == WANT_OBJECT))
        rc = want == WANT_ARRAY ? put(e, "[]", 2) : put(e, "{}", 2);
    else if (kind == KIND_OBJECT && want == WANT_ARRAY)
        rc = set_error(e->err, "args must be an array");
    else if (kind == KIND_ARRAY && want == WANT_OBJECT)
        rc = set_error(e->err, "kwargs must be an object");
    else
        rc = kind == KIND_ARRAY ? emit_array(e, idx, n) : emit_object(e, idx);
    e->depth--;
    return rc;
}

static int encode_value(encoder *e, int idx)
{
    lua_State *L = e->L;
    int t = lua_type(L, idx);
    switch (t) {
    case LUA_TNONE:
    case LUA_TNIL:
        return put(e, "null", 4);
    case LUA_TBOOLEAN:
        return lua_toboolean(L, idx) ? put(e, "true", 4) : put(e, "false", 5);
    case LUA_TNUMBER:
        return encode_number(e, lua_tonumber(L, idx));
    case LUA_TSTRING:
        return encode_string(e, idx);
    case LUA_TTABLE:
        return encode_table(e, idx, WANT_ANY);
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) return put(e, "null", 4);
        /* fall through */
    default:
        return set_error(e->err, "cannot encode a value of type %s", lua_typename(L, t));
    }
}

/* --- entry points --- */

static int encoder_open(encoder *e, lua_State *L, codec_buf *out, int max_depth, codec_error *err)
{
    e->L = L;
    e->out = out;
    e->depth = 0;
    e->max_depth = norm_depth(max_depth);
    e->err = err;
    if (err) err->msg[0] = '\0';
    int base = lua_gettop(L);
    if (!lua_checkstack(L, 4)) return set_error(err, "Lua stack overflow");
    e->mt = push_array_mt(L);
    return base;
}

int codec_encode(lua_State *L, int idx, codec_buf *out, int max_depth, codec_error *err)
{
    encoder e;
    idx = abs_index(L, idx);
    int base = encoder_open(&e, L, out, max_depth, err);
    if (base < 0) return -1;
    int rc = idx == 0 ? put(&e, "null", 4) : encode_value(&e, idx);
    lua_settop(L, base);
    return rc;
}

/* One half of the envelope: absent or nil gives the empty form, anything else goes through
 * encode_table with the shape it must have. */
static int encode_part(encoder *e, int idx, int want)
{
    int t = idx == 0 ? LUA_TNONE : lua_type(e->L, idx);
    if (t == LUA_TNONE || t == LUA_TNIL)
        return want == WANT_ARRAY ? put(e, "[]", 2) : put(e, "{}", 2);
    if (t != LUA_TTABLE)
        return set_error(e->err,
                         want == WANT_ARRAY ? "args must be an array" : "kwargs must be an object");
    return encode_table(e, idx, want);
}

int codec_encode_envelope(lua_State *L, int args_idx, int kwargs_idx, codec_buf *out, int max_depth,
                          codec_error *err)
{
    encoder e;
    args_idx = abs_index(L, args_idx);
    kwargs_idx = abs_index(L, kwargs_idx);
    int base = encoder_open(&e, L, out, max_depth, err);
    if (base < 0) return -1;
    e.depth = 1; /* the envelope's own brackets */
    int rc = put_char(&e, '[');
    rc = rc ? rc : encode_part(&e, args_idx, WANT_ARRAY);
    rc = rc ? rc : put_char(&e, ',');
    rc = rc ? rc : encode_part(&e, kwargs_idx, WANT_OBJECT);
    rc = rc ? rc : put_char(&e, ']');
    lua_settop(L, base);
    return rc;
}
