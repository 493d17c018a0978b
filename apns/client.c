/*
 * APNs client for one app.
 *
 *   apns_client_send -> request headers (PROTOCOLS.md §1) + provider token
 *                    -> h2_pool of the device's environment (production or
 *                       sandbox), which honours the live stream limit
 *                    -> on_response: apns-id, status and reason mapped to a
 *                       push outcome -> the caller's callback, once.
 *
 * The provider token (ES256 JWT) is shared by both pools and renewed by
 * apns/jwt.c no more often than every 20 minutes. An ExpiredProviderToken
 * answer invalidates it so the next request carries a new one.
 */
#include "apns/client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apns/jwt.h"
#include "apns/payload.h"
#include "common/log.h"
#include "common/util.h"
#include "http2/client.h"

struct apns_client {
    char *app, *topic;
    struct apns_jwt jwt;
    struct h2_pool *prod, *sandbox;
    int pools_open;
    void (*close_done)(void *);
    void *close_arg;
    struct apns_pending *spare;  /* answered requests' records, for reuse */
    size_t n_spare;
};

struct apns_pending {
    struct apns_client *c;
    push_done_cb cb;
    void *user;
    struct apns_pending *next;   /* on c->spare */
};

#if defined(__SANITIZE_ADDRESS__)
#define PENDING_SPARE_MAX 0      /* let AddressSanitizer see every free */
#else
#define PENDING_SPARE_MAX 4096   /* ~130 KB at most */
#endif

enum push_outcome apns_client_classify(int status, const char *reason)
{
    if (status == 200)
        return PUSH_SENT;
    if (status == 410)
        return PUSH_INVALID_TOKEN;
    if (status == 400 && (strcmp(reason, "BadDeviceToken") == 0 ||
                          strcmp(reason, "DeviceTokenNotForTopic") == 0))
        return PUSH_INVALID_TOKEN;
    if (status == 429 || status == 500 || status == 503)
        return PUSH_TRANSIENT;
    /* Our provider token went stale or was refused for being renewed too
     * often: a new request with a fresh token can succeed. */
    if (status == 403 && strcmp(reason, "ExpiredProviderToken") == 0)
        return PUSH_TRANSIENT;
    if (status == 0)
        return PUSH_TRANSIENT;
    return PUSH_PERMANENT;
}

static void on_response(const struct h2_response *r, void *user)
{
    struct apns_pending *p = user;
    struct push_result res;
    memset(&res, 0, sizeof res);
    res.token_timestamp_ms = -1;
    res.retry_after_s = -1;
    res.rtt_ms = r->rtt_ms;
    res.http_status = r->status;
    if (r->status == 0) {
        res.outcome = PUSH_TRANSIENT;
        snprintf(res.reason, sizeof res.reason, "%s",
                 r->error_reason ? r->error_reason : "no answer");
    } else {
        const char *id = h2_response_header(r, "apns-id");
        if (id) {
            size_t n = strlen(id);
            if (n >= sizeof res.provider_id)
                n = sizeof res.provider_id - 1;
            memcpy(res.provider_id, id, n);
            res.provider_id[n] = '\0';
        }
        if (r->status != 200) {
            int64_t ts = -1;
            if (apns_response_parse(r->body, r->body_len, res.reason, sizeof res.reason,
                                    &ts) != 0)
                snprintf(res.reason, sizeof res.reason, "HTTP %d", r->status);
            res.token_timestamp_ms = ts;
            if (strcmp(res.reason, "ExpiredProviderToken") == 0)
                apns_jwt_invalidate(&p->c->jwt);
        }
        res.outcome = apns_client_classify(r->status, res.reason);
        /* APNs sends no Retry-After today; honour one if it ever does. */
        res.retry_after_s = h2_response_retry_after(r);
        if (r->status != 200 && res.outcome == PUSH_PERMANENT)
            log_warn("apns", "app %s: %d %s", p->c->app, r->status, res.reason);
    }
    push_done_cb cb = p->cb;
    void *cb_user = p->user;
    struct apns_client *c = p->c; /* freed only after its pools closed */
    if (c->n_spare + 1 <= PENDING_SPARE_MAX) {
        p->next = c->spare;
        c->spare = p;
        c->n_spare++;
    } else {
        free(p);
    }
    cb(&res, cb_user);
}

static struct h2_pool *make_pool(uv_loop_t *loop, const struct apns_client_config *cfg,
                                 const char *url, const char *env)
{
    char name[128];
    snprintf(name, sizeof name, "apns %s %s", cfg->app, env);
    struct h2_pool_config pc = {
        .name = name,
        .url = url,
        .ssl_ctx = cfg->ssl_ctx,
        .max_connections = cfg->max_connections > 0 ? cfg->max_connections : 1,
        .initial_max_streams = 1, /* APNs allows one stream until a token is accepted */
        .request_timeout_ms = cfg->request_timeout_ms,
        .connect_timeout_ms = 10000,
        .ping_idle_ms = 60000,
        .max_attempts = 3,
        .fail_fast = 1, /* the pipeline retries durably */
    };
    return h2_pool_new(loop, &pc);
}

int apns_client_new(uv_loop_t *loop, const struct apns_client_config *cfg,
                    struct apns_client **out, char *err, size_t errlen)
{
    *out = NULL;
    struct apns_client *c = xcalloc(1, sizeof *c);
    if (apns_jwt_init(&c->jwt, cfg->key_file, cfg->key_id, cfg->team_id, err, errlen) != 0) {
        free(c);
        return -1;
    }
    c->app = xstrdup(cfg->app);
    c->topic = xstrdup(cfg->topic);
    c->prod = make_pool(loop, cfg, cfg->url, "production");
    c->sandbox = make_pool(loop, cfg, cfg->sandbox_url, "sandbox");
    if (c->prod == NULL || c->sandbox == NULL) {
        snprintf(err, errlen, "bad APNs URL");
        c->pools_open = (c->prod != NULL) + (c->sandbox != NULL);
        apns_client_close(c, NULL, NULL);
        return -1;
    }
    c->pools_open = 2;
    *out = c;
    return 0;
}

int apns_client_send(struct apns_client *c, const struct apns_request *req,
                     push_done_cb cb, void *user)
{
    /* Built by hand: three snprintf calls were a tenth of this path. */
    char path[300], prio[24], exp[24];
    size_t tl = strlen(req->token);
    if (tl > sizeof path - 11)
        tl = sizeof path - 11; /* as snprintf cut it (no token is that long) */
    memcpy(path, "/3/device/", 10);
    memcpy(path + 10, req->token, tl);
    path[10 + tl] = '\0';
    fmt_i64(prio, req->priority);
    fmt_i64(exp, req->expiration);
    const char *bearer = apns_jwt_bearer(&c->jwt, now_s());
    if (bearer == NULL)
        return -1;
    struct h2_header h[8];
    size_t n = 0;
    /* Literal lowercase names: h2_pool_submit references them. */
    h[n++] = (struct h2_header){ "authorization", bearer,
                                 H2_HDR_NO_INDEX | H2_HDR_STATIC_NAME };
    h[n++] = (struct h2_header){ "apns-topic", c->topic, H2_HDR_STATIC_NAME };
    h[n++] = (struct h2_header){ "apns-push-type", req->push_type, H2_HDR_STATIC_NAME };
    h[n++] = (struct h2_header){ "apns-priority", prio, H2_HDR_STATIC_NAME };
    h[n++] = (struct h2_header){ "apns-expiration", exp, H2_HDR_STATIC_NAME };
    h[n++] = (struct h2_header){ "apns-id", req->apns_id, H2_HDR_NO_INDEX | H2_HDR_STATIC_NAME };
    if (req->collapse_id)
        h[n++] = (struct h2_header){ "apns-collapse-id", req->collapse_id,
                                     H2_HDR_NO_INDEX | H2_HDR_STATIC_NAME };
    h[n++] = (struct h2_header){ "content-type", "application/json", H2_HDR_STATIC_NAME };
    struct apns_pending *p = c->spare;
    if (p) {
        c->spare = p->next;
        c->n_spare--;
    } else {
        p = xmalloc(sizeof *p);
    }
    p->c = c;
    p->cb = cb;
    p->user = user;
    struct h2_pool *pool = req->sandbox ? c->sandbox : c->prod;
    if (h2_pool_submit(pool, "POST", path, h, n, (const uint8_t *)req->payload,
                       req->payload_len, on_response, p) != 0) {
        free(p);
        return -1;
    }
    return 0;
}

const struct h2_pool *apns_client_pool(const struct apns_client *c, bool sandbox)
{
    return sandbox ? c->sandbox : c->prod;
}

size_t apns_client_inflight(const struct apns_client *c)
{
    return h2_pool_inflight(c->prod) + h2_pool_queued(c->prod) +
           h2_pool_inflight(c->sandbox) + h2_pool_queued(c->sandbox);
}

static void on_pool_closed(void *arg)
{
    struct apns_client *c = arg;
    if (--c->pools_open > 0)
        return;
    void (*done)(void *) = c->close_done;
    void *done_arg = c->close_arg;
    apns_jwt_free(&c->jwt);
    while (c->spare) {
        struct apns_pending *p = c->spare;
        c->spare = p->next;
        free(p);
    }
    free(c->app);
    free(c->topic);
    free(c);
    if (done)
        done(done_arg);
}

void apns_client_close(struct apns_client *c, void (*done)(void *arg), void *arg)
{
    c->close_done = done;
    c->close_arg = arg;
    if (c->pools_open == 0) {
        c->pools_open = 1;
        on_pool_closed(c);
        return;
    }
    if (c->prod)
        h2_pool_close(c->prod, on_pool_closed, c);
    if (c->sandbox)
        h2_pool_close(c->sandbox, on_pool_closed, c);
}
