/*
 * The FCM HTTP v1 fake as a struct sbx_service: binds sandbox/fcm.c's
 * validation to connections. Per request it decides what the bearer token
 * is worth (asking the OAuth service that issued it), refreshes the token
 * files, validates, applies the optional per-device and per-project rate
 * limits and the fault rules, names accepted messages, sends GOAWAY after
 * N requests when asked, and records one line per answer. Token-endpoint
 * paths (/token ...) arriving on its listener go to the OAuth service, so
 * one URL serves both. HTTP/2 with MAX_CONCURRENT_STREAMS 100 (a client
 * going over an acknowledged limit gets GOAWAY PROTOCOL_ERROR
 * "exceeded_max_concurrent_streams", as Google sends) and HTTP/1.1.
 */
#ifndef VARSEL_SANDBOX_FCM_SERVICE_H
#define VARSEL_SANDBOX_FCM_SERVICE_H

#include "sandbox/faults.h"
#include "sandbox/fcm.h"
#include "sandbox/oauth_service.h"
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
    unsigned device_rate_per_min;          /* messages per token per minute; 0 = no limit */
    unsigned project_rate_per_min;         /* messages per project per minute; 0 = no limit */
    bool bench;                            /* skip authorization */
};

struct sbx_fcm_rate;                       /* token buckets, fcm_service.c */

struct sbx_fcm_service {
    struct sbx_service svc;                /* hand &svc to sbx_server_listen_tls */
    struct sbx_fcm_service_options opt;
    struct {
        char reason[40];                   /* "200", "UNREGISTERED", "UNAUTHENTICATED" ... */
        uint64_t count;
    } counts[32];
    size_t ncounts;
    struct sbx_fcm_rate *device_rate, *project_rate;
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
