/*
 * The FCM HTTP v1 send body (PROTOCOLS.md §2) for one device token:
 * notification title/body, string-only data, and the android block
 * (priority, ttl, collapse_key, notification tag and channel). Same size
 * rule as the APNs payload (apns/payload.h). The last message's tail is
 * remembered (one thread only), so devices of one event that differ only
 * by token are built with one copy instead of escaping the texts again.
 */
#ifndef VARSEL_FCM_MESSAGE_H
#define VARSEL_FCM_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FCM_MESSAGE_MAX 4096        /* FCM limit for token messages */
#define FCM_TTL_MAX_S 2419200       /* 28 days, FCM's maximum ttl */

/* What one Android push shows; all strings UTF-8 and borrowed. */
struct fcm_notification {
    const char *token;          /* registration token (required) */
    const char *title;          /* NULL = "" */
    const char *body;           /* NULL = "" */
    const char *event_id;       /* data.event; NULL/"" = left out */
    const char *event_type;     /* data.type */
    const char *tenant;         /* data.tenant */
    const char *thread;         /* data.thread, when any */
    bool high_priority;         /* android.priority HIGH, else NORMAL */
    int64_t ttl_s;              /* android.ttl "<N>s"; < 0 = left out; capped at 28 days */
    const char *collapse_key;   /* android.collapse_key and notification.tag; NULL = none */
    const char *channel_id;     /* android.notification.channel_id; NULL = none */
    int badge;                  /* android.notification.notification_count (the
                                   unread count the launcher may show); <= 0 = none */
};

/*
 * Write {"message":{...}} for |n| into |out| (capacity |outcap|,
 * NUL-terminated) and its length into |*outlen|. Over |max_bytes|
 * (normally FCM_MESSAGE_MAX) the body is cut first, then the title, on a
 * UTF-8 boundary with "…". Returns 0, or -1 when |n->token| is NULL or
 * empty, the message cannot fit even with empty texts, or |outcap| is too
 * small for the result and its NUL.
 */
int fcm_message_build(const struct fcm_notification *n, size_t max_bytes,
                      char *out, size_t outcap, size_t *outlen);

/*
 * The Android notification channel for an event type name:
 * message.new → "messages", absence.reported → "absence",
 * absence.alert → "absence_urgent", leave.decided → "leave",
 * timetable.changed → "timetable"; NULL for anything else. The app must
 * create these channels (docs/templates.md).
 */
const char *fcm_message_channel(const char *event_type);

#endif
