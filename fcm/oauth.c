/*
 * Service-account OAuth2 for FCM: load the key file, sign assertions,
 * exchange them over the shared HTTP/2 client (http2/client.h) and cache
 * the access token. See oauth.h for the renewal rule.
 *
 * State: |token| (may be NULL), |refreshing| (one request in the air),
 * |waiters| (callers with no usable token yet, FIFO), |retry_timer| for the
 * backoff after a failed request. The object is freed after its pool and
 * its timer are closed.
 */
#include "fcm/oauth.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/jws.h"
#include "common/log.h"
#include "common/util.h"
#include "config/config.h"
#include "http2/client.h"

static char *dup_field(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) && v->valuestring && v->valuestring[0]
               ? xstrdup(v->valuestring) : NULL;
}

int fcm_service_account_load(const char *path, struct fcm_service_account *out,
                             char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        snprintf(err, errlen, "%s: cannot open service account file", path);
        return -1;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 > cap) {
            cap = cap ? cap * 2 : 8192;
            buf = xrealloc(buf, cap);
        }
        size_t n = fread(buf + len, 1, cap - len, fp);
        len += n;
        if (n == 0)
            break;
        if (len > 1 << 20)
            break;
    }
    fclose(fp);
    cJSON *o = cJSON_ParseWithLength(buf, len);
    free(buf);
    int rc = -1;
    if (!cJSON_IsObject(o)) {
        snprintf(err, errlen, "%s: not a JSON object", path);
        goto out;
    }
    const char *missing = NULL;
    char *pem = dup_field(o, "private_key");
    out->client_email = dup_field(o, "client_email");
    out->private_key_id = dup_field(o, "private_key_id");
    out->project_id = dup_field(o, "project_id");
    out->token_uri = dup_field(o, "token_uri");
    if (!out->client_email)
        missing = "client_email";
    else if (!pem)
        missing = "private_key";
    else if (!out->private_key_id)
        missing = "private_key_id";
    if (missing) {
        snprintf(err, errlen, "%s: missing field '%s'", path, missing);
        free(pem);
        goto out;
    }
    char kerr[200];
    out->key = jws_load_private_key_pem(pem, strlen(pem), kerr, sizeof kerr);
    free(pem);
    if (out->key == NULL) {
        snprintf(err, errlen, "%s: private_key: %s", path, kerr);
        goto out;
    }
    if (EVP_PKEY_get_base_id(out->key) != EVP_PKEY_RSA) {
        snprintf(err, errlen, "%s: private_key is not an RSA key", path);
        goto out;
    }
    rc = 0;
out:
    cJSON_Delete(o);
    if (rc != 0)
        fcm_service_account_clear(out);
    return rc;
}

void fcm_service_account_clear(struct fcm_service_account *sa)
{
    free(sa->client_email);
    free(sa->private_key_id);
    free(sa->project_id);
    free(sa->token_uri);
    EVP_PKEY_free(sa->key);
    memset(sa, 0, sizeof *sa);
}

char *fcm_oauth_assertion(const struct fcm_service_account *sa, const char *aud,
                          int64_t now_s)
{
    cJSON *h = cJSON_CreateObject();
    cJSON_AddStringToObject(h, "alg", "RS256");
    cJSON_AddStringToObject(h, "typ", "JWT");
    cJSON_AddStringToObject(h, "kid", sa->private_key_id);
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "iss", sa->client_email);
    cJSON_AddStringToObject(c, "scope", FCM_OAUTH_SCOPE);
    cJSON_AddStringToObject(c, "aud", aud);
    cJSON_AddNumberToObject(c, "iat", (double)now_s);
    cJSON_AddNumberToObject(c, "exp", (double)(now_s + 3600));
    char *hs = cJSON_PrintUnformatted(h);
    char *cs = cJSON_PrintUnformatted(c);
    char *jwt = jws_compact_sign("RS256", sa->key, hs, cs);
    cJSON_free(hs);
    cJSON_free(cs);
    cJSON_Delete(h);
    cJSON_Delete(c);
    return jwt;
}

char *fcm_oauth_form_body(const char *assertion)
{
    static const char pre[] =
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=";
    /* A compact JWS is base64url and dots only: nothing to percent-encode. */
    size_t n = sizeof pre + strlen(assertion);
    char *b = xmalloc(n);
    snprintf(b, n, "%s%s", pre, assertion);
    return b;
}

int fcm_oauth_parse_token(const uint8_t *body, size_t len, char **token,
                          int64_t *expires_in_s)
{
    *token = NULL;
    cJSON *o = cJSON_ParseWithLength((const char *)body, len);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return -1;
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "access_token");
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "expires_in");
    int rc = -1;
    if (cJSON_IsString(t) && t->valuestring && t->valuestring[0] &&
        strlen(t->valuestring) < 4096) {
        *token = xstrdup(t->valuestring);
        *expires_in_s = 3600;
        if (cJSON_IsNumber(e) && e->valuedouble >= 1 && e->valuedouble < 1e9)
            *expires_in_s = (int64_t)e->valuedouble;
        else if (cJSON_IsString(e) && e->valuestring && atoll(e->valuestring) > 0)
            *expires_in_s = atoll(e->valuestring);
        rc = 0;
    }
    cJSON_Delete(o);
    return rc;
}

bool fcm_oauth_due(int64_t now_ms, int64_t obtained_ms, int64_t expires_ms)
{
    int64_t lifetime = expires_ms - obtained_ms;
    int64_t margin = lifetime / 2;
    if (margin > 300000)
        margin = 300000;
    return expires_ms - now_ms < margin;
}

/* ---- the token cache ---------------------------------------------------- */

struct waiter {
    fcm_oauth_cb cb;
    void *user;
    struct waiter *next;
};

struct fcm_oauth {
    uv_loop_t *loop;
    const struct fcm_service_account *sa;
    char *name, *url, *path;
    struct h2_pool *pool;
    char *bearer;                 /* "Bearer <token>" or NULL */
    uint64_t generation;
    int64_t obtained_ms, expires_ms;
    bool refreshing;
    struct waiter *waiters, **waiters_tail;
    uv_timer_t retry_timer;
    uint32_t backoff_ms;
    bool closing;
    int open;                     /* pool + timer */
    void (*close_done)(void *);
    void *close_arg;
    struct fcm_oauth_stats st;
};

static void refresh(struct fcm_oauth *o);

static void wake_waiters(struct fcm_oauth *o, const char *bearer)
{
    struct waiter *w = o->waiters;
    o->waiters = NULL;
    o->waiters_tail = &o->waiters;
    while (w) {
        struct waiter *next = w->next;
        w->cb(bearer, o->generation, w->user);
        free(w);
        w = next;
    }
}

static void on_retry_timer(uv_timer_t *t)
{
    struct fcm_oauth *o = t->data;
    refresh(o);
}

static void token_failed(struct fcm_oauth *o, const char *why)
{
    o->st.failures++;
    o->backoff_ms = o->backoff_ms ? o->backoff_ms * 2 : 1000;
    if (o->backoff_ms > 60000)
        o->backoff_ms = 60000;
    uint32_t delay = o->backoff_ms / 2 + (uint32_t)(rand() % (o->backoff_ms / 2 + 1));
    log_warn("fcm", "%s: token request failed: %s; retrying in %u ms", o->name, why, delay);
    uv_timer_start(&o->retry_timer, on_retry_timer, delay, 0);
}

static void on_token_response(const struct h2_response *r, void *user)
{
    struct fcm_oauth *o = user;
    o->refreshing = false;
    if (o->closing)
        return;
    if (r->status != 200) {
        char why[300];
        if (r->status == 0)
            snprintf(why, sizeof why, "%s", r->error_reason ? r->error_reason : "no answer");
        else
            snprintf(why, sizeof why, "HTTP %d: %.*s", r->status,
                     (int)(r->body_len < 200 ? r->body_len : 200), (const char *)r->body);
        token_failed(o, why);
        return;
    }
    char *token = NULL;
    int64_t expires_in = 0;
    if (fcm_oauth_parse_token(r->body, r->body_len, &token, &expires_in) != 0) {
        token_failed(o, "unreadable token response");
        return;
    }
    size_t n = strlen(token) + 8;
    free(o->bearer);
    o->bearer = xmalloc(n);
    snprintf(o->bearer, n, "Bearer %s", token);
    free(token);
    o->generation++;
    o->obtained_ms = now_ms();
    o->expires_ms = o->obtained_ms + expires_in * 1000;
    o->backoff_ms = 0;
    o->st.refreshes++;
    o->st.expires_at_ms = o->expires_ms;
    log_info("fcm", "%s: access token obtained, expires in %lld s", o->name,
             (long long)expires_in);
    wake_waiters(o, o->bearer);
}

static void refresh(struct fcm_oauth *o)
{
    if (o->refreshing || o->closing)
        return;
    char *jwt = fcm_oauth_assertion(o->sa, o->url, now_s());
    if (jwt == NULL) {
        token_failed(o, "cannot sign the assertion");
        return;
    }
    char *body = fcm_oauth_form_body(jwt);
    free(jwt);
    struct h2_header h[] = {
        { "content-type", "application/x-www-form-urlencoded", 0 },
    };
    o->refreshing = true;
    if (h2_pool_submit(o->pool, "POST", o->path, h, 1, (const uint8_t *)body,
                       strlen(body), on_token_response, o) != 0) {
        o->refreshing = false;
        token_failed(o, "pool closing");
    }
    free(body);
}

struct fcm_oauth *fcm_oauth_new(uv_loop_t *loop, const struct fcm_service_account *sa,
                                const char *token_url, SSL_CTX *ssl_ctx, const char *name)
{
    struct config_url u;
    if (config_url_parse(token_url, &u) != 0 || !u.tls)
        return NULL;
    struct fcm_oauth *o = xcalloc(1, sizeof *o);
    o->loop = loop;
    o->sa = sa;
    o->name = xstrdup(name);
    o->url = xstrdup(token_url);
    o->path = xstrdup(u.path[0] ? u.path : "/");
    o->waiters_tail = &o->waiters;
    char pname[160];
    snprintf(pname, sizeof pname, "oauth %s", name);
    struct h2_pool_config pc = {
        .name = pname,
        .url = token_url,
        .ssl_ctx = ssl_ctx,
        .max_connections = 1,
        .initial_max_streams = 100,
        .request_timeout_ms = 30000,
        .connect_timeout_ms = 10000,
        .ping_idle_ms = 0,
        .max_attempts = 2,
    };
    o->pool = h2_pool_new(loop, &pc);
    if (o->pool == NULL) {
        free(o->name);
        free(o->url);
        free(o->path);
        free(o);
        return NULL;
    }
    uv_timer_init(loop, &o->retry_timer);
    o->retry_timer.data = o;
    o->open = 2;
    return o;
}

void fcm_oauth_get(struct fcm_oauth *o, fcm_oauth_cb cb, void *user)
{
    if (o->closing) {
        cb(NULL, 0, user);
        return;
    }
    int64_t now = now_ms();
    if (o->bearer && now < o->expires_ms) {
        if (fcm_oauth_due(now, o->obtained_ms, o->expires_ms) &&
            !uv_is_active((uv_handle_t *)&o->retry_timer))
            refresh(o);
        cb(o->bearer, o->generation, user);
        return;
    }
    struct waiter *w = xmalloc(sizeof *w);
    w->cb = cb;
    w->user = user;
    w->next = NULL;
    *o->waiters_tail = w;
    o->waiters_tail = &w->next;
    if (!uv_is_active((uv_handle_t *)&o->retry_timer))
        refresh(o);
}

void fcm_oauth_invalidate(struct fcm_oauth *o, uint64_t generation)
{
    if (generation != o->generation || o->bearer == NULL)
        return;
    log_info("fcm", "%s: access token refused by FCM; fetching a new one", o->name);
    free(o->bearer);
    o->bearer = NULL;
    o->expires_ms = 0;
}

void fcm_oauth_get_stats(const struct fcm_oauth *o, struct fcm_oauth_stats *out)
{
    *out = o->st;
}

static void release(struct fcm_oauth *o)
{
    if (--o->open > 0)
        return;
    void (*done)(void *) = o->close_done;
    void *arg = o->close_arg;
    free(o->bearer);
    free(o->name);
    free(o->url);
    free(o->path);
    free(o);
    if (done)
        done(arg);
}

static void on_pool_closed(void *arg) { release(arg); }
static void on_timer_closed(uv_handle_t *h) { release(h->data); }

void fcm_oauth_close(struct fcm_oauth *o, void (*done)(void *arg), void *arg)
{
    o->closing = true;
    o->close_done = done;
    o->close_arg = arg;
    wake_waiters(o, NULL);
    uv_timer_stop(&o->retry_timer);
    uv_close((uv_handle_t *)&o->retry_timer, on_timer_closed);
    h2_pool_close(o->pool, on_pool_closed, o);
}
