/* log.c: owns the log level and the format of log lines (stderr, one line per event).
 *
 * The level is the only process-wide state outside the runtime struct: it is set once from the
 * command line before the loop starts and read by every subsystem, including code that has no
 * runtime pointer at hand (nats.c callbacks). */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

static enum log_level current_level = LOG_INFO;
static char process_label[16]; /* set once, before anything runs (workers) */
static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void log_set_level(enum log_level level)
{
    current_level = level;
}

void log_set_process_label(const char *label)
{
    snprintf(process_label, sizeof process_label, "%s", label ? label : "");
}

enum log_level log_get_level(void)
{
    return current_level;
}

int log_level_parse(const char *name)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcasecmp(name, names[i]) == 0) return i;
    if (strcasecmp(name, "warning") == 0) return LOG_WARN;
    return -1;
}

/* Copies in to out (of size outlen), turning each newline and the indentation after it into
 * " | ", so that a traceback stays on the line of its event. */
static void fold_newlines(const char *in, char *out, size_t outlen)
{
    size_t o = 0;
    for (const char *p = in; *p && o + 4 < outlen; p++) {
        if (*p != '\n') {
            out[o++] = *p;
            continue;
        }
        while (p[1] == '\t' || p[1] == ' ')
            p++;
        if (p[1] == '\0') break;
        memcpy(out + o, " | ", 3);
        o += 3;
    }
    out[o] = '\0';
}

void log_msg(enum log_level level, const char *tag, const char *fmt, ...)
{
    if (level < current_level) return;
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char folded[sizeof msg + 1024];
    fold_newlines(msg, folded, sizeof folded);

    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[32];
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03dZ %-5s %s%s[%s] %s\n", ts, (int)(tv.tv_usec / 1000), level_names[level],
            process_label, process_label[0] ? " " : "", tag, folded);
}
