/*
 * FCM service glue (see fcm_service.h).
 *
 * Per request: token-endpoint paths go to the OAuth service; otherwise the
 * bearer is looked up in the OAuth service's table (valid → the account's
 * project, unknown/expired/malformed → 401), the token files are refreshed
 * (at most once a second, sandbox/tokens.h), sbx_fcm_validate() decides,
 * then — for would-be successes only — the rate limits (per device token:
 * every message, and collapsible ones again; then per project; see
 * sandbox/ratelimit.h) and the fault rules may replace the answer. The
 * record line travels as the response tag (sbx_record_tag) and is written
 * when the server actually answers.
 */
#include "sandbox/fcm_service.h"

#include "common/log.h"
#include "common/util.h"

#include <ctype.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

/* ---- service ------------------------------------------------------------------- */

cJSON *sbx_fcm_service_counts(const struct sbx_fcm_service *s)
{
    return sbx_counts_json(&s->counts);
}

/* What the authorization header is worth; |*how| names it for the record. */
static enum sbx_fcm_auth check_auth(const struct sbx_fcm_service *s,
                                    const struct sbx_request *req,
                                    const struct sbx_oauth_account **account, const char **how)
{
    *account = NULL;
    if (s->opt.bench) {
        *how = "skipped";
        return SBX_FCM_AUTH_SKIPPED;
    }
    size_t len;
    const char *v = sbx_request_header(req, "authorization", &len, NULL);
    while (v && len > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        len--;
    }
    if (v == NULL || len == 0) {
        *how = "missing";
        return SBX_FCM_AUTH_MISSING;
    }
    if (len < 7 || strncasecmp(v, "bearer ", 7) != 0) {
        *how = "malformed";
        return SBX_FCM_AUTH_INVALID;
    }
    const char *tok = v + 7;
    size_t tl = len - 7;
    while (tl > 0 && *tok == ' ') {
        tok++;
        tl--;
    }
    while (tl > 0 && (tok[tl - 1] == ' ' || tok[tl - 1] == '\t'))
        tl--;
    if (tl == 0) {
        *how = "missing";
        return SBX_FCM_AUTH_MISSING;
    }
    if (s->opt.oauth == NULL) {
        *how = "unknown";
        return SBX_FCM_AUTH_INVALID;
    }
    enum sbx_oauth_token_state st = sbx_oauth_service_check(s->opt.oauth, tok, tl, now_ms(),
                                                            account);
    *how = sbx_oauth_token_state_name(st);
    return st == SBX_OAUTH_TOKEN_VALID ? SBX_FCM_AUTH_OK : SBX_FCM_AUTH_INVALID;
}

static void bind_sets(struct sbx_fcm_service *s, struct sbx_fcm_config *cfg)
{
    struct {
        struct sbx_tokens_file *f;
        const struct sbx_tokens **dst;
    } files[] = {
        { s->opt.unregistered, &cfg->unregistered },
        { s->opt.sender_mismatch, &cfg->sender_mismatch },
        { s->opt.invalid_tokens, &cfg->invalid_tokens },
        { s->opt.third_party_auth, &cfg->third_party_auth },
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        if (files[i].f == NULL)
            continue;
        sbx_tokens_file_refresh(files[i].f, false);
        *files[i].dst = files[i].f->set;
    }
}

static int64_t now_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

static void rec_str(cJSON *rec, const char *key, const char *v)
{
    if (v && utf8_valid(v, strlen(v)))
        cJSON_AddStringToObject(rec, key, v);
    else
        cJSON_AddNullToObject(rec, key);
}

static cJSON *build_record(const struct sbx_request *req, struct sbx_conn *c,
                           const struct sbx_fcm_result *res, const char *reason,
                           enum sbx_fcm_auth auth, const char *auth_how,
                           const struct sbx_oauth_account *account, const char *fault,
                           const char *rate_limit, int retry_after)
{
    cJSON *rec = cJSON_CreateObject();
    cJSON_AddNumberToObject(rec, "at", 0);
    cJSON_AddStringToObject(rec, "provider", "fcm");
    cJSON_AddNumberToObject(rec, "status", res->status);
    rec_str(rec, "reason", reason);
    bool token = res->target_kind && strcmp(res->target_kind, "token") == 0;
    rec_str(rec, "token", token ? res->target : NULL);
    if (res->target_kind && !token)
        rec_str(rec, res->target_kind, res->target);
    rec_str(rec, "project", res->project[0] ? res->project : NULL);
    cJSON_AddNumberToObject(rec, "connection", (double)req->conn_id);
    cJSON_AddNumberToObject(rec, "stream", req->stream_id);
    cJSON_AddStringToObject(rec, "http", sbx_conn_http(c));
    rec_str(rec, "method", req->method);
    rec_str(rec, "path", req->path);
    rec_str(rec, "scheme", req->scheme);
    cJSON_AddBoolToObject(rec, "authorization_ok", auth == SBX_FCM_AUTH_OK);
    cJSON_AddStringToObject(rec, "auth", auth == SBX_FCM_AUTH_OK ? "ok" : auth_how);
    rec_str(rec, "account", account ? account->client_email : NULL);
    cJSON_AddBoolToObject(rec, "validate_only", res->validate_only);
    rec_str(rec, "message_name", res->status == 200 ? res->name : NULL);
    if (fault)
        cJSON_AddStringToObject(rec, "fault", fault);
    if (rate_limit)
        cJSON_AddStringToObject(rec, "rate_limit", rate_limit);
    if (retry_after >= 0)
        cJSON_AddNumberToObject(rec, "retry_after", retry_after);
    bool is_json = false;
    cJSON_AddItemToObject(rec, "payload", sbx_record_payload(req->body, req->body_len, &is_json));
    cJSON_AddBoolToObject(rec, "payload_json", is_json);
    cJSON_AddNumberToObject(rec, "payload_bytes", (double)req->body_total);
    return rec;
}

static void on_request(void *ctx, struct sbx_conn *c, void *state, const struct sbx_request *req,
                       struct sbx_response *resp)
{
    struct sbx_fcm_service *s = ctx;
    if (s->opt.oauth && sbx_oauth_service_path(req->path)) {
        sbx_oauth_service_handle(s->opt.oauth, c, req, resp);
        return;
    }
    free(s->reply);
    s->reply = NULL;

    struct sbx_fcm_config cfg = s->opt.cfg;
    bind_sets(s, &cfg);
    const struct sbx_oauth_account *account = NULL;
    const char *auth_how = "missing";
    enum sbx_fcm_auth auth = check_auth(s, req, &account, &auth_how);

    struct sbx_fcm_result res;
    if (req->headers_too_large) {
        /* RFC 9113 §10.5.1; Google's exact answer is not known. */
        memset(&res, 0, sizeof res);
        res.status = 431;
        res.grpc_status = "INVALID_ARGUMENT";
        res.message = xstrdup("Request header fields too large.");
    } else {
        sbx_fcm_validate(&cfg, req, auth, account ? account->project : NULL, &res);
    }

    /* Rate limits and faults replace real sends only. */
    bool sending = res.status == 200 && !res.validate_only;
    int retry_after = -1;
    const char *fault = NULL;
    char fault_name[32] = "";
    /* Per device token (only token targets), then per project; a message
     * refused by one takes nothing from the other. */
    const char *rate_limit = NULL;
    bool to_token = sending && s->device_rate && strcmp(res.target_kind, "token") == 0;
    unsigned mask = s->device_bits | (res.collapsible ? s->collapsible_bit : 0);
    int64_t now = (int64_t)mono_ms(), wait_ms = 0;
    int refused = -1;
    struct sbx_rate *by = NULL;
    if (to_token && (refused = sbx_rate_peek(s->device_rate, res.target, strlen(res.target),
                                             mask, now, &wait_ms)) >= 0)
        by = s->device_rate;
    else if (sending && s->project_rate &&
             (refused = sbx_rate_peek(s->project_rate, res.project, strlen(res.project), ~0u,
                                      now, &wait_ms)) >= 0)
        by = s->project_rate;
    if (by != NULL) {
        const struct sbx_rate_limit *l = sbx_rate_limit_at(by, refused);
        sbx_fcm_set_quota(&res, by == s->device_rate, l->text);
        rate_limit = l->name;
        retry_after = (int)((wait_ms + 999) / 1000);
        sending = false;
    } else if (sending) {
        if (to_token)
            sbx_rate_take(s->device_rate, res.target, strlen(res.target), mask, now, &wait_ms);
        if (s->project_rate)
            sbx_rate_take(s->project_rate, res.project, strlen(res.project), ~0u, now,
                          &wait_ms);
    }
    const struct sbx_fault_rule *rule;
    if (sending && s->opt.faults && (rule = sbx_faults_pick(s->opt.faults)) != NULL) {
        fault = sbx_fault_name(rule, fault_name, sizeof fault_name);
        switch (rule->kind) {
        case SBX_FAULT_STATUS:
            sbx_fcm_set_fault(&res, rule->status, rule->reason);
            retry_after = rule->retry_after_s;
            break;
        case SBX_FAULT_TCP_RESET: resp->action = SBX_ACT_TCP_RESET; break;
        case SBX_FAULT_RST_STREAM: resp->action = SBX_ACT_RST_STREAM; break;
        case SBX_FAULT_HANG: resp->action = SBX_ACT_HANG; break;
        }
    }
    if (res.status == 200 && !res.validate_only) {
        int64_t us = now_us();
        if (us <= s->last_name_us)
            us = s->last_name_us + 1;
        s->last_name_us = us;
        sbx_fcm_message_name(res.project, us, res.name, sizeof res.name);
    }
    if (s->opt.faults && s->opt.faults->goaway_every &&
        sbx_conn_requests(c) == s->opt.faults->goaway_every)
        sbx_conn_goaway(c, req->stream_id, NGHTTP2_NO_ERROR, NULL);

    /* The reply; the server copies headers and body before we return. */
    const char *reason = res.status == 431 ? "HEADERS_TOO_LARGE" : sbx_fcm_reason(&res);
    size_t n = 0;
    if (res.status != 431) {
        const char *ctype;
        size_t blen;
        s->reply = sbx_fcm_response_body(&res, &blen, &ctype);
        resp->body = s->reply;
        resp->body_len = blen;
        resp->headers[n].name = "content-type";
        resp->headers[n++].value = ctype;
    }
    if (res.www_authenticate) {
        resp->headers[n].name = "www-authenticate";
        resp->headers[n++].value = auth == SBX_FCM_AUTH_MISSING
                                       ? "Bearer realm=\"https://accounts.google.com/\""
                                       : "Bearer realm=\"https://accounts.google.com/\", "
                                         "error=\"invalid_token\"";
    }
    if (retry_after >= 0) {
        snprintf(s->retry, sizeof s->retry, "%d", retry_after);
        resp->headers[n].name = "retry-after";
        resp->headers[n++].value = s->retry;
    }
    resp->nheaders = n;
    resp->status = res.status;
    if (s->opt.faults)
        resp->delay_ms = s->opt.faults->latency_ms;

    if (resp->action == SBX_ACT_REPLY)
        sbx_counts_add(&s->counts, res.status == 200 ? "200" : reason ? reason : "ERROR");
    char tok[24];
    log_token(res.target_kind && !strcmp(res.target_kind, "token") ? res.target : NULL, tok,
              sizeof tok);
    if (resp->action != SBX_ACT_REPLY)
        log_info("fcm", "conn %llu stream %d token %s: fault %s", (unsigned long long)req->conn_id,
                 req->stream_id, tok, fault_name);
    else if (res.status != 200)
        log_info("fcm", "conn %llu stream %d token %s: %d %s%s", (unsigned long long)req->conn_id,
                 req->stream_id, tok, res.status, reason ? reason : "",
                 fault ? " (fault)" : "");

    if (s->opt.record) {
        struct sbx_record_tag *tag = xcalloc(1, sizeof *tag);
        tag->rec = build_record(req, c, &res, reason, auth, auth_how, account, fault, rate_limit,
                                retry_after);
        tag->record = s->opt.record;
        resp->tag = tag;
    }
    sbx_fcm_result_clear(&res);
}

static void on_finish(void *ctx, struct sbx_conn *c, void *state, void *tag, bool answered)
{
    sbx_record_tag_finish(tag, answered);
}

void sbx_fcm_service_init(struct sbx_fcm_service *s, const struct sbx_fcm_service_options *opt)
{
    memset(s, 0, sizeof *s);
    s->opt = *opt;
    /* One table per token: the limits for every message, then the
     * collapsible one, which only messages with a collapse key take. */
    struct sbx_rate_limit lim[SBX_RATE_MAX_LIMITS];
    size_t n = 0;
    for (size_t i = 0; i < opt->ndevice_limits && i < SBX_RATE_MAX_LIST; i++)
        lim[n++] = opt->device_limits[i];
    s->device_bits = (1u << n) - 1;
    if (opt->collapsible.burst > 0) {
        s->collapsible_bit = 1u << n;
        lim[n++] = opt->collapsible;
    }
    s->device_rate = sbx_rate_new(lim, n, opt->rate_max_keys);
    if (opt->project_rate_per_min > 0) {
        char spec[32], err[160];
        snprintf(spec, sizeof spec, "%u/min", opt->project_rate_per_min);
        if (sbx_rate_parse(spec, "project", &lim[0], err, sizeof err) == 0)
            s->project_rate = sbx_rate_new(lim, 1, 0);
        else
            log_error("fcm", "project rate limit: %s", err);
    }
    s->svc.name = "fcm";
    s->svc.initial_max_streams = SBX_FCM_MAX_STREAMS;
    s->svc.max_header_list = 16384;
    s->svc.http1 = true;
    s->svc.over_limit_goaway = "exceeded_max_concurrent_streams";
    s->svc.lenient_scheme = true;
    s->svc.ctx = s;
    s->svc.request = on_request;
    s->svc.finish = on_finish;
}

void sbx_fcm_service_clear(struct sbx_fcm_service *s)
{
    sbx_rate_free(s->device_rate);
    sbx_rate_free(s->project_rate);
    s->device_rate = s->project_rate = NULL;
    free(s->reply);
    s->reply = NULL;
}
