/*
 * Google OAuth2 for FCM HTTP v1 with a service account (PROTOCOLS.md §3):
 * an RS256-signed assertion exchanged at the token endpoint for an access
 * token, cached and renewed ahead of expiry.
 *
 * Renewal rule: when what remains of the token's lifetime falls below the
 * smaller of 5 minutes and half the lifetime (a 1-hour token is renewed 5
 * minutes early, a 20-second test token after 10 seconds). Single-flight:
 * one token request in the air however many sends wait. A failing token
 * endpoint is retried with backoff (1 s doubling to 60 s, with jitter);
 * sends keep waiting and nothing is dropped.
 */
#ifndef VARSEL_FCM_OAUTH_H
#define VARSEL_FCM_OAUTH_H

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define FCM_OAUTH_SCOPE "https://www.googleapis.com/auth/firebase.messaging"

struct fcm_service_account {
    char *client_email;
    char *private_key_id;
    char *project_id;
    char *token_uri;
    EVP_PKEY *key;
};

/* Read a service-account JSON file. Returns 0, or -1 with |err| naming the
 * file and the missing or bad field. */
int fcm_service_account_load(const char *path, struct fcm_service_account *out,
                             char *err, size_t errlen);
void fcm_service_account_clear(struct fcm_service_account *sa);

/*
 * The signed assertion (compact JWS, RS256): header {alg, typ, kid}, claims
 * {iss, scope, aud, iat, exp = iat + 3600}. Returns a malloc'd string or NULL.
 */
char *fcm_oauth_assertion(const struct fcm_service_account *sa, const char *aud,
                          int64_t now_s);

/* The form body of the token request for |assertion|; malloc'd. */
char *fcm_oauth_form_body(const char *assertion);

/*
 * Parse a token endpoint answer leniently: {"access_token": "...",
 * "expires_in": N, ...}. Returns 0 with a malloc'd |*token| and
 * |*expires_in_s| (3600 when absent), or -1.
 */
int fcm_oauth_parse_token(const uint8_t *body, size_t len, char **token,
                          int64_t *expires_in_s);

/* true when a token obtained at |obtained_ms| that expires at |expires_ms|
 * should be renewed at |now_ms| (the rule above). */
bool fcm_oauth_due(int64_t now_ms, int64_t obtained_ms, int64_t expires_ms);

struct fcm_oauth;

/* Called with "Bearer <token>" and the token's generation number, or with
 * NULL when the client is closing. */
typedef void (*fcm_oauth_cb)(const char *bearer, uint64_t generation, void *user);

/* |token_url| is "https://host[:port]/path". |sa| is borrowed and must
 * outlive the object. Returns NULL for a bad URL. */
struct fcm_oauth *fcm_oauth_new(uv_loop_t *loop, const struct fcm_service_account *sa,
                                const char *token_url, SSL_CTX *ssl_ctx, const char *name);

/*
 * Get a usable token: at once when the cached one is valid (a renewal that
 * is due starts in the background), else after the refresh completes.
 */
void fcm_oauth_get(struct fcm_oauth *o, fcm_oauth_cb cb, void *user);

/* FCM answered 401 to a request made with |generation|: drop that token so
 * the next fcm_oauth_get fetches a new one (once per generation). */
void fcm_oauth_invalidate(struct fcm_oauth *o, uint64_t generation);

struct fcm_oauth_stats {
    uint64_t refreshes;       /* successful token requests */
    uint64_t failures;        /* failed token requests */
    int64_t expires_at_ms;    /* of the current token, 0 when none */
};
void fcm_oauth_get_stats(const struct fcm_oauth *o, struct fcm_oauth_stats *out);

/* Waiting callers get NULL; |done| fires when everything is freed. */
void fcm_oauth_close(struct fcm_oauth *o, void (*done)(void *arg), void *arg);

#endif
