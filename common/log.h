/*
 * Leveled logging to stderr, one line per event of interest:
 *   2026-11-28T14:00:00.123Z warn apns: connection lost (app=demo): reset
 * log_error/log_warn/log_info/log_debug take a subsystem tag first.
 * Never pass a full device token, a key or message text: use log_token().
 */
#ifndef VARSEL_LOG_H
#define VARSEL_LOG_H

#include <stddef.h>

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

extern enum log_level log_current_level;

/* Parse "error", "warn", "info", "debug"; returns 0 or -1. */
int log_parse_level(const char *s, enum log_level *out);
void log_set_level(enum log_level lvl);
/* Name printed after the level, e.g. "varseld" or "sandbox". */
void log_set_program(const char *name);

void log_write(enum log_level lvl, const char *tag, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_error(tag, ...) log_write(LOG_ERROR, tag, __VA_ARGS__)
#define log_warn(tag, ...)                                                     \
    do { if (log_current_level >= LOG_WARN) log_write(LOG_WARN, tag, __VA_ARGS__); } while (0)
#define log_info(tag, ...)                                                     \
    do { if (log_current_level >= LOG_INFO) log_write(LOG_INFO, tag, __VA_ARGS__); } while (0)
#define log_debug(tag, ...)                                                    \
    do { if (log_current_level >= LOG_DEBUG) log_write(LOG_DEBUG, tag, __VA_ARGS__); } while (0)

/*
 * Write a loggable form of a device token into |out| (at least 20 bytes):
 * its first 8 characters and "…" (e.g. "a1b2c3d4..."), never the whole token.
 * Returns |out|.
 */
const char *log_token(const char *token, char *out, size_t outlen);

#endif
