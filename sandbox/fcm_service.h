/*
 * The FCM HTTP v1 fake as a struct sbx_service: binds sandbox/fcm.c's
 * validation to connections. Per request it decides what the bearer token
 * is worth (asking the OAuth service that issued it), refreshes the token
 * files, validates, applies the per-device-token limits (FCM's 240/min,
 * 5000/h and collapsible bursts, as configured) and the optional
 * per-project one, then the fault rules, names accepted messages, sends GOAWAY after
 * N requests when asked, and records one line per answer. Token-endpoint
 * paths (/token ...) arriving on its listener go to the OAuth service, so
 * one URL serves both. HTTP/2 with MAX_CONCURRENT_STREAMS 100 (a client
 * going over an acknowledged limit gets GOAWAY PROTOCOL_ERROR
 * "exceeded_max_concurrent_streams", as Google sends) and HTTP/1.1.
 */
#ifndef VARSEL_SANDBOX_FCM_SERVICE_H
#define VARSEL_SANDBOX_FCM_SERVICE_H

#include "sandbox/counts.h"
#include "sandbox/faults.h"
#include "sandbox/fcm.h"
#include "sandbox/oauth_service.h"
#include "sandbox/ratelimit.h"
#include "sandbox/record.h"
#include "sandbox/server.h"
#include "sandbox/tokens.h"

#include <cJSON.h>
#include <stdbool.h>

#define SBX_FCM_MAX_STREAMS 100

struct sbx_fcm_service_options {
    struct sbx_fcm_config cfg;             /* template; token sets are bound per request */
    struct sbx_oauth_service *oauth;       /* issues and checks access tokens, serves
                                              /token here; NULL: every bearer is invalid */
    struct sbx_faults *faults;             /* may be NULL */
    struct sbx_record *record;             /* may be NULL */
    struct sbx_tokens_file *unregistered;      /* may be NULL (all four) */
    struct sbx_tokens_file *sender_mismatch;
    struct sbx_tokens_file *invalid_tokens;
    struct sbx_tokens_file *third_party_auth;
    /* Per registration token (sandbox/ratelimit.h); zeroed = no limits. */
    struct sbx_rate_limit device_limits[SBX_RATE_MAX_LIST]; /* every message */
    size_t ndevice_limits;
    struct sbx_rate_limit collapsible;     /* messages with android.collapse_key;
                                              burst 0 = no limit */
    size_t rate_max_keys;                  /* tokens tracked; 0 = SBX_RATE_DEFAULT_KEYS */
    unsigned project_rate_per_min;         /* messages per project per minute; 0 = no limit */
    bool bench;                            /* skip authorization */
};

struct sbx_fcm_service {
    struct sbx_service svc;                /* hand &svc to sbx_server_listen_tls */
    struct sbx_fcm_service_options opt;
    struct sbx_counts counts;              /* "200", "UNREGISTERED", "UNAUTHENTICATED" ... */
    struct sbx_rate *device_rate;          /* device_limits then collapsible; NULL: none */
    unsigned device_bits;                  /* take mask of the every-message limits */
    unsigned collapsible_bit;              /* the collapsible limit's bit (0: none) */
    struct sbx_rate *project_rate;         /* NULL: none */
    int64_t last_name_us;                  /* message names strictly increase */
    char *reply;                           /* body of the current answer */
    char retry[16];
};

/* Initialise |s| (fixed address while in use); copies |opt| (its pointers
 * are borrowed and must outlive |s|). */
void sbx_fcm_service_init(struct sbx_fcm_service *s, const struct sbx_fcm_service_options *opt);

/* Free the rate tables and buffers. */
void sbx_fcm_service_clear(struct sbx_fcm_service *s);

/* {"200":n,"UNREGISTERED":n,...}: answers by reason; caller owns. */
cJSON *sbx_fcm_service_counts(const struct sbx_fcm_service *s);

#endif
