/*
 * What a provider client (apns/, fcm/) reports for one notification, in
 * provider-neutral terms. The pipeline turns it into a receipt.
 */
#ifndef VARSEL_PUSH_H
#define VARSEL_PUSH_H

#include <stdint.h>

enum push_outcome {
    PUSH_SENT = 0,        /* accepted by the provider */
    PUSH_INVALID_TOKEN,   /* token is dead: remove it, never retry */
    PUSH_TRANSIENT,       /* may succeed later: retry with backoff */
    PUSH_PERMANENT,       /* request or configuration error: never retry */
};

struct push_result {
    enum push_outcome outcome;
    int http_status;          /* 0 when no HTTP answer came */
    char reason[128];         /* provider reason or transport error, "" on success */
    char provider_id[192];    /* apns-id or FCM message name */
    int64_t token_timestamp_ms; /* APNs 410 timestamp, else -1 */
    int retry_after_s;        /* Retry-After from the provider, else -1 */
    uint64_t rtt_ms;          /* provider round trip of the last attempt */
};

typedef void (*push_done_cb)(const struct push_result *r, void *user);

const char *push_outcome_name(enum push_outcome o);

#endif
