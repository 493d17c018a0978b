/*
 * APNs provider authentication tokens (JWT, ES256).
 *
 * One struct apns_jwt per (key id, team id): it holds the .p8 signing key
 * and the current token, and renews the token only when it is at least
 * refresh_s old. APNs rejects a token whose `iat` is over an hour old
 * (403 ExpiredProviderToken) and answers 429 TooManyProviderTokenUpdates
 * when a connection sees a new token within 20 minutes, so refresh_s is
 * clamped to [APNS_JWT_REFRESH_MIN_S, APNS_JWT_REFRESH_MAX_S].
 *
 * The token is "b64url({"alg":"ES256","kid":KEY_ID}).b64url({"iss":TEAM_ID,
 * "iat":NOW}).b64url(R||S)"; apns_jwt_bearer returns it as the full
 * `authorization` header value "bearer <jwt>".
 */
#ifndef VARSEL_APNS_JWT_H
#define VARSEL_APNS_JWT_H

#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

#define APNS_JWT_REFRESH_DEFAULT_S 3000 /* 50 minutes, as pushy and apns2 */
#define APNS_JWT_REFRESH_MIN_S     1200 /* never renew more often than 20 min */
#define APNS_JWT_REFRESH_MAX_S     3540 /* always renew before 60 min */

struct apns_jwt {
    EVP_PKEY *key;       /* P-256 signing key from the .p8 file, owned */
    char key_id[16];     /* `kid`, 10 characters */
    char team_id[16];    /* `iss`, 10 characters */
    int64_t refresh_s;   /* renew when the token is this old (clamped) */
    int64_t issued_at;   /* `iat` of the cached token, 0 when none yet */
    char *bearer;        /* "bearer <jwt>", owned; NULL until first use */
    uint64_t n_issued;   /* tokens signed so far (for stats and tests) */
};

/*
 * Load the PKCS#8 P-256 key at |p8_path| and prepare to sign tokens for
 * |key_id| / |team_id| (each 1..15 characters; APNs uses 10). refresh_s
 * starts at APNS_JWT_REFRESH_DEFAULT_S. Returns 0, or -1 with a reason in
 * |err| (unreadable file, not a P-256 key, bad ids); on failure |j| needs
 * no apns_jwt_free.
 */
int apns_jwt_init(struct apns_jwt *j, const char *p8_path, const char *key_id,
                  const char *team_id, char *err, size_t errlen);

/*
 * Same as apns_jwt_init but takes an already loaded key; on success |j|
 * owns |key| (the caller's reference is consumed), on failure the caller
 * still owns it.
 */
int apns_jwt_init_key(struct apns_jwt *j, EVP_PKEY *key, const char *key_id,
                      const char *team_id, char *err, size_t errlen);

/* Set the renewal age in seconds, clamped to [1200, 3540]; returns the value
 * actually used. Does not drop the cached token. */
int64_t apns_jwt_set_refresh(struct apns_jwt *j, int64_t refresh_s);

/*
 * The `authorization` header value "bearer <jwt>" valid at |now_s| (UNIX
 * seconds). The cached token is reused while now_s - issued_at < refresh_s
 * (also when the clock went backwards); otherwise a new one is signed with
 * iat = now_s. The returned string is owned by |j| and valid
 * until the next call or apns_jwt_free. Returns NULL only if signing fails.
 */
const char *apns_jwt_bearer(struct apns_jwt *j, int64_t now_s);

/* Force the next apns_jwt_bearer call to sign a new token (after APNs says
 * ExpiredProviderToken). */
void apns_jwt_invalidate(struct apns_jwt *j);

/* `iat` of the cached token, or 0 when none has been made. */
int64_t apns_jwt_issued_at(const struct apns_jwt *j);

/* Free the key and the cached token; |j| itself is the caller's. */
void apns_jwt_free(struct apns_jwt *j);

#endif
