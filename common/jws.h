/*
 * JSON Web Signatures as push providers use them: ES256 (APNs provider
 * tokens, raw 64-byte R||S signatures per RFC 7518 §3.4) and RS256 (Google
 * service-account assertions, PKCS#1 v1.5 + SHA-256). Signing and
 * verification both live here so varseld and varsel-sandbox share one
 * implementation of the byte formats.
 */
#ifndef VARSEL_JWS_H
#define VARSEL_JWS_H

#include <openssl/evp.h>
#include <stddef.h>

/* Load a PEM private key (PKCS#8 ".p8" or traditional) from a file or a
 * string. Returns NULL and fills |err| on failure. */
EVP_PKEY *jws_load_private_key_file(const char *path, char *err, size_t errlen);
EVP_PKEY *jws_load_private_key_pem(const char *pem, size_t len, char *err, size_t errlen);
/* Load a PEM public key (SubjectPublicKeyInfo) or certificate's key. */
EVP_PKEY *jws_load_public_key_file(const char *path, char *err, size_t errlen);
EVP_PKEY *jws_load_public_key_pem(const char *pem, size_t len, char *err, size_t errlen);

/* ES256: sign |data| with a P-256 key; writes the raw 64-byte R||S into
 * |sig|. Returns 0 or -1. */
int jws_sign_es256(EVP_PKEY *key, const void *data, size_t len, unsigned char sig[64]);
/* Verify a raw R||S signature; returns 1 valid, 0 invalid (including a
 * length other than 64). */
int jws_verify_es256(EVP_PKEY *key, const void *data, size_t len,
                     const unsigned char *sig, size_t siglen);

/* RS256: |sig| must hold EVP_PKEY_get_size(key) bytes; |*siglen| is set. */
int jws_sign_rs256(EVP_PKEY *key, const void *data, size_t len,
                   unsigned char *sig, size_t *siglen);
int jws_verify_rs256(EVP_PKEY *key, const void *data, size_t len,
                     const unsigned char *sig, size_t siglen);

/*
 * Build a compact JWS "b64url(header).b64url(claims).b64url(sig)" from JSON
 * strings |header| and |claims|, signing with ES256 or RS256 according to
 * |alg| ("ES256" / "RS256"). Returns a malloc'd string or NULL.
 */
char *jws_compact_sign(const char *alg, EVP_PKEY *key, const char *header,
                       const char *claims);

/*
 * Split and decode a compact JWS. On success returns 0 and sets malloc'd
 * NUL-terminated |*header_json| and |*claims_json|, the raw signature in
 * malloc'd |*sig| with |*siglen|, and |*signing_input_len| (bytes of
 * "header.claims" at the start of |token|). Returns -1 on a malformed token
 * (not three parts, bad base64url, padding present).
 */
int jws_compact_split(const char *token, char **header_json, char **claims_json,
                      unsigned char **sig, size_t *siglen, size_t *signing_input_len);

#endif
