/*
 * APNs payload: build the alert JSON body, parse the error body.
 *
 * Architecture. The body is written by a small bounded writer with a
 * hand-written JSON string escaper (no cJSON on the hot path: one push per
 * device per event). Building is at most three passes over a few hundred
 * bytes: write everything; if that is over the limit, measure the document
 * with empty texts (a counting pass), decide how much title and body to
 * keep (apns_payload_fit) and write again with the cut texts.
 *
 * Escaping: '"' and '\\' are escaped, \b \f \n \r \t use their short
 * forms, other control characters below 0x20 become \u00XX, bytes that
 * are not valid UTF-8 become U+FFFD, and everything else is copied, so the
 * output is always valid UTF-8 and valid JSON. The cut walks whole UTF-8
 * sequences, so it never splits a character.
 *
 * Error bodies are rare and small: apns_response_parse uses cJSON.
 */
#include "apns/payload.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

#define ELLIPSIS "\xE2\x80\xA6"   /* U+2026 */
#define ELLIPSIS_LEN 3
#define REPLACEMENT "\xEF\xBF\xBD" /* U+FFFD */

/* ------------------------------------------------------------------------ */
/* UTF-8 and escaping                                                        */


/*
 * One step of the escaper: how many input bytes the unit at |s| consumes
 * (|*in|) and how many output bytes it produces (returned).
 */
static size_t esc_step(const unsigned char *s, size_t n, size_t *in)
{
    unsigned char c = s[0];
    if (c < 0x80) {
        *in = 1;
        if (c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' ||
            c == '\r' || c == '\t')
            return 2;
        return c < 0x20 ? 6 : 1;
    }
    size_t l = utf8_seq_len(s, n);
    if (l == 0) {
        *in = 1;
        return 3;   /* U+FFFD */
    }
    *in = l;
    return l;
}

size_t apns_payload_escaped_len(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, out = 0, in;
    while (i < n) {
        out += esc_step(u + i, n - i, &in);
        i += in;
    }
    return out;
}

/*
 * Longest prefix of |s| (|n| bytes) whose escaped form takes at most
 * |budget| bytes, ending on a character boundary, without trailing spaces.
 */
static size_t prefix_fit(const char *s, size_t n, size_t budget)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, out = 0, in;
    while (i < n) {
        size_t o = esc_step(u + i, n - i, &in);
        if (out + o > budget)
            break;
        out += o;
        i += in;
    }
    while (i > 0 && s[i - 1] == ' ')
        i--;
    return i;
}

/* ------------------------------------------------------------------------ */
/* Writer                                                                    */

void apns_payload_put_raw(struct apns_payload_writer *w, const char *s, size_t n)
{
    if (w->len < w->cap) {
        size_t room = w->cap - 1 - w->len;   /* keep one byte for the NUL */
        size_t k = n < room ? n : room;
        if (k)
            memcpy(w->out + w->len, s, k);
    }
    w->len += n;
}

void apns_payload_put_lit(struct apns_payload_writer *w, const char *s)
{
    apns_payload_put_raw(w, s, strlen(s));
}

static void put_escaped(struct apns_payload_writer *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    while (i < n) {
        size_t in;
        size_t o = esc_step(u + i, n - i, &in);
        if (o == in && !(in == 1 && (u[i] == '"' || u[i] == '\\'))) {
            /* copied as is: extend the current run */
            i += in;
            run += in;
            continue;
        }
        apns_payload_put_raw(w, s + i - run, run);
        run = 0;
        char e[6];
        unsigned char c = u[i];
        if (in == 1 && c >= 0x80) {
            apns_payload_put_raw(w, REPLACEMENT, 3);
        } else if (o == 2) {
            e[0] = '\\';
            switch (c) {
            case '"': e[1] = '"'; break;
            case '\\': e[1] = '\\'; break;
            case '\b': e[1] = 'b'; break;
            case '\f': e[1] = 'f'; break;
            case '\n': e[1] = 'n'; break;
            case '\r': e[1] = 'r'; break;
            default: e[1] = 't'; break;
            }
            apns_payload_put_raw(w, e, 2);
        } else {
            memcpy(e, "\\u00", 4);
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            apns_payload_put_raw(w, e, 6);
        }
        i += in;
    }
    apns_payload_put_raw(w, s + i - run, run);
}

void apns_payload_put_text(struct apns_payload_writer *w, const char *s, size_t n,
                           bool ellipsis)
{
    apns_payload_put_raw(w, "\"", 1);
    if (n)
        put_escaped(w, s, n);
    if (ellipsis)
        apns_payload_put_raw(w, ELLIPSIS, ELLIPSIS_LEN);
    apns_payload_put_raw(w, "\"", 1);
}

void apns_payload_put_str(struct apns_payload_writer *w, const char *s)
{
    apns_payload_put_text(w, s, s ? strlen(s) : 0, false);
}

void apns_payload_put_int(struct apns_payload_writer *w, long long v)
{
    char b[24];
    int k = snprintf(b, sizeof b, "%lld", v);
    apns_payload_put_raw(w, b, (size_t)k);
}

bool apns_payload_finish(struct apns_payload_writer *w)
{
    if (w->cap == 0)
        return false;
    if (w->len < w->cap) {
        w->out[w->len] = '\0';
        return true;
    }
    w->out[w->cap - 1] = '\0';
    return false;
}

/* ------------------------------------------------------------------------ */
/* Fitting                                                                   */

int apns_payload_fit(size_t fixed, size_t max, const char *title, const char *body,
                     struct apns_payload_cut *cut)
{
    if (!title)
        title = "";
    if (!body)
        body = "";
    size_t tlen = strlen(title), blen = strlen(body);
    size_t et = apns_payload_escaped_len(title, tlen);
    size_t eb = apns_payload_escaped_len(body, blen);

    cut->title_len = tlen;
    cut->body_len = blen;
    cut->title_ellipsis = cut->body_ellipsis = false;
    if (fixed > max)
        return -1;
    size_t avail = max - fixed;
    if (et + eb <= avail)
        return 0;
    /* Cut the body, keeping the whole title. */
    if (et + ELLIPSIS_LEN <= avail) {
        cut->body_len = prefix_fit(body, blen, avail - et - ELLIPSIS_LEN);
        cut->body_ellipsis = true;
        return 0;
    }
    /* No room for any body: drop it and cut the title. */
    cut->body_len = 0;
    if (et <= avail)
        return 0;
    if (ELLIPSIS_LEN <= avail) {
        cut->title_len = prefix_fit(title, tlen, avail - ELLIPSIS_LEN);
        cut->title_ellipsis = true;
    } else {
        cut->title_len = 0;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* APNs body                                                                 */

static void write_body(struct apns_payload_writer *w, const void *doc,
                       const struct apns_payload_cut *cut)
{
    const struct apns_notification *n = doc;
    apns_payload_put_lit(w, "{\"aps\":{\"alert\":{\"title\":");
    apns_payload_put_text(w, n->title, cut->title_len, cut->title_ellipsis);
    apns_payload_put_lit(w, ",\"body\":");
    apns_payload_put_text(w, n->body, cut->body_len, cut->body_ellipsis);
    apns_payload_put_lit(w, "}");
    if (n->badge >= 0) {
        apns_payload_put_lit(w, ",\"badge\":");
        apns_payload_put_int(w, n->badge);
    }
    const char *sound = n->sound ? n->sound : "default";
    if (sound[0]) {
        apns_payload_put_lit(w, ",\"sound\":");
        apns_payload_put_str(w, sound);
    }
    if (n->thread_id && n->thread_id[0]) {
        apns_payload_put_lit(w, ",\"thread-id\":");
        apns_payload_put_str(w, n->thread_id);
    }
    if (n->interruption_level && n->interruption_level[0]) {
        apns_payload_put_lit(w, ",\"interruption-level\":");
        apns_payload_put_str(w, n->interruption_level);
    }
    apns_payload_put_lit(w, "},\"v\":{");
    const char *sep = "";
    const struct { const char *key, *val; } v[] = {
        { "event", n->event_id }, { "type", n->event_type },
        { "tenant", n->tenant }, { "thread", n->thread_id },
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        if (!v[i].val || !v[i].val[0])
            continue;
        apns_payload_put_lit(w, sep);
        apns_payload_put_str(w, v[i].key);
        apns_payload_put_lit(w, ":");
        apns_payload_put_str(w, v[i].val);
        sep = ",";
    }
    apns_payload_put_lit(w, "}}");
}

int apns_payload_write_fitted(apns_payload_write_fn write, const void *n, const char *title,
                              const char *body, size_t max_bytes, char *out, size_t outcap,
                              size_t *outlen)
{
    struct apns_payload_cut cut = {
        .title_len = title ? strlen(title) : 0,
        .body_len = body ? strlen(body) : 0,
    };
    struct apns_payload_writer w = { .out = out, .cap = outcap };
    write(&w, n, &cut);
    if (w.len > max_bytes) {
        /* Measure the rest with both texts empty, then cut them to fit. */
        struct apns_payload_cut none = { 0 };
        struct apns_payload_writer m = { 0 };
        write(&m, n, &none);
        if (apns_payload_fit(m.len, max_bytes, title, body, &cut) != 0)
            goto fail;
        w.len = 0;
        write(&w, n, &cut);
    }
    if (w.len > max_bytes || !apns_payload_finish(&w))
        goto fail;
    *outlen = w.len;
    return 0;
fail:
    if (outcap)
        out[0] = '\0';
    *outlen = 0;
    return -1;
}

static int build(const struct apns_notification *n, size_t max_bytes, char *out,
                 size_t outcap, size_t *outlen)
{
    return apns_payload_write_fitted(write_body, n, n->title, n->body, max_bytes, out,
                                     outcap, outlen);
}

/*
 * The last body built, and what it was built from. An event's devices in
 * one locale (and with one badge) get the same body: the pipeline asks for
 * it once per device, and building it (escaping every byte) was the
 * largest part of preparing a request. The inputs are compared in full, so
 * a hit is exactly what building would give.
 */
struct memo {
    char *key;                   /* serialized inputs */
    size_t key_len, key_cap;
    char *out;                   /* result (with its NUL), when rc == 0 */
    size_t out_len, out_cap;
    int rc;
    bool valid;
};

static struct memo memo; /* the daemon builds on one thread */

static void key_grow(struct memo *m, size_t need)
{
    if (need > m->key_cap) {
        size_t cap = m->key_cap ? m->key_cap : 512;
        while (cap < need)
            cap *= 2;
        m->key = xrealloc(m->key, cap);
        m->key_cap = cap;
    }
}

/* |scratch| <- every input of a build, unambiguously (NULL and "" differ). */
static size_t memo_key(char **scratch, size_t *cap, const struct apns_notification *n,
                       size_t max_bytes, size_t outcap)
{
    const char *str[8] = { n->title, n->body, n->thread_id, n->interruption_level,
                           n->sound, n->event_id, n->event_type, n->tenant };
    size_t len[8], need = 3 * sizeof(size_t) + sizeof(int);
    for (int i = 0; i < 8; i++) {
        len[i] = str[i] ? strlen(str[i]) : 0;
        need += 1 + len[i] + 1;
    }
    if (need > *cap) {
        size_t c = *cap ? *cap : 512;
        while (c < need)
            c *= 2;
        *scratch = xrealloc(*scratch, c);
        *cap = c;
    }
    char *o = *scratch;
    memcpy(o, &max_bytes, sizeof max_bytes);
    o += sizeof max_bytes;
    memcpy(o, &outcap, sizeof outcap);
    o += sizeof outcap;
    memcpy(o, &n->badge, sizeof n->badge);
    o += sizeof n->badge;
    for (int i = 0; i < 8; i++) {
        *o++ = str[i] ? 1 : 0;
        memcpy(o, str[i] ? str[i] : "", len[i]);
        o += len[i];
        *o++ = '\0';
    }
    return (size_t)(o - *scratch);
}

int apns_payload_build(const struct apns_notification *n, size_t max_bytes,
                       char *out, size_t outcap, size_t *outlen)
{
    static char *scratch;
    static size_t scratch_cap;
    struct memo *m = &memo;
    size_t kl = memo_key(&scratch, &scratch_cap, n, max_bytes, outcap);
    if (m->valid && kl == m->key_len && memcmp(scratch, m->key, kl) == 0) {
        if (m->rc != 0) {
            if (outcap)
                out[0] = '\0';
            *outlen = 0;
            return m->rc;
        }
        memcpy(out, m->out, m->out_len + 1);
        *outlen = m->out_len;
        return 0;
    }
    int rc = build(n, max_bytes, out, outcap, outlen);
    key_grow(m, kl);
    memcpy(m->key, scratch, kl);
    m->key_len = kl;
    m->rc = rc;
    if (rc == 0) {
        if (*outlen + 1 > m->out_cap) {
            m->out_cap = *outlen + 1 > 1024 ? *outlen + 1 : 1024;
            m->out = xrealloc(m->out, m->out_cap);
        }
        memcpy(m->out, out, *outlen + 1);
        m->out_len = *outlen;
    }
    m->valid = true;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Error body                                                                */

int apns_response_parse(const uint8_t *body, size_t len, char *reason,
                        size_t reasonlen, int64_t *timestamp_ms)
{
    int rc = -1;
    if (reason && reasonlen)
        reason[0] = '\0';
    if (timestamp_ms)
        *timestamp_ms = -1;
    if (!body || len == 0)
        return -1;
    cJSON *root = cJSON_ParseWithLength((const char *)body, len);
    if (!cJSON_IsObject(root))
        goto out;
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(root, "reason");
    if (!cJSON_IsString(r) || !r->valuestring)
        goto out;
    if (reason && reasonlen) {
        size_t rl = strlen(r->valuestring);
        rl = utf8_cut_len(r->valuestring, rl, reasonlen - 1);
        memcpy(reason, r->valuestring, rl);
        reason[rl] = '\0';
    }
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(root, "timestamp");
    if (timestamp_ms) {
        if (cJSON_IsNumber(ts) && ts->valuedouble >= 0 && ts->valuedouble < 9.2e18) {
            *timestamp_ms = (int64_t)ts->valuedouble;
        } else if (cJSON_IsString(ts) && ts->valuestring && ts->valuestring[0]) {
            char *end;
            errno = 0;
            long long v = strtoll(ts->valuestring, &end, 10);
            if (errno == 0 && *end == '\0' && v >= 0)
                *timestamp_ms = v;
        }
    }
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}
