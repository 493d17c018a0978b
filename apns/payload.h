/*
 * The APNs request body (the `aps` dictionary plus our small `v` key) and
 * the APNs error body parser. Pure functions, no allocation.
 *
 * The JSON writer and the text-fitting helpers below are shared with
 * fcm/message.c, which applies the same size rule to FCM messages.
 */
#ifndef VARSEL_APNS_PAYLOAD_H
#define VARSEL_APNS_PAYLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define APNS_PAYLOAD_MAX 4096   /* APNs limit for alert pushes */

/* What one alert push shows; all strings UTF-8 and borrowed. */
struct apns_notification {
    const char *title;              /* alert title; NULL = "" */
    const char *body;               /* alert body; NULL = "" */
    int badge;                      /* aps.badge, -1 to leave it out */
    const char *thread_id;          /* aps.thread-id and v.thread; NULL = none */
    const char *interruption_level; /* e.g. "time-sensitive"; NULL = none */
    const char *sound;              /* NULL = "default", "" = no sound key */
    const char *event_id;           /* v.event; NULL = left out */
    const char *event_type;         /* v.type, e.g. "message.new" */
    const char *tenant;             /* v.tenant */
};

/*
 * Write the JSON body for |n| into |out| (capacity |outcap|, NUL-terminated)
 * and its length into |*outlen|. If the JSON would exceed |max_bytes|
 * (normally APNS_PAYLOAD_MAX) the body is cut first, then the title, on a
 * UTF-8 character boundary with "…" appended, until it fits. Invalid UTF-8
 * in any string becomes U+FFFD, control characters are escaped.
 * Returns 0, or -1 when it cannot fit even with empty texts or |outcap| is
 * too small for the result plus its NUL.
 */
int apns_payload_build(const struct apns_notification *n, size_t max_bytes,
                       char *out, size_t outcap, size_t *outlen);

/*
 * Parse an APNs error body {"reason":"BadDeviceToken","timestamp":ms}.
 * Copies the reason (truncated to fit |reasonlen| including its NUL) and
 * stores the 410 timestamp in |*timestamp_ms|, or -1 when absent or not a
 * number. Returns 0, or -1 when the body is not JSON or has no string
 * `reason` (then |reason| is "" and |*timestamp_ms| is -1). Never reads
 * past |len|.
 */
int apns_response_parse(const uint8_t *body, size_t len, char *reason,
                        size_t reasonlen, int64_t *timestamp_ms);

/* ---- JSON helpers shared with fcm/message.c ---------------------------- */

/*
 * A bounded JSON writer. It writes while there is room (always leaving a
 * byte for the NUL) and keeps counting past the end, so a run with
 * cap == 0 measures the output. `len` is the full length produced.
 */
struct apns_payload_writer {
    char *out;       /* may be NULL when cap == 0 */
    size_t cap;
    size_t len;
};

/* Append |n| raw bytes (JSON syntax we trust). */
void apns_payload_put_raw(struct apns_payload_writer *w, const char *s, size_t n);
/* Append the NUL-terminated |s| raw. */
void apns_payload_put_lit(struct apns_payload_writer *w, const char *s);
/*
 * Append the first |n| bytes of |s| as a quoted JSON string, plus "…"
 * inside the quotes when |ellipsis| is true. |s| may be NULL when n == 0.
 */
void apns_payload_put_text(struct apns_payload_writer *w, const char *s, size_t n,
                           bool ellipsis);
/* Append NUL-terminated |s| (NULL = "") as a quoted JSON string. */
void apns_payload_put_str(struct apns_payload_writer *w, const char *s);
/* Append a decimal integer. */
void apns_payload_put_int(struct apns_payload_writer *w, long long v);
/* NUL-terminate what was written; true if everything fit within cap. */
bool apns_payload_finish(struct apns_payload_writer *w);

/* Bytes |s| (|n| bytes) takes inside a JSON string with our escaping. */
size_t apns_payload_escaped_len(const char *s, size_t n);

/* How much of a title and body to keep, from apns_payload_fit. */
struct apns_payload_cut {
    size_t title_len;      /* bytes of the title to keep */
    bool title_ellipsis;   /* append "…" to the title */
    size_t body_len;
    bool body_ellipsis;
};

/*
 * Decide how to cut |title| and |body| (NULL = "") so that a document
 * whose other parts take |fixed| bytes (measured with both texts empty,
 * quotes included) fits in |max| bytes: the body is cut first, then the
 * title, each on a character boundary with trailing spaces dropped before
 * the "…". Returns 0, or -1 when |fixed| > |max|.
 */
int apns_payload_fit(size_t fixed, size_t max, const char *title, const char *body,
                     struct apns_payload_cut *cut);

/* Writes the document of |n| with its title and body cut as |cut| says. */
typedef void (*apns_payload_write_fn)(struct apns_payload_writer *w, const void *n,
                                      const struct apns_payload_cut *cut);

/*
 * Write |n|'s document into |out| (|outcap| bytes, NUL-terminated): whole
 * if it fits in |max_bytes|, else with |title| and |body| (|n|'s texts)
 * cut by apns_payload_fit. Returns 0 and the length in |outlen|, or -1
 * (|out| empty, |outlen| 0) when even the cut document does not fit.
 */
int apns_payload_write_fitted(apns_payload_write_fn write, const void *n, const char *title,
                              const char *body, size_t max_bytes, char *out, size_t outcap,
                              size_t *outlen);

#endif
