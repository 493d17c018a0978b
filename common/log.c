/*
 * Logging: one line per event of interest on stderr, as text or JSON, with
 * an ISO-8601 UTC timestamp, the level, the program and a subsystem tag.
 * The level is a global so the macros in log.h skip formatting for
 * disabled levels.
 *
 * Rate limit. Each (tag, format string) pair gets a slot in a small
 * open-addressing table (LIMIT_SLOTS, probing LIMIT_PROBE slots; when all
 * of them are taken the one with the oldest window is recycled, after its
 * summary is written). A slot counts lines in a fixed one-second window
 * that starts with its first line; lines over the limit are dropped before
 * they are formatted, so an error storm costs little. When a window with
 * drops is over, one summary line says how many were dropped: written
 * before the next line of that slot, or by the sweep that runs at most once
 * a second from any log call and from log_flush_suppressed().
 */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define LINE_MAX_BYTES 2048      /* formatted message, before escaping */
#define OUT_MAX_BYTES 16384      /* whole output line */
#define KV_VALUE_MAX 1024        /* one context value, before escaping */
#define LIMIT_SLOTS 256
#define LIMIT_PROBE 8
#define LIMIT_WINDOW_MS 1000
#define SLOT_TAG_MAX 32
#define SLOT_FMT_MAX 120

enum log_level log_current_level = LOG_INFO;
static enum log_format log_format = LOG_FORMAT_TEXT;
static const char *log_program = "varsel";
static unsigned log_rate_limit = LOG_RATE_LIMIT_DEFAULT;
static log_sink_fn log_sink;
static void *log_sink_arg;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

struct limit_slot {
    bool used;
    uint32_t hash;               /* of tag and the whole format */
    enum log_level lvl;          /* of the latest line */
    char tag[SLOT_TAG_MAX];      /* copies: the caller's strings need not live on */
    char fmt[SLOT_FMT_MAX];
    uint64_t window_ms;          /* start of the current window */
    uint64_t count;              /* lines in the window, dropped ones included */
    uint64_t dropped;            /* lines dropped in the window */
};

static struct limit_slot slots[LIMIT_SLOTS];
static uint64_t last_sweep_ms;

/* ---- clock ---------------------------------------------------------------- */

static uint64_t real_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t (*clock_fn)(void) = real_clock_ms;

/* ---- settings ------------------------------------------------------------- */

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

const char *log_level_name(enum log_level lvl)
{
    return lvl >= LOG_ERROR && lvl <= LOG_DEBUG ? level_names[lvl] : "?";
}

int log_parse_format(const char *s, enum log_format *out)
{
    if (strcmp(s, "text") == 0)
        *out = LOG_FORMAT_TEXT;
    else if (strcmp(s, "json") == 0)
        *out = LOG_FORMAT_JSON;
    else
        return -1;
    return 0;
}

void log_set_level(enum log_level lvl) { log_current_level = lvl; }
void log_set_format(enum log_format fmt) { log_format = fmt; }
enum log_format log_get_format(void) { return log_format; }
void log_set_program(const char *name) { log_program = name; }
void log_set_rate_limit(unsigned per_second) { log_rate_limit = per_second; }

void log_set_sink(log_sink_fn fn, void *arg)
{
    log_sink = fn;
    log_sink_arg = arg;
    memset(slots, 0, sizeof slots);
    last_sweep_ms = 0;
}

void log_set_clock(uint64_t (*clock_ms)(void))
{
    clock_fn = clock_ms ? clock_ms : real_clock_ms;
    memset(slots, 0, sizeof slots);
    last_sweep_ms = 0;
}

/* ---- JSON escaping -------------------------------------------------------- */

/*
 * The UTF-8 sequence at |s| (|len| bytes left): returns its length when it
 * is valid, else minus the length of its longest valid prefix (at least 1),
 * which becomes one U+FFFD (Unicode's "maximal subpart" practice).
 */
static long utf8_seq(const unsigned char *s, size_t len)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t n;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4;
    else
        return -1;
    /* second-byte limits exclude overlong forms, surrogates, > U+10FFFF */
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F;
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F;
    for (size_t i = 1; i < n; i++) {
        if (i >= len || s[i] < lo || s[i] > hi)
            return -(long)i;
        lo = 0x80;
        hi = 0xBF;
    }
    return (long)n;
}

size_t log_json_escape(char *out, size_t outlen, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t o = 0, i = 0;
    while (i < len) {
        char esc[8];
        const char *piece = esc;
        size_t plen, adv = 1;
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            plen = 2;
        } else if (c < 0x20 || c == 0x7F) {
            const char *named = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t"
                              : c == '\b' ? "\\b" : c == '\f' ? "\\f" : NULL;
            if (named) {
                piece = named;
                plen = 2;
            } else {
                snprintf(esc, sizeof esc, "\\u%04x", c);
                plen = 6;
            }
        } else if (c < 0x80) {
            piece = (const char *)p + i;
            plen = 1;
        } else {
            long n = utf8_seq(p + i, len - i);
            if (n < 0) {
                piece = "\xEF\xBF\xBD"; /* U+FFFD */
                plen = 3;
                adv = (size_t)-n;
            } else {
                piece = (const char *)p + i;
                plen = (size_t)n;
                adv = (size_t)n;
            }
        }
        if (o + plen + 1 > outlen)
            break;
        memcpy(out + o, piece, plen);
        o += plen;
        i += adv;
    }
    if (outlen > 0)
        out[o] = '\0';
    return o;
}

/* ---- output ---------------------------------------------------------------- */

static void emit(const char *line, size_t len)
{
    if (log_sink) {
        log_sink(line, len, log_sink_arg);
        return;
    }
    fwrite(line, 1, len, stderr);
}

static size_t timestamp(char *out, size_t outlen)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(out, outlen, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (long)(tv.tv_usec / 1000));
    return n < 0 ? 0 : (size_t)n;
}

/* Appends to a fixed buffer; raw text that does not fit is cut. */
struct obuf {
    char *p;
    size_t len, cap;              /* the buffer holds cap + 1 bytes (for '\n') */
};

static void put(struct obuf *b, const char *s, size_t n)
{
    if (b->len + n > b->cap)
        n = b->cap - b->len;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void puts_(struct obuf *b, const char *s) { put(b, s, strlen(s)); }

/* A quoted JSON string; the content is cut (validly) to what fits, but the
 * quotes always are written when at least two bytes are left. */
static void put_json_str(struct obuf *b, const char *s, size_t n)
{
    if (b->cap - b->len < 2)
        return;
    b->p[b->len++] = '"';
    /* room for the content plus the NUL log_json_escape writes, which the
     * closing quote then overwrites */
    b->len += log_json_escape(b->p + b->len, b->cap - b->len, s, n);
    b->p[b->len++] = '"';
}

static bool reserved_key(const char *k)
{
    return strcmp(k, "ts") == 0 || strcmp(k, "level") == 0 || strcmp(k, "program") == 0 ||
           strcmp(k, "tag") == 0 || strcmp(k, "msg") == 0;
}

static bool token_key(const char *k)
{
    size_t n = strlen(k);
    return strcmp(k, "token") == 0 || (n > 6 && strcmp(k + n - 6, "_token") == 0);
}

/* A context value as it may be logged: tokens cut, length bounded. */
static const char *kv_value(const char *k, const char *v, char *tmp, size_t tmplen,
                            size_t *len)
{
    if (v == NULL)
        v = "";
    if (token_key(k))
        v = log_token(v, tmp, tmplen);
    *len = strnlen(v, KV_VALUE_MAX);
    return v;
}

/* Text values with blanks, quotes, '=' or control bytes are quoted (logfmt). */
static void put_text_value(struct obuf *b, const char *v, size_t n)
{
    bool quote = n == 0;
    for (size_t i = 0; i < n && !quote; i++)
        quote = v[i] == ' ' || v[i] == '"' || v[i] == '=' || (unsigned char)v[i] < 0x20;
    if (quote)
        put_json_str(b, v, n);
    else
        put(b, v, n);
}

/*
 * Format and write one line. |num_key| adds one numeric member (the
 * summaries' "suppressed" count) when not NULL.
 */
static void write_line(enum log_level lvl, const char *tag, const char *const *kv,
                       const char *msg, size_t msglen, const char *num_key, uint64_t num)
{
    char out[OUT_MAX_BYTES];
    /* JSON: keep one byte for the closing brace. */
    struct obuf b = { out, 0, sizeof out - (log_format == LOG_FORMAT_JSON ? 2 : 1) };
    char ts[40], nbuf[32];
    size_t tslen = timestamp(ts, sizeof ts);
    if (lvl > LOG_DEBUG)
        lvl = LOG_ERROR;
    snprintf(nbuf, sizeof nbuf, "%llu", (unsigned long long)num);
    if (log_format == LOG_FORMAT_JSON) {
        /* The fixed members are small: the message is at most
         * LINE_MAX_BYTES, six times that escaped, which always fits. */
        puts_(&b, "{\"ts\":\"");
        put(&b, ts, tslen);
        puts_(&b, "\",\"level\":\"");
        puts_(&b, level_names[lvl]);
        puts_(&b, "\",\"program\":");
        put_json_str(&b, log_program, strnlen(log_program, 64));
        puts_(&b, ",\"tag\":");
        put_json_str(&b, tag, strnlen(tag, 64));
        puts_(&b, ",\"msg\":");
        put_json_str(&b, msg, msglen);
        if (num_key) {
            puts_(&b, ",\"");
            puts_(&b, num_key);
            puts_(&b, "\":");
            puts_(&b, nbuf);
        }
        for (size_t i = 0; kv && kv[i]; i += 2) {
            char tmp[32], key[72];
            size_t vlen, klen;
            const char *v = kv_value(kv[i], kv[i + 1], tmp, sizeof tmp, &vlen);
            int kn = snprintf(key, sizeof key, "%s%s", reserved_key(kv[i]) ? "_" : "", kv[i]);
            klen = kn < 0 ? 0 : (size_t)kn >= sizeof key ? sizeof key - 1 : (size_t)kn;
            /* A member goes in only when its key fits whole (escaped). */
            if (b.cap - b.len < 6 * klen + 8)
                break;
            put(&b, ",", 1);
            put_json_str(&b, key, klen);
            put(&b, ":", 1);
            put_json_str(&b, v, vlen);
            if (kv[i + 1] == NULL)
                break;
        }
        out[b.len++] = '}';
    } else {
        put(&b, ts, tslen);
        put(&b, " ", 1);
        puts_(&b, level_names[lvl]);
        put(&b, " ", 1);
        puts_(&b, log_program);
        put(&b, " ", 1);
        puts_(&b, tag);
        put(&b, ": ", 2);
        put(&b, msg, msglen);
        for (size_t i = 0; kv && kv[i]; i += 2) {
            char tmp[32];
            size_t vlen;
            const char *v = kv_value(kv[i], kv[i + 1], tmp, sizeof tmp, &vlen);
            put(&b, " ", 1);
            puts_(&b, kv[i]);
            put(&b, "=", 1);
            put_text_value(&b, v, vlen);
            if (kv[i + 1] == NULL)
                break;
        }
    }
    out[b.len++] = '\n';
    emit(out, b.len);
}

/* ---- rate limit ------------------------------------------------------------ */

static uint32_t hash_str(uint32_t h, const char *s)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

static void write_summary(struct limit_slot *s)
{
    char msg[SLOT_FMT_MAX + 96];
    int n = snprintf(msg, sizeof msg, "\xE2\x80\xA6 %llu similar message%s suppressed (format \"%s\")",
                     (unsigned long long)s->dropped, s->dropped == 1 ? "" : "s", s->fmt);
    size_t len = n < 0 ? 0 : (size_t)n >= sizeof msg ? sizeof msg - 1 : (size_t)n;
    write_line(s->lvl, s->tag, NULL, msg, len, log_format == LOG_FORMAT_JSON ? "suppressed" : NULL,
               s->dropped);
    s->dropped = 0;
}

void log_flush_suppressed(bool all)
{
    uint64_t now = clock_fn();
    last_sweep_ms = now;
    for (size_t i = 0; i < LIMIT_SLOTS; i++) {
        struct limit_slot *s = &slots[i];
        if (!s->used || s->dropped == 0)
            continue;
        if (all || now - s->window_ms >= LIMIT_WINDOW_MS)
            write_summary(s);
    }
}

/* The slot of (tag, fmt), claimed if new. */
static struct limit_slot *slot_for(const char *tag, const char *fmt, uint64_t now)
{
    uint32_t h = hash_str(hash_str(2166136261u, tag), "\x1f");
    h = hash_str(h, fmt);
    struct limit_slot *victim = NULL;
    for (size_t k = 0; k < LIMIT_PROBE; k++) {
        struct limit_slot *s = &slots[(h + k) % LIMIT_SLOTS];
        if (!s->used) {
            memset(s, 0, sizeof *s);
            s->used = true;
            s->hash = h;
            snprintf(s->tag, sizeof s->tag, "%s", tag);
            snprintf(s->fmt, sizeof s->fmt, "%s", fmt);
            s->window_ms = now;
            return s;
        }
        if (s->hash == h && strncmp(s->tag, tag, sizeof s->tag - 1) == 0 &&
            strncmp(s->fmt, fmt, sizeof s->fmt - 1) == 0)
            return s;
        if (victim == NULL || s->window_ms < victim->window_ms)
            victim = s;
    }
    if (victim->dropped)
        write_summary(victim);
    victim->used = false;
    return slot_for(tag, fmt, now);
}

/* true when this line may be written; false when it is dropped. */
static bool admit(enum log_level lvl, const char *tag, const char *fmt)
{
    if (log_rate_limit == 0)
        return true;
    uint64_t now = clock_fn();
    if (now - last_sweep_ms >= LIMIT_WINDOW_MS)
        log_flush_suppressed(false);
    struct limit_slot *s = slot_for(tag, fmt, now);
    if (now - s->window_ms >= LIMIT_WINDOW_MS) {
        if (s->dropped)
            write_summary(s);
        s->window_ms = now;
        s->count = 0;
    }
    s->lvl = lvl;
    if (++s->count > log_rate_limit) {
        s->dropped++;
        return false;
    }
    return true;
}

/* ---- entry points ---------------------------------------------------------- */

static void vwrite(enum log_level lvl, const char *tag, const char *const *kv,
                   const char *fmt, va_list ap) __attribute__((format(printf, 4, 0)));
static void vwrite(enum log_level lvl, const char *tag, const char *const *kv,
                   const char *fmt, va_list ap)
{
    if (tag == NULL)
        tag = "-";
    if (!admit(lvl, tag, fmt))
        return;
    char msg[LINE_MAX_BYTES];
    int m = vsnprintf(msg, sizeof msg, fmt, ap);
    size_t len = m < 0 ? 0 : (size_t)m >= sizeof msg ? sizeof msg - 1 : (size_t)m;
    write_line(lvl, tag, kv, msg, len, NULL, 0);
}

void log_write(enum log_level lvl, const char *tag, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vwrite(lvl, tag, NULL, fmt, ap);
    va_end(ap);
}

void log_write_kv(enum log_level lvl, const char *tag, const char *const *kv,
                  const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vwrite(lvl, tag, kv, fmt, ap);
    va_end(ap);
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
