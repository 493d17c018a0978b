/*
 * Google's OAuth2 token endpoint as varsel-sandbox fakes it (PROTOCOLS.md
 * §3 and §6 "OAuth fake"): the pure parts, with no I/O and no clock of
 * their own.
 *
 *  - Service accounts the sandbox knows: client_email, key id, project and
 *    the RSA public key (sbx_oauth_account_load reads the files that
 *    `varsel-sandbox gen-service-account` writes).
 *  - sbx_oauth_check(): one token request (form-encoded or JSON body) →
 *    200 or Google's 400 {"error","error_description"} answer.
 *  - struct sbx_oauth_tokens: the access tokens handed out, each with an
 *    expiry, so the FCM fake can tell a valid bearer from an unknown or
 *    expired one.
 */
#ifndef VARSEL_SANDBOX_OAUTH_H
#define VARSEL_SANDBOX_OAUTH_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SBX_OAUTH_GRANT_JWT "urn:ietf:params:oauth:grant-type:jwt-bearer"
#define SBX_OAUTH_SCOPE_FCM "https://www.googleapis.com/auth/firebase.messaging"
#define SBX_OAUTH_SCOPE_CLOUD "https://www.googleapis.com/auth/cloud-platform"
#define SBX_OAUTH_GOOGLE_TOKEN_URI "https://oauth2.googleapis.com/token"

#define SBX_OAUTH_TOKEN_MAX 200   /* access token length bound, with NUL */

/* One service account the token endpoint accepts assertions from. */
struct sbx_oauth_account {
    char *client_email;       /* the assertion's iss; owned */
    char *kid;                /* private_key_id; owned */
    char *project;            /* project_id: the FCM project its tokens may send to; owned */
    EVP_PKEY *pub;            /* RSA public key; owned */
};

/*
 * Load an account from |spec|, either
 *   "SA.json"                       the file gen-service-account wrote (or any
 *                                   Google service-account JSON): client_email,
 *                                   private_key_id and project_id from it, the
 *                                   public key from "SA.json.pub.pem" when that
 *                                   file exists, else derived from private_key;
 *   "PUBFILE:KID:CLIENT_EMAIL:PROJECT"  the public half only (PUBFILE must not
 *                                   contain ':').
 * Returns 0, or -1 with |err| filled. Free with sbx_oauth_account_clear.
 */
int sbx_oauth_account_load(struct sbx_oauth_account *a, const char *spec,
                           char *err, size_t errlen);

/* Free what |a| owns; zeroes it. */
void sbx_oauth_account_clear(struct sbx_oauth_account *a);

struct sbx_oauth_config {
    const struct sbx_oauth_account *accounts; /* borrowed */
    size_t naccounts;
    const char *self_audience;   /* "https://<authority><path>" of the request being
                                    checked (accepted as aud); may be NULL */
    const char *const *audiences; /* extra accepted aud values (--oauth-audience) */
    size_t naudiences;
    int64_t skew_s;              /* allowed clock skew for iat/exp; 0 = 60 */
    int64_t max_lifetime_s;      /* largest exp - iat; 0 = 3600 */
};

/* The outcome of one token request. Strings are NUL-terminated, cut to fit. */
struct sbx_oauth_grant {
    int status;                  /* 200 or 400 */
    const char *error;           /* "invalid_grant", "unsupported_grant_type",
                                    "invalid_request", "invalid_scope"; NULL on 200 */
    char error_description[256];
    const struct sbx_oauth_account *account; /* the verified account (200 only) */
    char grant_type[96];         /* as sent ("" when absent) */
    char iss[128];               /* from the assertion, "" if unreadable */
    char kid[64];
    char aud[256];
    char scope[512];
    char sub[128];
    int64_t iat, exp;            /* 0 when absent */
};

/*
 * Check one token request: |content_type| (may be NULL; a body is parsed as
 * JSON when it starts with "application/json", else as
 * application/x-www-form-urlencoded), the body, and the time |now_s|.
 * Order of checks and answers (400 unless noted):
 *   grant_type not jwt-bearer   unsupported_grant_type "Invalid grant_type: X"
 *   no assertion                invalid_request "Missing required parameter: assertion"
 *   not a compact JWS, alg not RS256, no/unknown iss, kid not the account's,
 *   bad signature               invalid_grant "Invalid JWT Signature."
 *   aud not accepted            invalid_grant "Invalid JWT: Failed audience check.
 *                               The right audience is https://oauth2.googleapis.com/token"
 *   iat/exp missing, exp <= iat, exp - iat > max_lifetime, iat more than skew
 *   in the future, exp more than skew in the past
 *                               invalid_grant "Invalid JWT: Token must be a short-lived
 *                               token (60 minutes) and in a reasonable timeframe. Check
 *                               your iat and exp values in the JWT claim."
 *   scope lacks firebase.messaging and cloud-platform
 *                               invalid_scope "Invalid OAuth scope or ID token audience
 *                               provided."
 *   otherwise                   200, |out->account| set
 * The accepted aud values: https://oauth2.googleapis.com/token,
 * https://accounts.google.com/o/oauth2/token,
 * https://www.googleapis.com/oauth2/v4/token, cfg->self_audience and
 * cfg->audiences. Returns out->status.
 */
int sbx_oauth_check(const struct sbx_oauth_config *cfg, const char *content_type,
                    const uint8_t *body, size_t len, int64_t now_s,
                    struct sbx_oauth_grant *out);

/*
 * The error body {"error": "...", "error_description": "..."} for a failed
 * grant into |buf|, two-space indented like Google's; returns its length
 * (cut like snprintf).
 */
size_t sbx_oauth_error_body(const struct sbx_oauth_grant *g, char *buf, size_t len);

/* The success body {"access_token": TOKEN, "expires_in": N, "token_type":
 * "Bearer"} (same layout); returns its length. |token| needs no escaping
 * (base64url). */
size_t sbx_oauth_token_body(const char *token, int64_t expires_in_s, char *buf, size_t len);

/*
 * Find field |name| in an application/x-www-form-urlencoded body and
 * percent-decode it ('+' is a space) into |out| (NUL-terminated). Returns
 * the decoded length, or -1 when the field is absent, badly encoded or does
 * not fit in |outlen|-1 bytes.
 */
long sbx_oauth_form_value(const char *body, size_t len, const char *name,
                          char *out, size_t outlen);

/* ---- issued access tokens -------------------------------------------- */

enum sbx_oauth_token_state {
    SBX_OAUTH_TOKEN_VALID = 0,
    SBX_OAUTH_TOKEN_EXPIRED,     /* issued here, lifetime over */
    SBX_OAUTH_TOKEN_UNKNOWN,     /* never issued (or forgotten long after expiry) */
};

struct sbx_oauth_tokens;

/* An empty table (never fails; OOM aborts). */
struct sbx_oauth_tokens *sbx_oauth_tokens_new(void);

/* Free the table; NULL is allowed. */
void sbx_oauth_tokens_free(struct sbx_oauth_tokens *t);

/*
 * Issue a new random access token ("ya29.c." and base64url) for |account|
 * (borrowed; must outlive the table) valid from |now_ms| for |lifetime_ms|,
 * and copy it into |out| (SBX_OAUTH_TOKEN_MAX bytes). Tokens more than an
 * hour past their expiry are forgotten (they then read as UNKNOWN).
 */
void sbx_oauth_tokens_issue(struct sbx_oauth_tokens *t, const struct sbx_oauth_account *account,
                            int64_t now_ms, int64_t lifetime_ms, char out[SBX_OAUTH_TOKEN_MAX]);

/*
 * Look up the |len| bytes of |token| at |now_ms|. Sets |*account| (may be
 * NULL) to the account it was issued to, for VALID and EXPIRED.
 */
enum sbx_oauth_token_state sbx_oauth_tokens_check(const struct sbx_oauth_tokens *t,
                                                  const char *token, size_t len,
                                                  int64_t now_ms,
                                                  const struct sbx_oauth_account **account);

/* Tokens issued so far, and tokens currently remembered. */
uint64_t sbx_oauth_tokens_issued(const struct sbx_oauth_tokens *t);
size_t sbx_oauth_tokens_size(const struct sbx_oauth_tokens *t);

/* "valid", "expired", "unknown". */
const char *sbx_oauth_token_state_name(enum sbx_oauth_token_state s);

#endif
