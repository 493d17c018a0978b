/*
 * FCM HTTP v1 message body.
 *
 * Architecture. Like apns/payload.c, and with its writer: write the whole
 * message; when it is over the limit, measure it with empty texts, let
 * apns_payload_fit decide how much body and title to keep, and write it
 * again. All `data` values are JSON strings (FCM rejects numbers there),
 * and `ttl` is a protobuf Duration in whole seconds ("3600s").
 */
#include "fcm/message.h"

#include <stdio.h>
#include <string.h>

#include "apns/payload.h"

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

static void write_message(struct apns_payload_writer *w, const struct fcm_notification *n,
                          const struct apns_payload_cut *cut)
{
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

int fcm_message_build(const struct fcm_notification *n, size_t max_bytes,
                      char *out, size_t outcap, size_t *outlen)
{
    struct apns_payload_cut cut = {
        .title_len = n->title ? strlen(n->title) : 0,
        .body_len = n->body ? strlen(n->body) : 0,
    };
    struct apns_payload_writer w = { .out = out, .cap = outcap };
    if (!n->token || !n->token[0])
        goto fail;
    write_message(&w, n, &cut);
    if (w.len > max_bytes) {
        struct apns_payload_cut none = { 0 };
        struct apns_payload_writer m = { 0 };
        write_message(&m, n, &none);
        if (apns_payload_fit(m.len, max_bytes, n->title, n->body, &cut) != 0)
            goto fail;
        w.len = 0;
        write_message(&w, n, &cut);
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
