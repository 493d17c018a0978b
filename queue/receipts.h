/*
 * Settlement writes: delivery receipts, the per-event status hash, and the
 * durable retry schedule, in one Lua script per settled attempt.
 *
 *   <prefix>receipts                    stream, one entry per settled attempt:
 *       event tenant user device platform app status attempt provider_id
 *       http_status reason latency_ms at
 *   <prefix>{TENANT}:status:EVENTID     hash USER:DEVICE -> status, with a TTL
 *   <prefix>retry                       zset RETRY_ID -> due time (ms)
 *   <prefix>retry:lease                 zset RETRY_ID -> lease expiry (ms), claimed
 *   <prefix>retry:data                  hash RETRY_ID -> JSON of the request to resend
 *   <prefix>dead                        stream: given-up deliveries (and bad events)
 *
 * Because receipt, status and schedule change together, a crash can never
 * leave a delivery both "retrying" and unscheduled, or scheduled twice.
 *
 * Settlements are batched (struct receipts_batch): those queued during one
 * turn of the event loop go to Redis in one EVALSHA whose script settles
 * each on its own (in a pcall; the statuses of those that succeeded are
 * written last, one HSET per status hash) and answers the count when all
 * succeeded, else one reply element per settlement; every caller still
 * gets its own reply.
 */
#ifndef VARSEL_RECEIPTS_H
#define VARSEL_RECEIPTS_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "queue/redis.h"

struct receipt {
    const char *event, *tenant, *user, *device, *platform, *app;
    const char *status;       /* sent, retrying, invalid_token, failed, expired, opened */
    int attempt;              /* from 1 */
    const char *provider_id;  /* apns-id or FCM message name; "" when none */
    int http_status;          /* 0 when no HTTP answer came */
    const char *reason;       /* provider reason or error; "" when none */
    int64_t latency_ms;       /* publish (stream id time) -> settle */
    int64_t at_ms;            /* settle time */
};

enum settle_mode {
    SETTLE_FINAL = 0,   /* final outcome: forget any retry state */
    SETTLE_RETRY,       /* schedule (or reschedule) a retry at |due_ms| */
    SETTLE_GIVE_UP,     /* final, and a dead-letter entry naming the last error */
};

struct settle_opts {
    enum settle_mode mode;
    const char *retry_id;     /* member in the retry sets; NULL = not a retry */
    int64_t due_ms;           /* SETTLE_RETRY */
    const char *retry_data;   /* SETTLE_RETRY: JSON stored for the resend;
                                 SETTLE_GIVE_UP: copied into the dead letter
                                 (field retry_data) for a later replay */
    const char *dead_reason;  /* SETTLE_GIVE_UP */
};

struct settle_keys {
    const char *prefix;
    long receipts_maxlen, dead_maxlen;
    int status_ttl_s;
    int64_t dead_payload_ttl_s;  /* a given-up delivery's request, kept for replay
                                    under <prefix>dead:payload:TENANT:USER:DEVICE:EVENT
                                    (named by the dead letter's original_key); 0 = not */
};

/* Register the scripts with |c| (once per connection object). */
void receipts_init(struct redis_conn *c);

/*
 * A settlement batcher on |c| for the keys |k| (copied). Settlements added
 * during a loop iteration are sent together just before the loop next
 * waits for I/O (a uv_prepare handle), or at once when the batch is full.
 */
struct receipts_batch;
struct receipts_batch *receipts_batch_new(uv_loop_t *loop, struct redis_conn *c,
                                          const struct settle_keys *k);

/*
 * Queue the settlement of |r| with |opts| (NULL = final, not a retry); the
 * strings are copied now. |fn| later gets this settlement's own reply:
 * integer 1, an error, or NULL when the connection dropped first (also
 * when it dropped before the batch was sent). Returns 0, or -1 when the
 * connection is not ready or the batcher is closing (|fn| is then never
 * called). Never calls |fn| from inside this function.
 */
int receipts_batch_add(struct receipts_batch *b, const struct receipt *r,
                       const struct settle_opts *opts, redisCallbackFn *fn, void *priv);

/*
 * The reply a settlement's callback gets: |reply| is the settle script's
 * answer to a batch of |n| settlements and |i| the settlement's place in
 * it. The integer |n| (all succeeded) gives each an integer 1; an array of
 * |n| its own element; NULL or an error is passed on as is; anything else
 * (another count, array size or type) an error reply. Exposed for tests.
 */
redisReply *receipts_batch_reply_for(redisReply *reply, size_t n, size_t i);

/* Send what is queued now (callbacks get NULL at once if not connected). */
void receipts_batch_flush(struct receipts_batch *b);

/* Flush, then free the batcher once libuv has closed its handle. NULL is
 * allowed. */
void receipts_batch_close(struct receipts_batch *b);

/*
 * Claim up to |count| due retries: leases that expired go back to the
 * schedule first (a process died holding them), then due members move to
 * the lease set until |now_ms| + |lease_ms|. Reply: array of
 * [id, data, id, data, ...].
 */
int receipts_claim_retries(struct redis_conn *c, const char *prefix, int64_t now_ms,
                           int64_t lease_ms, int count, redisCallbackFn *fn, void *priv);

/* Extend the lease of retries still in flight here. */
int receipts_renew_leases(struct redis_conn *c, const char *prefix, int64_t until_ms,
                          const char *const *ids, size_t n);

/* HGETALL of one event's status hash. */
int receipts_status_lookup(struct redis_conn *c, const char *prefix, const char *tenant,
                           const char *event_id, redisCallbackFn *fn, void *priv);

/* true for statuses after which a delivery is never sent again by a replay:
 * the final ones, and "retrying" (the retry schedule owns it). */
bool receipts_status_is_settled(const char *status);

#endif
