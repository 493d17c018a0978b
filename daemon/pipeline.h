/*
 * The delivery pipeline of one varseld process: intake from the events
 * stream, expansion of recipients into devices, delivery through the
 * provider clients, and settlement (receipts, status, token clean-up,
 * acknowledgement). See docs/architecture.md.
 */
#ifndef VARSEL_PIPELINE_H
#define VARSEL_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "queue/redis.h"

struct apns_client;
struct fcm_client;
struct templates;
struct config;

/* One configured app and its provider clients (borrowed). */
struct pipeline_app {
    const char *name;
    struct apns_client *apns;    /* NULL when the app has no APNs credentials */
    struct fcm_client *fcm;      /* NULL when the app has no FCM service account */
    int retry_max_attempts;
};

struct pipeline_config {
    struct redis_conn_config redis;
    const char *const *streams;  /* the bulk event streams, |n_streams| >= 1 */
    size_t n_streams;            /* at most 8 */
    const char *urgent_stream;   /* NULL or "" = none */
    const char *group, *consumer, *prefix;
    int batch_size;              /* entries per XREADGROUP */
    int block_ms;
    long claim_idle_ms;
    int status_ttl_s;
    long receipts_maxlen, dead_maxlen, escalations_maxlen;
    int64_t dead_payload_ttl_s;  /* originals of dead letters, for replay; 0 = not kept */
    int64_t token_max_age_ms;    /* device age sweep: 0 = never */
    int64_t trim_interval_ms;    /* 0 = never trim the events stream */
    size_t inflight_window;      /* deliveries in flight at most */
    int64_t retry_base_ms;       /* first backoff step (full jitter below it) */
    int64_t retry_cap_ms;        /* largest backoff step */
    int64_t retry_lease_ms;      /* how long a claimed retry is ours */
    int wait_replicas;           /* WAIT for this many replicas before XACK; 0 = no WAIT */
    int wait_timeout_ms;         /* WAIT's timeout */
    int64_t consumer_gone_ms;    /* remove consumers idle this long with nothing
                                    pending and no name lease; 0 = never */
    struct pipeline_app *apps;   /* borrowed, |n_apps| of them */
    size_t n_apps;
    const struct templates *templates; /* borrowed; see pipeline_set_templates */
    const struct config *config; /* borrowed: tenants ([tenant NAME]), token age */
};

struct pipeline;

/* Create the pipeline and start connecting to Redis. Strings in |cfg| are
 * borrowed and must outlive the pipeline. */
struct pipeline *pipeline_new(uv_loop_t *loop, const struct pipeline_config *cfg);

/* Swap the templates after a reload (the old ones may be freed afterwards). */
void pipeline_set_templates(struct pipeline *pl, const struct templates *t);

/*
 * Stop reading, let deliveries in flight settle for at most |timeout_ms|,
 * then close the Redis connections. Nothing unsettled is acknowledged: its
 * entry stays pending for this consumer (or XAUTOCLAIM). |done| fires once.
 * Provider clients must be closed after |done| and before pipeline_free.
 */
void pipeline_stop(struct pipeline *pl, uint32_t timeout_ms,
                   void (*done)(void *arg), void *arg);

/* Free everything; call after the provider clients are closed. */
void pipeline_free(struct pipeline *pl);

/* Both Redis connections are up, the consumer group exists and this
 * process holds its consumer name: the pipeline is taking events. */
bool pipeline_ready(const struct pipeline *pl);

/* Counters for logs and tests. */
struct pipeline_stats {
    uint64_t events, dead, deliveries, sent, invalid_token, failed, skipped, acked;
    size_t inflight, jobs;
};
void pipeline_get_stats(const struct pipeline *pl, struct pipeline_stats *out);

#endif
