/*
 * varselctl output: error messages, aligned tables, printable cells, times
 * and JSON. Everything that comes from Redis is shown through
 * ctl_printable, so a stored value can never send escape sequences to the
 * operator's terminal.
 */
#include "tools/ctl.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"

void ctl_err(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("varselctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* ---- printable text ------------------------------------------------------------ */

/* Length of a valid UTF-8 sequence at |s| (|len| left), or 0. */
static size_t utf8_len(const unsigned char *s, size_t len)
{
    size_t n = s[0] < 0x80 ? 1 : (s[0] & 0xE0) == 0xC0 ? 2 : (s[0] & 0xF0) == 0xE0 ? 3
             : (s[0] & 0xF8) == 0xF0 ? 4 : 0;
    if (n == 0 || n > len || !utf8_valid((const char *)s, n))
        return 0;
    return n;
}

char *ctl_printable(const char *s, size_t len, size_t max)
{
    if (s == NULL)
        return xstrdup("");
    char *out = xmalloc(len + 4), *o = out;
    size_t chars = 0, i = 0;
    while (i < len) {
        const unsigned char *p = (const unsigned char *)s + i;
        if (max && chars == max) {
            /* replace the last character by "…" */
            char *q = o;
            while (q > out && ((unsigned char)q[-1] & 0xC0) == 0x80)
                q--;
            if (q > out)
                q--;
            o = q;
            memcpy(o, "\xE2\x80\xA6", 3);
            o += 3;
            break;
        }
        size_t n = utf8_len(p, len - i);
        if (n == 0 || (n == 1 && (p[0] < 0x20 || p[0] == 0x7F)) ||
            (n == 2 && p[0] == 0xC2 && p[1] < 0xA0)) { /* C1 controls */
            *o++ = '?';
            i += n ? n : 1;
        } else {
            memcpy(o, p, n);
            o += n;
            i += n;
        }
        chars++;
    }
    *o = '\0';
    return out;
}

/* Display width: one column per UTF-8 character. */
static size_t width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            w++;
    return w;
}

/* ---- tables -------------------------------------------------------------------- */

struct ctl_table {
    size_t ncols, nrows, cap;
    char **cells;                /* (nrows + 1) * ncols, the header first */
};

struct ctl_table *ctl_table_new(size_t ncols, const char *const *header)
{
    struct ctl_table *t = xcalloc(1, sizeof *t);
    t->ncols = ncols;
    t->cap = 16;
    t->cells = xcalloc(t->cap * ncols, sizeof *t->cells);
    for (size_t i = 0; i < ncols; i++)
        t->cells[i] = xstrdup(header[i]);
    return t;
}

void ctl_table_add(struct ctl_table *t, const char *const *cells)
{
    if (t->nrows + 2 > t->cap) {
        t->cap *= 2;
        t->cells = xrealloc(t->cells, t->cap * t->ncols * sizeof *t->cells);
    }
    char **row = t->cells + (t->nrows + 1) * t->ncols;
    for (size_t i = 0; i < t->ncols; i++)
        row[i] = ctl_printable(cells[i], cells[i] ? strlen(cells[i]) : 0, 0);
    t->nrows++;
}

size_t ctl_table_rows(const struct ctl_table *t) { return t->nrows; }

void ctl_table_print(struct ctl_table *t, FILE *fp, int indent)
{
    size_t *w = xcalloc(t->ncols, sizeof *w);
    for (size_t r = 0; r <= t->nrows; r++)
        for (size_t i = 0; i < t->ncols; i++) {
            size_t x = width(t->cells[r * t->ncols + i]);
            if (x > w[i])
                w[i] = x;
        }
    for (size_t r = 0; r <= t->nrows; r++) {
        /* padding is written only before a non-empty cell: no trailing blanks */
        size_t pad = (size_t)(indent > 0 ? indent : 0);
        for (size_t i = 0; i < t->ncols; i++) {
            const char *cell = t->cells[r * t->ncols + i];
            if (cell[0]) {
                fprintf(fp, "%*s%s", (int)pad, "", cell);
                pad = 0;
            }
            pad += w[i] - width(cell) + 2;
        }
        fputc('\n', fp);
    }
    free(w);
    ctl_table_free(t);
}

void ctl_table_free(struct ctl_table *t)
{
    if (t == NULL)
        return;
    for (size_t k = 0; k < (t->nrows + 1) * t->ncols; k++)
        free(t->cells[k]);
    free(t->cells);
    free(t);
}

/* ---- times, ids, tokens ---------------------------------------------------- */

const char *ctl_time(int64_t ms, char *out, size_t outlen)
{
    if (ms <= 0) {
        snprintf(out, outlen, "-");
        return out;
    }
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    snprintf(out, outlen, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
    return out;
}

int64_t ctl_id_ms(const char *id)
{
    if (id == NULL)
        return 0;
    char *end;
    long long v = strtoll(id, &end, 10);
    return end != id && (*end == '-' || *end == '\0') && v > 0 ? (int64_t)v : 0;
}

const char *ctl_token_cut(const char *token, char *out, size_t outlen)
{
    if (token == NULL || token[0] == '\0') {
        snprintf(out, outlen, "-");
        return out;
    }
    size_t n = strlen(token);
    if (n <= 8)
        snprintf(out, outlen, "%s", token);
    else
        snprintf(out, outlen, "%.8s\xE2\x80\xA6", token);
    return out;
}

/* ---- JSON -------------------------------------------------------------------- */

void ctl_print_json(cJSON *doc)
{
    char *s = cJSON_Print(doc);
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        cJSON_free(s);
    }
    cJSON_Delete(doc);
}

cJSON *ctl_json_str(const char *s, size_t len)
{
    if (s == NULL)
        return cJSON_CreateString("");
    if (utf8_valid(s, len) && memchr(s, '\0', len) == NULL) {
        char *c = xstrndup(s, len);
        cJSON *j = cJSON_CreateString(c);
        free(c);
        return j;
    }
    /* bad bytes become U+FFFD so the document stays valid */
    char *out = xmalloc(len * 3 + 1), *o = out;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_len((const unsigned char *)s + i, len - i);
        if (n == 0 || s[i] == '\0') {
            memcpy(o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        } else {
            memcpy(o, s + i, n);
            o += n;
            i += n;
        }
    }
    *o = '\0';
    cJSON *j = cJSON_CreateString(out);
    free(out);
    return j;
}
