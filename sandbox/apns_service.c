/*
 * APNs service glue (see apns_service.h).
 *
 * Per request: refresh the token files (rate-limited), validate with
 * sbx_apns_validate(), let the per-device-token limit (sandbox/ratelimit.h;
 * 429 TooManyRequests, no retry-after: Apple documents none) and then
 * fault injection replace a success, adjust the connection's
 * MAX_CONCURRENT_STREAMS (1 until a request with a valid token succeeds,
 * then 1000; back to 1 after any rejection: PROTOCOLS.md §6.2),
 * send GOAWAY {"reason":"Shutdown"} after the Nth request when asked, build
 * the reply and a record line. The record line travels as the response tag
 * and is written when the server actually answers, so delayed, hung and
 * reset requests are not recorded as answered.
 */
#include "sandbox/apns_service.h"

#include "common/log.h"
#include "common/util.h"

#include <ctype.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct apns_conn {
    struct sbx_apns_auth auth;
};

struct apns_tag {
    cJSON *rec;      /* record line without "at" */
};

const char *sbx_env_name(enum sbx_env env)
{
    return env == SBX_ENV_SANDBOX ? "sandbox" : "production";
}

cJSON *sbx_apns_service_counts(const struct sbx_apns_service *s)
{
    return sbx_counts_json(&s->counts);
}

static void *on_conn_open(void *ctx, struct sbx_conn *c)
{
    return xcalloc(1, sizeof(struct apns_conn));
}

static void on_conn_close(void *ctx, struct sbx_conn *c, void *state)
{
    struct apns_conn *ac = state;
    if (ac == NULL)
        return;
    sbx_apns_auth_clear(&ac->auth);
    free(ac);
}

/* Add header |name| to the record as a string, or null when absent. */
static void rec_header(cJSON *rec, const char *key, const struct sbx_request *req,
                       const char *name)
{
    size_t len;
    const char *v = sbx_request_header(req, name, &len, NULL);
    if (v == NULL) {
        cJSON_AddNullToObject(rec, key);
        return;
    }
    char *copy = xstrndup(v, len);
    if (utf8_valid(copy, len))
        cJSON_AddStringToObject(rec, key, copy);
    else
        cJSON_AddStringToObject(rec, key, "(invalid UTF-8)");
    free(copy);
}

static cJSON *build_record(const struct sbx_apns_service *s, const struct sbx_request *req,
                           const struct sbx_apns_result *res, int status, const char *reason,
                           const char *fault, const char *rate_limit, int retry_after)
{
    cJSON *rec = cJSON_CreateObject();
    cJSON_AddNumberToObject(rec, "at", 0); /* set when answered */
    cJSON_AddStringToObject(rec, "provider", "apns");
    cJSON_AddStringToObject(rec, "env", sbx_env_name(s->opt.cfg.env));
    cJSON_AddNumberToObject(rec, "status", status);
    if (reason)
        cJSON_AddStringToObject(rec, "reason", reason);
    else
        cJSON_AddNullToObject(rec, "reason");
    if (status == 410)
        cJSON_AddNumberToObject(rec, "timestamp", (double)res->timestamp_ms);
    if (res->token != NULL) {
        char *t = xstrndup(res->token, res->token_len);
        cJSON_AddStringToObject(rec, "token", utf8_valid(t, res->token_len) ? t : "(invalid)");
        free(t);
    } else {
        cJSON_AddNullToObject(rec, "token");
    }
    cJSON_AddStringToObject(rec, "apns_id", res->apns_id);
    rec_header(rec, "topic", req, "apns-topic");
    rec_header(rec, "push_type", req, "apns-push-type");
    size_t plen;
    const char *prio = sbx_request_header(req, "apns-priority", &plen, NULL);
    if (prio == NULL)
        cJSON_AddNullToObject(rec, "priority");
    else if ((plen == 1 && (prio[0] == '1' || prio[0] == '5')) ||
             (plen == 2 && memcmp(prio, "10", 2) == 0))
        cJSON_AddNumberToObject(rec, "priority", atoi(prio));
    else
        rec_header(rec, "priority", req, "apns-priority");
    rec_header(rec, "expiration", req, "apns-expiration");
    rec_header(rec, "collapse_id", req, "apns-collapse-id");
    if (res->kid[0] && utf8_valid(res->kid, strlen(res->kid)))
        cJSON_AddStringToObject(rec, "kid", res->kid);
    else
        cJSON_AddNullToObject(rec, "kid");
    if (res->iss[0] && utf8_valid(res->iss, strlen(res->iss)))
        cJSON_AddStringToObject(rec, "iss", res->iss);
    else
        cJSON_AddNullToObject(rec, "iss");
    cJSON_AddNumberToObject(rec, "connection", (double)req->conn_id);
    cJSON_AddNumberToObject(rec, "stream", req->stream_id);
    if (fault)
        cJSON_AddStringToObject(rec, "fault", fault);
    if (rate_limit)
        cJSON_AddStringToObject(rec, "rate_limit", rate_limit);
    if (retry_after >= 0)
        cJSON_AddNumberToObject(rec, "retry_after", retry_after);
    bool is_json = false;
    cJSON *payload = sbx_record_payload(req->body, req->body_len, &is_json);
    cJSON_AddItemToObject(rec, "payload", payload);
    cJSON_AddBoolToObject(rec, "payload_json", is_json);
    cJSON_AddNumberToObject(rec, "payload_bytes", (double)req->body_total);
    return rec;
}

/* Refresh the shared token files and point |cfg| at their current sets. */
static void bind_token_sets(struct sbx_apns_service *s, struct sbx_apns_config *cfg)
{
    if (s->opt.unregistered) {
        sbx_tokens_file_refresh(s->opt.unregistered, false);
        cfg->unregistered = s->opt.unregistered->set;
    }
    if (s->opt.bad_tokens) {
        sbx_tokens_file_refresh(s->opt.bad_tokens, false);
        cfg->bad_tokens = s->opt.bad_tokens->set;
    }
    if (s->opt.env_tokens) {
        sbx_tokens_file_refresh(s->opt.env_tokens, false);
        cfg->env_tokens = s->opt.env_tokens->set;
    }
}

static void on_request(void *ctx, struct sbx_conn *c, void *state,
                       const struct sbx_request *req, struct sbx_response *resp)
{
    struct sbx_apns_service *s = ctx;
    struct apns_conn *ac = state;
    struct sbx_apns_config cfg = s->opt.cfg;
    bind_token_sets(s, &cfg);

    struct sbx_apns_result res;
    int64_t now = now_ms();
    int status;
    const char *reason;
    if (req->headers_too_large) {
        /* RFC 9113 §10.5.1; what APNs itself does is not documented. */
        memset(&res, 0, sizeof res);
        uuid_v4(res.apns_id);
        status = 431;
        reason = NULL;
    } else {
        status = sbx_apns_validate(&cfg, &ac->auth, req, now, &res);
        reason = res.reason;
    }

    /* The per-device limit, then fault injection, replace successes only. */
    const char *rate_limit = NULL;
    if (status == 200 && s->device_rate && res.token && res.token_len > 0) {
        /* Tokens are hex: one key whatever the case the client used. */
        char key[256];
        size_t kl = res.token_len < sizeof key ? res.token_len : sizeof key;
        for (size_t i = 0; i < kl; i++)
            key[i] = (char)tolower((unsigned char)res.token[i]);
        int64_t wait_ms;
        int i = sbx_rate_take(s->device_rate, key, kl, ~0u, (int64_t)mono_ms(), &wait_ms);
        if (i >= 0) {
            status = 429;
            reason = "TooManyRequests";
            rate_limit = sbx_rate_limit_at(s->device_rate, i)->name;
        }
    }
    const struct sbx_fault_rule *fault = NULL;
    char fault_name[32] = "";
    int retry_after = -1;
    if (status == 200 && s->opt.faults && (fault = sbx_faults_pick(s->opt.faults)) != NULL) {
        sbx_fault_name(fault, fault_name, sizeof fault_name);
        switch (fault->kind) {
        case SBX_FAULT_STATUS:
            status = fault->status;
            reason = fault->reason[0] ? fault->reason : sbx_apns_default_reason(status);
            retry_after = fault->retry_after_s;
            break;
        case SBX_FAULT_TCP_RESET: resp->action = SBX_ACT_TCP_RESET; break;
        case SBX_FAULT_RST_STREAM: resp->action = SBX_ACT_RST_STREAM; break;
        case SBX_FAULT_HANG: resp->action = SBX_ACT_HANG; break;
        }
    }

    /* PROTOCOLS.md §6.2: 1 stream until a valid token succeeds, 1 again after
     * any rejection. */
    if (!s->opt.bench && resp->action == SBX_ACT_REPLY) {
        if (status == 200 && res.auth_valid)
            sbx_conn_set_max_streams(c, SBX_APNS_STREAMS_OPEN);
        else if (status != 200)
            sbx_conn_set_max_streams(c, SBX_APNS_STREAMS_CLOSED);
    }
    if (s->opt.faults && s->opt.faults->goaway_every &&
        sbx_conn_requests(c) == s->opt.faults->goaway_every)
        sbx_conn_goaway(c, req->stream_id, NGHTTP2_NO_ERROR, "{\"reason\":\"Shutdown\"}");

    /* Logs carry the first 8 characters of the token only. */
    char tok[9] = "";
    if (res.token)
        snprintf(tok, sizeof tok, "%.*s", (int)(res.token_len < 8 ? res.token_len : 8), res.token);
    if (resp->action != SBX_ACT_REPLY)
        log_info("apns", "conn %llu stream %d token %s...: fault %s",
                 (unsigned long long)req->conn_id, req->stream_id, tok, fault_name);
    else if (status != 200)
        log_info("apns", "conn %llu stream %d token %s...: %d %s%s%s",
                 (unsigned long long)req->conn_id, req->stream_id, tok, status,
                 reason ? reason : "", fault ? " (fault)" : "",
                 rate_limit ? " (rate limit)" : "");

    /* The reply. The server copies headers and body before we return. */
    char *body = s->reply_body, *retry_buf = s->reply_retry, *unique_id = s->reply_unique_id;
    memcpy(s->reply_id, res.apns_id, sizeof s->reply_id);
    resp->status = status;
    /* apns-id and apns-unique-id differ per notification: never indexed, so
     * they do not push reusable entries out of the HPACK tables. */
    resp->headers[resp->nheaders].name = "apns-id";
    resp->headers[resp->nheaders].no_index = true;
    resp->headers[resp->nheaders++].value = s->reply_id;
    if (status == 200 && s->opt.cfg.env == SBX_ENV_SANDBOX) {
        uuid_v4(s->reply_unique_id);
        resp->headers[resp->nheaders].name = "apns-unique-id";
        resp->headers[resp->nheaders].no_index = true;
        resp->headers[resp->nheaders++].value = unique_id;
    }
    if (reason) {
        resp->headers[resp->nheaders].name = "content-type";
        resp->headers[resp->nheaders++].value = "application/json";
        resp->body = body;
        resp->body_len = sbx_apns_error_body(reason, status == 410 ? res.timestamp_ms : 0,
                                             body, sizeof s->reply_body);
    }
    if (retry_after >= 0) {
        snprintf(retry_buf, sizeof s->reply_retry, "%d", retry_after);
        resp->headers[resp->nheaders].name = "retry-after";
        resp->headers[resp->nheaders++].value = retry_buf;
    }
    if (s->opt.faults)
        resp->delay_ms = s->opt.faults->latency_ms;

    if (resp->action == SBX_ACT_REPLY)
        sbx_counts_add(&s->counts, status == 200 ? "200" : reason ? reason : "431");
    if (s->opt.record) {
        struct apns_tag *tag = xcalloc(1, sizeof *tag);
        tag->rec = build_record(s, req, &res, status, reason, fault ? fault_name : NULL,
                                rate_limit, retry_after);
        if (status == 200 && s->opt.cfg.env == SBX_ENV_SANDBOX)
            cJSON_AddStringToObject(tag->rec, "apns_unique_id", unique_id);
        resp->tag = tag;
    }
}

static void on_finish(void *ctx, struct sbx_conn *c, void *state, void *tagp, bool answered)
{
    struct sbx_apns_service *s = ctx;
    struct apns_tag *tag = tagp;
    if (answered) {
        cJSON *at = cJSON_GetObjectItemCaseSensitive(tag->rec, "at");
        cJSON_SetNumberValue(at, (double)now_ms());
        sbx_record_write(s->opt.record, tag->rec);
    }
    cJSON_Delete(tag->rec);
    free(tag);
}

void sbx_apns_service_init(struct sbx_apns_service *s, const struct sbx_apns_service_options *opt,
                           enum sbx_env env)
{
    memset(s, 0, sizeof *s);
    s->opt = *opt;
    s->opt.cfg.env = env;
    s->opt.cfg.no_auth = opt->cfg.no_auth || opt->bench;
    s->svc.name = "apns";
    s->svc.initial_max_streams = opt->bench ? SBX_APNS_STREAMS_OPEN : SBX_APNS_STREAMS_CLOSED;
    s->svc.max_header_list = 8000;
    s->svc.ctx = s;
    s->svc.conn_open = on_conn_open;
    s->svc.conn_close = on_conn_close;
    s->svc.request = on_request;
    s->svc.finish = on_finish;
    s->device_rate = sbx_rate_new(opt->device_limits, opt->ndevice_limits, opt->rate_max_keys);
}

void sbx_apns_service_clear(struct sbx_apns_service *s)
{
    sbx_rate_free(s->device_rate);
    s->device_rate = NULL;
}
