/*
 * Leveled logging to stderr, one line per event of interest, as text
 *   2026-11-28T14:00:00.123Z warn varseld apns: connection lost (app=demo): reset
 * or, with log_set_format(LOG_FORMAT_JSON), as one JSON object per line
 *   {"ts":"2026-11-28T14:00:00.123Z","level":"warn","program":"varseld",
 *    "tag":"apns","msg":"connection lost (app=demo): reset","app":"demo"}
 *
 * log_error/log_warn/log_info/log_debug take a subsystem tag first, then a
 * printf format. The _kv variants also take structured context, a list of
 * key/value strings made with LOG_KV("app", name, "attempt", buf): JSON
 * lines carry each pair as a string member, text lines append key=value.
 *
 * Repeats are rate-limited: when one (tag, format string) is logged more
 * than log_rate_limit times within one second, the rest of that second is
 * dropped and summarised once the second is over:
 *   ... warn varseld pipeline: … 1234 similar messages suppressed (format "XACK %s failed (%s)")
 * The summary comes with the next line of the same kind, or from
 * log_flush_suppressed(), which varseld calls once a second and at exit.
 *
 * Never pass a full device token, a key or message text: use log_token().
 * A context pair whose key is "token" (or ends in "_token") is cut the same
 * way automatically.
 *
 * Not thread-safe: every varsel program logs from one thread.
 */
#ifndef VARSEL_LOG_H
#define VARSEL_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };
enum log_format { LOG_FORMAT_TEXT = 0, LOG_FORMAT_JSON };

extern enum log_level log_current_level;

/* Parse "error", "warn", "info", "debug"; returns 0 or -1. */
int log_parse_level(const char *s, enum log_level *out);
void log_set_level(enum log_level lvl);
/* Name of a level ("warn"); "?" for an out-of-range value. */
const char *log_level_name(enum log_level lvl);
/* Parse "text" or "json"; returns 0 or -1. */
int log_parse_format(const char *s, enum log_format *out);
void log_set_format(enum log_format fmt);
enum log_format log_get_format(void);
/* Name printed after the level, e.g. "varseld" or "sandbox". Borrowed:
 * |name| must outlive all logging (a string literal). */
void log_set_program(const char *name);

void log_write(enum log_level lvl, const char *tag, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Like log_write, with context: |kv| is NULL or a NULL-terminated array of
 * key, value, key, value... strings (LOG_KV builds one). A NULL value is
 * written as "". Keys that clash with the fixed members (ts, level,
 * program, tag, msg) get a "_" in front.
 */
void log_write_kv(enum log_level lvl, const char *tag, const char *const *kv,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#define LOG_KV(...) ((const char *const[]){ __VA_ARGS__, NULL })

#define log_error(tag, ...) log_write(LOG_ERROR, tag, __VA_ARGS__)
#define log_warn(tag, ...)                                                     \
    do { if (log_current_level >= LOG_WARN) log_write(LOG_WARN, tag, __VA_ARGS__); } while (0)
#define log_info(tag, ...)                                                     \
    do { if (log_current_level >= LOG_INFO) log_write(LOG_INFO, tag, __VA_ARGS__); } while (0)
#define log_debug(tag, ...)                                                    \
    do { if (log_current_level >= LOG_DEBUG) log_write(LOG_DEBUG, tag, __VA_ARGS__); } while (0)

#define log_error_kv(tag, kv, ...) log_write_kv(LOG_ERROR, tag, kv, __VA_ARGS__)
#define log_warn_kv(tag, kv, ...)                                              \
    do { if (log_current_level >= LOG_WARN) log_write_kv(LOG_WARN, tag, kv, __VA_ARGS__); } while (0)
#define log_info_kv(tag, kv, ...)                                              \
    do { if (log_current_level >= LOG_INFO) log_write_kv(LOG_INFO, tag, kv, __VA_ARGS__); } while (0)
#define log_debug_kv(tag, kv, ...)                                             \
    do { if (log_current_level >= LOG_DEBUG) log_write_kv(LOG_DEBUG, tag, kv, __VA_ARGS__); } while (0)

/*
 * Repeat limit: at most |per_second| lines per (tag, format) and second;
 * 0 turns the limit off. Default LOG_RATE_LIMIT_DEFAULT.
 */
#define LOG_RATE_LIMIT_DEFAULT 100
void log_set_rate_limit(unsigned per_second);

/*
 * Write the "… N similar messages suppressed" summaries that are due: those
 * whose one-second window is over, or all of them when |all| (at exit).
 */
void log_flush_suppressed(bool all);

/*
 * For tests: send finished lines (with their '\n') to |fn| instead of
 * stderr (NULL restores stderr), and take the time for the rate limit from
 * |clock_ms| (monotonic milliseconds; NULL restores the real clock). Also
 * forgets the rate-limit state.
 */
typedef void (*log_sink_fn)(const char *line, size_t len, void *arg);
void log_set_sink(log_sink_fn fn, void *arg);
void log_set_clock(uint64_t (*clock_ms)(void));

/*
 * JSON string escaping (without the quotes) of |len| bytes of |s| into
 * |out| (capacity |outlen| >= 1, always NUL-terminated): '"', '\\' and
 * control characters are escaped, invalid UTF-8 bytes become U+FFFD. An
 * escape or character that does not fit is left out whole, so the result
 * is always valid. Returns the length written.
 */
size_t log_json_escape(char *out, size_t outlen, const char *s, size_t len);

/*
 * Write a loggable form of a device token into |out| (at least 20 bytes):
 * its first 8 characters and "…" (e.g. "a1b2c3d4..."), never the whole token.
 * Returns |out|.
 */
const char *log_token(const char *token, char *out, size_t outlen);

#endif
