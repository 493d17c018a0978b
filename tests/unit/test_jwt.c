/*
 * Tests for apns/jwt.c: token shape, signature, caching and renewal.
 */
#include "tests/unit/test.h"

#include "apns/jwt.h"
#include "common/jws.h"
#include "common/util.h"

#include <cjson/cJSON.h>
#include <openssl/pem.h>

static char p8_path[64];

/* Write a fresh P-256 key as a PKCS#8 .p8 file; returns the key. */
static EVP_PKEY *make_p8(void)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    ASSERT_NOT_NULL(k);
    snprintf(p8_path, sizeof p8_path, "/tmp/varsel-jwt-XXXXXX");
    int fd = mkstemp(p8_path);
    ASSERT(fd >= 0);
    FILE *fp = fdopen(fd, "w");
    ASSERT_EQ_INT(1, PEM_write_PrivateKey(fp, k, NULL, NULL, 0, NULL, NULL));
    fclose(fp);
    return k;
}

/* Split "bearer <jwt>" and check the signature with |pub|. */
static void check_token(const char *bearer, EVP_PKEY *pub, char **hdr, char **claims)
{
    ASSERT_NOT_NULL(bearer);
    ASSERT(strncmp(bearer, "bearer ", 7) == 0);
    const char *tok = bearer + 7;
    unsigned char *sig = NULL;
    size_t siglen = 0, silen = 0;
    ASSERT_EQ_INT(0, jws_compact_split(tok, hdr, claims, &sig, &siglen, &silen));
    ASSERT_EQ_INT(64, siglen);
    ASSERT_EQ_INT(1, jws_verify_es256(pub, tok, silen, sig, siglen));
    free(sig);
}

TEST(token_shape_and_signature)
{
    EVP_PKEY *k = make_p8();
    struct apns_jwt j;
    char err[256];
    ASSERT_EQ_INT(0, apns_jwt_init(&j, p8_path, "ABC123DEFG", "DEF123GHIJ", err, sizeof err));
    unlink(p8_path);
    const char *b = apns_jwt_bearer(&j, 1700000000);
    char *hdr = NULL, *claims = NULL;
    check_token(b, k, &hdr, &claims);
    /* Exactly these members, in this order, nothing else. */
    ASSERT_STR_EQ("{\"alg\":\"ES256\",\"kid\":\"ABC123DEFG\"}", hdr);
    ASSERT_STR_EQ("{\"iss\":\"DEF123GHIJ\",\"iat\":1700000000}", claims);
    cJSON *c = cJSON_Parse(claims);
    ASSERT_NOT_NULL(c);
    ASSERT_EQ_INT(2, cJSON_GetArraySize(c));
    ASSERT(cJSON_IsNumber(cJSON_GetObjectItem(c, "iat")));
    cJSON_Delete(c);
    ASSERT_EQ_INT(1700000000, apns_jwt_issued_at(&j));
    ASSERT_NULL(strchr(b, '='));
    free(hdr);
    free(claims);
    apns_jwt_free(&j);
    EVP_PKEY_free(k);
}

TEST(token_reused_within_20_minutes)
{
    EVP_PKEY *k = make_p8();
    struct apns_jwt j;
    char err[256];
    ASSERT_EQ_INT(0, apns_jwt_init(&j, p8_path, "ABC123DEFG", "DEF123GHIJ", err, sizeof err));
    unlink(p8_path);
    const int64_t t0 = 1700000000;
    char *first = xstrdup(apns_jwt_bearer(&j, t0));
    /* Even with the shortest refresh allowed, no new token inside 20 min. */
    ASSERT_EQ_INT(1200, apns_jwt_set_refresh(&j, 1));
    for (int64_t dt = 0; dt < 1200; dt += 60)
        ASSERT_STR_EQ(first, apns_jwt_bearer(&j, t0 + dt));
    ASSERT_STR_EQ(first, apns_jwt_bearer(&j, t0 + 1199));
    ASSERT_EQ_INT(1, j.n_issued);
    ASSERT_EQ_INT(t0, apns_jwt_issued_at(&j));
    /* A clock stepping back keeps the token too. */
    ASSERT_STR_EQ(first, apns_jwt_bearer(&j, t0 - 30));
    ASSERT_EQ_INT(1, j.n_issued);
    free(first);
    apns_jwt_free(&j);
    EVP_PKEY_free(k);
}

TEST(token_renewed_after_refresh)
{
    EVP_PKEY *k = make_p8();
    struct apns_jwt j;
    char err[256];
    ASSERT_EQ_INT(0, apns_jwt_init(&j, p8_path, "ABC123DEFG", "DEF123GHIJ", err, sizeof err));
    unlink(p8_path);
    ASSERT_EQ_INT(APNS_JWT_REFRESH_DEFAULT_S, j.refresh_s);
    const int64_t t0 = 1700000000;
    char *first = xstrdup(apns_jwt_bearer(&j, t0));
    ASSERT_STR_EQ(first, apns_jwt_bearer(&j, t0 + 2999));
    const char *second = apns_jwt_bearer(&j, t0 + 3000);
    ASSERT(strcmp(first, second) != 0);
    ASSERT_EQ_INT(t0 + 3000, apns_jwt_issued_at(&j));
    ASSERT_EQ_INT(2, j.n_issued);
    char *hdr = NULL, *claims = NULL;
    check_token(second, k, &hdr, &claims);
    ASSERT_STR_EQ("{\"iss\":\"DEF123GHIJ\",\"iat\":1700003000}", claims);
    free(hdr);
    free(claims);
    /* Clamped: never later than 59 min. */
    ASSERT_EQ_INT(3540, apns_jwt_set_refresh(&j, 7200));
    const char *third = apns_jwt_bearer(&j, t0 + 3000 + 3540);
    ASSERT_EQ_INT(t0 + 6540, apns_jwt_issued_at(&j));
    ASSERT_NOT_NULL(third);
    /* invalidate forces a new token at once. */
    apns_jwt_invalidate(&j);
    ASSERT_EQ_INT(0, apns_jwt_issued_at(&j));
    ASSERT_NOT_NULL(apns_jwt_bearer(&j, t0 + 6541));
    ASSERT_EQ_INT(t0 + 6541, apns_jwt_issued_at(&j));
    ASSERT_EQ_INT(4, j.n_issued);
    free(first);
    apns_jwt_free(&j);
    EVP_PKEY_free(k);
}

TEST(init_errors)
{
    struct apns_jwt j;
    char err[256] = "";
    ASSERT_EQ_INT(-1, apns_jwt_init(&j, "/nonexistent/AuthKey.p8", "ABC123DEFG", "DEF123GHIJ",
                                    err, sizeof err));
    ASSERT_STR_CONTAINS(err, "/nonexistent/AuthKey.p8");
    EVP_PKEY *k = make_p8();
    ASSERT_EQ_INT(-1, apns_jwt_init(&j, p8_path, "ABC\"23DEFG", "DEF123GHIJ", err, sizeof err));
    ASSERT_STR_CONTAINS(err, "key id");
    ASSERT_EQ_INT(-1, apns_jwt_init(&j, p8_path, "ABC123DEFG", "", err, sizeof err));
    ASSERT_STR_CONTAINS(err, "team id");
    unlink(p8_path);
    /* An RSA key is not an APNs key. */
    EVP_PKEY *r = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    ASSERT_EQ_INT(-1, apns_jwt_init_key(&j, r, "ABC123DEFG", "DEF123GHIJ", err, sizeof err));
    ASSERT_STR_CONTAINS(err, "P-256");
    EVP_PKEY_free(r);
    EVP_PKEY_free(k);
}

TEST_MAIN(T(token_shape_and_signature), T(token_reused_within_20_minutes),
          T(token_renewed_after_refresh), T(init_errors))
