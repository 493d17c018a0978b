/*
 * APNs provider tokens: a cached ES256 JWT renewed on a fixed age.
 *
 * The daemon asks for the bearer before every request; almost always the
 * cached string is returned. A new token is signed only when the cached one
 * is refresh_s old (50 min by default), which keeps every connection well
 * inside Apple's rules: at most one new token per 20 minutes, none older
 * than 60 minutes. Signing is in common/jws.c (raw R||S signatures).
 */
#include "apns/jwt.h"

#include "common/jws.h"
#include "common/log.h"
#include "common/util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Key and team ids go into JSON unescaped: allow [A-Za-z0-9] only. */
static int valid_id(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 15)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return 0;
    }
    return 1;
}

int apns_jwt_init_key(struct apns_jwt *j, EVP_PKEY *key, const char *key_id,
                      const char *team_id, char *err, size_t errlen)
{
    memset(j, 0, sizeof *j);
    if (!valid_id(key_id)) {
        snprintf(err, errlen, "invalid APNs key id (expected letters and digits)");
        return -1;
    }
    if (!valid_id(team_id)) {
        snprintf(err, errlen, "invalid APNs team id (expected letters and digits)");
        return -1;
    }
    /* Prove the key can sign ES256 before accepting it. */
    unsigned char sig[64];
    if (key == NULL || jws_sign_es256(key, "probe", 5, sig) != 0) {
        snprintf(err, errlen, "APNs key is not an EC P-256 private key");
        return -1;
    }
    j->key = key;
    snprintf(j->key_id, sizeof j->key_id, "%s", key_id);
    snprintf(j->team_id, sizeof j->team_id, "%s", team_id);
    j->refresh_s = APNS_JWT_REFRESH_DEFAULT_S;
    return 0;
}

int apns_jwt_init(struct apns_jwt *j, const char *p8_path, const char *key_id,
                  const char *team_id, char *err, size_t errlen)
{
    memset(j, 0, sizeof *j);
    EVP_PKEY *key = jws_load_private_key_file(p8_path, err, errlen);
    if (key == NULL)
        return -1;
    if (apns_jwt_init_key(j, key, key_id, team_id, err, errlen) != 0) {
        EVP_PKEY_free(key);
        return -1;
    }
    return 0;
}

int64_t apns_jwt_set_refresh(struct apns_jwt *j, int64_t refresh_s)
{
    if (refresh_s < APNS_JWT_REFRESH_MIN_S)
        refresh_s = APNS_JWT_REFRESH_MIN_S;
    if (refresh_s > APNS_JWT_REFRESH_MAX_S)
        refresh_s = APNS_JWT_REFRESH_MAX_S;
    j->refresh_s = refresh_s;
    return refresh_s;
}

/* Sign a token with iat = |now_s| and replace the cached one. */
static int renew(struct apns_jwt *j, int64_t now_s)
{
    char header[64], claims[64];
    snprintf(header, sizeof header, "{\"alg\":\"ES256\",\"kid\":\"%s\"}", j->key_id);
    snprintf(claims, sizeof claims, "{\"iss\":\"%s\",\"iat\":%" PRId64 "}",
             j->team_id, now_s);
    char *tok = jws_compact_sign("ES256", j->key, header, claims);
    if (tok == NULL) {
        log_error("apns", "cannot sign provider token (kid=%s)", j->key_id);
        return -1;
    }
    size_t n = strlen(tok);
    char *bearer = xmalloc(n + 8);
    memcpy(bearer, "bearer ", 7);
    memcpy(bearer + 7, tok, n + 1);
    free(tok);
    free(j->bearer);
    j->bearer = bearer;
    j->issued_at = now_s;
    j->n_issued++;
    log_debug("apns", "new provider token (kid=%s, iat=%" PRId64 ")", j->key_id, now_s);
    return 0;
}

const char *apns_jwt_bearer(struct apns_jwt *j, int64_t now_s)
{
    if (j->key == NULL)
        return NULL;
    /* A clock that stepped backwards keeps the cached token: renewing would
     * risk TooManyProviderTokenUpdates, and an expired token is caught by
     * ExpiredProviderToken + apns_jwt_invalidate. */
    if (j->bearer == NULL || now_s - j->issued_at >= j->refresh_s) {
        if (renew(j, now_s) != 0)
            return NULL;
    }
    return j->bearer;
}

void apns_jwt_invalidate(struct apns_jwt *j)
{
    free(j->bearer);
    j->bearer = NULL;
}

int64_t apns_jwt_issued_at(const struct apns_jwt *j)
{
    return j->bearer ? j->issued_at : 0;
}

void apns_jwt_free(struct apns_jwt *j)
{
    if (j == NULL)
        return;
    EVP_PKEY_free(j->key);
    free(j->bearer);
    memset(j, 0, sizeof *j);
}
