/*
 * Unit tests of sandbox/oauth.c, the pure token-endpoint logic of the
 * Google OAuth fake: form decoding, service-account loading (both spec
 * forms), every answer of sbx_oauth_check() and its order (grant type,
 * assertion, signature/kid/iss, aud, iat/exp window, scope), the exact
 * Google error texts and body layout, and the issued-token table (expiry,
 * unknown tokens, pruning, growth).
 */
#include "tests/unit/test.h"

#include "common/certgen.h"
#include "common/jws.h"
#include "common/util.h"
#include "sandbox/oauth.h"
#include "tests/unit/sandbox_fixture.h"

#include <cJSON.h>
#include <dirent.h>
#include <stdio.h>

#define EMAIL "sa@demo-proj.iam.gserviceaccount.com"
#define KID "0123456789abcdef0123456789abcdef01234567"
#define NOW 1800000000LL
#define SIG_TEXT "Invalid JWT Signature."
#define TIME_TEXT "Invalid JWT: Token must be a short-lived token (60 minutes) and in a " \
                  "reasonable timeframe. Check your iat and exp values in the JWT claim."

static char dir[64];
static EVP_PKEY *priv, *other_priv;
static struct sbx_oauth_account sa_acct;
static struct sbx_oauth_config cfg;

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ASSERT_NOT_NULL(f);
    fputs(text, f);
    fclose(f);
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "r");
    ASSERT_NOT_NULL(f);
    static char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Keys in a temp dir and one account (spec form) in |sa_acct|. */
static void setup(void)
{
    fixture_tmpdir("sbx-oauth", dir, sizeof dir);
    char key[128], pub[128], key2[128], pub2[128], err[256], spec[512];
    snprintf(key, sizeof key, "%s/sa.key", dir);
    snprintf(pub, sizeof pub, "%s/sa.pub.pem", dir);
    snprintf(key2, sizeof key2, "%s/other.key", dir);
    snprintf(pub2, sizeof pub2, "%s/other.pub.pem", dir);
    ASSERT_EQ_INT(0, certgen_rsa_key(key, pub, err, sizeof err));
    ASSERT_EQ_INT(0, certgen_rsa_key(key2, pub2, err, sizeof err));
    priv = jws_load_private_key_file(key, err, sizeof err);
    other_priv = jws_load_private_key_file(key2, err, sizeof err);
    ASSERT_NOT_NULL(priv);
    ASSERT_NOT_NULL(other_priv);
    snprintf(spec, sizeof spec, "%s:%s:%s:demo-proj", pub, KID, EMAIL);
    ASSERT_EQ_INT(0, sbx_oauth_account_load(&sa_acct, spec, err, sizeof err));
    memset(&cfg, 0, sizeof cfg);
    cfg.accounts = &sa_acct;
    cfg.naccounts = 1;
    cfg.self_audience = "https://127.0.0.1:4443/token";
}

/* A signed assertion; |claims_fmt| gets iat and exp in that order. */
static char *assertion(EVP_PKEY *key, const char *header, const char *claims)
{
    char *jwt = jws_compact_sign("RS256", key, header, claims);
    ASSERT_NOT_NULL(jwt);
    return jwt;
}

#define HDR "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"" KID "\"}"

static char *claims(const char *iss, const char *aud, const char *scope, long long iat,
                    long long exp)
{
    static char buf[1024];
    snprintf(buf, sizeof buf, "{\"iss\":\"%s\",\"scope\":\"%s\",\"aud\":\"%s\",\"iat\":%lld,"
             "\"exp\":%lld}", iss, scope, aud, iat, exp);
    return buf;
}

#define GOOD_CLAIMS claims(EMAIL, "https://oauth2.googleapis.com/token", \
                           "https://www.googleapis.com/auth/firebase.messaging", NOW, NOW + 3600)

/* Run a form request with |jwt| (may be NULL) and grant |grant|. */
static int check_form(const char *grant, const char *jwt, struct sbx_oauth_grant *g)
{
    char body[8192];
    size_t n = 0;
    if (grant)
        n += (size_t)snprintf(body + n, sizeof body - n, "grant_type=%s", grant);
    if (jwt)
        n += (size_t)snprintf(body + n, sizeof body - n, "%sassertion=%s", n ? "&" : "", jwt);
    return sbx_oauth_check(&cfg, "application/x-www-form-urlencoded", (const uint8_t *)body, n,
                           NOW + 5, g);
}

#define GRANT "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"

static void expect_error(struct sbx_oauth_grant *g, const char *error, const char *desc)
{
    ASSERT_EQ_INT(400, g->status);
    ASSERT_STR_EQ(error, g->error);
    ASSERT_STR_EQ(desc, g->error_description);
    ASSERT_NULL(g->account);
}

static int check_claims(const char *c, struct sbx_oauth_grant *g)
{
    char *jwt = assertion(priv, HDR, c);
    int rc = check_form(GRANT, jwt, g);
    free(jwt);
    return rc;
}

TEST(form_value_decoding)
{
    char out[64];
    const char *b = "a=1&grant_type=urn%3Aietf%3Aparams&x=a+b%20c&empty=&flag";
    ASSERT_EQ_INT(15, sbx_oauth_form_value(b, strlen(b), "grant_type", out, sizeof out));
    ASSERT_STR_EQ("urn:ietf:params", out);
    ASSERT_EQ_INT(5, sbx_oauth_form_value(b, strlen(b), "x", out, sizeof out));
    ASSERT_STR_EQ("a b c", out);
    ASSERT_EQ_INT(0, sbx_oauth_form_value(b, strlen(b), "empty", out, sizeof out));
    ASSERT_EQ_INT(0, sbx_oauth_form_value(b, strlen(b), "flag", out, sizeof out));
    ASSERT_EQ_INT(1, sbx_oauth_form_value(b, strlen(b), "a", out, sizeof out));
    ASSERT_EQ_INT(-1, sbx_oauth_form_value(b, strlen(b), "missing", out, sizeof out));
    ASSERT_EQ_INT(-1, sbx_oauth_form_value("k=%4", 4, "k", out, sizeof out));
    ASSERT_EQ_INT(-1, sbx_oauth_form_value("k=%zz", 5, "k", out, sizeof out));
    ASSERT_EQ_INT(-1, sbx_oauth_form_value("k=123456", 8, "k", out, 4)); /* does not fit */
    ASSERT_EQ_INT(-1, sbx_oauth_form_value("", 0, "k", out, sizeof out));
}

TEST(good_assertion_is_granted)
{
    setup();
    struct sbx_oauth_grant g;
    ASSERT_EQ_INT(200, check_claims(GOOD_CLAIMS, &g));
    ASSERT(g.account == &sa_acct);
    ASSERT_NULL(g.error);
    ASSERT_STR_EQ(EMAIL, g.iss);
    ASSERT_STR_EQ(KID, g.kid);
    ASSERT_STR_EQ("https://oauth2.googleapis.com/token", g.aud);
    ASSERT_EQ_INT(NOW, g.iat);
    ASSERT_EQ_INT(NOW + 3600, g.exp);
    ASSERT_STR_EQ("urn:ietf:params:oauth:grant-type:jwt-bearer", g.grant_type);
    /* firebase-admin's scope list: several, space-separated. */
    ASSERT_EQ_INT(200, check_claims(claims(EMAIL, "https://oauth2.googleapis.com/token",
                                           "https://www.googleapis.com/auth/cloud-platform "
                                           "https://www.googleapis.com/auth/firebase.messaging "
                                           "https://www.googleapis.com/auth/userinfo.email",
                                           NOW, NOW + 3600), &g));
    /* cloud-platform alone covers FCM too. */
    ASSERT_EQ_INT(200, check_claims(claims(EMAIL, "https://oauth2.googleapis.com/token",
                                           "https://www.googleapis.com/auth/cloud-platform",
                                           NOW, NOW + 3600), &g));
    /* No kid: the account's key is tried. */
    char *jwt = assertion(priv, "{\"alg\":\"RS256\",\"typ\":\"JWT\"}", GOOD_CLAIMS);
    ASSERT_EQ_INT(200, check_form(GRANT, jwt, &g));
    free(jwt);
}

TEST(json_body_is_accepted)
{
    setup();
    char *jwt = assertion(priv, HDR, GOOD_CLAIMS);
    char body[4096];
    snprintf(body, sizeof body, "{\"grant_type\":\"urn:ietf:params:oauth:grant-type:jwt-bearer\","
             "\"assertion\":\"%s\"}", jwt);
    struct sbx_oauth_grant g;
    ASSERT_EQ_INT(200, sbx_oauth_check(&cfg, "application/json; charset=utf-8",
                                       (const uint8_t *)body, strlen(body), NOW, &g));
    /* The same JSON sent as a form is not understood. */
    ASSERT_EQ_INT(400, sbx_oauth_check(&cfg, "application/x-www-form-urlencoded",
                                       (const uint8_t *)body, strlen(body), NOW, &g));
    ASSERT_STR_EQ("unsupported_grant_type", g.error);
    free(jwt);
}

TEST(grant_type_and_assertion_required)
{
    setup();
    struct sbx_oauth_grant g;
    check_form("client_credentials", NULL, &g);
    expect_error(&g, "unsupported_grant_type", "Invalid grant_type: client_credentials");
    check_form(NULL, "x.y.z", &g);
    expect_error(&g, "unsupported_grant_type", "Invalid grant_type: ");
    check_form("refresh_token", "x.y.z", &g);
    expect_error(&g, "unsupported_grant_type", "Invalid grant_type: refresh_token");
    check_form(GRANT, NULL, &g);
    expect_error(&g, "invalid_request", "Missing required parameter: assertion");
    check_form(GRANT, "", &g);
    expect_error(&g, "invalid_request", "Missing required parameter: assertion");
    ASSERT_EQ_INT(400, sbx_oauth_check(&cfg, NULL, NULL, 0, NOW, &g));
    ASSERT_STR_EQ("unsupported_grant_type", g.error);
}

TEST(bad_signatures_and_keys)
{
    setup();
    struct sbx_oauth_grant g;
    /* Not a JWS at all, or not JSON inside. */
    check_form(GRANT, "garbage", &g);
    expect_error(&g, "invalid_grant", SIG_TEXT);
    check_form(GRANT, "e30.e30.", &g); /* {}.{}. */
    expect_error(&g, "invalid_grant", SIG_TEXT);
    /* Signed with a key the account does not have. */
    char *jwt = assertion(other_priv, HDR, GOOD_CLAIMS);
    check_form(GRANT, jwt, &g);
    expect_error(&g, "invalid_grant", SIG_TEXT);
    ASSERT_STR_EQ(EMAIL, g.iss); /* still recorded */
    free(jwt);
    /* A flipped signature byte. */
    jwt = assertion(priv, HDR, GOOD_CLAIMS);
    size_t l = strlen(jwt);
    jwt[l - 3] = jwt[l - 3] == 'A' ? 'B' : 'A';
    check_form(GRANT, jwt, &g);
    expect_error(&g, "invalid_grant", SIG_TEXT);
    free(jwt);
    /* Unknown iss. */
    jwt = assertion(priv, HDR, claims("nobody@x.iam.gserviceaccount.com",
                                      "https://oauth2.googleapis.com/token",
                                      "https://www.googleapis.com/auth/firebase.messaging",
                                      NOW, NOW + 3600));
    check_form(GRANT, jwt, &g);
    expect_error(&g, "invalid_grant", SIG_TEXT);
    free(jwt);
    /* kid of another key. */
    jwt = assertion(priv, "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"ffff\"}", GOOD_CLAIMS);
    check_form(GRANT, jwt, &g);
    expect_error(&g, "invalid_grant", SIG_TEXT);
    free(jwt);
    /* alg not RS256 (the signature bytes are RS256 anyway). */
    jwt = assertion(priv, "{\"alg\":\"RS512\",\"kid\":\"" KID "\"}", GOOD_CLAIMS);
    check_form(GRANT, jwt, &g);
    expect_error(&g, "invalid_grant", SIG_TEXT);
    free(jwt);
    /* Signature checks come before aud/time/scope: a bad signature with a
     * bad aud is still "Invalid JWT Signature." */
    jwt = assertion(other_priv, HDR, claims(EMAIL, "https://evil.example/token", "", 1, 2));
    check_form(GRANT, jwt, &g);
    expect_error(&g, "invalid_grant", SIG_TEXT);
    free(jwt);
}

TEST(audience_set)
{
    setup();
    struct sbx_oauth_grant g;
    static const char *const ok[] = {
        "https://oauth2.googleapis.com/token",
        "https://accounts.google.com/o/oauth2/token",
        "https://www.googleapis.com/oauth2/v4/token",
        "https://127.0.0.1:4443/token", /* the request's own URL */
    };
    const char *scope = "https://www.googleapis.com/auth/firebase.messaging";
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        ASSERT_EQ_INT(200, check_claims(claims(EMAIL, ok[i], scope, NOW, NOW + 3600), &g));
    check_claims(claims(EMAIL, "https://127.0.0.1:9999/token", scope, NOW, NOW + 3600), &g);
    expect_error(&g, "invalid_grant", "Invalid JWT: Failed audience check. The right audience is "
                                      "https://oauth2.googleapis.com/token");
    check_claims(claims(EMAIL, "", scope, NOW, NOW + 3600), &g);
    ASSERT_STR_EQ("invalid_grant", g.error);
    /* --oauth-audience adds to the set. */
    const char *extra[] = { "https://127.0.0.1:9999/token" };
    cfg.audiences = extra;
    cfg.naudiences = 1;
    ASSERT_EQ_INT(200, check_claims(claims(EMAIL, extra[0], scope, NOW, NOW + 3600), &g));
    /* aud must be a string. */
    char c[512];
    snprintf(c, sizeof c, "{\"iss\":\"%s\",\"scope\":\"%s\",\"aud\":[\"%s\"],\"iat\":%lld,"
             "\"exp\":%lld}", EMAIL, scope, ok[0], NOW, NOW + 3600);
    check_claims(c, &g);
    ASSERT_STR_EQ("invalid_grant", g.error);
}

TEST(iat_exp_window)
{
    setup();
    struct sbx_oauth_grant g;
    const char *aud = "https://oauth2.googleapis.com/token";
    const char *scope = "https://www.googleapis.com/auth/firebase.messaging";
    long long now = NOW + 5; /* check_form's clock */
    /* exactly 60 minutes: fine; 60 minutes and 1 s: too long */
    ASSERT_EQ_INT(200, check_claims(claims(EMAIL, aud, scope, now, now + 3600), &g));
    check_claims(claims(EMAIL, aud, scope, now, now + 3601), &g);
    expect_error(&g, "invalid_grant", TIME_TEXT);
    /* iat up to 60 s in the future is clock skew; 61 s is not */
    ASSERT_EQ_INT(200, check_claims(claims(EMAIL, aud, scope, now + 60, now + 660), &g));
    check_claims(claims(EMAIL, aud, scope, now + 61, now + 661), &g);
    expect_error(&g, "invalid_grant", TIME_TEXT);
    /* expired (beyond the skew) */
    check_claims(claims(EMAIL, aud, scope, now - 3700, now - 100), &g);
    expect_error(&g, "invalid_grant", TIME_TEXT);
    ASSERT_EQ_INT(200, check_claims(claims(EMAIL, aud, scope, now - 3600, now - 30), &g));
    /* exp before iat, equal, missing, milliseconds */
    check_claims(claims(EMAIL, aud, scope, now, now - 1), &g);
    expect_error(&g, "invalid_grant", TIME_TEXT);
    check_claims(claims(EMAIL, aud, scope, now, now), &g);
    expect_error(&g, "invalid_grant", TIME_TEXT);
    char c[512];
    snprintf(c, sizeof c, "{\"iss\":\"%s\",\"scope\":\"%s\",\"aud\":\"%s\",\"iat\":%lld}", EMAIL,
             scope, aud, now);
    check_claims(c, &g);
    expect_error(&g, "invalid_grant", TIME_TEXT);
    check_claims(claims(EMAIL, aud, scope, now * 1000, now * 1000 + 3600000), &g);
    expect_error(&g, "invalid_grant", TIME_TEXT);
}

TEST(scope_must_cover_fcm)
{
    setup();
    struct sbx_oauth_grant g;
    const char *aud = "https://oauth2.googleapis.com/token";
    const char *desc = "Invalid OAuth scope or ID token audience provided.";
    check_claims(claims(EMAIL, aud, "", NOW, NOW + 3600), &g);
    expect_error(&g, "invalid_scope", desc);
    check_claims(claims(EMAIL, aud, "https://www.googleapis.com/auth/userinfo.email", NOW,
                        NOW + 3600), &g);
    expect_error(&g, "invalid_scope", desc);
    /* A prefix of the right scope is not the scope. */
    check_claims(claims(EMAIL, aud, "https://www.googleapis.com/auth/firebase", NOW, NOW + 3600),
                 &g);
    expect_error(&g, "invalid_scope", desc);
    /* Times are checked before the scope. */
    check_claims(claims(EMAIL, aud, "", NOW, NOW + 7200), &g);
    expect_error(&g, "invalid_grant", TIME_TEXT);
}

TEST(error_and_token_bodies)
{
    struct sbx_oauth_grant g;
    memset(&g, 0, sizeof g);
    g.status = 400;
    g.error = "invalid_grant";
    snprintf(g.error_description, sizeof g.error_description, "%s", SIG_TEXT);
    char buf[512];
    size_t n = sbx_oauth_error_body(&g, buf, sizeof buf);
    ASSERT_STR_EQ("{\n  \"error\": \"invalid_grant\",\n  \"error_description\": "
                  "\"Invalid JWT Signature.\"\n}\n", buf);
    ASSERT_EQ_INT(strlen(buf), n);
    n = sbx_oauth_token_body("ya29.c.abc", 3599, buf, sizeof buf);
    ASSERT_STR_EQ("{\n  \"access_token\": \"ya29.c.abc\",\n  \"expires_in\": 3599,\n"
                  "  \"token_type\": \"Bearer\"\n}\n", buf);
    cJSON *j = cJSON_Parse(buf);
    ASSERT_NOT_NULL(j);
    cJSON_Delete(j);
    /* Quotes in a description stay valid JSON. */
    snprintf(g.error_description, sizeof g.error_description, "a \"quoted\" \\ text");
    sbx_oauth_error_body(&g, buf, sizeof buf);
    j = cJSON_Parse(buf);
    ASSERT_NOT_NULL(j);
    ASSERT_STR_EQ("a \"quoted\" \\ text",
                  cJSON_GetObjectItem(j, "error_description")->valuestring);
    cJSON_Delete(j);
}

TEST(account_from_json_and_pub_file)
{
    setup();
    char path[128], pubpath[160], err[256];
    snprintf(path, sizeof path, "%s/sa_acct.json", dir);
    snprintf(pubpath, sizeof pubpath, "%s/sa_acct.json.pub.pem", dir);
    char pub[128];
    snprintf(pub, sizeof pub, "%s/sa.pub.pem", dir);
    /* Fields from the JSON, the key from SA.json.pub.pem. */
    char json[1024];
    snprintf(json, sizeof json, "{\"type\":\"service_account\",\"project_id\":\"p1\","
             "\"private_key_id\":\"k1\",\"client_email\":\"e1@p1.iam.gserviceaccount.com\"}");
    write_file(path, json);
    struct sbx_oauth_account a;
    ASSERT_EQ_INT(-1, sbx_oauth_account_load(&a, path, err, sizeof err)); /* no key anywhere */
    ASSERT_STR_CONTAINS(err, "no private_key");
    write_file(pubpath, read_text(pub));
    ASSERT_EQ_INT(0, sbx_oauth_account_load(&a, path, err, sizeof err));
    ASSERT_STR_EQ("p1", a.project);
    ASSERT_STR_EQ("k1", a.kid);
    ASSERT_STR_EQ("e1@p1.iam.gserviceaccount.com", a.client_email);
    ASSERT_NOT_NULL(a.pub);
    sbx_oauth_account_clear(&a);
    ASSERT_NULL(a.pub);
    /* Missing field. */
    write_file(path, "{\"project_id\":\"p1\",\"client_email\":\"e\"}");
    ASSERT_EQ_INT(-1, sbx_oauth_account_load(&a, path, err, sizeof err));
    ASSERT_STR_CONTAINS(err, "private_key_id");
    /* Spec form errors. */
    ASSERT_EQ_INT(-1, sbx_oauth_account_load(&a, "a:b:c", err, sizeof err));
    ASSERT_EQ_INT(-1, sbx_oauth_account_load(&a, "/nonexistent.pem:k:e:p", err, sizeof err));
    ASSERT_EQ_INT(-1, sbx_oauth_account_load(&a, "/nonexistent.json", err, sizeof err));
}

TEST(account_key_derived_from_private_key)
{
    setup();
    /* No .pub.pem: the private key in the JSON verifies. */
    char keypath[128], path[128], err[256];
    snprintf(keypath, sizeof keypath, "%s/sa.key", dir);
    snprintf(path, sizeof path, "%s/full.json", dir);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "project_id", "demo-proj");
    cJSON_AddStringToObject(o, "private_key_id", KID);
    cJSON_AddStringToObject(o, "client_email", EMAIL);
    cJSON_AddStringToObject(o, "private_key", read_text(keypath));
    char *s = cJSON_Print(o);
    write_file(path, s);
    cJSON_free(s);
    cJSON_Delete(o);
    struct sbx_oauth_account a;
    ASSERT_EQ_INT(0, sbx_oauth_account_load(&a, path, err, sizeof err));
    cfg.accounts = &a;
    struct sbx_oauth_grant g;
    ASSERT_EQ_INT(200, check_claims(GOOD_CLAIMS, &g));
    ASSERT(g.account == &a);
    sbx_oauth_account_clear(&a);
}

TEST(issued_tokens_expire)
{
    struct sbx_oauth_account a = { .client_email = "e", .kid = "k", .project = "p" };
    struct sbx_oauth_tokens *t = sbx_oauth_tokens_new();
    char tok[SBX_OAUTH_TOKEN_MAX], tok2[SBX_OAUTH_TOKEN_MAX];
    int64_t t0 = 1800000000000LL;
    sbx_oauth_tokens_issue(t, &a, t0, 20000, tok);
    sbx_oauth_tokens_issue(t, &a, t0, 3599000, tok2);
    ASSERT(strncmp(tok, "ya29.c.", 7) == 0);
    ASSERT_EQ_INT(167, strlen(tok));
    ASSERT(strcmp(tok, tok2) != 0);
    for (const char *p = tok + 7; *p; p++)
        ASSERT((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
               *p == '-' || *p == '_');
    const struct sbx_oauth_account *who = NULL;
    ASSERT_EQ_INT(SBX_OAUTH_TOKEN_VALID, sbx_oauth_tokens_check(t, tok, strlen(tok), t0, &who));
    ASSERT(who == &a);
    ASSERT_EQ_INT(SBX_OAUTH_TOKEN_VALID,
                  sbx_oauth_tokens_check(t, tok, strlen(tok), t0 + 19999, NULL));
    ASSERT_EQ_INT(SBX_OAUTH_TOKEN_EXPIRED,
                  sbx_oauth_tokens_check(t, tok, strlen(tok), t0 + 20000, &who));
    ASSERT(who == &a);
    ASSERT_EQ_INT(SBX_OAUTH_TOKEN_VALID,
                  sbx_oauth_tokens_check(t, tok2, strlen(tok2), t0 + 20000, NULL));
    /* A prefix, a longer string, an unknown token. */
    ASSERT_EQ_INT(SBX_OAUTH_TOKEN_UNKNOWN, sbx_oauth_tokens_check(t, tok, 20, t0, &who));
    ASSERT_NULL(who);
    ASSERT_EQ_INT(SBX_OAUTH_TOKEN_UNKNOWN, sbx_oauth_tokens_check(t, "ya29.nope", 9, t0, NULL));
    ASSERT_STR_EQ("expired", sbx_oauth_token_state_name(SBX_OAUTH_TOKEN_EXPIRED));
    ASSERT_EQ_INT(2, sbx_oauth_tokens_issued(t));
    sbx_oauth_tokens_free(t);
}

TEST(token_table_grows_and_prunes)
{
    struct sbx_oauth_account a = { .client_email = "e", .kid = "k", .project = "p" };
    struct sbx_oauth_tokens *t = sbx_oauth_tokens_new();
    int64_t t0 = 1800000000000LL;
    static char toks[3000][SBX_OAUTH_TOKEN_MAX];
    for (int i = 0; i < 3000; i++)
        sbx_oauth_tokens_issue(t, &a, t0, 1000, toks[i]);
    ASSERT_EQ_INT(3000, sbx_oauth_tokens_size(t));
    for (int i = 0; i < 3000; i += 7)
        ASSERT_EQ_INT(SBX_OAUTH_TOKEN_VALID,
                      sbx_oauth_tokens_check(t, toks[i], strlen(toks[i]), t0, NULL));
    /* More than an hour after they expired, the next issue forgets them. */
    char fresh[SBX_OAUTH_TOKEN_MAX];
    int64_t later = t0 + 1000 + 3600 * 1000 + 1;
    ASSERT_EQ_INT(SBX_OAUTH_TOKEN_EXPIRED,
                  sbx_oauth_tokens_check(t, toks[5], strlen(toks[5]), later, NULL));
    sbx_oauth_tokens_issue(t, &a, later, 1000, fresh);
    ASSERT_EQ_INT(1, sbx_oauth_tokens_size(t));
    ASSERT_EQ_INT(SBX_OAUTH_TOKEN_UNKNOWN,
                  sbx_oauth_tokens_check(t, toks[5], strlen(toks[5]), later, NULL));
    ASSERT_EQ_INT(SBX_OAUTH_TOKEN_VALID, sbx_oauth_tokens_check(t, fresh, strlen(fresh), later, NULL));
    ASSERT_EQ_INT(3001, sbx_oauth_tokens_issued(t));
    sbx_oauth_tokens_free(t);
}

TEST_MAIN(T(form_value_decoding), T(good_assertion_is_granted), T(json_body_is_accepted),
          T(grant_type_and_assertion_required), T(bad_signatures_and_keys), T(audience_set),
          T(iat_exp_window), T(scope_must_cover_fcm), T(error_and_token_bodies),
          T(account_from_json_and_pub_file), T(account_key_derived_from_private_key),
          T(issued_tokens_expire), T(token_table_grows_and_prunes))
