/*
 * Throwaway keys and certificates for tests, the demo and the sandbox.
 *
 * Everything goes through the OpenSSL 3.0 EVP and X509 APIs: keys from
 * EVP_PKEY_Q_keygen, certificates built field by field and signed with
 * SHA-256, extensions added through X509V3_EXT_nconf_nid. Private keys are
 * written as PKCS#8 PEM ("BEGIN PRIVATE KEY") with mode 0600, public keys as
 * SPKI PEM ("BEGIN PUBLIC KEY").
 */
#include "common/certgen.h"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CERTGEN_DAYS 30

static void set_err(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    char buf[160] = "";
    if (e != 0)
        ERR_error_string_n(e, buf, sizeof buf);
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s%s%s", what, e ? ": " : "", buf);
    ERR_clear_error();
}

/* Open |path| for writing with |mode| (truncating). NULL on error. */
static FILE *open_out(const char *path, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return NULL;
    (void)fchmod(fd, mode);
    FILE *f = fdopen(fd, "w");
    if (f == NULL)
        close(fd);
    return f;
}

/* Write the private key (PKCS#8) to |key_path| and, when |pub_path| is not
 * NULL, the SPKI public key. Returns 0 or -1 with |err| set. */
static int write_keys(EVP_PKEY *key, const char *key_path, const char *pub_path,
                      char *err, size_t errlen)
{
    FILE *f = open_out(key_path, 0600);
    if (f == NULL) {
        snprintf(err, errlen, "cannot write %s", key_path);
        return -1;
    }
    int ok = PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    if (fclose(f) != 0 || !ok) {
        set_err(err, errlen, key_path);
        return -1;
    }
    if (pub_path == NULL)
        return 0;
    f = open_out(pub_path, 0644);
    if (f == NULL) {
        snprintf(err, errlen, "cannot write %s", pub_path);
        return -1;
    }
    ok = PEM_write_PUBKEY(f, key);
    if (fclose(f) != 0 || !ok) {
        set_err(err, errlen, pub_path);
        return -1;
    }
    return 0;
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value);
    if (ext == NULL)
        return 0;
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok;
}

struct ext_spec {
    int nid;
    const char *value;
};

/*
 * Build a certificate for |key| with common name |cn|, signed by
 * |issuer_key| under |issuer| (NULL: self-signed). |exts| is a list of
 * (nid, value) pairs terminated by nid 0. Returns the certificate or NULL.
 */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer,
                       EVP_PKEY *issuer_key, const struct ext_spec *exts)
{
    X509 *x = X509_new();
    if (x == NULL)
        return NULL;
    unsigned char serial[16];
    BIGNUM *bn = NULL;
    if (X509_set_version(x, 2) != 1 || RAND_bytes(serial, sizeof serial) != 1)
        goto fail;
    serial[0] &= 0x7f; /* positive */
    bn = BN_bin2bn(serial, sizeof serial, NULL);
    if (bn == NULL || BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL)
        goto fail;
    if (X509_gmtime_adj(X509_getm_notBefore(x), -3600) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(x), (long)CERTGEN_DAYS * 86400) == NULL)
        goto fail;
    if (X509_set_pubkey(x, key) != 1)
        goto fail;
    X509_NAME *name = X509_get_subject_name(x);
    if (X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                   (const unsigned char *)"varsel test", -1, -1, 0) != 1 ||
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                   (const unsigned char *)cn, -1, -1, 0) != 1)
        goto fail;
    if (X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name) != 1)
        goto fail;
    for (const struct ext_spec *e = exts; e->nid != 0; e++)
        if (!add_ext(x, issuer ? issuer : x, e->nid, e->value))
            goto fail;
    if (X509_sign(x, issuer_key, EVP_sha256()) <= 0)
        goto fail;
    BN_free(bn);
    return x;
fail:
    BN_free(bn);
    X509_free(x);
    return NULL;
}

static int write_certs(const char *path, X509 *a, X509 *b, char *err, size_t errlen)
{
    FILE *f = open_out(path, 0644);
    if (f == NULL) {
        snprintf(err, errlen, "cannot write %s", path);
        return -1;
    }
    int ok = PEM_write_X509(f, a) && (b == NULL || PEM_write_X509(f, b));
    if (fclose(f) != 0 || !ok) {
        set_err(err, errlen, path);
        return -1;
    }
    return 0;
}

int certgen_ca_and_server(const char *dir, char *err, size_t errlen)
{
    static const struct ext_spec ca_exts[] = {
        { NID_basic_constraints, "critical,CA:TRUE" },
        { NID_key_usage, "critical,keyCertSign,cRLSign" },
        { NID_subject_key_identifier, "hash" },
        { 0, NULL },
    };
    static const struct ext_spec srv_exts[] = {
        { NID_basic_constraints, "critical,CA:FALSE" },
        { NID_key_usage, "critical,digitalSignature" },
        { NID_ext_key_usage, "serverAuth" },
        { NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1,IP:::1" },
        { NID_subject_key_identifier, "hash" },
        { NID_authority_key_identifier, "keyid" },
        { 0, NULL },
    };
    int ret = -1;
    EVP_PKEY *ca_key = NULL, *srv_key = NULL;
    X509 *ca = NULL, *srv = NULL;
    char path[4096];

    ca_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    srv_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (ca_key == NULL || srv_key == NULL) {
        set_err(err, errlen, "keygen");
        goto out;
    }
    ca = make_cert(ca_key, "varsel test CA", NULL, ca_key, ca_exts);
    if (ca == NULL) {
        set_err(err, errlen, "CA certificate");
        goto out;
    }
    srv = make_cert(srv_key, "localhost", ca, ca_key, srv_exts);
    if (srv == NULL) {
        set_err(err, errlen, "server certificate");
        goto out;
    }
    snprintf(path, sizeof path, "%s/ca.pem", dir);
    if (write_certs(path, ca, NULL, err, errlen) < 0)
        goto out;
    snprintf(path, sizeof path, "%s/ca.key", dir);
    if (write_keys(ca_key, path, NULL, err, errlen) < 0)
        goto out;
    snprintf(path, sizeof path, "%s/server.pem", dir);
    if (write_certs(path, srv, ca, err, errlen) < 0)
        goto out;
    snprintf(path, sizeof path, "%s/server.key", dir);
    if (write_keys(srv_key, path, NULL, err, errlen) < 0)
        goto out;
    ret = 0;
out:
    X509_free(srv);
    X509_free(ca);
    EVP_PKEY_free(srv_key);
    EVP_PKEY_free(ca_key);
    return ret;
}

int certgen_ec_key(const char *p8_path, const char *pub_path, char *err, size_t errlen)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (key == NULL) {
        set_err(err, errlen, "EC keygen");
        return -1;
    }
    int r = write_keys(key, p8_path, pub_path, err, errlen);
    EVP_PKEY_free(key);
    return r;
}

int certgen_rsa_key(const char *key_path, const char *pub_path, char *err, size_t errlen)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    if (key == NULL) {
        set_err(err, errlen, "RSA keygen");
        return -1;
    }
    int r = write_keys(key, key_path, pub_path, err, errlen);
    EVP_PKEY_free(key);
    return r;
}
