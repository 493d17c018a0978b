/*
 * FCM client: wait for an access token (fcm/oauth.c), POST the message to
 * /v1/projects/{project}/messages:send over the pool, map the answer.
 *
 * A request (struct fcm_req) owns a copy of its body while it waits for a
 * token and while it is in the pool; it is freed after its callback.
 */
#include "fcm/client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "fcm/errors.h"
#include "fcm/oauth.h"
#include "http2/client.h"

struct fcm_client {
    char *app, *project, *path, *token_url;
    struct fcm_service_account sa;
    struct fcm_oauth *oauth;
    struct h2_pool *pool;
    int open;
    bool closing;
    uint64_t auth_retries;
    void (*close_done)(void *);
    void *close_arg;
};

struct fcm_req {
    struct fcm_client *c;
    push_done_cb cb;
    void *user;
    uint64_t generation;
    int auth_tries;
    size_t len;
    char body[];
};

static void req_finish(struct fcm_req *r, const struct push_result *res)
{
    r->cb(res, r->user);
    free(r);
}

static void req_fail(struct fcm_req *r, const char *why)
{
    struct push_result res;
    memset(&res, 0, sizeof res);
    res.outcome = PUSH_TRANSIENT;
    res.token_timestamp_ms = -1;
    res.retry_after_s = -1;
    snprintf(res.reason, sizeof res.reason, "%s", why);
    req_finish(r, &res);
}

static void req_send(struct fcm_req *r);

static void on_response(const struct h2_response *h, void *user)
{
    struct fcm_req *r = user;
    struct fcm_client *c = r->c;
    struct push_result res;
    memset(&res, 0, sizeof res);
    res.token_timestamp_ms = -1;
    res.retry_after_s = -1;
    res.rtt_ms = h->rtt_ms;
    res.http_status = h->status;
    if (h->status == 0) {
        res.outcome = PUSH_TRANSIENT;
        snprintf(res.reason, sizeof res.reason, "%s",
                 h->error_reason ? h->error_reason : "no answer");
        req_finish(r, &res);
        return;
    }
    res.retry_after_s = h2_response_retry_after(h);
    struct fcm_error e;
    bool parsed = h->status != 200 && fcm_error_parse(h->body, h->body_len, &e) == 0;
    enum fcm_outcome o = fcm_error_classify(h->status, parsed ? &e : NULL);
    switch (o) {
    case FCM_OUTCOME_SENT:
        res.outcome = PUSH_SENT;
        fcm_response_parse_name(h->body, h->body_len, res.provider_id,
                                sizeof res.provider_id);
        break;
    case FCM_OUTCOME_AUTH:
        if (r->auth_tries == 0 && !c->closing) {
            r->auth_tries++;
            c->auth_retries++;
            fcm_oauth_invalidate(c->oauth, r->generation);
            req_send(r);
            return;
        }
        res.outcome = PUSH_TRANSIENT;
        break;
    case FCM_OUTCOME_INVALID_TOKEN: res.outcome = PUSH_INVALID_TOKEN; break;
    case FCM_OUTCOME_TRANSIENT: res.outcome = PUSH_TRANSIENT; break;
    default: res.outcome = PUSH_PERMANENT; break;
    }
    if (o != FCM_OUTCOME_SENT) {
        if (parsed && e.error_code != FCM_ERR_NONE)
            snprintf(res.reason, sizeof res.reason, "%s", fcm_error_code_name(e.error_code));
        else if (parsed && e.status[0])
            snprintf(res.reason, sizeof res.reason, "%s", e.status);
        else
            snprintf(res.reason, sizeof res.reason, "HTTP %d", h->status);
        if (res.outcome == PUSH_PERMANENT)
            log_warn("fcm", "app %s: %d %s", c->app, h->status, res.reason);
    }
    req_finish(r, &res);
}

static void on_token(const char *bearer, uint64_t generation, void *user)
{
    struct fcm_req *r = user;
    if (bearer == NULL) {
        req_fail(r, "shutdown");
        return;
    }
    r->generation = generation;
    struct h2_header h[] = {
        { "authorization", bearer, H2_HDR_NO_INDEX },
        { "content-type", "application/json; charset=UTF-8", 0 },
    };
    if (h2_pool_submit(r->c->pool, "POST", r->c->path, h, 2, (const uint8_t *)r->body,
                       r->len, on_response, r) != 0)
        req_fail(r, "shutdown");
}

static void req_send(struct fcm_req *r)
{
    fcm_oauth_get(r->c->oauth, on_token, r);
}

int fcm_client_new(uv_loop_t *loop, const struct fcm_client_config *cfg,
                   struct fcm_client **out, char *err, size_t errlen)
{
    *out = NULL;
    struct fcm_client *c = xcalloc(1, sizeof *c);
    if (fcm_service_account_load(cfg->service_account_file, &c->sa, err, errlen) != 0) {
        free(c);
        return -1;
    }
    const char *project = cfg->project_id ? cfg->project_id : c->sa.project_id;
    const char *token_url = cfg->token_url ? cfg->token_url : c->sa.token_uri;
    if (project == NULL || token_url == NULL) {
        snprintf(err, errlen, "%s: no %s (set %s)", cfg->service_account_file,
                 project ? "token_uri" : "project_id",
                 project ? "fcm_token_url" : "fcm_project_id");
        fcm_service_account_clear(&c->sa);
        free(c);
        return -1;
    }
    c->app = xstrdup(cfg->app);
    c->project = xstrdup(project);
    c->token_url = xstrdup(token_url);
    size_t n = strlen(project) + 40;
    c->path = xmalloc(n);
    snprintf(c->path, n, "/v1/projects/%s/messages:send", project);
    char name[160];
    snprintf(name, sizeof name, "fcm %s", cfg->app);
    c->oauth = fcm_oauth_new(loop, &c->sa, c->token_url, cfg->ssl_ctx, cfg->app);
    struct h2_pool_config pc = {
        .name = name,
        .url = cfg->fcm_url,
        .ssl_ctx = cfg->ssl_ctx,
        .max_connections = cfg->max_connections > 0 ? cfg->max_connections : 4,
        .initial_max_streams = 100,
        .request_timeout_ms = cfg->request_timeout_ms,
        .connect_timeout_ms = 10000,
        .ping_idle_ms = 60000,
        .max_attempts = 3,
        .fail_fast = 1, /* the pipeline retries durably */
    };
    c->pool = h2_pool_new(loop, &pc);
    c->open = (c->oauth != NULL) + (c->pool != NULL);
    if (c->oauth == NULL || c->pool == NULL) {
        snprintf(err, errlen, "bad %s URL", c->oauth ? "fcm_url" : "token");
        fcm_client_close(c, NULL, NULL);
        return -1;
    }
    *out = c;
    return 0;
}


int fcm_client_send(struct fcm_client *c, const char *json, size_t len,
                    push_done_cb cb, void *user)
{
    if (c->closing)
        return -1;
    struct fcm_req *r = xmalloc(sizeof *r + len + 1);
    r->c = c;
    r->cb = cb;
    r->user = user;
    r->generation = 0;
    r->auth_tries = 0;
    r->len = len;
    memcpy(r->body, json, len);
    r->body[len] = '\0';
    req_send(r);
    return 0;
}

const struct h2_pool *fcm_client_pool(const struct fcm_client *c)
{
    return c->pool;
}

size_t fcm_client_inflight(const struct fcm_client *c)
{
    return h2_pool_inflight(c->pool) + h2_pool_queued(c->pool);
}

void fcm_client_get_stats(const struct fcm_client *c, struct fcm_client_stats *out)
{
    memset(out, 0, sizeof *out);
    struct fcm_oauth_stats os;
    fcm_oauth_get_stats(c->oauth, &os);
    struct h2_pool_stats ps;
    h2_pool_get_stats(c->pool, &ps);
    out->token_refreshes = os.refreshes;
    out->token_failures = os.failures;
    out->auth_retries = c->auth_retries;
    out->connections = h2_pool_connections(c->pool);
    out->max_streams_seen = ps.max_streams_seen;
}

static void release(void *arg)
{
    struct fcm_client *c = arg;
    if (--c->open > 0)
        return;
    void (*done)(void *) = c->close_done;
    void *done_arg = c->close_arg;
    fcm_service_account_clear(&c->sa);
    free(c->app);
    free(c->project);
    free(c->path);
    free(c->token_url);
    free(c);
    if (done)
        done(done_arg);
}

void fcm_client_close(struct fcm_client *c, void (*done)(void *arg), void *arg)
{
    c->closing = true;
    c->close_done = done;
    c->close_arg = arg;
    if (c->open == 0) {
        c->open = 1;
        release(c);
        return;
    }
    /* The pool first: requests in it fail with "shutdown"; then OAuth wakes
     * the ones still waiting for a token. */
    if (c->pool)
        h2_pool_close(c->pool, release, c);
    if (c->oauth)
        fcm_oauth_close(c->oauth, release, c);
}
