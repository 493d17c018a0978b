/*
 * FCM HTTP v1 responses: parse the google.rpc error body and the success
 * body, and classify an answer into what the daemon does next
 * (PROTOCOLS.md §2). Pure functions; lenient with garbage.
 */
#ifndef VARSEL_FCM_ERRORS_H
#define VARSEL_FCM_ERRORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The FcmError detail's errorCode. */
enum fcm_error_code {
    FCM_ERR_NONE = 0,            /* no FcmError detail in the body */
    FCM_ERR_UNSPECIFIED,         /* UNSPECIFIED_ERROR */
    FCM_ERR_INVALID_ARGUMENT,
    FCM_ERR_UNREGISTERED,
    FCM_ERR_SENDER_ID_MISMATCH,
    FCM_ERR_QUOTA_EXCEEDED,
    FCM_ERR_UNAVAILABLE,
    FCM_ERR_INTERNAL,
    FCM_ERR_THIRD_PARTY_AUTH,    /* THIRD_PARTY_AUTH_ERROR or APNS_AUTH_ERROR */
    FCM_ERR_OTHER                /* an errorCode we do not know (raw in .error_code_str) */
};

/* What to do with a delivery after FCM answered. */
enum fcm_outcome {
    FCM_OUTCOME_SENT = 0,        /* 2xx */
    FCM_OUTCOME_INVALID_TOKEN,   /* delete the token, no retry */
    FCM_OUTCOME_TRANSIENT,       /* retry with back-off, honour Retry-After */
    FCM_OUTCOME_AUTH,            /* our OAuth token was refused: refresh it, resend once */
    FCM_OUTCOME_PERMANENT        /* give up on this delivery, keep the token */
};

#define FCM_ERROR_MESSAGE_MAX 256

/* A parsed error body; strings are NUL-terminated, possibly truncated. */
struct fcm_error {
    int code;                          /* error.code (the HTTP status it claims), 0 if absent */
    char status[40];                   /* error.status, e.g. "NOT_FOUND"; "" if absent */
    char message[FCM_ERROR_MESSAGE_MAX]; /* error.message, cut on a UTF-8 boundary */
    enum fcm_error_code error_code;    /* from the FcmError detail */
    char error_code_str[40];           /* its raw string; "" if none */
    bool token_invalid;                /* the error names the registration token */
};

/*
 * Parse an FCM error body of |len| bytes (not necessarily NUL-terminated)
 * into |*out|, which is always fully initialized. Returns 0 when the body
 * holds an `error` object (or an OAuth-style "error" string), -1 for
 * anything else (empty, not JSON, no error): then |*out| is all empty and
 * classification falls back on the HTTP status.
 *
 * token_invalid is set for a google.rpc.BadRequest fieldViolation on
 * "message.token", or for INVALID_ARGUMENT (status, errorCode or HTTP 400
 * body code) whose message says the registration token is not valid.
 */
int fcm_error_parse(const uint8_t *body, size_t len, struct fcm_error *out);

/*
 * Classify FCM's answer from |http_status| and the parsed body |err| (NULL
 * when there was no body or it did not parse). The FcmError errorCode
 * decides first: UNREGISTERED and SENDER_ID_MISMATCH → INVALID_TOKEN;
 * INVALID_ARGUMENT → INVALID_TOKEN if it names the token, else PERMANENT;
 * QUOTA_EXCEEDED, UNAVAILABLE, INTERNAL → TRANSIENT; THIRD_PARTY_AUTH and
 * UNSPECIFIED → PERMANENT. Without one (or with an unknown one) the HTTP
 * status decides: 2xx → SENT, a token-naming 400 → INVALID_TOKEN, 401 →
 * AUTH, 408/429/500/502/503/504 → TRANSIENT, any other 4xx
 * (PERMISSION_DENIED, 404 ...) → PERMANENT. Only when the HTTP status is
 * not definite (0, 1xx, 3xx, another 5xx) does the body's `status` count:
 * UNAUTHENTICATED → AUTH; RESOURCE_EXHAUSTED, UNAVAILABLE, INTERNAL,
 * DEADLINE_EXCEEDED → TRANSIENT; anything else → PERMANENT.
 */
enum fcm_outcome fcm_error_classify(int http_status, const struct fcm_error *err);

/*
 * Parse a success body {"name":"projects/p/messages/0:..."} and copy the
 * name into |name| (truncated to |namelen| with its NUL). Returns 0, or -1
 * when there is no string `name` (then |name| is "").
 */
int fcm_response_parse_name(const uint8_t *body, size_t len, char *name,
                            size_t namelen);

/* "UNREGISTERED" etc. for logs and receipts; "" for FCM_ERR_NONE. */
const char *fcm_error_code_name(enum fcm_error_code c);
/* "sent", "invalid_token", "transient", "auth", "permanent". */
const char *fcm_outcome_name(enum fcm_outcome o);

#endif
