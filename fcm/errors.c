/*
 * FCM answers: google.rpc error bodies, the success name, classification.
 *
 * Architecture. Error bodies are rare and small, so they are parsed with
 * cJSON into a fixed-size struct (no allocation escapes). Parsing never
 * decides anything: fcm_error_classify() does, with the FcmError
 * errorCode first (it is the most specific signal), then the HTTP status
 * and the canonical `status` string, so a missing or garbled body still
 * gives a sensible outcome. The rules follow PROTOCOLS.md §2 and
 * DESIGN.md §5 (delete the token on UNREGISTERED, SENDER_ID_MISMATCH and
 * a token-naming INVALID_ARGUMENT; retry 429/500/503; refresh our OAuth
 * token on a bare 401).
 */
#include "fcm/errors.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <string.h>

#include "common/util.h"

static const struct {
    const char *name;
    enum fcm_error_code code;
} code_names[] = {
    { "UNSPECIFIED_ERROR", FCM_ERR_UNSPECIFIED },
    { "INVALID_ARGUMENT", FCM_ERR_INVALID_ARGUMENT },
    { "UNREGISTERED", FCM_ERR_UNREGISTERED },
    { "SENDER_ID_MISMATCH", FCM_ERR_SENDER_ID_MISMATCH },
    { "QUOTA_EXCEEDED", FCM_ERR_QUOTA_EXCEEDED },
    { "UNAVAILABLE", FCM_ERR_UNAVAILABLE },
    { "INTERNAL", FCM_ERR_INTERNAL },
    { "THIRD_PARTY_AUTH_ERROR", FCM_ERR_THIRD_PARTY_AUTH },
    { "APNS_AUTH_ERROR", FCM_ERR_THIRD_PARTY_AUTH },   /* old alias */
};
#define N_CODES (sizeof code_names / sizeof code_names[0])

/* Copy |src| into |dst| (|cap| bytes with NUL), cut on a UTF-8 boundary. */
static void copy_cut(char *dst, size_t cap, const char *src)
{
    if (!dst || cap == 0)
        return;
    size_t n = src ? strlen(src) : 0;
    n = utf8_cut_len(src ? src : "", n, cap - 1);
    if (n)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Case-insensitive substring test. */
static bool contains_ci(const char *hay, const char *needle)
{
    size_t nl = strlen(needle);
    for (const char *p = hay; *p; p++) {
        size_t i = 0;
        while (i < nl && p[i] &&
               tolower((unsigned char)p[i]) == tolower((unsigned char)needle[i]))
            i++;
        if (i == nl)
            return true;
    }
    return false;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static const char *get_str(const cJSON *obj, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(it) && it->valuestring ? it->valuestring : NULL;
}

/* Read the details array: FcmError errorCode and BadRequest fieldViolations. */
static void parse_details(const cJSON *details, struct fcm_error *out)
{
    const cJSON *d;
    if (!cJSON_IsArray(details))
        return;
    cJSON_ArrayForEach(d, details) {
        if (!cJSON_IsObject(d))
            continue;
        const char *type = get_str(d, "@type");
        const char *ec = get_str(d, "errorCode");
        bool fcm_detail = type ? ends_with(type, "google.firebase.fcm.v1.FcmError") : ec != NULL;
        if (fcm_detail && ec && out->error_code == FCM_ERR_NONE) {
            copy_cut(out->error_code_str, sizeof out->error_code_str, ec);
            out->error_code = FCM_ERR_OTHER;
            for (size_t i = 0; i < N_CODES; i++)
                if (strcmp(code_names[i].name, ec) == 0)
                    out->error_code = code_names[i].code;
        }
        const cJSON *fv = cJSON_GetObjectItemCaseSensitive(d, "fieldViolations");
        const cJSON *v;
        if (cJSON_IsArray(fv)) {
            cJSON_ArrayForEach(v, fv) {
                const char *field = get_str(v, "field");
                if (field && strcmp(field, "message.token") == 0)
                    out->token_invalid = true;
            }
        }
    }
}

int fcm_error_parse(const uint8_t *body, size_t len, struct fcm_error *out)
{
    int rc = -1;
    memset(out, 0, sizeof *out);
    if (!body || len == 0)
        return -1;
    cJSON *root = cJSON_ParseWithLength((const char *)body, len);
    const cJSON *top = root;
    if (cJSON_IsArray(top))            /* some Google front ends wrap it */
        top = cJSON_GetArrayItem(top, 0);
    if (!cJSON_IsObject(top))
        goto out;
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(top, "error");
    if (cJSON_IsString(err) && err->valuestring) {
        /* OAuth style: {"error":"invalid_grant","error_description":"..."} */
        copy_cut(out->status, sizeof out->status, err->valuestring);
        copy_cut(out->message, sizeof out->message, get_str(top, "error_description"));
        rc = 0;
        goto out;
    }
    if (!cJSON_IsObject(err))
        goto out;
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(err, "code");
    if (cJSON_IsNumber(code) && code->valuedouble >= 0 && code->valuedouble < 1000)
        out->code = (int)code->valuedouble;
    copy_cut(out->status, sizeof out->status, get_str(err, "status"));
    copy_cut(out->message, sizeof out->message, get_str(err, "message"));
    parse_details(cJSON_GetObjectItemCaseSensitive(err, "details"), out);

    /* "The registration token is not a valid FCM registration token" */
    const char *msg = get_str(err, "message");
    bool invalid_arg = out->error_code == FCM_ERR_INVALID_ARGUMENT ||
                       strcmp(out->status, "INVALID_ARGUMENT") == 0 || out->code == 400;
    if (invalid_arg && msg && contains_ci(msg, "registration token") &&
        (contains_ci(msg, "not a valid") || contains_ci(msg, "invalid")))
        out->token_invalid = true;
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}

/*
 * Outcome from the HTTP status; the canonical status string decides only
 * when the HTTP status says nothing definite (0 = unknown, 1xx/3xx, an
 * unusual 5xx).
 */
static enum fcm_outcome classify_status(int http, const char *status)
{
    if (http >= 200 && http < 300)
        return FCM_OUTCOME_SENT;
    if (http == 401)
        return FCM_OUTCOME_AUTH;
    if (http == 408 || http == 429 || http == 500 || http == 502 || http == 503 ||
        http == 504)
        return FCM_OUTCOME_TRANSIENT;
    if (http >= 400 && http < 500)
        return FCM_OUTCOME_PERMANENT;
    if (strcmp(status, "UNAUTHENTICATED") == 0)
        return FCM_OUTCOME_AUTH;
    if (strcmp(status, "RESOURCE_EXHAUSTED") == 0 || strcmp(status, "UNAVAILABLE") == 0 ||
        strcmp(status, "INTERNAL") == 0 || strcmp(status, "DEADLINE_EXCEEDED") == 0)
        return FCM_OUTCOME_TRANSIENT;
    return FCM_OUTCOME_PERMANENT;
}

enum fcm_outcome fcm_error_classify(int http_status, const struct fcm_error *err)
{
    if (http_status >= 200 && http_status < 300)
        return FCM_OUTCOME_SENT;
    if (err) {
        switch (err->error_code) {
        case FCM_ERR_UNREGISTERED:
        case FCM_ERR_SENDER_ID_MISMATCH:
            return FCM_OUTCOME_INVALID_TOKEN;
        case FCM_ERR_INVALID_ARGUMENT:
            return err->token_invalid ? FCM_OUTCOME_INVALID_TOKEN : FCM_OUTCOME_PERMANENT;
        case FCM_ERR_QUOTA_EXCEEDED:
        case FCM_ERR_UNAVAILABLE:
        case FCM_ERR_INTERNAL:
            return FCM_OUTCOME_TRANSIENT;
        case FCM_ERR_THIRD_PARTY_AUTH:
        case FCM_ERR_UNSPECIFIED:
            return FCM_OUTCOME_PERMANENT;
        case FCM_ERR_NONE:
        case FCM_ERR_OTHER:
            break;
        }
        if (err->token_invalid && (http_status == 400 || http_status == 0))
            return FCM_OUTCOME_INVALID_TOKEN;
    }
    return classify_status(http_status, err ? err->status : "");
}

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/*
 * The usual success body, {"name": "projects/.../messages/..."}, read
 * without a cJSON tree (one per Android delivery). Returns 0 with the name
 * copied, or 1 when the body is anything else (escapes, more keys): then
 * cJSON decides, so both give the same answer.
 */
static int parse_name_plain(const char *p, size_t len, char *name, size_t namelen)
{
    const char *end = p + len;
    p = skip_ws(p, end);
    if (p >= end || *p++ != '{')
        return 1;
    p = skip_ws(p, end);
    if ((size_t)(end - p) < 6 || memcmp(p, "\"name\"", 6) != 0)
        return 1;
    p = skip_ws(p + 6, end);
    if (p >= end || *p++ != ':')
        return 1;
    p = skip_ws(p, end);
    if (p >= end || *p++ != '"')
        return 1;
    const char *q = memchr(p, '"', (size_t)(end - p));
    if (q == NULL || memchr(p, '\\', (size_t)(q - p)) != NULL ||
        memchr(p, '\0', (size_t)(q - p)) != NULL)
        return 1;
    const char *r = skip_ws(q + 1, end);
    if (r >= end || *r != '}')
        return 1;
    if (name && namelen) {
        size_t n = utf8_cut_len(p, (size_t)(q - p), namelen - 1);
        memcpy(name, p, n);
        name[n] = '\0';
    }
    return 0;
}

int fcm_response_parse_name(const uint8_t *body, size_t len, char *name,
                            size_t namelen)
{
    int rc = -1;
    if (name && namelen)
        name[0] = '\0';
    if (!body || len == 0)
        return -1;
    if (parse_name_plain((const char *)body, len, name, namelen) == 0)
        return 0;
    cJSON *root = cJSON_ParseWithLength((const char *)body, len);
    const char *n = cJSON_IsObject(root) ? get_str(root, "name") : NULL;
    if (n) {
        copy_cut(name, namelen, n);
        rc = 0;
    }
    cJSON_Delete(root);
    return rc;
}

const char *fcm_error_code_name(enum fcm_error_code c)
{
    switch (c) {
    case FCM_ERR_NONE: return "";
    case FCM_ERR_UNSPECIFIED: return "UNSPECIFIED_ERROR";
    case FCM_ERR_INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case FCM_ERR_UNREGISTERED: return "UNREGISTERED";
    case FCM_ERR_SENDER_ID_MISMATCH: return "SENDER_ID_MISMATCH";
    case FCM_ERR_QUOTA_EXCEEDED: return "QUOTA_EXCEEDED";
    case FCM_ERR_UNAVAILABLE: return "UNAVAILABLE";
    case FCM_ERR_INTERNAL: return "INTERNAL";
    case FCM_ERR_THIRD_PARTY_AUTH: return "THIRD_PARTY_AUTH_ERROR";
    case FCM_ERR_OTHER: return "OTHER";
    }
    return "OTHER";
}

const char *fcm_outcome_name(enum fcm_outcome o)
{
    switch (o) {
    case FCM_OUTCOME_SENT: return "sent";
    case FCM_OUTCOME_INVALID_TOKEN: return "invalid_token";
    case FCM_OUTCOME_TRANSIENT: return "transient";
    case FCM_OUTCOME_AUTH: return "auth";
    case FCM_OUTCOME_PERMANENT: return "permanent";
    }
    return "permanent";
}
