/* check.h: the unit tests' assertion harness. CHECK counts a pass or prints file:line and the
 * failing expression; diag() prints the details of a mismatch (and returns 0, so it can stand in
 * a CHECKed expression); check_summary() prints the closing line `N passed, N failed` and gives
 * the exit code. Header-only: each test file is its own program. */
#ifndef MICROSERVICE_TEST_CHECK_H
#define MICROSERVICE_TEST_CHECK_H

#include <stdarg.h>
#include <stdio.h>

static int passed, failed;

#define CHECK(expr) check_((expr) != 0, __FILE__, __LINE__, #expr)

static void check_(int ok, const char *file, int line, const char *expr)
{
    if (ok) {
        passed++;
        return;
    }
    failed++;
    fprintf(stderr, "%s:%d: CHECK failed: %s\n", file, line, expr);
}

__attribute__((unused, format(printf, 1, 2))) static int diag(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("    ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 0;
}

static int check_summary(void)
{
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

#endif
