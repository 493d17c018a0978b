/*
 * APNs validation (see apns.h for the contract and the order of checks).
 *
 * Architecture: sbx_apns_validate() is a straight pipeline of small check
 * functions, each returning an Apple reason string or NULL. The order is
 * pushy's mock order (PROTOCOLS.md §6), extended with the checks pushy lacks
 * (expiration, duplicates, background priority, dead-token files). The
 * provider token is verified once per connection and cached: a request
 * carrying the same token as the connection's current one only re-checks
 * its age and topic, as a real server would not re-verify ECDSA each push.
 */
#include "sandbox/apns.h"

#include "common/jws.h"
#include "common/util.h"

#include <cJSON.h>
#include <ctype.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct push_type {
    const char *name;
    const char *suffix; /* required topic suffix, NULL = none */
    int max_payload;
};

static const struct push_type push_types[] = {
    { "alert", NULL, 4096 },
    { "background", NULL, 4096 },
    { "location", ".location-query", 4096 },
    { "voip", ".voip", 5120 },
    { "complication", ".complication", 4096 },
    { "fileprovider", ".pushkit.fileprovider", 4096 },
    { "mdm", NULL, 4096 },
    { "liveactivity", ".push-type.liveactivity", 4096 },
    { "pushtotalk", ".voip-ptt", 4096 },
    { "widgets", ".push-type.widgets", 4096 },
    { "controls", ".push-type.controls", 4096 },
};
#define N_PUSH_TYPES (sizeof push_types / sizeof push_types[0])

static const struct {
    const char *reason;
    int status;
} reason_status[] = {
    { "BadPath", 404 },
    { "MethodNotAllowed", 405 },
    { "MissingProviderToken", 403 },
    { "InvalidProviderToken", 403 },
    { "ExpiredProviderToken", 403 },
    { "UnrelatedKeyIdInToken", 403 },
    { "BadEnvironmentKeyIdInToken", 403 },
    { "BadCertificate", 403 },
    { "BadCertificateEnvironment", 403 },
    { "Forbidden", 403 },
    { "TooManyProviderTokenUpdates", 429 },
    { "TooManyRequests", 429 },
    { "PayloadTooLarge", 413 },
    { "Unregistered", 410 },
    { "ExpiredToken", 410 },
    { "InternalServerError", 500 },
    { "ServiceUnavailable", 503 },
    { "Shutdown", 503 },
};

int sbx_apns_reason_status(const char *reason)
{
    for (size_t i = 0; i < sizeof reason_status / sizeof reason_status[0]; i++)
        if (strcmp(reason, reason_status[i].reason) == 0)
            return reason_status[i].status;
    return 400;
}

const char *sbx_apns_default_reason(int status)
{
    switch (status) {
    case 403: return "Forbidden";
    case 404: return "BadPath";
    case 405: return "MethodNotAllowed";
    case 410: return "Unregistered";
    case 413: return "PayloadTooLarge";
    case 429: return "TooManyRequests";
    case 503: return "ServiceUnavailable";
    case 500: return "InternalServerError";
    default: return status >= 500 ? "InternalServerError" : "BadRequest";
    }
}

size_t sbx_apns_error_body(const char *reason, int64_t timestamp_ms, char *buf, size_t len)
{
    int n;
    if (timestamp_ms > 0)
        n = snprintf(buf, len, "{\"reason\":\"%s\",\"timestamp\":%lld}", reason,
                     (long long)timestamp_ms);
    else
        n = snprintf(buf, len, "{\"reason\":\"%s\"}", reason);
    if (n < 0)
        return 0;
    return (size_t)n < len ? (size_t)n : len - 1;
}

bool sbx_apns_is_uuid(const char *s, size_t len)
{
    if (len != 36)
        return false;
    for (size_t i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (!isxdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

void sbx_apns_auth_clear(struct sbx_apns_auth *auth)
{
    free(auth->jwt);
    memset(auth, 0, sizeof *auth);
}

static bool ends_with(const char *s, size_t len, const char *suffix)
{
    size_t sl = strlen(suffix);
    return len >= sl && memcmp(s + len - sl, suffix, sl) == 0;
}

/* The push type whose topic suffix |topic| carries, or NULL. */
static const struct push_type *type_by_suffix(const char *topic, size_t len)
{
    for (size_t i = 0; i < N_PUSH_TYPES; i++)
        if (push_types[i].suffix && ends_with(topic, len, push_types[i].suffix))
            return &push_types[i];
    return NULL;
}

static const struct push_type *type_by_name(const char *name, size_t len)
{
    for (size_t i = 0; i < N_PUSH_TYPES; i++)
        if (strlen(push_types[i].name) == len && memcmp(push_types[i].name, name, len) == 0)
            return &push_types[i];
    return NULL;
}

/*
 * Resolve the push type: the header's if present (unknown → NULL with
 * *invalid set), else inferred from the topic suffix, else alert. Then the
 * topic must carry exactly the type's suffix: a suffixed type needs it, and
 * an unsuffixed type must not use another type's topic.
 */
static const struct push_type *resolve_type(const char *hdr, size_t hlen,
                                            const char *topic, size_t tlen)
{
    const struct push_type *by_suffix = type_by_suffix(topic, tlen);
    if (hdr == NULL)
        return by_suffix ? by_suffix : &push_types[0];
    const struct push_type *t = type_by_name(hdr, hlen);
    if (t == NULL)
        return NULL;
    if (t->suffix != NULL && !ends_with(topic, tlen, t->suffix))
        return NULL;
    if (t->suffix == NULL && by_suffix != NULL)
        return NULL;
    return t;
}

static bool is_hex(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!isxdigit((unsigned char)s[i]))
            return false;
    return true;
}

static bool token_length_ok(const struct sbx_apns_config *cfg, size_t len)
{
    if (cfg->ntoken_lengths == 0)
        return len == 64;
    for (size_t i = 0; i < cfg->ntoken_lengths; i++)
        if (cfg->token_lengths[i] == len)
            return true;
    return false;
}

/* Path and device token checks; sets res->token. */
static const char *check_path(const struct sbx_apns_config *cfg, const struct sbx_request *req,
                              struct sbx_apns_result *res, char tokbuf[256])
{
    static const char prefix[] = "/3/device/";
    const char *path = req->path ? req->path : "";
    if (strncmp(path, prefix, sizeof prefix - 1) != 0)
        return "BadPath";
    const char *tok = path + sizeof prefix - 1;
    size_t len = strlen(tok);
    res->token = tok;
    res->token_len = len;
    if (len == 0)
        return "MissingDeviceToken";
    if (!is_hex(tok, len) || !token_length_ok(cfg, len) || len >= 256)
        return "BadDeviceToken";
    memcpy(tokbuf, tok, len);
    tokbuf[len] = '\0';
    if (cfg->env_tokens) {
        const struct sbx_token_entry *e = sbx_tokens_find(cfg->env_tokens, tokbuf);
        if (e && e->value != (int64_t)cfg->env)
            return "BadDeviceToken";
    }
    return NULL;
}

static const struct sbx_apns_key *find_key(const struct sbx_apns_config *cfg, const char *kid)
{
    for (size_t i = 0; i < cfg->nkeys; i++)
        if (strcmp(cfg->keys[i].kid, kid) == 0)
            return &cfg->keys[i];
    return NULL;
}

/* Topic allowed for |key|: listed as is, or a listed bundle id + a type suffix. */
static bool topic_allowed(const struct sbx_apns_key *key, const char *topic, size_t tlen)
{
    if (key->ntopics == 0)
        return true;
    const struct push_type *t = type_by_suffix(topic, tlen);
    size_t base = t ? tlen - strlen(t->suffix) : tlen;
    for (size_t i = 0; i < key->ntopics; i++) {
        size_t al = strlen(key->topics[i]);
        if ((al == tlen && memcmp(key->topics[i], topic, tlen) == 0) ||
            (al == base && memcmp(key->topics[i], topic, base) == 0))
            return true;
    }
    return false;
}

/* DER-encoded ECDSA signature check (only with --accept-der). */
static bool verify_der(EVP_PKEY *key, const char *data, size_t len,
                       const unsigned char *sig, size_t siglen)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md == NULL)
        return false;
    bool ok = EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
              EVP_DigestVerify(md, sig, siglen, (const unsigned char *)data, len) == 1;
    EVP_MD_CTX_free(md);
    return ok;
}

static void copy_str(char *dst, size_t dstlen, const char *src)
{
    snprintf(dst, dstlen, "%s", src ? src : "");
}

/*
 * Parse and verify a compact JWT. Returns NULL and sets |*key_out| and
 * |*iat_out| on success, else the reason. Fills res->kid / res->iss as soon
 * as they are known, for the record.
 */
static const char *verify_jwt(const struct sbx_apns_config *cfg, const char *jwt,
                              struct sbx_apns_result *res,
                              const struct sbx_apns_key **key_out, int64_t *iat_out)
{
    char *hdr_json = NULL, *claims_json = NULL;
    unsigned char *sig = NULL;
    size_t siglen = 0, signed_len = 0;
    cJSON *hdr = NULL, *claims = NULL;
    const char *reason = "InvalidProviderToken";

    if (jws_compact_split(jwt, &hdr_json, &claims_json, &sig, &siglen, &signed_len) != 0)
        goto out;
    hdr = cJSON_Parse(hdr_json);
    claims = cJSON_Parse(claims_json);
    if (!cJSON_IsObject(hdr) || !cJSON_IsObject(claims))
        goto out;
    const cJSON *alg = cJSON_GetObjectItemCaseSensitive(hdr, "alg");
    const cJSON *kid = cJSON_GetObjectItemCaseSensitive(hdr, "kid");
    const cJSON *iss = cJSON_GetObjectItemCaseSensitive(claims, "iss");
    const cJSON *iat = cJSON_GetObjectItemCaseSensitive(claims, "iat");
    if (cJSON_IsString(kid))
        copy_str(res->kid, sizeof res->kid, kid->valuestring);
    if (cJSON_IsString(iss))
        copy_str(res->iss, sizeof res->iss, iss->valuestring);
    if (!cJSON_IsString(alg) || strcmp(alg->valuestring, "ES256") != 0 ||
        !cJSON_IsString(kid) || !cJSON_IsString(iss) || !cJSON_IsNumber(iat))
        goto out;
    double iatd = iat->valuedouble;
    if (!(iatd >= 0 && iatd < 1e15) || iatd != (double)(int64_t)iatd)
        goto out; /* negative, fractional, absurd (also NaN) */
    const struct sbx_apns_key *key = find_key(cfg, kid->valuestring);
    if (key == NULL || key->pub == NULL)
        goto out;
    bool sig_ok;
    if (siglen == 64)
        sig_ok = jws_verify_es256(key->pub, jwt, signed_len, sig, siglen) == 1;
    else
        sig_ok = cfg->accept_der && verify_der(key->pub, jwt, signed_len, sig, siglen);
    if (!sig_ok || strcmp(iss->valuestring, key->team) != 0)
        goto out;
    *key_out = key;
    *iat_out = (int64_t)iatd;
    reason = NULL;
out:
    cJSON_Delete(hdr);
    cJSON_Delete(claims);
    free(hdr_json);
    free(claims_json);
    free(sig);
    return reason;
}

/* Provider-token checks; updates |auth| when a new token is accepted. */
static const char *check_auth(const struct sbx_apns_config *cfg, struct sbx_apns_auth *auth,
                              const struct sbx_request *req, const char *topic, size_t tlen,
                              int64_t now_ms, struct sbx_apns_result *res)
{
    size_t alen = 0;
    const char *authz = sbx_request_header(req, "authorization", &alen, NULL);
    if (authz == NULL || alen == 0)
        return "MissingProviderToken";
    if (alen < 6 || strncasecmp(authz, "bearer", 6) != 0 ||
        (authz[6] != ' ' && authz[6] != '\0'))
        return "InvalidProviderToken";
    const char *jwt = authz + 6;
    while (*jwt == ' ')
        jwt++;
    if (*jwt == '\0')
        return "MissingProviderToken";

    int64_t max_age = cfg->token_max_age_s ? cfg->token_max_age_s : 3600;
    int64_t min_gap = cfg->token_update_min_s ? cfg->token_update_min_s : 1200;
    int64_t skew = cfg->token_future_skew_s ? cfg->token_future_skew_s : 300;
    int64_t now_s = now_ms / 1000;

    if (auth->jwt != NULL && strcmp(auth->jwt, jwt) == 0) {
        /* The connection's current token: verified already. */
        copy_str(res->kid, sizeof res->kid, auth->key->kid);
        copy_str(res->iss, sizeof res->iss, auth->key->team);
        if (!topic_allowed(auth->key, topic, tlen))
            return "InvalidProviderToken";
        if (now_s - auth->iat > max_age)
            return "ExpiredProviderToken";
        res->auth_valid = true;
        return NULL;
    }

    const struct sbx_apns_key *key = NULL;
    int64_t iat = 0;
    const char *reason = verify_jwt(cfg, jwt, res, &key, &iat);
    if (reason)
        return reason;
    if (!topic_allowed(key, topic, tlen) || iat > now_s + skew)
        return "InvalidProviderToken";
    if (now_s - iat > max_age)
        return "ExpiredProviderToken";
    if (auth->team[0] && strcmp(auth->team, key->team) != 0)
        return "InvalidProviderToken";
    if (auth->kid[0] && strcmp(auth->kid, key->kid) != 0)
        return "UnrelatedKeyIdInToken";
    if (auth->jwt != NULL && now_ms - auth->jwt_since_ms < min_gap * 1000)
        return "TooManyProviderTokenUpdates";

    free(auth->jwt);
    auth->jwt = xstrdup(jwt);
    auth->jwt_since_ms = now_ms;
    auth->iat = iat;
    auth->key = key;
    copy_str(auth->team, sizeof auth->team, key->team);
    copy_str(auth->kid, sizeof auth->kid, key->kid);
    auth->updates++;
    res->auth_valid = true;
    return NULL;
}

static bool is_integer(const char *s, size_t len)
{
    if (len == 0 || len > 18)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return true;
}

static const char *const unique_headers[] = {
    "authorization", "apns-id", "apns-topic", "apns-push-type", "apns-priority",
    "apns-expiration", "apns-collapse-id",
};

static void uppercase_uuid(char out[37])
{
    uuid_v4(out);
    for (size_t i = 0; out[i]; i++)
        out[i] = (char)toupper((unsigned char)out[i]);
}

/* Run the checks in order; returns the reason or NULL for success. */
static const char *run_checks(const struct sbx_apns_config *cfg, struct sbx_apns_auth *auth,
                              const struct sbx_request *req, int64_t now_ms,
                              struct sbx_apns_result *res)
{
    size_t idlen = 0, tlen = 0, clen = 0, plen = 0, ptlen = 0, elen = 0;
    const char *id = sbx_request_header(req, "apns-id", &idlen, NULL);
    const char *topic = sbx_request_header(req, "apns-topic", &tlen, NULL);
    const char *collapse = sbx_request_header(req, "apns-collapse-id", &clen, NULL);
    const char *prio = sbx_request_header(req, "apns-priority", &plen, NULL);
    const char *ptype = sbx_request_header(req, "apns-push-type", &ptlen, NULL);
    const char *exp = sbx_request_header(req, "apns-expiration", &elen, NULL);
    char tokbuf[256];

    if (id != NULL) {
        if (!sbx_apns_is_uuid(id, idlen))
            return "BadMessageId";
        memcpy(res->apns_id, id, 36);
        res->apns_id[36] = '\0';
    }
    if (req->method == NULL || strcmp(req->method, "POST") != 0)
        return "MethodNotAllowed";
    if (topic == NULL || tlen == 0)
        return "MissingTopic";
    if (collapse != NULL && clen > 64)
        return "BadCollapseId";
    if (prio != NULL && !(plen == 2 && memcmp(prio, "10", 2) == 0) &&
        !(plen == 1 && (prio[0] == '5' || prio[0] == '1')))
        return "BadPriority";
    const struct push_type *type = resolve_type(ptype, ptlen, topic, tlen);
    if (type == NULL)
        return "InvalidPushType";
    res->push_type = type->name;
    res->max_payload = type->max_payload;
    const char *reason = check_path(cfg, req, res, tokbuf);
    if (reason)
        return reason;
    if (!cfg->no_auth && (reason = check_auth(cfg, auth, req, topic, tlen, now_ms, res)))
        return reason;
    if (exp != NULL && !is_integer(exp, elen))
        return "BadExpirationDate";
    for (size_t i = 0; i < sizeof unique_headers / sizeof unique_headers[0]; i++) {
        unsigned count = 0;
        sbx_request_header(req, unique_headers[i], NULL, &count);
        if (count > 1)
            return "DuplicateHeaders";
    }
    if (req->body_total == 0)
        return "PayloadEmpty";
    if (req->body_total > (size_t)type->max_payload)
        return "PayloadTooLarge";
    if (strcmp(type->name, "background") == 0 && (prio == NULL || (plen == 2 && prio[0] == '1')))
        return "BadPriority";
    const struct sbx_token_entry *dead = sbx_tokens_find(cfg->unregistered, tokbuf);
    if (dead) {
        res->timestamp_ms = dead->value;
        return "Unregistered";
    }
    if (sbx_tokens_find(cfg->bad_tokens, tokbuf))
        return "BadDeviceToken";
    return NULL;
}

int sbx_apns_validate(const struct sbx_apns_config *cfg, struct sbx_apns_auth *auth,
                      const struct sbx_request *req, int64_t now_ms,
                      struct sbx_apns_result *res)
{
    memset(res, 0, sizeof *res);
    res->max_payload = 4096;
    const char *reason = run_checks(cfg, auth, req, now_ms, res);
    if (res->apns_id[0] == '\0')
        uppercase_uuid(res->apns_id);
    if (cfg->no_auth && reason == NULL)
        res->auth_valid = true;
    res->reason = reason;
    res->status = reason ? sbx_apns_reason_status(reason) : 200;
    if (res->status == 410 && res->timestamp_ms <= 0)
        res->timestamp_ms = now_ms;
    return res->status;
}
