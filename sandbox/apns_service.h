/*
 * The APNs fake as a struct sbx_service: binds sandbox/apns.c's validation
 * to connections (provider-token state, the MAX_CONCURRENT_STREAMS dance),
 * the per-device-token rate limit (429 TooManyRequests), fault injection,
 * the dead-token files and the request record. One instance per listener
 * (production or sandbox environment); instances share the faults, record
 * and token files they are given, and each keeps its own rate table (the
 * environments are separate services with separate tokens).
 */
#ifndef VARSEL_SANDBOX_APNS_SERVICE_H
#define VARSEL_SANDBOX_APNS_SERVICE_H

#include "sandbox/apns.h"
#include "sandbox/counts.h"
#include "sandbox/faults.h"
#include "sandbox/ratelimit.h"
#include "sandbox/record.h"
#include "sandbox/server.h"
#include "sandbox/tokens.h"

#include <cJSON.h>
#include <stdbool.h>

#define SBX_APNS_STREAMS_OPEN 1000   /* limit after a valid provider token */
#define SBX_APNS_STREAMS_CLOSED 1    /* limit before it / after a rejection */

struct sbx_apns_service_options {
    struct sbx_apns_config cfg;          /* template; env and token sets are set per use */
    struct sbx_faults *faults;           /* shared; may be NULL */
    struct sbx_record *record;           /* shared; may be NULL (recording off) */
    struct sbx_tokens_file *unregistered; /* shared; may be NULL */
    struct sbx_tokens_file *bad_tokens;   /* shared; may be NULL */
    struct sbx_tokens_file *env_tokens;   /* shared; may be NULL */
    bool bench;                          /* 1000 streams from the start, never lowered */
    struct sbx_rate_limit device_limits[SBX_RATE_MAX_LIST]; /* per device token; */
    size_t ndevice_limits;               /* 0 = no limit */
    size_t rate_max_keys;                /* tokens tracked; 0 = SBX_RATE_DEFAULT_KEYS */
};

struct sbx_apns_service {
    struct sbx_service svc;              /* hand &svc to sbx_server_listen */
    struct sbx_apns_service_options opt;
    struct sbx_counts counts;            /* answers by reason ("200" for successes) */
    struct sbx_rate *device_rate;        /* NULL: no per-device limit */
    /* Reply strings; the server copies them before on_request returns. */
    char reply_id[37], reply_unique_id[37], reply_body[160], reply_retry[16];
};

/*
 * Initialise |s| for environment |env| with |opt| (copied; the pointers in
 * it are borrowed and must outlive |s|). |s| must stay at a fixed address
 * while the server uses it.
 */
void sbx_apns_service_init(struct sbx_apns_service *s, const struct sbx_apns_service_options *opt,
                           enum sbx_env env);

/* Free the rate table (the service must no longer be in use). */
void sbx_apns_service_clear(struct sbx_apns_service *s);

/* {"production":{"200":n,"BadDeviceToken":n,...}}-style counts; caller owns. */
cJSON *sbx_apns_service_counts(const struct sbx_apns_service *s);

/* "production" or "sandbox". */
const char *sbx_env_name(enum sbx_env env);

#endif
