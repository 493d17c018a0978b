/*
 * The Google OAuth2 token endpoint fake as a struct sbx_service: binds
 * sandbox/oauth.c's checks to connections, keeps the table of access
 * tokens it issued (the FCM fake asks it whether a bearer is valid), an
 * outage window and its own fault rules, counts token requests (to catch
 * refresh storms) and writes one record line per answer.
 *
 * It serves `POST /token` (also /o/oauth2/token and /oauth2/v4/token) on
 * its own listener (--oauth-listen), and the FCM service hands it the same
 * paths arriving on the FCM listener, so one URL can serve both.
 */
#ifndef VARSEL_SANDBOX_OAUTH_SERVICE_H
#define VARSEL_SANDBOX_OAUTH_SERVICE_H

#include "sandbox/counts.h"
#include "sandbox/faults.h"
#include "sandbox/oauth.h"
#include "sandbox/record.h"
#include "sandbox/server.h"

#include <cJSON.h>
#include <stdbool.h>

#define SBX_OAUTH_EXPIRES_IN_DEFAULT 3599

struct sbx_oauth_service_options {
    const struct sbx_oauth_account *accounts; /* borrowed */
    size_t naccounts;
    const char *const *audiences;   /* extra accepted aud values; borrowed */
    size_t naudiences;
    int64_t expires_in_s;           /* expires_in answered and the tokens' real
                                       lifetime; 0 = 3599 */
    unsigned outage_ms;             /* answer 503 for this long after init */
    struct sbx_faults *faults;      /* token-endpoint faults (own table); may be NULL */
    struct sbx_record *record;      /* may be NULL */
};

/* A response tag carrying the record line written when the answer leaves
 * (shared by the FCM service). */
struct sbx_record_tag {
    cJSON *rec;                     /* line without "at"; owned */
    struct sbx_record *record;      /* borrowed */
};

/* Write (when |answered|) and free |tag|. */
void sbx_record_tag_finish(struct sbx_record_tag *tag, bool answered);

struct sbx_oauth_service {
    struct sbx_service svc;         /* hand &svc to sbx_server_listen_tls */
    struct sbx_oauth_service_options opt;
    struct sbx_oauth_tokens *tokens;
    uint64_t start_mono;
    uint64_t requests;              /* token requests answered or not */
    struct sbx_counts counts;       /* "200", "invalid_grant", "503" ... */
    char *reply;                    /* body of the current answer (copied by the server) */
    char retry[16];
};

/* Initialise |s| (fixed address while in use); copies |opt|. */
void sbx_oauth_service_init(struct sbx_oauth_service *s,
                            const struct sbx_oauth_service_options *opt);

/* Free the token table and buffers. */
void sbx_oauth_service_clear(struct sbx_oauth_service *s);

/* true for the token endpoint's paths (query string ignored). */
bool sbx_oauth_service_path(const char *path);

/* Answer one request on connection |c| (used by the FCM listener for the
 * token paths; the same as the service's request callback). */
void sbx_oauth_service_handle(struct sbx_oauth_service *s, struct sbx_conn *c,
                              const struct sbx_request *req, struct sbx_response *resp);

/* What |token| (|len| bytes, from "Bearer <token>") is worth at |now_ms|;
 * |*account| as sbx_oauth_tokens_check sets it. */
enum sbx_oauth_token_state sbx_oauth_service_check(const struct sbx_oauth_service *s,
                                                   const char *token, size_t len,
                                                   int64_t now_ms,
                                                   const struct sbx_oauth_account **account);

/* {"requests":n,"tokens_issued":n,"answers":{"200":n,"invalid_grant":n,...}};
 * caller owns. */
cJSON *sbx_oauth_service_summary(const struct sbx_oauth_service *s);

#endif
