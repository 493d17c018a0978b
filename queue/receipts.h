/*
 * Delivery receipts and the per-event status hash.
 *
 *   <prefix>receipts                    stream, one entry per settled attempt:
 *       event tenant user device platform app status attempt provider_id
 *       http_status reason latency_ms at
 *   <prefix>{TENANT}:status:EVENTID     hash USER:DEVICE -> status, with a TTL
 *
 * Both are written by one Lua script, so a receipt never exists without its
 * status (and the status decides whether a replayed event sends again).
 */
#ifndef VARSEL_RECEIPTS_H
#define VARSEL_RECEIPTS_H

#include <stdbool.h>
#include <stdint.h>

#include "queue/redis.h"

struct receipt {
    const char *event, *tenant, *user, *device, *platform, *app;
    const char *status;       /* sent, retrying, invalid_token, failed, expired */
    int attempt;              /* from 1 */
    const char *provider_id;  /* apns-id or FCM message name; "" when none */
    int http_status;          /* 0 when no HTTP answer came */
    const char *reason;       /* provider reason or error; "" when none */
    int64_t latency_ms;       /* publish (stream id time) -> settle */
    int64_t at_ms;            /* settle time */
};

void receipts_init(struct redis_conn *c);

/*
 * Write the receipt and set the status field, atomically. |maxlen| caps the
 * receipts stream (approximately), |ttl_s| is the status hash's TTL.
 * Reply: integer 1. Returns 0 or -1 (not connected).
 */
int receipts_settle(struct redis_conn *c, const char *prefix, long maxlen, int ttl_s,
                    const struct receipt *r, redisCallbackFn *fn, void *priv);

/* HGETALL of one event's status hash. */
int receipts_status_lookup(struct redis_conn *c, const char *prefix, const char *tenant,
                           const char *event_id, redisCallbackFn *fn, void *priv);

/* true for statuses after which a delivery is never sent again. */
bool receipts_status_is_final(const char *status);

#endif
