/*
 * Logging: one line per event of interest on stderr, with an ISO-8601 UTC
 * timestamp, the level and a subsystem tag. The level is a global so the
 * macros in log.h can skip formatting for disabled levels.
 */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

enum log_level log_current_level = LOG_INFO;
static const char *log_program = "varsel";

static const char *const level_names[] = { "error", "warn", "info", "debug" };

int log_parse_level(const char *s, enum log_level *out)
{
    for (int i = 0; i <= LOG_DEBUG; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

void log_set_level(enum log_level lvl) { log_current_level = lvl; }
void log_set_program(const char *name) { log_program = name; }

void log_write(enum log_level lvl, const char *tag, const char *fmt, ...)
{
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line,
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000),
                     level_names[lvl], log_program, tag);
    if (n < 0 || (size_t)n >= sizeof line)
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    fwrite(line, 1, len, stderr);
}

const char *log_token(const char *token, char *out, size_t outlen)
{
    if (token == NULL) {
        snprintf(out, outlen, "(none)");
        return out;
    }
    snprintf(out, outlen, "%.8s...", token);
    return out;
}
