/* error_oracle.h: the checks the fuzz targets make on error texts (issue 12, item 5): an error
 * text is written on every failure, is valid UTF-8 (it goes into JSON ABORT messages and log
 * lines), and depends on the input only: decoding the same input with different garbage left in
 * the buffer gives the same text. Header-only, for the libFuzzer targets. */
#ifndef MICROSERVICE_FUZZ_ERROR_ORACLE_H
#define MICROSERVICE_FUZZ_ERROR_ORACLE_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Strict UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF. */
static bool oracle_utf8_ok(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        int n = c < 0x80             ? 0
                : (c & 0xe0) == 0xc0 ? 1
                : (c & 0xf0) == 0xe0 ? 2
                : (c & 0xf8) == 0xf0 ? 3
                                     : -1;
        if (n < 0 || (n == 1 && c < 0xc2) || c > 0xf4) return false;
        for (int k = 1; k <= n; k++)
            if ((p[k] & 0xc0) != 0x80) return false;
        if (n == 2 && ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] >= 0xa0))) return false;
        if (n == 3 && ((c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] >= 0x90))) return false;
        p += n + 1;
    }
    return true;
}

/* Fills buf with garbage of the given seed: invalid UTF-8, printable text, no terminator. */
static void oracle_garbage(char *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (char)(seed & 1 ? 0xff - (i % 7) : 'A' + (i + seed) % 26);
}

/* Two error texts from the same input: both written, equal, valid UTF-8; else abort. */
static void oracle_same_error(const char *a, const char *b, size_t cap)
{
    if (!memchr(a, 0, cap) || !memchr(b, 0, cap)) abort(); /* not terminated: not written */
    if (!a[0] || strcmp(a, b) != 0) abort();               /* empty, or from the garbage */
    if (!oracle_utf8_ok(a)) abort();
}

#endif
