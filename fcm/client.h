/*
 * FCM HTTP v1 client for one app: service-account OAuth2 (fcm/oauth.h) and
 * a pool of HTTP/2 connections to FCM (100 concurrent streams each; more
 * connections open when one is full, up to max_connections). Answers are
 * classified by fcm/errors.h; a 401 for our access token refreshes it once
 * and resends.
 */
#ifndef VARSEL_FCM_CLIENT_H
#define VARSEL_FCM_CLIENT_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/push.h"

struct fcm_client;

struct fcm_client_config {
    const char *app;                    /* for logs */
    const char *service_account_file;
    const char *project_id;             /* NULL: the file's project_id */
    const char *fcm_url;                /* "https://fcm.googleapis.com" */
    const char *token_url;              /* NULL: the file's token_uri */
    int max_connections;
    uint32_t request_timeout_ms;
    SSL_CTX *ssl_ctx;                   /* borrowed */
};

/* Returns 0, or -1 with |err| filled (unreadable or invalid file, bad URL). */
int fcm_client_new(uv_loop_t *loop, const struct fcm_client_config *cfg,
                   struct fcm_client **out, char *err, size_t errlen);

/*
 * Send one message: |json| is the whole request body ({"message":{...}},
 * fcm/message.h), copied. |cb| fires exactly once. Returns 0 or -1 when
 * closing.
 */
int fcm_client_send(struct fcm_client *c, const char *json, size_t len,
                    push_done_cb cb, void *user);

size_t fcm_client_inflight(const struct fcm_client *c);

/* The FCM connection pool (for metrics). */
struct h2_pool;
const struct h2_pool *fcm_client_pool(const struct fcm_client *c);

struct fcm_client_stats {
    uint64_t token_refreshes, token_failures, auth_retries;
    size_t connections;
    uint32_t max_streams_seen;
};
void fcm_client_get_stats(const struct fcm_client *c, struct fcm_client_stats *out);

void fcm_client_close(struct fcm_client *c, void (*done)(void *arg), void *arg);

#endif
