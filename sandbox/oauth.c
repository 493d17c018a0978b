/*
 * Google OAuth2 token endpoint, the pure parts (see oauth.h).
 *
 * Architecture: sbx_oauth_check() reads the two form fields, splits the
 * assertion with common/jws.h, finds the account by iss, verifies RS256,
 * then checks aud, the iat/exp window and the scope, in that order; the
 * first failing check decides the answer. Issued access tokens live in a
 * small chained hash table keyed by the token string, each with its expiry;
 * entries an hour past expiry are dropped by a scan at the next issue once
 * the table doubled or a minute passed, so a refresh storm cannot grow it
 * without bound.
 */
#include "sandbox/oauth.h"

#include "common/jws.h"
#include "common/util.h"

#include <cJSON.h>
#include <errno.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- accounts ------------------------------------------------------------ */

/* Read a whole (small) file into a NUL-terminated buffer; NULL on error. */
static char *slurp(const char *path, size_t *lenp, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 8192, len = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (len + 1 >= cap) {
            if (cap >= (1u << 20)) {
                snprintf(err, errlen, "%s: larger than 1 MiB", path);
                fclose(f);
                free(buf);
                return NULL;
            }
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        if (n == 0)
            break;
        len += n;
    }
    fclose(f);
    buf[len] = '\0';
    if (lenp)
        *lenp = len;
    return buf;
}

static char *json_str(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) && v->valuestring[0] ? xstrdup(v->valuestring) : NULL;
}

/* "SA.json": fields from the JSON, key from SA.json.pub.pem or private_key. */
static int load_json_account(struct sbx_oauth_account *a, const char *path, char *err,
                             size_t errlen)
{
    size_t len;
    char *text = slurp(path, &len, err, errlen);
    if (text == NULL)
        return -1;
    cJSON *o = cJSON_ParseWithLength(text, len);
    free(text);
    int rc = -1;
    char *pem = NULL;
    if (!cJSON_IsObject(o)) {
        snprintf(err, errlen, "%s: not a JSON object", path);
        goto out;
    }
    a->client_email = json_str(o, "client_email");
    a->kid = json_str(o, "private_key_id");
    a->project = json_str(o, "project_id");
    pem = json_str(o, "private_key");
    const char *missing = !a->client_email ? "client_email"
                          : !a->kid        ? "private_key_id"
                          : !a->project    ? "project_id"
                                           : NULL;
    if (missing) {
        snprintf(err, errlen, "%s: missing field \"%s\"", path, missing);
        goto out;
    }
    char pubpath[4096], kerr[256];
    snprintf(pubpath, sizeof pubpath, "%s.pub.pem", path);
    FILE *probe = fopen(pubpath, "r");
    if (probe != NULL) {
        fclose(probe);
        a->pub = jws_load_public_key_file(pubpath, kerr, sizeof kerr);
        if (a->pub == NULL) {
            snprintf(err, errlen, "%s: %s", pubpath, kerr);
            goto out;
        }
    } else if (pem != NULL) {
        /* A private key verifies as well as its public half does. */
        a->pub = jws_load_private_key_pem(pem, strlen(pem), kerr, sizeof kerr);
        if (a->pub == NULL) {
            snprintf(err, errlen, "%s: private_key: %s", path, kerr);
            goto out;
        }
    } else {
        snprintf(err, errlen, "%s: no private_key and no %s", path, pubpath);
        goto out;
    }
    if (EVP_PKEY_get_base_id(a->pub) != EVP_PKEY_RSA) {
        snprintf(err, errlen, "%s: the key is not an RSA key", path);
        goto out;
    }
    rc = 0;
out:
    free(pem);
    cJSON_Delete(o);
    return rc;
}

int sbx_oauth_account_load(struct sbx_oauth_account *a, const char *spec, char *err,
                           size_t errlen)
{
    memset(a, 0, sizeof *a);
    int rc = -1;
    if (strchr(spec, ':') == NULL) {
        rc = load_json_account(a, spec, err, errlen);
    } else {
        /* PUBFILE:KID:CLIENT_EMAIL:PROJECT */
        char *copy = xstrdup(spec);
        char *part[4] = { copy, NULL, NULL, NULL };
        for (int i = 1; i < 4; i++) {
            char *c = part[i - 1] ? strchr(part[i - 1], ':') : NULL;
            if (c) {
                *c = '\0';
                part[i] = c + 1;
            }
        }
        char kerr[256];
        if (!part[3] || !part[0][0] || !part[1][0] || !part[2][0] || !part[3][0] ||
            strchr(part[3], ':')) {
            snprintf(err, errlen, "want SA.json or PUBFILE:KID:CLIENT_EMAIL:PROJECT, got \"%s\"",
                     spec);
        } else if ((a->pub = jws_load_public_key_file(part[0], kerr, sizeof kerr)) == NULL) {
            snprintf(err, errlen, "%s: %s", part[0], kerr);
        } else if (EVP_PKEY_get_base_id(a->pub) != EVP_PKEY_RSA) {
            snprintf(err, errlen, "%s: not an RSA public key", part[0]);
        } else {
            a->kid = xstrdup(part[1]);
            a->client_email = xstrdup(part[2]);
            a->project = xstrdup(part[3]);
            rc = 0;
        }
        free(copy);
    }
    if (rc != 0)
        sbx_oauth_account_clear(a);
    return rc;
}

void sbx_oauth_account_clear(struct sbx_oauth_account *a)
{
    free(a->client_email);
    free(a->kid);
    free(a->project);
    EVP_PKEY_free(a->pub);
    memset(a, 0, sizeof *a);
}

/* ---- the token request ---------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long sbx_oauth_form_value(const char *body, size_t len, const char *name, char *out,
                          size_t outlen)
{
    size_t nl = strlen(name);
    size_t i = 0;
    while (i <= len) {
        size_t end = i;
        while (end < len && body[end] != '&')
            end++;
        const char *eq = memchr(body + i, '=', end - i);
        size_t keylen = eq ? (size_t)(eq - (body + i)) : end - i;
        if (keylen == nl && memcmp(body + i, name, nl) == 0) {
            const char *v = eq ? eq + 1 : body + end;
            size_t vlen = (size_t)(body + end - v), o = 0;
            for (size_t k = 0; k < vlen; k++) {
                char c = v[k];
                if (c == '+') {
                    c = ' ';
                } else if (c == '%') {
                    if (k + 2 >= vlen)
                        return -1;
                    int h1 = hexval(v[k + 1]), h2 = hexval(v[k + 2]);
                    if (h1 < 0 || h2 < 0)
                        return -1;
                    c = (char)(h1 * 16 + h2);
                    k += 2;
                }
                if (o + 1 >= outlen)
                    return -1;
                out[o++] = c;
            }
            out[o] = '\0';
            return (long)o;
        }
        i = end + 1;
    }
    return -1;
}

static const char *const google_audiences[] = {
    SBX_OAUTH_GOOGLE_TOKEN_URI,
    "https://accounts.google.com/o/oauth2/token",
    "https://www.googleapis.com/oauth2/v4/token",
};

static bool audience_ok(const struct sbx_oauth_config *cfg, const char *aud)
{
    for (size_t i = 0; i < sizeof google_audiences / sizeof google_audiences[0]; i++)
        if (strcmp(aud, google_audiences[i]) == 0)
            return true;
    if (cfg->self_audience && strcmp(aud, cfg->self_audience) == 0)
        return true;
    for (size_t i = 0; i < cfg->naudiences; i++)
        if (strcmp(aud, cfg->audiences[i]) == 0)
            return true;
    return false;
}

/* true when the space-separated |scope| holds |want|. */
static bool scope_has(const char *scope, const char *want)
{
    size_t wl = strlen(want);
    const char *p = scope;
    while (*p) {
        while (*p == ' ')
            p++;
        const char *e = p;
        while (*e && *e != ' ')
            e++;
        if ((size_t)(e - p) == wl && memcmp(p, want, wl) == 0)
            return true;
        p = e;
    }
    return false;
}

static void copy_claim(const cJSON *o, const char *name, char *out, size_t outlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (cJSON_IsString(v))
        snprintf(out, outlen, "%s", v->valuestring);
}

/* An integer NumericDate claim; false when absent or not a number. */
static bool num_claim(const cJSON *o, const char *name, int64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e13)
        return false;
    *out = (int64_t)v->valuedouble;
    return true;
}

static int fail(struct sbx_oauth_grant *g, const char *error, const char *desc)
{
    g->status = 400;
    g->error = error;
    snprintf(g->error_description, sizeof g->error_description, "%s", desc);
    g->account = NULL;
    return 400;
}

#define SIG_TEXT "Invalid JWT Signature."
#define TIME_TEXT "Invalid JWT: Token must be a short-lived token (60 minutes) and in a " \
                  "reasonable timeframe. Check your iat and exp values in the JWT claim."

/* The two request fields, from a form or a JSON body. */
static void read_fields(const char *content_type, const uint8_t *body, size_t len,
                        char *grant, size_t grantlen, char **assertion)
{
    grant[0] = '\0';
    *assertion = NULL;
    if (content_type && strncmp(content_type, "application/json", 16) == 0) {
        cJSON *o = cJSON_ParseWithLength((const char *)body, len);
        if (cJSON_IsObject(o)) {
            copy_claim(o, "grant_type", grant, grantlen);
            const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "assertion");
            if (cJSON_IsString(a))
                *assertion = xstrdup(a->valuestring);
        }
        cJSON_Delete(o);
        return;
    }
    if (sbx_oauth_form_value((const char *)body, len, "grant_type", grant, grantlen) < 0)
        grant[0] = '\0';
    char *buf = xmalloc(len + 1);
    if (sbx_oauth_form_value((const char *)body, len, "assertion", buf, len + 1) >= 0)
        *assertion = buf;
    else
        free(buf);
}

int sbx_oauth_check(const struct sbx_oauth_config *cfg, const char *content_type,
                    const uint8_t *body, size_t len, int64_t now_s,
                    struct sbx_oauth_grant *g)
{
    memset(g, 0, sizeof *g);
    char *assertion = NULL, *hjson = NULL, *cjson = NULL;
    unsigned char *sig = NULL;
    cJSON *hdr = NULL, *claims = NULL;
    size_t siglen = 0, signing_len = 0;
    int64_t skew = cfg->skew_s > 0 ? cfg->skew_s : 60;
    int64_t max_life = cfg->max_lifetime_s > 0 ? cfg->max_lifetime_s : 3600;

    read_fields(content_type, body ? body : (const uint8_t *)"", body ? len : 0, g->grant_type,
                sizeof g->grant_type, &assertion);
    if (strcmp(g->grant_type, SBX_OAUTH_GRANT_JWT) != 0) {
        char d[160];
        snprintf(d, sizeof d, "Invalid grant_type: %s", g->grant_type);
        fail(g, "unsupported_grant_type", d);
        goto out;
    }
    if (assertion == NULL || assertion[0] == '\0') {
        fail(g, "invalid_request", "Missing required parameter: assertion");
        goto out;
    }
    if (jws_compact_split(assertion, &hjson, &cjson, &sig, &siglen, &signing_len) != 0 ||
        !cJSON_IsObject(hdr = cJSON_Parse(hjson)) ||
        !cJSON_IsObject(claims = cJSON_Parse(cjson))) {
        fail(g, "invalid_grant", SIG_TEXT);
        goto out;
    }
    copy_claim(hdr, "kid", g->kid, sizeof g->kid);
    copy_claim(claims, "iss", g->iss, sizeof g->iss);
    copy_claim(claims, "aud", g->aud, sizeof g->aud);
    copy_claim(claims, "scope", g->scope, sizeof g->scope);
    copy_claim(claims, "sub", g->sub, sizeof g->sub);
    bool have_iat = num_claim(claims, "iat", &g->iat);
    bool have_exp = num_claim(claims, "exp", &g->exp);

    const cJSON *alg = cJSON_GetObjectItemCaseSensitive(hdr, "alg");
    const struct sbx_oauth_account *acct = NULL;
    const cJSON *iss = cJSON_GetObjectItemCaseSensitive(claims, "iss");
    for (size_t i = 0; cJSON_IsString(iss) && i < cfg->naccounts; i++)
        if (strcmp(cfg->accounts[i].client_email, iss->valuestring) == 0)
            acct = &cfg->accounts[i];
    const cJSON *kid = cJSON_GetObjectItemCaseSensitive(hdr, "kid");
    if (!cJSON_IsString(alg) || strcmp(alg->valuestring, "RS256") != 0 || acct == NULL ||
        (kid != NULL && (!cJSON_IsString(kid) || strcmp(kid->valuestring, acct->kid) != 0)) ||
        jws_verify_rs256(acct->pub, assertion, signing_len, sig, siglen) != 1) {
        fail(g, "invalid_grant", SIG_TEXT);
        goto out;
    }
    const cJSON *aud = cJSON_GetObjectItemCaseSensitive(claims, "aud");
    if (!cJSON_IsString(aud) || !audience_ok(cfg, aud->valuestring)) {
        fail(g, "invalid_grant", "Invalid JWT: Failed audience check. The right audience is "
                                 SBX_OAUTH_GOOGLE_TOKEN_URI);
        goto out;
    }
    if (!have_iat || !have_exp || g->exp <= g->iat || g->exp - g->iat > max_life ||
        g->iat > now_s + skew || g->exp < now_s - skew) {
        fail(g, "invalid_grant", TIME_TEXT);
        goto out;
    }
    if (!scope_has(g->scope, SBX_OAUTH_SCOPE_FCM) && !scope_has(g->scope, SBX_OAUTH_SCOPE_CLOUD)) {
        fail(g, "invalid_scope", "Invalid OAuth scope or ID token audience provided.");
        goto out;
    }
    g->status = 200;
    g->account = acct;
out:
    cJSON_Delete(hdr);
    cJSON_Delete(claims);
    free(hjson);
    free(cjson);
    free(sig);
    free(assertion);
    return g->status;
}

/* |s| as a JSON string literal into |out|. */
static void json_quote(const char *s, char *out, size_t len)
{
    cJSON *tmp = cJSON_CreateString(s);
    char *q = cJSON_PrintUnformatted(tmp);
    cJSON_Delete(tmp);
    if (q == NULL)
        abort();
    snprintf(out, len, "%s", q);
    cJSON_free(q);
}

size_t sbx_oauth_error_body(const struct sbx_oauth_grant *g, char *buf, size_t len)
{
    char e[128], d[600];
    json_quote(g->error ? g->error : "invalid_request", e, sizeof e);
    json_quote(g->error_description, d, sizeof d);
    int n = snprintf(buf, len, "{\n  \"error\": %s,\n  \"error_description\": %s\n}\n", e, d);
    return n < 0 ? 0 : (size_t)n >= len ? (len ? len - 1 : 0) : (size_t)n;
}

size_t sbx_oauth_token_body(const char *token, int64_t expires_in_s, char *buf, size_t len)
{
    int n = snprintf(buf, len, "{\n  \"access_token\": \"%s\",\n  \"expires_in\": %lld,\n"
                     "  \"token_type\": \"Bearer\"\n}\n", token, (long long)expires_in_s);
    return n < 0 ? 0 : (size_t)n >= len ? (len ? len - 1 : 0) : (size_t)n;
}

/* ---- issued tokens -------------------------------------------------------- */

#define GRACE_MS (3600 * 1000LL)   /* remember expired tokens this long */

struct tok {
    char *s;
    size_t len;
    int64_t expires_ms;
    const struct sbx_oauth_account *account;
    struct tok *next;
};

struct sbx_oauth_tokens {
    struct tok **b;
    size_t nb;             /* bucket count, a power of two */
    size_t n;              /* entries */
    size_t prune_at;       /* prune when n reaches this ... */
    int64_t pruned_ms;     /* ... or a minute after the last prune */
    uint64_t issued;
};

static uint64_t hash(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

struct sbx_oauth_tokens *sbx_oauth_tokens_new(void)
{
    struct sbx_oauth_tokens *t = xcalloc(1, sizeof *t);
    t->nb = 256;
    t->b = xcalloc(t->nb, sizeof *t->b);
    t->prune_at = 512;
    return t;
}

void sbx_oauth_tokens_free(struct sbx_oauth_tokens *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->nb; i++) {
        struct tok *e = t->b[i];
        while (e) {
            struct tok *next = e->next;
            free(e->s);
            free(e);
            e = next;
        }
    }
    free(t->b);
    free(t);
}

static void prune(struct sbx_oauth_tokens *t, int64_t now_ms)
{
    for (size_t i = 0; i < t->nb; i++) {
        struct tok **pp = &t->b[i];
        while (*pp) {
            struct tok *e = *pp;
            if (e->expires_ms + GRACE_MS < now_ms) {
                *pp = e->next;
                free(e->s);
                free(e);
                t->n--;
            } else {
                pp = &e->next;
            }
        }
    }
}

static void grow(struct sbx_oauth_tokens *t)
{
    size_t nb = t->nb * 2;
    struct tok **b = xcalloc(nb, sizeof *b);
    for (size_t i = 0; i < t->nb; i++) {
        struct tok *e = t->b[i];
        while (e) {
            struct tok *next = e->next;
            size_t k = (size_t)(hash(e->s, e->len) & (nb - 1));
            e->next = b[k];
            b[k] = e;
            e = next;
        }
    }
    free(t->b);
    t->b = b;
    t->nb = nb;
}

void sbx_oauth_tokens_issue(struct sbx_oauth_tokens *t, const struct sbx_oauth_account *account,
                            int64_t now_ms, int64_t lifetime_ms, char out[SBX_OAUTH_TOKEN_MAX])
{
    if (t->n >= t->prune_at || now_ms - t->pruned_ms >= 60000) {
        prune(t, now_ms);
        t->prune_at = t->n * 2 > 512 ? t->n * 2 : 512;
        t->pruned_ms = now_ms;
    }
    if (t->n >= t->nb * 2)
        grow(t);
    /* "ya29.c." + 160 base64url characters (120 random bytes): about the
     * size of Google's service-account tokens, never padded. */
    unsigned char rnd[120];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        abort();
    memcpy(out, "ya29.c.", 7);
    size_t n = 7 + b64url_encode(rnd, sizeof rnd, out + 7);
    struct tok *e = xcalloc(1, sizeof *e);
    e->s = xstrndup(out, n);
    e->len = n;
    e->expires_ms = now_ms + lifetime_ms;
    e->account = account;
    size_t k = (size_t)(hash(e->s, n) & (t->nb - 1));
    e->next = t->b[k];
    t->b[k] = e;
    t->n++;
    t->issued++;
}

enum sbx_oauth_token_state sbx_oauth_tokens_check(const struct sbx_oauth_tokens *t,
                                                  const char *token, size_t len,
                                                  int64_t now_ms,
                                                  const struct sbx_oauth_account **account)
{
    if (account)
        *account = NULL;
    size_t k = (size_t)(hash(token, len) & (t->nb - 1));
    for (const struct tok *e = t->b[k]; e; e = e->next) {
        if (e->len != len || memcmp(e->s, token, len) != 0)
            continue;
        if (account)
            *account = e->account;
        return now_ms < e->expires_ms ? SBX_OAUTH_TOKEN_VALID : SBX_OAUTH_TOKEN_EXPIRED;
    }
    return SBX_OAUTH_TOKEN_UNKNOWN;
}

uint64_t sbx_oauth_tokens_issued(const struct sbx_oauth_tokens *t) { return t->issued; }

size_t sbx_oauth_tokens_size(const struct sbx_oauth_tokens *t) { return t->n; }

const char *sbx_oauth_token_state_name(enum sbx_oauth_token_state s)
{
    switch (s) {
    case SBX_OAUTH_TOKEN_VALID: return "valid";
    case SBX_OAUTH_TOKEN_EXPIRED: return "expired";
    case SBX_OAUTH_TOKEN_UNKNOWN: return "unknown";
    }
    return "unknown";
}
