/*
 * FCM HTTP v1 request validation for varsel-sandbox: a pure function from
 * (the request, what the bearer token was worth, the token tables) to the
 * answer Google would give: HTTP status, canonical google.rpc status,
 * message, FcmError errorCode and the google.rpc.BadRequest field
 * violations (PROTOCOLS.md §2 and §6 "FCM fake" 1–4). No I/O, no clock, no
 * randomness.
 *
 * The body is checked against the FCM v1 Message schema the way Google's
 * proto-JSON front end does: unknown field names, wrong JSON types and bad
 * enum/Duration/Timestamp values are reported all at once ("Invalid JSON
 * payload received. ..." / "Invalid value at '...' (TYPE_STRING), 12",
 * BadRequest detail only), both snake_case and lowerCamelCase names are
 * accepted; then FCM's own checks run one at a time (target, topic,
 * condition, token format, reserved data keys, ttl limit, size; BadRequest
 * and/or FcmError details), then the token tables.
 */
#ifndef VARSEL_SANDBOX_FCM_H
#define VARSEL_SANDBOX_FCM_H

#include "sandbox/request.h"
#include "sandbox/tokens.h"

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SBX_FCM_TOKEN_MIN_LEN 32      /* default shortest well-formed token */
#define SBX_FCM_TOKEN_MAX_LEN 4096
#define SBX_FCM_MAX_PAYLOAD 4096
#define SBX_FCM_MAX_TOPIC_PAYLOAD 2048
#define SBX_FCM_TTL_MAX_S 2419200     /* 28 days */

struct sbx_fcm_config {
    size_t token_min_len;             /* 0 = SBX_FCM_TOKEN_MIN_LEN */
    size_t max_payload;               /* 0 = SBX_FCM_MAX_PAYLOAD */
    size_t max_topic_payload;         /* 0 = SBX_FCM_MAX_TOPIC_PAYLOAD */
    const char *const *projects;      /* projects that exist, for requests whose auth */
    size_t nprojects;                 /* was skipped (bench); 0 = any project */
    const struct sbx_tokens *unregistered;     /* 404 UNREGISTERED; may be NULL */
    const struct sbx_tokens *sender_mismatch;  /* 403 SENDER_ID_MISMATCH; may be NULL */
    const struct sbx_tokens *invalid_tokens;   /* 400 INVALID_ARGUMENT; may be NULL */
    const struct sbx_tokens *third_party_auth; /* 401 THIRD_PARTY_AUTH_ERROR; may be NULL */
};

/* What the request's authorization header was worth (decided by the caller,
 * which owns the access-token table). */
enum sbx_fcm_auth {
    SBX_FCM_AUTH_OK = 0,      /* valid access token for |auth_project| */
    SBX_FCM_AUTH_SKIPPED,     /* bench mode: not checked */
    SBX_FCM_AUTH_MISSING,     /* no authorization header, or an empty one */
    SBX_FCM_AUTH_INVALID,     /* not "Bearer <token>", unknown or expired token */
};

struct sbx_fcm_violation {
    char *field;              /* "" for the request as a whole; owned */
    char *description;        /* owned */
};

enum sbx_fcm_body_kind {
    SBX_FCM_BODY_JSON = 0,    /* success {"name"} or a google.rpc error */
    SBX_FCM_BODY_HTML_404,    /* Google front end's HTML "404. That’s an error." */
    SBX_FCM_BODY_HTML_405,    /* ... "405. That’s an error." */
};

struct sbx_fcm_result {
    int status;                        /* HTTP status */
    const char *grpc_status;           /* "INVALID_ARGUMENT" ..., NULL on success */
    char *message;                     /* error.message, owned; NULL on success; the
                                          whole page for the HTML kinds */
    const char *error_code;            /* FcmError errorCode, NULL for no such detail */
    bool bad_request;                  /* add a google.rpc.BadRequest detail */
    struct sbx_fcm_violation *violations; /* its fieldViolations, owned */
    size_t nviolations;
    char *quota_subject;               /* QuotaFailure detail when non-NULL, owned */
    char *quota_description;
    enum sbx_fcm_body_kind body_kind;
    bool www_authenticate;             /* 401 for our own credentials */
    char project[128];                 /* from the path ("" when not reached) */
    const char *target_kind;           /* "token", "topic", "condition" or NULL */
    char *target;                      /* its value, owned; NULL when none */
    bool validate_only;
    bool collapsible;                  /* android.collapse_key set (FCM's mark of a
                                          collapsible message; counts against the
                                          per-device collapsible burst) */
    size_t payload_bytes;              /* size measured against the limit */
    cJSON *body;                       /* the request body if it parsed as JSON, owned */
    char name[192];                    /* success: message name (the caller fills it
                                          unless validate_only) */
};

/*
 * Validate |req| as `POST /v1/projects/{project}/messages:send`. |auth| and
 * |auth_project| (the project of the account the access token was issued
 * to; NULL with SKIPPED) come from the caller. Order:
 *   404 path not /v1/projects/P/messages:send (HTML) → 405 not POST (HTML) →
 *   401 UNAUTHENTICATED (missing: "Request is missing required authentication
 *   credential..."; invalid/expired: "Request had invalid authentication
 *   credentials..."; no FcmError) → 403 PERMISSION_DENIED project not the
 *   token's ("Permission 'cloudmessaging.messages.create' denied on resource
 *   '//cloudresourcemanager.googleapis.com/projects/P' (or it may not
 *   exist).") → 400 body not JSON / not an object / schema errors
 *   (BadRequest) → 400 "Recipient of the message is not set." → 400 topic /
 *   condition syntax → 400 token format ("The registration token is not a
 *   valid FCM registration token", FcmError INVALID_ARGUMENT) → 400 reserved
 *   data key ("Invalid data payload key: K") → 400 android.ttl over 28 days
 *   → 400 "Android message is too big" → token tables (invalid 400,
 *   unregistered 404 NOT_FOUND "Requested entity was not found." +
 *   UNREGISTERED, sender mismatch 403 "SenderId mismatch" +
 *   SENDER_ID_MISMATCH, third-party auth 401 "Auth error from APNS or Web
 *   Push Service" + THIRD_PARTY_AUTH_ERROR) → 200 (validate_only: name
 *   "projects/P/messages/fake_message_id").
 * Fills |res| (free with sbx_fcm_result_clear) and returns res->status.
 */
int sbx_fcm_validate(const struct sbx_fcm_config *cfg, const struct sbx_request *req,
                     enum sbx_fcm_auth auth, const char *auth_project,
                     struct sbx_fcm_result *res);

/* Free what |res| owns and zero it. */
void sbx_fcm_result_clear(struct sbx_fcm_result *res);

/*
 * Replace |res|'s answer with an injected error for HTTP |status|:
 * 429 RESOURCE_EXHAUSTED + QUOTA_EXCEEDED + QuotaFailure, 503 UNAVAILABLE,
 * 500 INTERNAL, 401 UNAUTHENTICATED + THIRD_PARTY_AUTH_ERROR, 404 NOT_FOUND
 * + UNREGISTERED, 403 PERMISSION_DENIED + SENDER_ID_MISMATCH, 400
 * INVALID_ARGUMENT; other statuses get the canonical status for the code
 * and no FcmError. |error_code| (may be NULL or "") overrides the
 * errorCode. The request fields (project, target, body) are kept.
 */
void sbx_fcm_set_fault(struct sbx_fcm_result *res, int status, const char *error_code);

/*
 * Replace |res|'s answer with 429 RESOURCE_EXHAUSTED + FcmError
 * QUOTA_EXCEEDED for a rate limit: per device token when |device| (message
 * "Quota exceeded for the device: too many messages to one device.",
 * QuotaFailure subject "device"), else per project (subject "project:P").
 * |limit| names the limit in the QuotaFailure description, e.g. "240 per
 * minute": "Device message rate exceeded (limit: 240 per minute).".
 */
void sbx_fcm_set_quota(struct sbx_fcm_result *res, bool device, const char *limit);

/*
 * The response body for |res|: {"name":"..."} on success, the google.rpc
 * error JSON, or Google's HTML error page. Sets |*content_type| (static).
 * Returns a malloc'd NUL-terminated string and its length in |*len|.
 */
char *sbx_fcm_response_body(const struct sbx_fcm_result *res, size_t *len,
                            const char **content_type);

/*
 * A message name like Google's: "projects/P/messages/0:<16 digits>%<16 hex>"
 * from |now_us| (microseconds) and a per-project hex tag. |out| >= 192.
 */
void sbx_fcm_message_name(const char *project, int64_t now_us, char *out, size_t outlen);

/* Record/summary reason: the FcmError errorCode, else the grpc status, else
 * "NOT_FOUND"/"METHOD_NOT_ALLOWED" for the HTML pages; NULL on success. */
const char *sbx_fcm_reason(const struct sbx_fcm_result *res);

/*
 * Google's front-end HTML error page for 404 ("The requested URL <code>PATH</code>
 * was not found on this server.") or 405 ("The request method <code>METHOD</code>
 * is inappropriate for the URL <code>PATH</code>."); other statuses get a
 * generic page. Returns a malloc'd string (PATH and METHOD HTML-escaped).
 */
char *sbx_google_error_page(int status, const char *method, const char *path);

/* true if |token| (|len| bytes) is a well-formed registration token:
 * [A-Za-z0-9_:.-], |min_len| (0 = default) to SBX_FCM_TOKEN_MAX_LEN long. */
bool sbx_fcm_token_well_formed(const char *token, size_t len, size_t min_len);

/* true if |cond| is a valid FCM condition ("'a' in topics && !('b' in
 * topics || 'c' in topics)", at most 5 topics). */
bool sbx_fcm_condition_valid(const char *cond);

#endif
