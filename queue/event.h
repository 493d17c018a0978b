/*
 * The v1 event contract (docs/events.md): parse and validate one JSON event
 * taken from the stream entry's `event` field.
 *
 * A parsed event owns its cJSON document; every string pointer in struct
 * event points into it and lives as long as the event. Unknown optional
 * fields are ignored (forward compatibility); a missing required field, a
 * wrong type or an unknown event type is an error with a precise reason,
 * which the caller puts in the dead-letter entry.
 */
#ifndef VARSEL_EVENT_H
#define VARSEL_EVENT_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum event_type {
    EVENT_MESSAGE_NEW = 0,
    EVENT_ABSENCE_REPORTED,
    EVENT_ABSENCE_ALERT,
    EVENT_LEAVE_DECIDED,
    EVENT_TIMETABLE_CHANGED,
    EVENT_DEVICE_REGISTER,
    EVENT_DEVICE_UNREGISTER,
    EVENT_RECEIPT_OPENED,
    EVENT_PREFERENCES_SET,
    EVENT_USER_ERASE,
    EVENT_TYPE_COUNT
};

enum event_priority { EVENT_PRIORITY_DEFAULT = 0, EVENT_PRIORITY_HIGH, EVENT_PRIORITY_NORMAL };

/*
 * Why an event was rejected. Stable: the short names from event_error_code()
 * go into dead-letter entries and metrics labels.
 */
enum event_error {
    EVENT_ERR_JSON = -1,      /* "invalid_json": not JSON, or trailing bytes */
    EVENT_ERR_TOO_LARGE = -2, /* "too_large": more than EVENT_MAX_BYTES */
    EVENT_ERR_VERSION = -3,   /* "unsupported_version": `v` is not the number 1 */
    EVENT_ERR_TYPE = -4,      /* "unknown_type": `type` names no known event */
    EVENT_ERR_MISSING = -5,   /* "missing_field": a required field is absent */
    EVENT_ERR_INVALID = -6    /* "invalid_field": wrong JSON type or bad value */
};

#define EVENT_ID_MAX 128             /* bytes in `id`, user, device, thread ids */
#define EVENT_MAX_RECIPIENTS 200000
#define EVENT_MAX_BYTES (16u << 20)  /* 16 MiB: larger input is EVENT_ERR_TOO_LARGE */
#define EVENT_TTL_MAX_S 2419200      /* 28 days */
#define EVENT_IOS_TOKEN_MIN 64       /* hex digits: 32 bytes, the APNs size today */
#define EVENT_IOS_TOKEN_MAX 200      /* APNs says not to assume a size */
#define EVENT_ANDROID_TOKEN_MAX 4096 /* FCM registration token, [A-Za-z0-9_:.-] */
#define EVENT_REASON_MAX 256         /* a reason buffer of this size never truncates
                                        anything but quoted input */

struct event_recipient {
    const char *user;  /* user id, unique within the tenant */
    int badge;         /* unread count for this recipient, -1 when absent */
};

struct event {
    enum event_type type;
    int v;                       /* contract version, 1 */
    const char *id;              /* idempotency key, <= 128 bytes */
    const char *tenant;          /* municipality slug [a-z0-9-_] */
    int64_t occurred_at_ms;      /* from `occurred_at` (RFC 3339) */
    int64_t ttl_s;               /* `ttl_s`, -1 when absent */
    enum event_priority priority;

    /* Notification events (message.*, absence.*, leave.*, timetable.*). */
    struct event_recipient *recipients; /* owned array */
    size_t n_recipients;
    const char *thread;          /* message.new */
    const char *reported_by;     /* absence.reported: never notified */

    /* device.register / device.unregister / receipt.opened /
     * preferences.set / user.erase */
    const char *user;
    const char *device;          /* install id */
    const char *platform;        /* "ios" | "android" */
    const char *token;
    const char *app;
    const char *locale;          /* "nb" | "nn" | "en", NULL when absent */
    const char *environment;     /* "production" | "sandbox" */
    const char *event_ref;       /* receipt.opened: the event it refers to */

    /* preferences.set (the whole set; it replaces the stored one) */
    unsigned muted_mask;         /* bit 1u << type per muted notification type */
    int quiet_start_min;         /* quiet hours start, minutes after midnight in the
                                    tenant's time zone; -1 when no quiet hours */
    int quiet_end_min;           /* quiet hours end (may be < start: wraps midnight);
                                    -1 when no quiet hours */

    cJSON *json;                 /* the whole document, owned */
};

/*
 * Parse |len| bytes of |json| (need not be NUL-terminated). On success
 * returns 0 and a new event in |*out| (free with event_free). On failure
 * returns one of enum event_error, sets |*out| to NULL and writes a reason
 * such as "missing required field 'recipients'", "field 'recipients[3]' must
 * be a string or {user, badge}", "unknown type 'message.nwe'" or "invalid
 * JSON near byte 17" into |reason| (may be NULL). Quoted input in a reason
 * is cut to 64 bytes with non-printable bytes shown as '?'.
 */
int event_parse(const char *json, size_t len, struct event **out,
                char *reason, size_t reasonlen);

/* Free |ev| and its document; NULL is a no-op. */
void event_free(struct event *ev);

/* Short stable name of an event_parse result: "invalid_json", "too_large",
 * "unsupported_version", "unknown_type", "missing_field", "invalid_field";
 * "ok" for 0 and "unknown" for anything else. */
const char *event_error_code(int err);

/* "message.new" etc.; NULL for an out-of-range value. */
const char *event_type_name(enum event_type t);
/* Inverse of event_type_name; -1 when unknown. */
int event_type_from_name(const char *name);

/* True for types that notify recipients (message.new ... timetable.changed);
 * false for device.*, receipt.opened, preferences.set and user.erase. */
bool event_is_notification(enum event_type t);

/*
 * A copy of an event's JSON that is safe to keep in dead letters: ids,
 * types, dates and the other structural fields of the contract stay; every
 * other value (names, subjects, previews, summaries, unknown fields) becomes
 * "<redacted: N bytes>", a token keeps its first 8 characters. Input that
 * is not a JSON object becomes "<not a JSON object: N bytes>". Returns a
 * malloc'd NUL-terminated string.
 */
char *event_redact(const char *json, size_t len);

/*
 * A top-level string field of the event by name, for templates
 * ("sender_name", "student_name", "date", ...); NULL when absent or not a
 * string.
 */
const char *event_field(const struct event *ev, const char *name);

#endif
