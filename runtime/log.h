/* log.h: one line per event on stderr, with a timestamp, a level and a subsystem tag. */
#ifndef MICROSERVICE_LOG_H
#define MICROSERVICE_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

void log_set_level(enum log_level level);
/* A short name of this process put in every line ("main", "w1"...), or NULL for none. */
void log_set_process_label(const char *label);
enum log_level log_get_level(void);
/* Parses "debug|info|warn|error"; -1 if unknown. */
int log_level_parse(const char *name);
/* Newlines inside the message are folded into " | " so that every event stays on one line. */
void log_msg(enum log_level level, const char *tag, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(tag, ...)                                                                        \
    do {                                                                                           \
        if (log_get_level() <= LOG_DEBUG) log_msg(LOG_DEBUG, tag, __VA_ARGS__);                    \
    } while (0)
#define log_info(tag, ...) log_msg(LOG_INFO, tag, __VA_ARGS__)
#define log_warn(tag, ...) log_msg(LOG_WARN, tag, __VA_ARGS__)
#define log_error(tag, ...) log_msg(LOG_ERROR, tag, __VA_ARGS__)

#endif
