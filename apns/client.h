/*
 * APNs provider client for one app: token-based auth (ES256 provider token,
 * apns/jwt.h), one HTTP/2 connection pool per environment (production and
 * sandbox, http2/client.h), and the mapping from APNs answers to push
 * outcomes (PROTOCOLS.md §1).
 */
#ifndef VARSEL_APNS_CLIENT_H
#define VARSEL_APNS_CLIENT_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/push.h"

struct apns_client;

struct apns_client_config {
    const char *app;            /* app name, for logs */
    const char *topic;          /* bundle id */
    const char *team_id, *key_id, *key_file;
    const char *url;            /* production origin */
    const char *sandbox_url;    /* development origin */
    int max_connections;        /* per environment */
    uint32_t request_timeout_ms;
    SSL_CTX *ssl_ctx;           /* borrowed; outlives the client */
};

/* Returns 0, or -1 with |err| filled (unreadable key file, bad URL). */
int apns_client_new(uv_loop_t *loop, const struct apns_client_config *cfg,
                    struct apns_client **out, char *err, size_t errlen);

struct apns_request {
    const char *token;          /* hex device token */
    bool sandbox;               /* development environment */
    const char *apns_id;        /* lowercase UUID */
    const char *collapse_id;    /* <= 64 bytes, or NULL */
    int priority;               /* 10, 5 or 1 */
    int64_t expiration;         /* UNIX seconds; 0 = deliver once, no storage */
    const char *push_type;      /* "alert" */
    const char *payload;        /* JSON, <= 4096 bytes; copied */
    size_t payload_len;
};

/*
 * Send one notification. |cb| fires exactly once with the outcome (also on
 * shutdown, as PUSH_TRANSIENT "shutdown"). Returns 0 or -1 when closing.
 */
int apns_client_send(struct apns_client *c, const struct apns_request *req,
                     push_done_cb cb, void *user);

/* Requests sent and not answered, and requests waiting for a stream. */
size_t apns_client_inflight(const struct apns_client *c);

/* The connection pool of one environment (for metrics). */
struct h2_pool;
const struct h2_pool *apns_client_pool(const struct apns_client *c, bool sandbox);

/*
 * Map an APNs answer to an outcome (exposed for tests): |status| is the
 * HTTP status, |reason| the body's reason ("" for none).
 */
enum push_outcome apns_client_classify(int status, const char *reason);

/* Close both pools; pending requests complete with "shutdown". |done| fires
 * when everything is freed. */
void apns_client_close(struct apns_client *c, void (*done)(void *arg), void *arg);

#endif
