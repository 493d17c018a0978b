/*
 * JSON Web Signatures (RFC 7515) in compact form, for the two algorithms
 * push providers use:
 *
 *   ES256  APNs provider tokens. OpenSSL's EVP_DigestSign produces a DER
 *          ECDSA-Sig-Value; JWS wants the raw 64-byte R||S with each half
 *          left-padded to 32 bytes (RFC 7518 §3.4). We convert with
 *          d2i_ECDSA_SIG + BN_bn2binpad (never BN_bn2bin, which drops
 *          leading zero bytes about once in 128 signatures), and back with
 *          ECDSA_SIG_set0 + i2d_ECDSA_SIG for verification.
 *   RS256  Google service-account assertions: RSASSA-PKCS1-v1_5 with
 *          SHA-256, which is EVP_DigestSign's default RSA padding.
 *
 * Only EVP interfaces are used; the low-level EC/RSA calls are deprecated in
 * OpenSSL 3.0. Keys are plain EVP_PKEY pointers owned by the caller.
 */
#include "common/jws.h"

#include "common/util.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>

/* Append the most recent OpenSSL error (if any) to a message in |err|. */
static void set_err(char *err, size_t errlen, const char *what, const char *detail)
{
    if (err == NULL || errlen == 0)
        return;
    unsigned long e = ERR_peek_last_error();
    char ebuf[256] = "";
    if (e != 0)
        ERR_error_string_n(e, ebuf, sizeof ebuf);
    ERR_clear_error();
    if (detail != NULL && ebuf[0] != '\0')
        snprintf(err, errlen, "%s %s: %s", what, detail, ebuf);
    else if (detail != NULL)
        snprintf(err, errlen, "%s %s", what, detail);
    else if (ebuf[0] != '\0')
        snprintf(err, errlen, "%s: %s", what, ebuf);
    else
        snprintf(err, errlen, "%s", what);
}

/* Read a private key from a memory BIO: PKCS#8 or traditional PEM. */
static EVP_PKEY *read_private_bio(BIO *bio)
{
    return PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
}

EVP_PKEY *jws_load_private_key_pem(const char *pem, size_t len, char *err, size_t errlen)
{
    if (pem == NULL || len > (size_t)0x7fffffff) {
        set_err(err, errlen, "cannot read private key", "(no data)");
        return NULL;
    }
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (bio == NULL) {
        set_err(err, errlen, "cannot read private key", NULL);
        return NULL;
    }
    EVP_PKEY *key = read_private_bio(bio);
    BIO_free(bio);
    if (key == NULL)
        set_err(err, errlen, "cannot parse PEM private key", NULL);
    return key;
}

EVP_PKEY *jws_load_private_key_file(const char *path, char *err, size_t errlen)
{
    BIO *bio = BIO_new_file(path, "r");
    if (bio == NULL) {
        set_err(err, errlen, "cannot open private key file", path);
        return NULL;
    }
    EVP_PKEY *key = read_private_bio(bio);
    BIO_free(bio);
    if (key == NULL)
        set_err(err, errlen, "cannot parse PEM private key in", path);
    return key;
}

/*
 * Read a public key from PEM: a SubjectPublicKeyInfo ("PUBLIC KEY") block,
 * or failing that an X.509 certificate whose key we take.
 */
static EVP_PKEY *read_public_bio(BIO *bio)
{
    EVP_PKEY *key = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    if (key != NULL)
        return key;
    ERR_clear_error();
    if (BIO_reset(bio) != 0)
        return NULL;
    X509 *cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    if (cert == NULL)
        return NULL;
    key = X509_get_pubkey(cert);
    X509_free(cert);
    return key;
}

EVP_PKEY *jws_load_public_key_pem(const char *pem, size_t len, char *err, size_t errlen)
{
    if (pem == NULL || len > (size_t)0x7fffffff) {
        set_err(err, errlen, "cannot read public key", "(no data)");
        return NULL;
    }
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (bio == NULL) {
        set_err(err, errlen, "cannot read public key", NULL);
        return NULL;
    }
    EVP_PKEY *key = read_public_bio(bio);
    BIO_free(bio);
    if (key == NULL)
        set_err(err, errlen, "cannot parse PEM public key or certificate", NULL);
    return key;
}

EVP_PKEY *jws_load_public_key_file(const char *path, char *err, size_t errlen)
{
    BIO *bio = BIO_new_file(path, "r");
    if (bio == NULL) {
        set_err(err, errlen, "cannot open public key file", path);
        return NULL;
    }
    EVP_PKEY *key = read_public_bio(bio);
    BIO_free(bio);
    if (key == NULL)
        set_err(err, errlen, "cannot parse PEM public key or certificate in", path);
    return key;
}

/* True when |key| is an EC key on P-256 (the only curve ES256 allows). */
static int is_p256(EVP_PKEY *key)
{
    if (key == NULL || EVP_PKEY_get_base_id(key) != EVP_PKEY_EC)
        return 0;
    char group[64];
    size_t glen = 0;
    if (EVP_PKEY_get_utf8_string_param(key, "group", group, sizeof group, &glen) != 1)
        return 0;
    return strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0;
}

/* One-shot EVP_DigestSign with SHA-256. |*siglen| is the buffer size on
 * entry and the signature length on return. Returns 0 or -1. */
static int digest_sign(EVP_PKEY *key, const void *data, size_t len,
                       unsigned char *sig, size_t *siglen)
{
    int rc = -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL)
        goto out;
    if (EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) != 1)
        goto out;
    if (EVP_DigestSign(ctx, sig, siglen, data, len) != 1)
        goto out;
    rc = 0;
out:
    EVP_MD_CTX_free(ctx);
    if (rc != 0)
        ERR_clear_error();
    return rc;
}

/* One-shot EVP_DigestVerify with SHA-256. Returns 1 valid, 0 otherwise. */
static int digest_verify(EVP_PKEY *key, const void *data, size_t len,
                         const unsigned char *sig, size_t siglen)
{
    int ok = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL)
        goto out;
    if (EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, key) != 1)
        goto out;
    ok = EVP_DigestVerify(ctx, sig, siglen, data, len) == 1;
out:
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    return ok;
}

int jws_sign_es256(EVP_PKEY *key, const void *data, size_t len, unsigned char sig[64])
{
    unsigned char der[128]; /* a P-256 DER signature is at most 72 bytes */
    size_t derlen = sizeof der;
    int rc = -1;
    ECDSA_SIG *es = NULL;

    if (!is_p256(key))
        return -1;
    if (digest_sign(key, data, len, der, &derlen) != 0)
        return -1;
    const unsigned char *p = der;
    es = d2i_ECDSA_SIG(NULL, &p, (long)derlen);
    if (es == NULL || p != der + derlen)
        goto out;
    const BIGNUM *r = NULL, *s = NULL;
    ECDSA_SIG_get0(es, &r, &s);
    if (r == NULL || s == NULL)
        goto out;
    /* Fixed-width halves: BN_bn2binpad left-pads with zeros. */
    if (BN_bn2binpad(r, sig, 32) != 32 || BN_bn2binpad(s, sig + 32, 32) != 32)
        goto out;
    rc = 0;
out:
    ECDSA_SIG_free(es);
    if (rc != 0)
        ERR_clear_error();
    return rc;
}

int jws_verify_es256(EVP_PKEY *key, const void *data, size_t len,
                     const unsigned char *sig, size_t siglen)
{
    int ok = 0;
    ECDSA_SIG *es = NULL;
    BIGNUM *r = NULL, *s = NULL;
    unsigned char *der = NULL;

    if (sig == NULL || siglen != 64 || !is_p256(key))
        return 0;
    es = ECDSA_SIG_new();
    r = BN_bin2bn(sig, 32, NULL);
    s = BN_bin2bn(sig + 32, 32, NULL);
    if (es == NULL || r == NULL || s == NULL)
        goto out;
    if (ECDSA_SIG_set0(es, r, s) != 1)
        goto out;
    r = s = NULL; /* now owned by |es| */
    int derlen = i2d_ECDSA_SIG(es, &der);
    if (derlen <= 0)
        goto out;
    ok = digest_verify(key, data, len, der, (size_t)derlen);
out:
    OPENSSL_free(der);
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    ERR_clear_error();
    return ok;
}

int jws_sign_rs256(EVP_PKEY *key, const void *data, size_t len,
                   unsigned char *sig, size_t *siglen)
{
    if (key == NULL || EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA)
        return -1;
    size_t cap = (size_t)EVP_PKEY_get_size(key);
    if (digest_sign(key, data, len, sig, &cap) != 0)
        return -1;
    *siglen = cap;
    return 0;
}

int jws_verify_rs256(EVP_PKEY *key, const void *data, size_t len,
                     const unsigned char *sig, size_t siglen)
{
    if (key == NULL || sig == NULL || EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA)
        return 0;
    if (siglen != (size_t)EVP_PKEY_get_size(key))
        return 0;
    return digest_verify(key, data, len, sig, siglen);
}

char *jws_compact_sign(const char *alg, EVP_PKEY *key, const char *header,
                       const char *claims)
{
    if (alg == NULL || key == NULL || header == NULL || claims == NULL)
        return NULL;
    int es = strcmp(alg, "ES256") == 0;
    if (!es && strcmp(alg, "RS256") != 0)
        return NULL;

    size_t hl = strlen(header), cl = strlen(claims);
    size_t keysz = (size_t)EVP_PKEY_get_size(key);
    size_t siglen = es ? 64 : keysz;
    size_t cap = 4 * ((hl + 2) / 3) + 1 + 4 * ((cl + 2) / 3) + 1 +
                 4 * ((siglen + 2) / 3) + 1;
    char *tok = xmalloc(cap);
    unsigned char *sig = xmalloc(keysz > 64 ? keysz : 64);

    size_t n = b64url_encode((const unsigned char *)header, hl, tok);
    tok[n++] = '.';
    n += b64url_encode((const unsigned char *)claims, cl, tok + n);
    size_t signing_len = n;
    int rc = es ? jws_sign_es256(key, tok, signing_len, sig)
                : jws_sign_rs256(key, tok, signing_len, sig, &siglen);
    if (rc != 0) {
        free(sig);
        free(tok);
        return NULL;
    }
    tok[n++] = '.';
    b64url_encode(sig, siglen, tok + n);
    free(sig);
    return tok;
}

/* True when [s, s+len) is non-empty unpadded base64url of a valid length. */
static int is_b64url(const char *s, size_t len)
{
    if (len % 4 == 1)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

/* Decode one part into a malloc'd NUL-terminated buffer; NULL on error. */
static unsigned char *decode_part(const char *s, size_t len, size_t *outlen)
{
    if (!is_b64url(s, len))
        return NULL;
    unsigned char *buf = xmalloc(3 * len / 4 + 4);
    long n = b64url_decode(s, len, buf);
    if (n < 0) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *outlen = (size_t)n;
    return buf;
}

int jws_compact_split(const char *token, char **header_json, char **claims_json,
                      unsigned char **sig, size_t *siglen, size_t *signing_input_len)
{
    unsigned char *h = NULL, *c = NULL, *g = NULL;
    size_t hl = 0, cl = 0, gl = 0;

    if (token == NULL)
        return -1;
    const char *d1 = strchr(token, '.');
    if (d1 == NULL)
        return -1;
    const char *d2 = strchr(d1 + 1, '.');
    if (d2 == NULL || strchr(d2 + 1, '.') != NULL)
        return -1;
    size_t l1 = (size_t)(d1 - token), l2 = (size_t)(d2 - d1 - 1);
    size_t l3 = strlen(d2 + 1);
    /* Header and claims must be non-empty JSON; an empty signature is
     * allowed by the format ("alg":"none") but callers reject it. */
    if (l1 == 0 || l2 == 0)
        return -1;
    h = decode_part(token, l1, &hl);
    c = decode_part(d1 + 1, l2, &cl);
    g = decode_part(d2 + 1, l3, &gl);
    if (h == NULL || c == NULL || g == NULL || hl == 0 || cl == 0 ||
        memchr(h, '\0', hl) != NULL || memchr(c, '\0', cl) != NULL) {
        free(h);
        free(c);
        free(g);
        return -1;
    }
    *header_json = (char *)h;
    *claims_json = (char *)c;
    *sig = g;
    *siglen = gl;
    *signing_input_len = (size_t)(d2 - token);
    return 0;
}
