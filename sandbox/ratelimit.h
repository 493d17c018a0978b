/*
 * Per-key rate limits for varsel-sandbox: the per-device-token quotas of
 * FCM (240/min, 5000/h, collapsible bursts of 20 refilled 1 per 3 min;
 * PROTOCOLS.md §2 "Quotas") and APNs (429 TooManyRequests "to one device
 * token", numbers undocumented), and FCM's optional per-project quota.
 *
 * A table holds up to SBX_RATE_MAX_LIMITS limits, each a token bucket of
 * |burst| messages that refills one message every |interval_us|
 * (continuously, not on clock-aligned minutes, as FCM's quotas). Buckets
 * are kept per key (a device token, a project) in a bounded hash table:
 * one lookup per request, O(1). A key whose buckets are all full again is
 * idle and is forgotten (the oldest idle keys are dropped as requests
 * arrive); when the table is full the least recently used key is dropped
 * even if it is not idle (counted as evicted_active), so memory stays
 * bounded whatever the clients send.
 *
 * Each bucket is kept as a GCRA "theoretical arrival time": an int64 per
 * limit and key, exact integer arithmetic, no timers. The clock is the
 * caller's (|now_ms|), so tests drive time by hand.
 *
 * Also here: the command-line options setting the per-device limits of
 * both fakes (struct sbx_device_limits), so main.c and the tests share the
 * defaults and the --bench rule.
 */
#ifndef VARSEL_SANDBOX_RATELIMIT_H
#define VARSEL_SANDBOX_RATELIMIT_H

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SBX_RATE_MAX_LIMITS 4           /* limits per table */
#define SBX_RATE_MAX_LIST 3             /* limits in one RATE[,RATE...] option */
#define SBX_RATE_DEFAULT_KEYS 65536     /* keys a table tracks at most */

struct sbx_rate_limit {
    uint32_t burst;                     /* messages a full bucket holds, >= 1 */
    int64_t interval_us;                /* one message comes back every interval_us */
    char name[48];                      /* short, for the record and summary:
                                           "device 240/min", "collapsible 20+1/180s" */
    char text[80];                      /* for error texts: "240 per minute" */
};

struct sbx_rate;                        /* opaque table */

struct sbx_rate_stats {
    uint64_t allowed;                   /* requests that took a message */
    uint64_t limited[SBX_RATE_MAX_LIMITS]; /* refused, by the limit that refused */
    size_t keys, peak_keys, max_keys;   /* tracked now, at most so far, capacity */
    uint64_t evicted_idle;              /* forgotten with full buckets (no effect) */
    uint64_t evicted_active;            /* dropped while not full (table full) */
};

/*
 * A table for the |n| limits in |limits| (copied; 1..SBX_RATE_MAX_LIMITS)
 * tracking at most |max_keys| keys (0 = SBX_RATE_DEFAULT_KEYS). Returns
 * NULL when |n| is 0 (no limits: callers treat a NULL table as "allow").
 */
struct sbx_rate *sbx_rate_new(const struct sbx_rate_limit *limits, size_t n, size_t max_keys);

/* Free |r| and every key; NULL is allowed. */
void sbx_rate_free(struct sbx_rate *r);

/*
 * One message for |key| (|len| bytes, any bytes) at |now_ms|, counted
 * against the limits whose bit (1u << index) is set in |mask|. Returns -1
 * when every such bucket had a message (each gives one). Otherwise returns
 * the index of the limit that refused (the one with the longest wait),
 * sets |*wait_ms| to the time until the request would pass (>= 1), and
 * takes nothing from any bucket: a refused request does not count.
 */
int sbx_rate_take(struct sbx_rate *r, const char *key, size_t len, unsigned mask,
                  int64_t now_ms, int64_t *wait_ms);

/*
 * sbx_rate_take without taking: what it would answer now. A refusal is
 * counted in the stats as by sbx_rate_take; a pass is not counted (take
 * afterwards). For checking two tables before taking from either.
 */
int sbx_rate_peek(struct sbx_rate *r, const char *key, size_t len, unsigned mask,
                  int64_t now_ms, int64_t *wait_ms);

/* The limit at |index| (as passed to sbx_rate_new). */
const struct sbx_rate_limit *sbx_rate_limit_at(const struct sbx_rate *r, int index);

/* Counters of |r|. */
const struct sbx_rate_stats *sbx_rate_stats(const struct sbx_rate *r);

/*
 * The counters as JSON for the summary line: {"allowed", "limited":
 * {NAME: n, ...}, "keys", "peak_keys", "max_keys", "evicted_idle",
 * "evicted_active"}. Caller owns.
 */
cJSON *sbx_rate_summary(const struct sbx_rate *r);

/*
 * Parse "N/UNIT" with UNIT "s", "min" or "h", optionally preceded by a
 * count ("10/30s" = 10 per 30 seconds): a bucket of N refilled N per
 * period. |prefix| starts the name ("device" → "device 240/min"). Returns
 * 0, or -1 with |err| filled (N 1..100000000, period 1 s..24 h, at most
 * 1,000,000 per second).
 */
int sbx_rate_parse(const char *spec, const char *prefix, struct sbx_rate_limit *out,
                   char *err, size_t errlen);

/*
 * "off", or a comma-separated list of up to SBX_RATE_MAX_LIST rates (see
 * sbx_rate_parse) into |out|, |*n| set to their number (0 for "off").
 * Returns 0 or -1 with |err| filled; |out| and |*n| are unchanged then.
 */
int sbx_rate_parse_list(const char *arg, const char *prefix, struct sbx_rate_limit *out,
                        size_t *n, char *err, size_t errlen);

/*
 * A collapsible-message limit: a burst of |burst| refilled one message
 * every |refill_s| seconds (name "collapsible 20+1/180s").
 */
void sbx_rate_collapsible(struct sbx_rate_limit *out, uint32_t burst, uint32_t refill_s);

/* ---- the per-device limits of the command line --------------------------------- */

#define SBX_FCM_DEVICE_RATE_DEFAULT "240/min,5000/h"  /* FCM's documented Android limits */
#define SBX_FCM_COLLAPSIBLE_BURST_DEFAULT 20          /* FCM: burst 20 per device per app */
#define SBX_FCM_COLLAPSIBLE_REFILL_DEFAULT 180        /* FCM: +1 per 3 min */
#define SBX_APNS_DEVICE_RATE_DEFAULT "240/min,5000/h" /* sandbox's choice (Apple: none) */

struct sbx_device_limits {
    struct sbx_rate_limit fcm[SBX_RATE_MAX_LIST]; /* every FCM message to one token */
    size_t nfcm;
    struct sbx_rate_limit collapsible;  /* FCM messages with android.collapse_key */
    bool has_collapsible;
    uint32_t collapsible_burst, collapsible_refill_s;
    struct sbx_rate_limit apns[SBX_RATE_MAX_LIST]; /* every APNs push to one token */
    size_t napns;
    bool fcm_given, collapsible_given, apns_given; /* set by an option */
};

/* The defaults: FCM 240/min and 5000/h per token, collapsible burst 20
 * +1/180 s; APNs 240/min and 5000/h per token. */
void sbx_device_limits_init(struct sbx_device_limits *l);

/*
 * Apply one option |name| (without "--") with |arg|:
 *   fcm-device-rate RATE[,RATE...]|off    every message to one FCM token
 *   fcm-device-rate-limit N               older spelling of fcm-device-rate N/min
 *   fcm-collapsible-burst N|off           collapsible messages per token, burst
 *   fcm-collapsible-refill S              seconds per message refilled (1..86400)
 *   apns-device-rate RATE[,RATE...]|off   every push to one APNs token
 * Returns 1 if applied, 0 if |name| is not one of these, -1 with |err|
 * filled when |arg| is invalid.
 */
int sbx_device_limits_option(struct sbx_device_limits *l, const char *name, const char *arg,
                             char *err, size_t errlen);

/* Names accepted by sbx_device_limits_option, NULL-terminated. */
extern const char *const sbx_device_limits_option_names[];

/* --bench: drop every limit not set by an option (benchmarks send many
 * notifications to one token; an explicit option still applies). */
void sbx_device_limits_bench(struct sbx_device_limits *l);

/* "FCM 240/min,5000/h + collapsible 20+1/180s; APNs 240/min,5000/h" (or
 * "off") into |buf| for the start-up log line. */
void sbx_device_limits_describe(const struct sbx_device_limits *l, char *buf, size_t len);

#endif
