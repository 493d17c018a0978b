/*
 * APNs request validation for varsel-sandbox: a pure function from (the
 * request, the connection's provider-token state, the configuration, the
 * time) to the answer APNs would give: status, Apple reason string, the
 * apns-id to echo, and the fields the record wants. No I/O, no clocks, no
 * randomness except a generated apns-id (uuid_v4) when the request has none.
 *
 * Checks run in pushy's mock order (PROTOCOLS.md §6), see sbx_apns_validate.
 */
#ifndef VARSEL_SANDBOX_APNS_H
#define VARSEL_SANDBOX_APNS_H

#include "sandbox/request.h"
#include "sandbox/tokens.h"

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One provider-token signing key (--apns-key KID:TEAM:PUBFILE[:TOPICS]). */
struct sbx_apns_key {
    char kid[32];       /* key id, usually 10 characters */
    char team[32];      /* team id the key belongs to (the JWT "iss") */
    EVP_PKEY *pub;      /* P-256 public key; owned by whoever built the key */
    char **topics;      /* allowed bundle ids (push-type suffixes implied); */
    size_t ntopics;     /* 0 = any topic */
};

#define SBX_APNS_MAX_TOKEN_LENGTHS 8

struct sbx_apns_config {
    enum sbx_env env;                     /* which listener this is */
    const struct sbx_apns_key *keys;      /* borrowed */
    size_t nkeys;
    size_t token_lengths[SBX_APNS_MAX_TOKEN_LENGTHS]; /* accepted hex lengths */
    size_t ntoken_lengths;                /* 0 = {64} */
    bool accept_der;                      /* accept DER ECDSA signatures too */
    bool no_auth;                         /* bench mode: skip provider tokens */
    int64_t token_max_age_s;              /* iat older → Expired; 0 = 3600 */
    int64_t token_update_min_s;           /* min gap between tokens; 0 = 1200 */
    int64_t token_future_skew_s;          /* iat further ahead → Invalid; 0 = 300 */
    const struct sbx_tokens *unregistered; /* 410 Unregistered; may be NULL */
    const struct sbx_tokens *bad_tokens;   /* 400 BadDeviceToken; may be NULL */
    const struct sbx_tokens *env_tokens;   /* token → environment; may be NULL */
};

/* Provider-token state of one connection (APNs binds it at the first push). */
struct sbx_apns_auth {
    char *jwt;               /* current accepted token, owned; NULL before */
    int64_t jwt_since_ms;    /* when |jwt| was first accepted */
    int64_t iat;             /* its iat claim (seconds) */
    const struct sbx_apns_key *key; /* the key that verified it */
    char team[32];           /* team bound to the connection ("" before) */
    char kid[32];            /* key id bound to the connection */
    unsigned updates;        /* tokens accepted on this connection */
};

struct sbx_apns_result {
    int status;              /* 200 or the error status */
    const char *reason;      /* Apple reason string, NULL on success (static) */
    int64_t timestamp_ms;    /* 410 only: when the token became invalid */
    char apns_id[37];        /* to echo: the request's, or a generated uppercase one */
    bool auth_valid;         /* the request carried a valid provider token */
    const char *token;       /* device token within req->path, or NULL */
    size_t token_len;
    const char *push_type;   /* effective push type (inferred if absent), static */
    int max_payload;         /* 4096 or 5120 */
    char kid[32];            /* from the JWT header, "" if none */
    char iss[32];            /* from the JWT claims, "" if none */
};

/*
 * Validate |req| as an APNs push arriving on a connection with state
 * |auth| at wall-clock time |now_ms| and fill |res|. Order of checks:
 *   BadMessageId → 405 MethodNotAllowed → MissingTopic → BadCollapseId →
 *   BadPriority → InvalidPushType (unknown type, or topic suffix not the
 *   type's) → 404 BadPath / MissingDeviceToken / BadDeviceToken (length,
 *   hex, other environment) → provider token (403 MissingProviderToken,
 *   InvalidProviderToken, ExpiredProviderToken, UnrelatedKeyIdInToken, 429
 *   TooManyProviderTokenUpdates) → BadExpirationDate → DuplicateHeaders →
 *   PayloadEmpty → 413 PayloadTooLarge → background with priority 10
 *   (BadPriority) → 410 Unregistered (unregistered set) → BadDeviceToken
 *   (bad-token set) → 200.
 * Updates |auth| when a new provider token is accepted (it then owns a copy).
 * Returns res->status.
 */
int sbx_apns_validate(const struct sbx_apns_config *cfg, struct sbx_apns_auth *auth,
                      const struct sbx_request *req, int64_t now_ms,
                      struct sbx_apns_result *res);

/* Free what |auth| owns and reset it to the "no token yet" state. */
void sbx_apns_auth_clear(struct sbx_apns_auth *auth);

/* HTTP status for an Apple reason string (400 for unknown ones). */
int sbx_apns_reason_status(const char *reason);

/* Default Apple reason for a status used by fault injection (429 →
 * TooManyRequests, 500 → InternalServerError, 503 → ServiceUnavailable,
 * 410 → Unregistered, 403 → Forbidden; other 5xx → InternalServerError,
 * other 4xx → BadRequest). */
const char *sbx_apns_default_reason(int status);

/*
 * Error body {"reason":"..."} (plus "timestamp" when |timestamp_ms| > 0)
 * into |buf|; returns its length (truncated to |len|-1 like snprintf).
 */
size_t sbx_apns_error_body(const char *reason, int64_t timestamp_ms, char *buf, size_t len);

/* true if |s| (|len| bytes) is a canonical UUID, hex digits in any case. */
bool sbx_apns_is_uuid(const char *s, size_t len);

#endif
