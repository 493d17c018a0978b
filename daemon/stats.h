/*
 * Process statistics for /metrics (Prometheus text) and /v1/stats (JSON).
 *
 * Every metric family is listed once, in STATS_FAMILIES below (the
 * X-macro): name, type, label names, help text. The same list generates
 * the enum, the Prometheus output and the JSON output, so they cannot
 * drift apart. Labeled series are created on first use (tenants and apps
 * are not known in advance) and kept in a small hash table; the number of
 * distinct series is capped (STATS_MAX_SERIES) so a flood of tenants cannot
 * exhaust memory (further series are folded into tenant="_other").
 *
 * Hot-path calls (stats_inc, stats_delivery, stats_observe...) are cheap:
 * no allocation after a series exists. Not thread-safe (one loop).
 */
#ifndef VARSEL_STATS_H
#define VARSEL_STATS_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

/* X(id, name, type, "label,label", help). Types: COUNTER, GAUGE, HISTOGRAM. */
#define STATS_FAMILIES(X)                                                        \
    X(DELIVERIES, "varsel_deliveries_total", COUNTER, "app,platform,tenant,outcome", \
      "Deliveries settled, by outcome (sent, retrying, invalid_token, failed, expired)") \
    X(PROVIDER_RESPONSES, "varsel_provider_responses_total", COUNTER,            \
      "provider,app,status,reason",                                              \
      "Provider answers by HTTP status and reason (status 0: no HTTP answer)")   \
    X(PROVIDER_RTT, "varsel_provider_request_duration_seconds", HISTOGRAM, "provider", \
      "Provider round trip of one request, send to answer")                     \
    X(PUBLISH_TO_ACCEPT, "varsel_publish_to_accept_seconds", HISTOGRAM, "provider", \
      "From the event's publish time (stream id) to the provider accepting it")  \
    X(EVENTS, "varsel_events_total", COUNTER, "result",                          \
      "Stream entries handled: acked, dead_lettered, device, released")          \
    X(DEAD_LETTERS, "varsel_dead_letters_total", COUNTER, "code",                \
      "Entries and deliveries written to the dead-letter stream, by code")      \
    X(RETRIES, "varsel_retries_total", COUNTER, "result",                        \
      "Durable retries: scheduled, claimed, gave_up")                            \
    X(ESCALATIONS, "varsel_escalations_total", COUNTER, "tenant,why",              \
      "Absence alerts written to the escalations stream (no device reached)")   \
    X(ERASURES, "varsel_erasures_total", COUNTER, "tenant",                      \
      "user.erase events carried out")                                           \
    X(LOOKUPS, "varsel_device_lookups_total", COUNTER, "",                       \
      "Recipients whose devices were looked up in the registry")                 \
    X(LOOKUP_BATCHES, "varsel_device_lookup_batches_total", COUNTER, "",         \
      "Pipelined registry lookups (recipients per batch = lookups / batches)")  \
    X(PRUNED, "varsel_devices_pruned_total", COUNTER, "",                        \
      "Devices removed for not registering again within token_max_age_days")    \
    X(INFLIGHT, "varsel_deliveries_inflight", GAUGE, "",                         \
      "Deliveries sent to a provider and not yet answered")                      \
    X(JOBS, "varsel_events_in_progress", GAUGE, "",                              \
      "Stream entries being worked on by this process")                          \
    X(H2_CONNECTIONS, "varsel_provider_connections", GAUGE, "provider,app,environment", \
      "Open HTTP/2 connections per provider pool")                               \
    X(H2_STREAMS, "varsel_provider_streams", GAUGE, "provider,app,environment",  \
      "Requests in flight per provider pool")                                    \
    X(H2_QUEUED, "varsel_provider_queued", GAUGE, "provider,app,environment",    \
      "Requests waiting for a stream slot per provider pool")                    \
    X(H2_MAX_STREAMS, "varsel_provider_max_streams_per_connection", GAUGE,       \
      "provider,app,environment", "Most concurrent streams seen on one connection") \
    X(H2_CONNECTS, "varsel_provider_connects_total", COUNTER, "provider,app,environment", \
      "Connections established (reconnects included)")                           \
    X(H2_CONNECT_FAILURES, "varsel_provider_connect_failures_total", COUNTER,    \
      "provider,app,environment", "Failed connection attempts")                  \
    X(H2_GOAWAYS, "varsel_provider_goaways_total", COUNTER, "provider,app,environment", \
      "GOAWAY frames received")                                                  \
    X(H2_CONN_LOST, "varsel_provider_connections_lost_total", COUNTER,           \
      "provider,app,environment", "Connections lost with requests in flight")    \
    X(STREAM_LAG, "varsel_stream_lag", GAUGE, "stream",                          \
      "Entries in the stream not yet read by the group (XINFO GROUPS lag)")      \
    X(STREAM_PENDING, "varsel_stream_pending", GAUGE, "stream",                  \
      "Entries read but not acknowledged (XPENDING)")                            \
    X(RETRY_DEPTH, "varsel_retry_scheduled", GAUGE, "",                          \
      "Deliveries waiting in the durable retry schedule (plus leased)")         \
    X(DEAD_LENGTH, "varsel_dead_letter_stream_length", GAUGE, "",                \
      "Entries in the dead-letter stream")                                       \
    X(TOKEN_REFRESHES, "varsel_oauth_token_refreshes_total", COUNTER, "app,result", \
      "FCM OAuth2 access-token requests (ok, failed)")                           \
    X(CREDENTIAL_EXPIRY, "varsel_credential_expiry_seconds", GAUGE, "app,credential", \
      "Seconds until a credential expires, where known")                        \
    X(REDIS_CONNECTED, "varsel_redis_connected", GAUGE, "connection",            \
      "1 when the Redis connection is up")                                       \
    X(REDIS_WAITS, "varsel_redis_waits_total", COUNTER, "result",                \
      "WAIT for [redis] wait_replicas before XACK: ok, short (fewer replicas "   \
      "had the writes: not acknowledged yet), failed")                           \
    X(REDIS_MASTER_CHANGES, "varsel_redis_master_changes_total", COUNTER,        \
      "connection", "Times Sentinel gave a new master address (failovers)")      \
    X(ACKS_ALREADY_DONE, "varsel_stream_acks_not_pending_total", COUNTER, "",    \
      "XACKs that found the entry no longer pending (another consumer or a "     \
      "failover finished it first)")                                             \
    X(BUILD_INFO, "varsel_build_info", GAUGE, "version",                          \
      "Build information (always 1)")

enum stats_family {
#define STATS_ENUM_(id, name, type, labels, help) STATS_##id,
    STATS_FAMILIES(STATS_ENUM_)
#undef STATS_ENUM_
    STATS_FAMILY_COUNT
};

#define STATS_MAX_SERIES 4096
#define STATS_MAX_LABELS 4

/* Histogram buckets in seconds (Prometheus "le"), shared by all histograms. */
#define STATS_BUCKETS 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300

/* Create the registry (once per process) and free it. */
void stats_init(const char *version);
void stats_free(void);

/*
 * Add |v| to the series of |family| with label values |values| (as many as
 * the family has labels, in order; NULL or "" become "") — counters; set
 * it — gauges; observe |v| — histograms.
 */
void stats_add(enum stats_family f, const char *const *values, double v);
void stats_set(enum stats_family f, const char *const *values, double v);
void stats_observe(enum stats_family f, const char *const *values, double v);

/* Shorthands for the hot path. */
void stats_delivery(const char *app, const char *platform, const char *tenant,
                    const char *outcome);
void stats_provider_answer(const char *provider, const char *app, int status,
                           const char *reason);

/*
 * Pull-style values (pool gauges, XINFO figures): |fn| is called before
 * every rendering to stats_set what it knows. At most 16 collectors.
 */
typedef void (*stats_collector_fn)(void *arg);
void stats_add_collector(stats_collector_fn fn, void *arg);

/* Prometheus text exposition format 0.0.4; malloc'd, *len set. */
char *stats_render_prometheus(size_t *len);
/* The same figures as JSON: {"families":{name:{"type","help","series":[{"labels":{..},"value"|"buckets","sum","count"}]}}}. */
cJSON *stats_render_json(void);

#endif
