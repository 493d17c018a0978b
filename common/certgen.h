/*
 * Throwaway key and certificate generation for tests, the demo and the
 * sandbox: nothing generated here is ever committed.
 */
#ifndef VARSEL_CERTGEN_H
#define VARSEL_CERTGEN_H

#include <stddef.h>

/*
 * Write into directory |dir|: ca.pem (self-signed CA certificate), ca.key,
 * server.pem (leaf for DNS "localhost" and IPs 127.0.0.1 and ::1, signed by
 * the CA, followed by the CA certificate) and server.key. P-256 keys,
 * validity 30 days. Returns 0 or -1 with |err| filled.
 */
int certgen_ca_and_server(const char *dir, char *err, size_t errlen);

/* Write a new P-256 private key as PKCS#8 PEM to |p8_path| (like Apple's .p8
 * files) and its public key as SPKI PEM to |pub_path|. Returns 0 or -1. */
int certgen_ec_key(const char *p8_path, const char *pub_path, char *err, size_t errlen);

/* Write a new RSA-2048 private key as PKCS#8 PEM to |key_path| and its
 * public key as SPKI PEM to |pub_path|. Returns 0 or -1. */
int certgen_rsa_key(const char *key_path, const char *pub_path, char *err, size_t errlen);

#endif
