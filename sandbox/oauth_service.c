/*
 * OAuth token endpoint service glue (see oauth_service.h).
 *
 * Per request: route (token paths only, POST only, Google's HTML 404/405
 * otherwise), the outage window, sbx_oauth_check() with the request's own
 * URL as an accepted audience, fault injection on would-be successes, then
 * a new access token from the table with the configured lifetime. The
 * record line travels as the response tag and is written when the server
 * actually answers (sbx_record_tag_finish), as for APNs.
 */
#include "sandbox/oauth_service.h"

#include "common/log.h"
#include "common/util.h"
#include "sandbox/fcm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sbx_record_tag_finish(struct sbx_record_tag *tag, bool answered)
{
    if (answered) {
        cJSON *at = cJSON_GetObjectItemCaseSensitive(tag->rec, "at");
        cJSON_SetNumberValue(at, (double)now_ms());
        sbx_record_write(tag->record, tag->rec);
    }
    cJSON_Delete(tag->rec);
    free(tag);
}

bool sbx_oauth_service_path(const char *path)
{
    static const char *const paths[] = { "/token", "/o/oauth2/token", "/oauth2/v4/token" };
    if (path == NULL)
        return false;
    size_t len = strcspn(path, "?");
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        if (strlen(paths[i]) == len && strncmp(path, paths[i], len) == 0)
            return true;
    return false;
}

enum sbx_oauth_token_state sbx_oauth_service_check(const struct sbx_oauth_service *s,
                                                   const char *token, size_t len,
                                                   int64_t now, const struct sbx_oauth_account **account)
{
    return sbx_oauth_tokens_check(s->tokens, token, len, now, account);
}

/* Error body for an injected status. */
static void fault_grant(struct sbx_oauth_grant *g, int status, const char *reason)
{
    const char *err, *desc;
    switch (status) {
    case 429: err = "rate_limit_exceeded"; desc = "Rate limit exceeded."; break;
    case 500: err = "server_error"; desc = "Internal error encountered."; break;
    case 503: err = "temporarily_unavailable"; desc = "The service is currently unavailable."; break;
    case 401: err = "invalid_client"; desc = "Unauthorized"; break;
    case 403: err = "access_denied"; desc = "Forbidden"; break;
    default:
        err = status >= 500 ? "server_error" : "invalid_request";
        desc = status >= 500 ? "Backend Error" : "Bad Request";
        break;
    }
    g->status = status;
    g->error = reason && reason[0] ? reason : err;
    snprintf(g->error_description, sizeof g->error_description, "%s", desc);
    g->account = NULL;
}

static void rec_str(cJSON *rec, const char *key, const char *v)
{
    if (v && v[0] && utf8_valid(v, strlen(v)))
        cJSON_AddStringToObject(rec, key, v);
    else
        cJSON_AddNullToObject(rec, key);
}

void sbx_oauth_service_handle(struct sbx_oauth_service *s, struct sbx_conn *c,
                              const struct sbx_request *req, struct sbx_response *resp)
{
    free(s->reply);
    s->reply = NULL;
    s->requests++;

    struct sbx_oauth_grant g;
    memset(&g, 0, sizeof g);
    char token[SBX_OAUTH_TOKEN_MAX] = "";
    const char *fault = NULL;
    char fault_name[32] = "";
    int retry_after = -1;
    int64_t expires_in = s->opt.expires_in_s > 0 ? s->opt.expires_in_s
                                                 : SBX_OAUTH_EXPIRES_IN_DEFAULT;
    bool html = false;

    if (!sbx_oauth_service_path(req->path)) {
        g.status = 404;
        html = true;
    } else if (req->method == NULL || strcmp(req->method, "POST") != 0) {
        g.status = 405;
        html = true;
    } else if (s->opt.outage_ms > 0 && mono_ms() - s->start_mono < s->opt.outage_ms) {
        fault_grant(&g, 503, NULL);
        fault = "outage";
    } else {
        char self[600];
        size_t plen = strcspn(req->path, "?");
        snprintf(self, sizeof self, "https://%s%.*s", req->authority ? req->authority : "",
                 (int)plen, req->path);
        struct sbx_oauth_config cfg = {
            .accounts = s->opt.accounts, .naccounts = s->opt.naccounts,
            .self_audience = self, .audiences = s->opt.audiences,
            .naudiences = s->opt.naudiences,
        };
        sbx_oauth_check(&cfg, sbx_request_header(req, "content-type", NULL, NULL), req->body,
                        req->body_len, now_s(), &g);
        const struct sbx_fault_rule *rule;
        if (g.status == 200 && s->opt.faults && (rule = sbx_faults_pick(s->opt.faults)) != NULL) {
            fault = sbx_fault_name(rule, fault_name, sizeof fault_name);
            switch (rule->kind) {
            case SBX_FAULT_STATUS:
                fault_grant(&g, rule->status, rule->reason);
                retry_after = rule->retry_after_s;
                break;
            case SBX_FAULT_TCP_RESET: resp->action = SBX_ACT_TCP_RESET; break;
            case SBX_FAULT_RST_STREAM: resp->action = SBX_ACT_RST_STREAM; break;
            case SBX_FAULT_HANG: resp->action = SBX_ACT_HANG; break;
            }
        }
        if (g.status == 200 && resp->action == SBX_ACT_REPLY)
            sbx_oauth_tokens_issue(s->tokens, g.account, now_ms(), expires_in * 1000, token);
    }

    /* The reply; the server copies headers and body before we return. */
    size_t cap = 1024;
    s->reply = xmalloc(cap);
    resp->status = g.status;
    size_t n = 0;
    if (html) {
        free(s->reply);
        s->reply = sbx_google_error_page(g.status, req->method, req->path);
        resp->headers[n].name = "content-type";
        resp->headers[n++].value = "text/html; charset=UTF-8";
        resp->body_len = strlen(s->reply);
    } else {
        resp->headers[n].name = "content-type";
        resp->headers[n++].value = "application/json; charset=utf-8";
        if (g.status == 200) {
            resp->headers[n].name = "cache-control";
            resp->headers[n++].value = "no-cache, no-store, max-age=0, must-revalidate";
            resp->headers[n].name = "pragma";
            resp->headers[n++].value = "no-cache";
            resp->body_len = sbx_oauth_token_body(token, expires_in, s->reply, cap);
        } else {
            resp->body_len = sbx_oauth_error_body(&g, s->reply, cap);
        }
    }
    if (retry_after >= 0) {
        snprintf(s->retry, sizeof s->retry, "%d", retry_after);
        resp->headers[n].name = "retry-after";
        resp->headers[n++].value = s->retry;
    }
    resp->nheaders = n;
    resp->body = s->reply;
    if (s->opt.faults)
        resp->delay_ms = s->opt.faults->latency_ms;

    const char *outcome = g.status == 200 ? "200"
                          : html          ? (g.status == 404 ? "NOT_FOUND" : "METHOD_NOT_ALLOWED")
                                          : g.error;
    if (resp->action == SBX_ACT_REPLY)
        sbx_counts_add(&s->counts, outcome);
    if (resp->action != SBX_ACT_REPLY)
        log_info("oauth", "conn %llu stream %d: fault %s", (unsigned long long)req->conn_id,
                 req->stream_id, fault_name);
    else if (g.status == 200)
        log_info("oauth", "conn %llu stream %d: token for %s (expires in %lld s)",
                 (unsigned long long)req->conn_id, req->stream_id, g.account->client_email,
                 (long long)expires_in);
    else
        log_info("oauth", "conn %llu stream %d: %d %s%s%s", (unsigned long long)req->conn_id,
                 req->stream_id, g.status, outcome, g.error_description[0] ? ": " : "",
                 g.error_description);

    if (s->opt.record) {
        cJSON *rec = cJSON_CreateObject();
        cJSON_AddNumberToObject(rec, "at", 0);
        cJSON_AddStringToObject(rec, "provider", "oauth");
        cJSON_AddNumberToObject(rec, "status", g.status);
        if (g.status == 200)
            cJSON_AddNullToObject(rec, "error");
        else
            cJSON_AddStringToObject(rec, "error", outcome);
        rec_str(rec, "error_description", g.error_description);
        rec_str(rec, "path", req->path);
        rec_str(rec, "grant_type", g.grant_type);
        rec_str(rec, "iss", g.iss);
        rec_str(rec, "kid", g.kid);
        rec_str(rec, "aud", g.aud);
        rec_str(rec, "scope", g.scope);
        if (g.iat)
            cJSON_AddNumberToObject(rec, "iat", (double)g.iat);
        if (g.exp)
            cJSON_AddNumberToObject(rec, "exp", (double)g.exp);
        if (g.status == 200) {
            cJSON_AddStringToObject(rec, "access_token", token);
            cJSON_AddNumberToObject(rec, "expires_in", (double)expires_in);
            rec_str(rec, "project", g.account->project);
        }
        cJSON_AddNumberToObject(rec, "connection", (double)req->conn_id);
        cJSON_AddNumberToObject(rec, "stream", req->stream_id);
        cJSON_AddStringToObject(rec, "http", sbx_conn_http(c));
        if (fault)
            cJSON_AddStringToObject(rec, "fault", fault);
        if (retry_after >= 0)
            cJSON_AddNumberToObject(rec, "retry_after", retry_after);
        struct sbx_record_tag *tag = xcalloc(1, sizeof *tag);
        tag->rec = rec;
        tag->record = s->opt.record;
        resp->tag = tag;
    }
}

static void on_request(void *ctx, struct sbx_conn *c, void *state, const struct sbx_request *req,
                       struct sbx_response *resp)
{
    sbx_oauth_service_handle(ctx, c, req, resp);
}

static void on_finish(void *ctx, struct sbx_conn *c, void *state, void *tag, bool answered)
{
    sbx_record_tag_finish(tag, answered);
}

void sbx_oauth_service_init(struct sbx_oauth_service *s,
                            const struct sbx_oauth_service_options *opt)
{
    memset(s, 0, sizeof *s);
    s->opt = *opt;
    s->tokens = sbx_oauth_tokens_new();
    s->start_mono = mono_ms();
    s->svc.name = "oauth";
    s->svc.initial_max_streams = 100;
    s->svc.max_header_list = 16384;
    s->svc.http1 = true;
    s->svc.lenient_scheme = true;
    s->svc.over_limit_goaway = "exceeded_max_concurrent_streams";
    s->svc.ctx = s;
    s->svc.request = on_request;
    s->svc.finish = on_finish;
}

void sbx_oauth_service_clear(struct sbx_oauth_service *s)
{
    sbx_oauth_tokens_free(s->tokens);
    s->tokens = NULL;
    free(s->reply);
    s->reply = NULL;
}

cJSON *sbx_oauth_service_summary(const struct sbx_oauth_service *s)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "requests", (double)s->requests);
    cJSON_AddNumberToObject(o, "tokens_issued", (double)sbx_oauth_tokens_issued(s->tokens));
    cJSON_AddItemToObject(o, "answers", sbx_counts_json(&s->counts));
    return o;
}
