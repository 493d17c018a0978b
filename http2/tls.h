/*
 * TLS over OpenSSL memory BIOs on a libuv TCP handle, for clients (varseld's
 * provider connections) and servers (varsel-sandbox). The layer above sees
 * only plaintext: it writes with tls_conn_write() and receives bytes through
 * on_data. The layer below is a uv_tcp_t embedded in struct tls_conn.
 *
 * Ownership: the tls_conn owns its uv_tcp_t, SSL and BIOs. on_close fires
 * exactly once per connection (handshake failure, peer close, I/O or TLS
 * error, or tls_conn_close()); the connection frees itself after the uv
 * handle's close callback, so the user must drop its pointer in on_close and
 * never touch it again. Calling tls_conn_close() from inside any callback is
 * allowed.
 *
 * Creating a context (tls_client_ctx_new / tls_server_ctx_new) sets SIGPIPE
 * to SIG_IGN if it still has the default action: libuv writes with write(2)
 * and a peer reset must not kill the process.
 */
#ifndef VARSEL_TLS_H
#define VARSEL_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct tls_conn;

struct tls_conn_callbacks {
    /* Handshake complete; tls_conn_alpn() is valid from here on. */
    void (*on_open)(struct tls_conn *c, void *user);
    /* Decrypted bytes from the peer; borrowed for the call's duration. */
    void (*on_data)(struct tls_conn *c, const uint8_t *data, size_t len, void *user);
    /* Exactly once. |err| is 0 for an orderly close by either side, else a
     * negative libuv error code or TLS_ERR_*; |reason| is human-readable. */
    void (*on_close)(struct tls_conn *c, int err, const char *reason, void *user);
};

#define TLS_ERR_HANDSHAKE (-10001) /* handshake or certificate verification */
#define TLS_ERR_ALPN      (-10002) /* peer did not select a required protocol */
#define TLS_ERR_PROTOCOL  (-10003) /* TLS record error after the handshake */

/*
 * Client context: verifies the peer chain against the system store plus
 * |ca_file| (may be NULL) and, per connection, the host name. |alpn| is a
 * NULL-terminated list such as {"h2", NULL}; when |require_alpn| is set a
 * peer that selects none of them fails with TLS_ERR_ALPN. Optional client
 * certificate |cert_file|/|key_file| (may be NULL). Returns NULL and fills
 * |err| on failure.
 */
SSL_CTX *tls_client_ctx_new(const char *ca_file, const char *const *alpn,
                            const char *cert_file, const char *key_file,
                            char *err, size_t errlen);

/*
 * Server context from PEM |cert_file| (leaf plus chain) and |key_file|;
 * ALPN selection prefers the order in |alpn| ({"h2", "http/1.1", NULL}).
 */
SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file,
                            const char *const *alpn, char *err, size_t errlen);

/*
 * Start a client connection to |addr|, sending SNI and verifying |host|.
 * Returns 0 and stores the connection in |*out|, or a negative libuv error
 * (no callbacks fire then). The SSL_CTX must outlive the connection.
 */
int tls_conn_connect(uv_loop_t *loop, SSL_CTX *ctx, const struct sockaddr *addr,
                     const char *host, int require_alpn,
                     const struct tls_conn_callbacks *cb, void *user,
                     struct tls_conn **out);

/* Accept one pending connection on |server| and start the server handshake. */
int tls_conn_accept(uv_stream_t *server, SSL_CTX *ctx,
                    const struct tls_conn_callbacks *cb, void *user,
                    struct tls_conn **out);

/*
 * Encrypt and queue |len| plaintext bytes. Returns 0 or a negative error.
 * Bytes are copied; the caller keeps ownership of |data|.
 */
int tls_conn_write(struct tls_conn *c, const uint8_t *data, size_t len);

/* Bytes queued in libuv but not yet written to the socket (back-pressure). */
size_t tls_conn_write_queue_size(const struct tls_conn *c);

/* Negotiated ALPN protocol ("h2", "http/1.1") or "" when none. */
const char *tls_conn_alpn(const struct tls_conn *c);

/* Replace the user pointer given at connect/accept time. */
void tls_conn_set_user(struct tls_conn *c, void *user);

/* Close (sends close_notify when possible); on_close fires once, later. */
void tls_conn_close(struct tls_conn *c, int err, const char *reason);

/* Abort with a TCP reset, no close_notify (fault injection). */
void tls_conn_reset(struct tls_conn *c);

#endif
