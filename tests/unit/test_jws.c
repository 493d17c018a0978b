/*
 * Tests for common/jws.c: ES256 raw R||S signatures, RS256, key loading and
 * compact serialization. Keys are generated per test with EVP_PKEY_Q_keygen.
 */
#include "tests/unit/test.h"

#include "common/jws.h"
#include "common/util.h"

#include <openssl/bio.h>
#include <openssl/pem.h>

static EVP_PKEY *ec_key(void)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    ASSERT_NOT_NULL(k);
    return k;
}

static EVP_PKEY *rsa_key(void)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    ASSERT_NOT_NULL(k);
    return k;
}

/* PEM text of |key|'s private (PKCS#8) or public part; malloc'd. */
static char *pem_of(EVP_PKEY *key, int private_part)
{
    BIO *b = BIO_new(BIO_s_mem());
    ASSERT_NOT_NULL(b);
    if (private_part)
        ASSERT_EQ_INT(1, PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL));
    else
        ASSERT_EQ_INT(1, PEM_write_bio_PUBKEY(b, key));
    char *data = NULL;
    long n = BIO_get_mem_data(b, &data);
    char *out = xstrndup(data, (size_t)n);
    BIO_free(b);
    return out;
}

TEST(es256_sign_verify_200)
{
    EVP_PKEY *k = ec_key();
    for (int i = 0; i < 200; i++) {
        char msg[64];
        int n = snprintf(msg, sizeof msg, "message number %d", i);
        unsigned char sig[64];
        ASSERT_EQ_INT(0, jws_sign_es256(k, msg, (size_t)n, sig));
        ASSERT_EQ_INT(1, jws_verify_es256(k, msg, (size_t)n, sig, 64));
        /* Any length other than 64 is rejected, even a prefix. */
        ASSERT_EQ_INT(0, jws_verify_es256(k, msg, (size_t)n, sig, 63));
    }
    EVP_PKEY_free(k);
}

/* R or S with a leading zero byte must still give 64 bytes that verify
 * (the BN_bn2bin bug makes these 63 bytes). */
TEST(es256_leading_zero_halves_padded)
{
    EVP_PKEY *k = ec_key();
    int found = 0;
    for (int i = 0; i < 20000 && found < 2; i++) {
        unsigned char sig[64];
        char msg[32];
        int n = snprintf(msg, sizeof msg, "%d", i);
        ASSERT_EQ_INT(0, jws_sign_es256(k, msg, (size_t)n, sig));
        if (sig[0] == 0 || sig[32] == 0) {
            ASSERT_EQ_INT(1, jws_verify_es256(k, msg, (size_t)n, sig, 64));
            found++;
        }
    }
    ASSERT(found >= 1);
    EVP_PKEY_free(k);
}

TEST(es256_flipped_bit_fails)
{
    EVP_PKEY *k = ec_key();
    const char *msg = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJ0ZWFtIn0";
    unsigned char sig[64];
    ASSERT_EQ_INT(0, jws_sign_es256(k, msg, strlen(msg), sig));
    ASSERT_EQ_INT(1, jws_verify_es256(k, msg, strlen(msg), sig, 64));
    for (int bit = 0; bit < 512; bit += 37) {
        unsigned char bad[64];
        memcpy(bad, sig, 64);
        bad[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        ASSERT_EQ_INT(0, jws_verify_es256(k, msg, strlen(msg), bad, 64));
    }
    char other[64];
    snprintf(other, sizeof other, "%s", msg);
    other[3] ^= 1;
    ASSERT_EQ_INT(0, jws_verify_es256(k, other, strlen(other), sig, 64));
    /* Another key does not verify it either. */
    EVP_PKEY *k2 = ec_key();
    ASSERT_EQ_INT(0, jws_verify_es256(k2, msg, strlen(msg), sig, 64));
    EVP_PKEY_free(k2);
    EVP_PKEY_free(k);
}

TEST(es256_der_signature_rejected)
{
    EVP_PKEY *k = ec_key();
    const char *msg = "hello";
    unsigned char der[80];
    size_t derlen = sizeof der;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    ASSERT_EQ_INT(1, EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k));
    ASSERT_EQ_INT(1, EVP_DigestSign(ctx, der, &derlen, (const unsigned char *)msg, 5));
    EVP_MD_CTX_free(ctx);
    ASSERT(derlen >= 8 && derlen <= 72);
    ASSERT_EQ_INT(0x30, der[0]);
    ASSERT_EQ_INT(0, jws_verify_es256(k, msg, 5, der, derlen));
    /* Even a DER signature that happens to be 64 bytes long is no R||S. */
    unsigned char padded[64] = { 0 };
    memcpy(padded, der, derlen < 64 ? derlen : 64);
    ASSERT_EQ_INT(0, jws_verify_es256(k, msg, 5, padded, 64));
    EVP_PKEY_free(k);
}

TEST(es256_needs_p256_key)
{
    EVP_PKEY *r = rsa_key();
    unsigned char sig[64];
    ASSERT_EQ_INT(-1, jws_sign_es256(r, "x", 1, sig));
    EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    ASSERT_NOT_NULL(p384);
    ASSERT_EQ_INT(-1, jws_sign_es256(p384, "x", 1, sig));
    ASSERT_EQ_INT(-1, jws_sign_es256(NULL, "x", 1, sig));
    EVP_PKEY_free(p384);
    EVP_PKEY_free(r);
}

TEST(rs256_sign_verify)
{
    EVP_PKEY *k = rsa_key();
    const char *msg = "header.claims";
    unsigned char sig[512];
    size_t siglen = 0;
    ASSERT_EQ_INT(0, jws_sign_rs256(k, msg, strlen(msg), sig, &siglen));
    ASSERT_EQ_INT(256, siglen);
    ASSERT_EQ_INT(1, jws_verify_rs256(k, msg, strlen(msg), sig, siglen));
    sig[100] ^= 0x10;
    ASSERT_EQ_INT(0, jws_verify_rs256(k, msg, strlen(msg), sig, siglen));
    sig[100] ^= 0x10;
    ASSERT_EQ_INT(0, jws_verify_rs256(k, "header.claimz", 13, sig, siglen));
    ASSERT_EQ_INT(0, jws_verify_rs256(k, msg, strlen(msg), sig, siglen - 1));
    /* PKCS#1 v1.5 is deterministic: the same input signs the same way. */
    unsigned char sig2[512];
    size_t siglen2 = 0;
    ASSERT_EQ_INT(0, jws_sign_rs256(k, msg, strlen(msg), sig2, &siglen2));
    ASSERT(siglen2 == siglen && memcmp(sig, sig2, siglen) == 0);
    /* An EC key is no RS256 key. */
    EVP_PKEY *e = ec_key();
    ASSERT_EQ_INT(-1, jws_sign_rs256(e, msg, strlen(msg), sig, &siglen));
    EVP_PKEY_free(e);
    EVP_PKEY_free(k);
}

TEST(load_keys_from_pem_and_file)
{
    EVP_PKEY *k = ec_key();
    char *priv = pem_of(k, 1), *pub = pem_of(k, 0);
    ASSERT_STR_CONTAINS(priv, "BEGIN PRIVATE KEY");
    char err[256] = "";
    EVP_PKEY *kp = jws_load_private_key_pem(priv, strlen(priv), err, sizeof err);
    EVP_PKEY *kq = jws_load_public_key_pem(pub, strlen(pub), err, sizeof err);
    ASSERT_NOT_NULL(kp);
    ASSERT_NOT_NULL(kq);
    unsigned char sig[64];
    ASSERT_EQ_INT(0, jws_sign_es256(kp, "abc", 3, sig));
    ASSERT_EQ_INT(1, jws_verify_es256(kq, "abc", 3, sig, 64));

    char path[] = "/tmp/varsel-jws-XXXXXX";
    int fd = mkstemp(path);
    ASSERT(fd >= 0);
    ASSERT_EQ_INT((long)strlen(priv), write(fd, priv, strlen(priv)));
    close(fd);
    EVP_PKEY *kf = jws_load_private_key_file(path, err, sizeof err);
    ASSERT_NOT_NULL(kf);
    ASSERT_EQ_INT(0, jws_sign_es256(kf, "abc", 3, sig));
    ASSERT_EQ_INT(1, jws_verify_es256(kq, "abc", 3, sig, 64));
    /* A public-key file is no private key. */
    FILE *fp = fopen(path, "w");
    fputs(pub, fp);
    fclose(fp);
    ASSERT_NULL(jws_load_private_key_file(path, err, sizeof err));
    ASSERT_STR_CONTAINS(err, path);
    EVP_PKEY *kpub = jws_load_public_key_file(path, err, sizeof err);
    ASSERT_NOT_NULL(kpub);
    unlink(path);
    ASSERT_NULL(jws_load_private_key_file(path, err, sizeof err));
    ASSERT_STR_CONTAINS(err, "cannot open");
    ASSERT_NULL(jws_load_private_key_pem("garbage", 7, err, sizeof err));

    EVP_PKEY_free(kpub);
    EVP_PKEY_free(kf);
    EVP_PKEY_free(kq);
    EVP_PKEY_free(kp);
    free(priv);
    free(pub);
    EVP_PKEY_free(k);
}

TEST(compact_sign_and_split_es256)
{
    EVP_PKEY *k = ec_key();
    const char *hdr = "{\"alg\":\"ES256\",\"kid\":\"ABC123DEFG\"}";
    const char *clm = "{\"iss\":\"DEF123GHIJ\",\"iat\":1700000000}";
    char *tok = jws_compact_sign("ES256", k, hdr, clm);
    ASSERT_NOT_NULL(tok);
    ASSERT_NULL(strchr(tok, '='));
    ASSERT_NULL(strchr(tok, '+'));
    ASSERT_NULL(strchr(tok, '/'));
    char *h = NULL, *c = NULL;
    unsigned char *sig = NULL;
    size_t siglen = 0, silen = 0;
    ASSERT_EQ_INT(0, jws_compact_split(tok, &h, &c, &sig, &siglen, &silen));
    ASSERT_STR_EQ(hdr, h);
    ASSERT_STR_EQ(clm, c);
    ASSERT_EQ_INT(64, siglen);
    ASSERT_EQ_INT((long)(strrchr(tok, '.') - tok), silen);
    ASSERT_EQ_INT(1, jws_verify_es256(k, tok, silen, sig, siglen));
    /* The signature part is 86 base64url characters (64 bytes). */
    ASSERT_EQ_INT(86, strlen(strrchr(tok, '.') + 1));
    free(h);
    free(c);
    free(sig);
    free(tok);
    ASSERT_NULL(jws_compact_sign("HS256", k, hdr, clm));
    ASSERT_NULL(jws_compact_sign("RS256", k, hdr, clm)); /* EC key, RSA alg */
    EVP_PKEY_free(k);
}

TEST(compact_sign_and_split_rs256)
{
    EVP_PKEY *k = rsa_key();
    char *tok = jws_compact_sign("RS256", k, "{\"alg\":\"RS256\",\"typ\":\"JWT\"}",
                                 "{\"iss\":\"a@b.iam.gserviceaccount.com\"}");
    ASSERT_NOT_NULL(tok);
    char *h = NULL, *c = NULL;
    unsigned char *sig = NULL;
    size_t siglen = 0, silen = 0;
    ASSERT_EQ_INT(0, jws_compact_split(tok, &h, &c, &sig, &siglen, &silen));
    ASSERT_STR_EQ("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", h);
    ASSERT_EQ_INT(256, siglen);
    ASSERT_EQ_INT(1, jws_verify_rs256(k, tok, silen, sig, siglen));
    free(h);
    free(c);
    free(sig);
    free(tok);
    EVP_PKEY_free(k);
}

TEST(compact_split_rejects_malformed)
{
    static const char *const bad[] = {
        "",                      /* nothing */
        "abc",                   /* one part */
        "eyJhIjoxfQ.eyJiIjoyfQ", /* two parts */
        "eyJhIjoxfQ.eyJiIjoyfQ.c2ln.ZXh0cmE", /* four parts */
        ".eyJiIjoyfQ.c2ln",      /* empty header */
        "eyJhIjoxfQ..c2ln",      /* empty claims */
        "eyJhIjoxfQ==.eyJiIjoyfQ.c2ln", /* padding */
        "eyJhIjoxfQ.eyJiIjoyfQ.c2ln=",  /* padding in the signature */
        "eyJh+joxfQ.eyJiIjoyfQ.c2ln",   /* standard base64 character */
        "eyJh/joxfQ.eyJiIjoyfQ.c2ln",
        "eyJhIjoxf.eyJiIjoyfQ.c2ln",    /* impossible length (4n+1) */
        "eyJh IjoxfQ.eyJiIjoyfQ.c2ln",  /* space */
        "AA.eyJiIjoyfQ.c2ln",           /* header decodes to a NUL byte */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *h = NULL, *c = NULL;
        unsigned char *sig = NULL;
        size_t siglen = 0, silen = 0;
        if (jws_compact_split(bad[i], &h, &c, &sig, &siglen, &silen) != -1)
            TEST_FAIL_("accepted malformed token #%zu \"%s\"", i, bad[i]);
    }
    char *h = NULL, *c = NULL;
    unsigned char *sig = NULL;
    size_t siglen = 0, silen = 0;
    ASSERT_EQ_INT(-1, jws_compact_split(NULL, &h, &c, &sig, &siglen, &silen));
    /* The well-formed version of the same token splits. */
    ASSERT_EQ_INT(0, jws_compact_split("eyJhIjoxfQ.eyJiIjoyfQ.c2ln", &h, &c, &sig, &siglen, &silen));
    ASSERT_STR_EQ("{\"a\":1}", h);
    ASSERT_STR_EQ("{\"b\":2}", c);
    ASSERT_EQ_INT(3, siglen);
    ASSERT(memcmp(sig, "sig", 3) == 0);
    ASSERT_EQ_INT(21, silen);
    free(h);
    free(c);
    free(sig);
}

TEST_MAIN(T(es256_sign_verify_200), T(es256_leading_zero_halves_padded),
          T(es256_flipped_bit_fails), T(es256_der_signature_rejected),
          T(es256_needs_p256_key), T(rs256_sign_verify), T(load_keys_from_pem_and_file),
          T(compact_sign_and_split_es256), T(compact_sign_and_split_rs256),
          T(compact_split_rejects_malformed))
