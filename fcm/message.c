/*
 * FCM HTTP v1 message body.
 *
 * Architecture. Like apns/payload.c, and with its writer: write the whole
 * message; when it is over the limit, measure it with empty texts, let
 * apns_payload_fit decide how much body and title to keep, and write it
 * again. All `data` values are JSON strings (FCM rejects numbers there),
 * and `ttl` is a protobuf Duration in whole seconds ("3600s"). The token
 * comes first, so the rest of the last message is reused for the next
 * device of the same event (fcm_message_build, below).
 */
#include "fcm/message.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apns/payload.h"
#include "common/util.h"

static void put_kv(struct apns_payload_writer *w, const char **sep, const char *key,
                   const char *val)
{
    if (!val || !val[0])
        return;
    apns_payload_put_lit(w, *sep);
    apns_payload_put_str(w, key);
    apns_payload_put_lit(w, ":");
    apns_payload_put_str(w, val);
    *sep = ",";
}

static void write_message(struct apns_payload_writer *w, const void *doc,
                          const struct apns_payload_cut *cut)
{
    const struct fcm_notification *n = doc;
    apns_payload_put_lit(w, "{\"message\":{\"token\":");
    apns_payload_put_str(w, n->token);
    apns_payload_put_lit(w, ",\"notification\":{\"title\":");
    apns_payload_put_text(w, n->title, cut->title_len, cut->title_ellipsis);
    apns_payload_put_lit(w, ",\"body\":");
    apns_payload_put_text(w, n->body, cut->body_len, cut->body_ellipsis);
    apns_payload_put_lit(w, "}");

    bool any_data = (n->event_id && n->event_id[0]) || (n->event_type && n->event_type[0]) ||
                    (n->thread && n->thread[0]) || (n->tenant && n->tenant[0]);
    if (any_data) {
        const char *sep = "";
        apns_payload_put_lit(w, ",\"data\":{");
        put_kv(w, &sep, "event", n->event_id);
        put_kv(w, &sep, "type", n->event_type);
        put_kv(w, &sep, "thread", n->thread);
        put_kv(w, &sep, "tenant", n->tenant);
        apns_payload_put_lit(w, "}");
    }

    apns_payload_put_lit(w, ",\"android\":{\"priority\":");
    apns_payload_put_lit(w, n->high_priority ? "\"HIGH\"" : "\"NORMAL\"");
    if (n->ttl_s >= 0) {
        char ttl[32];
        long long s = n->ttl_s > FCM_TTL_MAX_S ? FCM_TTL_MAX_S : (long long)n->ttl_s;
        snprintf(ttl, sizeof ttl, ",\"ttl\":\"%llds\"", s);
        apns_payload_put_lit(w, ttl);
    }
    const char *sep = ",";
    put_kv(w, &sep, "collapse_key", n->collapse_key);
    bool tag = n->collapse_key && n->collapse_key[0];
    bool channel = n->channel_id && n->channel_id[0];
    if (tag || channel || n->badge > 0) {
        sep = "";
        apns_payload_put_lit(w, ",\"notification\":{");
        put_kv(w, &sep, "tag", n->collapse_key);
        put_kv(w, &sep, "channel_id", n->channel_id);
        if (n->badge > 0) {
            char b[48];
            snprintf(b, sizeof b, "%s\"notification_count\":%d", sep, n->badge);
            apns_payload_put_lit(w, b);
        }
        apns_payload_put_lit(w, "}");
    }
    apns_payload_put_lit(w, "}}}");
}

static int build(const struct fcm_notification *n, size_t max_bytes, char *out,
                 size_t outcap, size_t *outlen)
{
    if (!n->token || !n->token[0]) {
        if (outcap)
            out[0] = '\0';
        *outlen = 0;
        return -1;
    }
    return apns_payload_write_fitted(write_message, n, n->title, n->body, max_bytes, out,
                                     outcap, outlen);
}

/*
 * The devices of an event in one locale get the same message but for the
 * token, which comes first: the last message's tail (everything after the
 * token) is kept with every other input, and a build whose inputs match
 * (and whose token escapes to the same length, so any cut falls in the
 * same place) writes the token and copies the tail instead of escaping
 * the texts again. Inputs are compared in full.
 */
#define HEAD "{\"message\":{\"token\":"

struct memo {
    char *key;
    size_t key_len, key_cap;
    char *tail;
    size_t tail_len, tail_cap;
    bool valid;
};

static struct memo memo; /* the daemon builds on one thread */

static size_t memo_key(char **buf, size_t *cap, const struct fcm_notification *n,
                       size_t max_bytes, size_t outcap, size_t token_esc)
{
    const char *str[8] = { n->title, n->body, n->event_id, n->event_type,
                           n->tenant, n->thread, n->collapse_key, n->channel_id };
    size_t len[8], need = 4 * sizeof(size_t) + sizeof(int64_t) + sizeof(int) + 1;
    for (int i = 0; i < 8; i++) {
        len[i] = str[i] ? strlen(str[i]) : 0;
        need += len[i] + 2;
    }
    if (need > *cap) {
        size_t c = *cap ? *cap : 512;
        while (c < need)
            c *= 2;
        *buf = xrealloc(*buf, c);
        *cap = c;
    }
    char *o = *buf;
    memcpy(o, &max_bytes, sizeof max_bytes);
    o += sizeof max_bytes;
    memcpy(o, &outcap, sizeof outcap);
    o += sizeof outcap;
    memcpy(o, &token_esc, sizeof token_esc);
    o += sizeof token_esc;
    memcpy(o, &n->ttl_s, sizeof n->ttl_s);
    o += sizeof n->ttl_s;
    memcpy(o, &n->badge, sizeof n->badge); /* per recipient: part of the tail */
    o += sizeof n->badge;
    *o++ = n->high_priority ? 1 : 0;
    for (int i = 0; i < 8; i++) {
        *o++ = str[i] ? 1 : 0;
        memcpy(o, str[i] ? str[i] : "", len[i]);
        o += len[i];
        *o++ = '\0';
    }
    return (size_t)(o - *buf);
}

int fcm_message_build(const struct fcm_notification *n, size_t max_bytes,
                      char *out, size_t outcap, size_t *outlen)
{
    static char *scratch;
    static size_t scratch_cap;
    if (!n->token || !n->token[0])
        return build(n, max_bytes, out, outcap, outlen);
    size_t tl = strlen(n->token);
    size_t te = apns_payload_escaped_len(n->token, tl);
    size_t kl = memo_key(&scratch, &scratch_cap, n, max_bytes, outcap, te);
    size_t head = sizeof HEAD - 1 + te + 2;
    struct memo *m = &memo;
    if (m->valid && kl == m->key_len && memcmp(scratch, m->key, kl) == 0 &&
        head + m->tail_len < outcap) {
        struct apns_payload_writer w = { .out = out, .cap = outcap };
        apns_payload_put_lit(&w, HEAD);
        apns_payload_put_str(&w, n->token);
        apns_payload_put_raw(&w, m->tail, m->tail_len);
        if (apns_payload_finish(&w) && w.len <= max_bytes) {
            *outlen = w.len;
            return 0;
        }
    }
    int rc = build(n, max_bytes, out, outcap, outlen);
    m->valid = false;
    if (rc != 0 || *outlen < head)
        return rc;
    if (kl > m->key_cap) {
        m->key = xrealloc(m->key, kl);
        m->key_cap = kl;
    }
    memcpy(m->key, scratch, kl);
    m->key_len = kl;
    size_t tail = *outlen - head;
    if (tail > m->tail_cap) {
        m->tail = xrealloc(m->tail, tail);
        m->tail_cap = tail;
    }
    memcpy(m->tail, out + head, tail);
    m->tail_len = tail;
    m->valid = true;
    return rc;
}

const char *fcm_message_channel(const char *event_type)
{
    static const struct { const char *type, *channel; } map[] = {
        { "message.new", "messages" },
        { "absence.reported", "absence" },
        { "absence.alert", "absence_urgent" },
        { "leave.decided", "leave" },
        { "timetable.changed", "timetable" },
    };
    if (!event_type)
        return NULL;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(map[i].type, event_type) == 0)
            return map[i].channel;
    return NULL;
}
