/*
 * One notification to one device: building the provider request, sending
 * it, deciding what its answer means (sent, dead token, retry later, give
 * up) and writing that down in Redis (queue/receipts.h). Also the retry
 * poller, which claims due retries from the durable schedule and sends them
 * again.
 *
 * A delivery is created by the pipeline for a job (owner != NULL) or by the
 * retry poller (owner == NULL, freed here). When its settlement is written
 * (or the context is closed before that), ctx->on_done(d) is called once;
 * the owner then frees it with delivery_free.
 */
#ifndef VARSEL_DELIVERY_H
#define VARSEL_DELIVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/push.h"
#include "queue/event.h"
#include "queue/receipts.h"
#include "queue/redis.h"
#include "queue/registry.h"

struct pipeline_app;
struct templates;
struct delivery;

struct delivery_ctx {
    uv_loop_t *loop;
    struct redis_conn *cmd;          /* borrowed */
    struct settle_keys keys;
    const struct pipeline_app *apps; /* borrowed */
    size_t n_apps;
    const struct templates *templates;
    int64_t retry_base_ms;           /* first backoff step */
    int64_t retry_cap_ms;            /* largest backoff step */
    int64_t lease_ms;                /* a claimed retry's lease */
    size_t window;                   /* deliveries in flight at most */
    size_t inflight;                 /* sent to a provider, no answer yet */
    size_t active;                   /* created and not yet done (outcome
                                        written or released): the window
                                        counts these */
    size_t expanding;                /* recipients whose device lookups are
                                        out (the pipeline's): the window
                                        counts these too */
    bool stopping;                   /* no new retries are claimed */
    bool closed;                     /* Redis is gone: release, write nothing */
    void (*on_done)(struct delivery *d, void *arg); /* job deliveries only */
    void (*on_room)(void *arg);      /* a retry finished: the window has room */
    void *arg;
    /* internal */
    struct delivery *redo;           /* settlements to write again */
    struct delivery *retries;        /* claimed retries in flight (list) */
    size_t n_retries;
    bool claiming;
    struct receipts_batch *settle_batch; /* settlements of this loop turn */
    struct templates_cache *render_cache; /* texts of the event being expanded */
    const struct event *thread_ev;   /* the event thread[] and collapse[] are
                                        of (forgotten with it) */
    char thread[160];                /* its thread id (APNs thread-id, FCM tag) */
    char collapse[65];               /* its apns-collapse-id */
    uv_timer_t timer;                /* retry poller and lease renewal */
    struct devlimit *fcm_limit;      /* per-device pacing of FCM sends (owned) */
    uint64_t last_renew_ms;
};

/* Start the retry poller; the context lives inside its owner. */
void delivery_ctx_init(struct delivery_ctx *ctx, uv_loop_t *loop);
/* Stop the poller and close its timer; |done| fires after the close. */
void delivery_ctx_close(struct delivery_ctx *ctx, void (*done)(void *arg), void *arg);
/* Write the settlements that failed while Redis was down. */
void delivery_ctx_flush(struct delivery_ctx *ctx);
/* Redis is gone for good (shutdown): mark closed and release every
 * settlement still waiting to be written (nothing more is written). */
void delivery_ctx_abandon(struct delivery_ctx *ctx);
/* Number of settlements waiting for Redis. */
size_t delivery_ctx_unwritten(const struct delivery_ctx *ctx);

/* What the tenant and the guardian's preferences decide for one delivery. */
struct delivery_opts {
    const char *default_locale;  /* tenant's, for devices without a locale (NULL: nb) */
    bool preview;                /* the tenant shows message previews */
    int64_t deadline_ms;         /* > 0: overrides the TTL (absence.alert: end of
                                    the school day) */
    int64_t hold_until_ms;       /* > 0: quiet hours; held (durably) until then */
    bool muted;                  /* the guardian muted this type: not sent */
};

/*
 * Build the delivery of |ev| (published at |publish_ms|) to |user|'s device
 * |dev| (copied); |badge| is the recipient's unread count or -1; |o| may be
 * NULL (defaults). Rendering or size problems do not fail here: the
 * delivery then settles as "failed" with the reason when started.
 */
struct delivery *delivery_new(struct delivery_ctx *ctx, void *owner, const struct event *ev,
                              int64_t publish_ms, const char *user, int badge,
                              const struct registry_device *dev,
                              const struct delivery_opts *o);

/* |ev| is about to be freed: forget what was rendered for it. */
void delivery_forget_event(struct delivery_ctx *ctx, const struct event *ev);

/* Send it (or settle it at once when it cannot be sent). */
void delivery_start(struct delivery *d);

void *delivery_owner(const struct delivery *d);
/* true when the settlement was written to Redis. */
bool delivery_settled(const struct delivery *d);
/* The status written ("sent", "retrying", ...), or NULL. */
const char *delivery_status(const struct delivery *d);
void delivery_free(struct delivery *d);

/*
 * Backoff for attempt |attempt| (1 = after the first failure): full jitter,
 * uniform in [0, min(cap, base * 2^(attempt-1))], and never before the
 * provider's Retry-After. |rnd| is a uniform random number in [0, 1).
 */
int64_t delivery_backoff_ms(int64_t base_ms, int64_t cap_ms, int attempt,
                            int retry_after_s, double rnd);

/* How long a notification of type |t| stays useful (seconds). */
int64_t delivery_default_ttl_s(enum event_type t);

#endif
