/*
 * Unit tests for the sandbox's APNs validation (sandbox/apns.c): every
 * reason string, the order of checks, size edges and provider tokens.
 * Keys are generated in memory; one test goes through certgen's PEM files.
 */
#include "tests/unit/test.h"

#include "common/certgen.h"
#include "common/jws.h"
#include "common/util.h"
#include "sandbox/apns.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <stdio.h>

#define TOKEN "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
#define NOW_MS 1800000000000LL
#define NOW_S (NOW_MS / 1000)

struct rq {
    struct sbx_request r;
    struct sbx_header h[24];
    char path[512];
    char jwtbuf[1024];
    uint8_t body[8192];
};

static void rq_add(struct rq *q, const char *name, const char *value)
{
    ASSERT(q->r.nheaders < 24);
    struct sbx_header *h = &q->h[q->r.nheaders++];
    h->name = (char *)name;
    h->namelen = strlen(name);
    h->value = (char *)value;
    h->valuelen = strlen(value);
}

static void rq_set(struct rq *q, const char *name, const char *value)
{
    for (size_t i = 0; i < q->r.nheaders; i++) {
        if (strcmp(q->h[i].name, name) == 0) {
            if (value == NULL) {
                memmove(&q->h[i], &q->h[i + 1], (q->r.nheaders - i - 1) * sizeof q->h[0]);
                q->r.nheaders--;
            } else {
                q->h[i].value = (char *)value;
                q->h[i].valuelen = strlen(value);
            }
            return;
        }
    }
    if (value)
        rq_add(q, name, value);
}

static void rq_body_len(struct rq *q, size_t n)
{
    ASSERT(n <= sizeof q->body);
    memset(q->body, ' ', n);
    if (n >= 2) {
        q->body[0] = '{';
        q->body[n - 1] = '}';
    }
    q->r.body = q->body;
    q->r.body_len = q->r.body_total = n;
}

static EVP_PKEY *new_key(void)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    ASSERT_NOT_NULL(k);
    return k;
}

static char *make_jwt(EVP_PKEY *key, const char *kid, const char *iss, long long iat)
{
    char hdr[128], claims[128];
    snprintf(hdr, sizeof hdr, "{\"alg\":\"ES256\",\"kid\":\"%s\"}", kid);
    snprintf(claims, sizeof claims, "{\"iss\":\"%s\",\"iat\":%lld}", iss, iat);
    char *t = jws_compact_sign("ES256", key, hdr, claims);
    ASSERT_NOT_NULL(t);
    return t;
}

/* Global fixture: two keys of team TEAM000001, one of TEAM000002. */
static struct sbx_apns_key keys[3];
static struct sbx_apns_config cfg;
static struct sbx_apns_auth auth;
static EVP_PKEY *signer;   /* signs rq_valid's token (key 0's private half) */
static char *default_jwt;  /* one token per fixture, so requests reuse it */

static void fixture(void)
{
    memset(keys, 0, sizeof keys);
    snprintf(keys[0].kid, sizeof keys[0].kid, "KEY0000001");
    snprintf(keys[0].team, sizeof keys[0].team, "TEAM000001");
    keys[0].pub = new_key();
    snprintf(keys[1].kid, sizeof keys[1].kid, "KEY0000002");
    snprintf(keys[1].team, sizeof keys[1].team, "TEAM000001");
    keys[1].pub = new_key();
    snprintf(keys[2].kid, sizeof keys[2].kid, "KEY0000003");
    snprintf(keys[2].team, sizeof keys[2].team, "TEAM000002");
    keys[2].pub = new_key();
    memset(&cfg, 0, sizeof cfg);
    cfg.env = SBX_ENV_PRODUCTION;
    cfg.keys = keys;
    cfg.nkeys = 3;
    memset(&auth, 0, sizeof auth);
    signer = keys[0].pub;
    default_jwt = NULL;
}

static void set_auth(struct rq *q, const char *jwt)
{
    snprintf(q->jwtbuf, sizeof q->jwtbuf, "bearer %s", jwt);
    rq_set(q, "authorization", q->jwtbuf);
}

/* A valid alert push signed with key 0 at NOW. */
static void rq_valid(struct rq *q)
{
    memset(q, 0, sizeof *q);
    snprintf(q->path, sizeof q->path, "/3/device/%s", TOKEN);
    q->r.headers = q->h;
    q->r.method = "POST";
    q->r.path = q->path;
    q->r.scheme = "https";
    rq_add(q, "apns-topic", "com.example.App");
    rq_add(q, "apns-push-type", "alert");
    rq_add(q, "apns-priority", "10");
    rq_add(q, "apns-expiration", "0");
    if (default_jwt == NULL)
        default_jwt = make_jwt(signer, "KEY0000001", "TEAM000001", NOW_S - 10);
    set_auth(q, default_jwt);
    const char *b = "{\"aps\":{\"alert\":\"hi\"}}";
    memcpy(q->body, b, strlen(b));
    q->r.body = q->body;
    q->r.body_len = q->r.body_total = strlen(b);
}

static const char *run(struct rq *q, struct sbx_apns_result *res)
{
    sbx_apns_validate(&cfg, &auth, &q->r, NOW_MS, res);
    return res->reason ? res->reason : "OK";
}

static const char *run_at(struct rq *q, int64_t now_ms)
{
    static struct sbx_apns_result res;
    sbx_apns_validate(&cfg, &auth, &q->r, now_ms, &res);
    return res.reason ? res.reason : "OK";
}

#define EXPECT(q, reason_, status_)                                            \
    do {                                                                       \
        struct sbx_apns_result r_;                                             \
        ASSERT_STR_EQ(reason_, run(q, &r_));                                   \
        ASSERT_EQ_INT(status_, r_.status);                                     \
    } while (0)

TEST(success_generates_uppercase_id)
{
    fixture();
    struct rq q;
    rq_valid(&q);
    struct sbx_apns_result res;
    ASSERT_EQ_INT(200, sbx_apns_validate(&cfg, &auth, &q.r, NOW_MS, &res));
    ASSERT_NULL(res.reason);
    ASSERT(res.auth_valid);
    ASSERT(sbx_apns_is_uuid(res.apns_id, strlen(res.apns_id)));
    for (const char *p = res.apns_id; *p; p++)
        ASSERT(!islower((unsigned char)*p));
    ASSERT_EQ_INT(64, res.token_len);
    ASSERT(strncmp(res.token, TOKEN, 64) == 0);
    ASSERT_STR_EQ("alert", res.push_type);
    ASSERT_STR_EQ("KEY0000001", res.kid);
    ASSERT_STR_EQ("TEAM000001", res.iss);
    ASSERT_NOT_NULL(auth.jwt);
    ASSERT_EQ_INT(1, auth.updates);
    ASSERT_STR_EQ("TEAM000001", auth.team);
    sbx_apns_auth_clear(&auth);
    ASSERT_NULL(auth.jwt);
}

TEST(apns_id_echoed_and_bad_message_id)
{
    fixture();
    struct rq q;
    rq_valid(&q);
    rq_add(&q, "apns-id", "eabeae54-14a8-11e5-b60b-1697f925ec7b");
    struct sbx_apns_result res;
    ASSERT_STR_EQ("OK", run(&q, &res));
    ASSERT_STR_EQ("eabeae54-14a8-11e5-b60b-1697f925ec7b", res.apns_id);
    rq_set(&q, "apns-id", "EABEAE54-14A8-11E5-B60B-1697F925EC7B");
    ASSERT_STR_EQ("OK", run(&q, &res));
    ASSERT_STR_EQ("EABEAE54-14A8-11E5-B60B-1697F925EC7B", res.apns_id);
    const char *bad[] = { "eabeae5414a811e5b60b1697f925ec7b", "eabeae54-14a8-11e5-b60b-1697f925ec7",
                          "eabeae54-14a8-11e5-b60b-1697f925ec7bb", "gabeae54-14a8-11e5-b60b-1697f925ec7b",
                          "eabeae54_14a8-11e5-b60b-1697f925ec7b", "" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rq_set(&q, "apns-id", bad[i]);
        ASSERT_STR_EQ("BadMessageId", run(&q, &res));
        ASSERT_EQ_INT(400, res.status);
        /* A fresh uppercase id is still given for the reply. */
        ASSERT(sbx_apns_is_uuid(res.apns_id, strlen(res.apns_id)));
    }
}

TEST(method_not_allowed)
{
    fixture();
    struct rq q;
    rq_valid(&q);
    q.r.method = "GET";
    EXPECT(&q, "MethodNotAllowed", 405);
    q.r.method = "PUT";
    EXPECT(&q, "MethodNotAllowed", 405);
    /* BadMessageId comes first. */
    rq_add(&q, "apns-id", "nope");
    EXPECT(&q, "BadMessageId", 400);
}

TEST(missing_topic)
{
    fixture();
    struct rq q;
    rq_valid(&q);
    rq_set(&q, "apns-topic", NULL);
    EXPECT(&q, "MissingTopic", 400);
    rq_set(&q, "apns-topic", "");
    EXPECT(&q, "MissingTopic", 400);
    q.r.method = "GET"; /* 405 comes before */
    EXPECT(&q, "MethodNotAllowed", 405);
}

TEST(collapse_id_edges)
{
    fixture();
    struct rq q;
    rq_valid(&q);
    char c64[65], c65[66];
    memset(c64, 'c', 64);
    c64[64] = 0;
    memset(c65, 'c', 65);
    c65[65] = 0;
    rq_set(&q, "apns-collapse-id", c64);
    EXPECT(&q, "OK", 200);
    rq_set(&q, "apns-collapse-id", c65);
    EXPECT(&q, "BadCollapseId", 400);
    rq_set(&q, "apns-topic", NULL); /* MissingTopic comes first */
    EXPECT(&q, "MissingTopic", 400);
}

TEST(priority_values)
{
    fixture();
    struct rq q;
    rq_valid(&q);
    const char *ok[] = { "10", "5", "1" };
    for (size_t i = 0; i < 3; i++) {
        rq_set(&q, "apns-priority", ok[i]);
        EXPECT(&q, "OK", 200);
    }
    const char *bad[] = { "7", "0", "100", "", "high", " 10", "05" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rq_set(&q, "apns-priority", bad[i]);
        EXPECT(&q, "BadPriority", 400);
    }
    rq_set(&q, "apns-priority", NULL); /* absent = 10 */
    EXPECT(&q, "OK", 200);
    /* BadCollapseId comes before BadPriority. */
    char c65[66];
    memset(c65, 'c', 65);
    c65[65] = 0;
    rq_set(&q, "apns-priority", "7");
    rq_set(&q, "apns-collapse-id", c65);
    EXPECT(&q, "BadCollapseId", 400);
}

TEST(push_types_and_topic_suffixes)
{
    fixture();
    struct rq q;
    rq_valid(&q);
    rq_set(&q, "apns-push-type", "nonsense");
    EXPECT(&q, "InvalidPushType", 400);
    rq_set(&q, "apns-push-type", "voip");
    EXPECT(&q, "InvalidPushType", 400); /* needs the .voip topic */
    rq_set(&q, "apns-topic", "com.example.App.voip");
    struct sbx_apns_result res;
    ASSERT_STR_EQ("OK", run(&q, &res));
    ASSERT_STR_EQ("voip", res.push_type);
    ASSERT_EQ_INT(5120, res.max_payload);
    rq_set(&q, "apns-push-type", "alert"); /* alert to a voip topic */
    EXPECT(&q, "InvalidPushType", 400);
    rq_set(&q, "apns-push-type", NULL); /* inferred from the suffix */
    ASSERT_STR_EQ("OK", run(&q, &res));
    ASSERT_STR_EQ("voip", res.push_type);
    static const char *const pairs[][2] = {
        { "location", "com.example.App.location-query" },
        { "complication", "com.example.App.complication" },
        { "fileprovider", "com.example.App.pushkit.fileprovider" },
        { "liveactivity", "com.example.App.push-type.liveactivity" },
        { "pushtotalk", "com.example.App.voip-ptt" },
        { "widgets", "com.example.App.push-type.widgets" },
        { "controls", "com.example.App.push-type.controls" },
        { "mdm", "com.apple.mgmt.External.1234" },
        { "alert", "com.example.App" },
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        rq_set(&q, "apns-push-type", pairs[i][0]);
        rq_set(&q, "apns-topic", pairs[i][1]);
        ASSERT_STR_EQ("OK", run(&q, &res));
        ASSERT_STR_EQ(pairs[i][0], res.push_type);
        if (i < 7) { /* the suffixed types reject the bare bundle id */
            rq_set(&q, "apns-topic", "com.example.App");
            EXPECT(&q, "InvalidPushType", 400);
        }
    }
    /* BadPriority comes before InvalidPushType. */
    rq_set(&q, "apns-push-type", "nonsense");
    rq_set(&q, "apns-priority", "3");
    EXPECT(&q, "BadPriority", 400);
}

TEST(path_and_device_token)
{
    fixture();
    struct rq q;
    rq_valid(&q);
    q.r.path = "/3/devices/" TOKEN;
    EXPECT(&q, "BadPath", 404);
    q.r.path = "/2/device/" TOKEN;
    EXPECT(&q, "BadPath", 404);
    q.r.path = "/";
    EXPECT(&q, "BadPath", 404);
    q.r.path = "/3/device/";
    EXPECT(&q, "MissingDeviceToken", 400);
    q.r.path = "/3/device/" "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
    EXPECT(&q, "BadDeviceToken", 400); /* 63 */
    q.r.path = "/3/device/" TOKEN "0";
    EXPECT(&q, "BadDeviceToken", 400); /* 65 */
    q.r.path = "/3/device/" "g1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    EXPECT(&q, "BadDeviceToken", 400);
    q.r.path = "/3/device/" "A1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718293A4B5C6D7E8F90";
    EXPECT(&q, "OK", 200);
    /* Configurable lengths. */
    cfg.token_lengths[0] = 64;
    cfg.token_lengths[1] = 100;
    cfg.ntoken_lengths = 2;
    char p100[200];
    snprintf(p100, sizeof p100, "/3/device/%s%.36s", TOKEN, TOKEN);
    q.r.path = p100;
    EXPECT(&q, "OK", 200);
    /* InvalidPushType comes before BadPath. */
    q.r.path = "/nope";
    rq_set(&q, "apns-push-type", "nonsense");
    EXPECT(&q, "InvalidPushType", 400);
}

TEST(cross_environment_token)
{
    fixture();
    char err[128];
    const char *text = TOKEN " sandbox\n"
                       "b1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90 production\n";
    struct sbx_tokens *env = sbx_tokens_parse(text, strlen(text), SBX_TOKENS_ENV, NULL, 0,
                                              err, sizeof err);
    ASSERT_NOT_NULL(env);
    cfg.env_tokens = env;
    struct rq q;
    rq_valid(&q);
    cfg.env = SBX_ENV_PRODUCTION;
    EXPECT(&q, "BadDeviceToken", 400);
    cfg.env = SBX_ENV_SANDBOX;
    EXPECT(&q, "OK", 200);
    q.r.path = "/3/device/b1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    EXPECT(&q, "BadDeviceToken", 400);
    cfg.env = SBX_ENV_PRODUCTION;
    EXPECT(&q, "OK", 200);
    /* Tokens not listed are valid on both. */
    q.r.path = "/3/device/c1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    EXPECT(&q, "OK", 200);
    cfg.env = SBX_ENV_SANDBOX;
    EXPECT(&q, "OK", 200);
    sbx_tokens_free(env);
}

TEST(missing_provider_token)
{
    fixture();
    struct rq q;
    rq_valid(&q);
    rq_set(&q, "authorization", NULL);
    EXPECT(&q, "MissingProviderToken", 403);
    rq_set(&q, "authorization", "");
    EXPECT(&q, "MissingProviderToken", 403);
    rq_set(&q, "authorization", "bearer ");
    EXPECT(&q, "MissingProviderToken", 403);
    rq_set(&q, "authorization", "bearer");
    EXPECT(&q, "MissingProviderToken", 403);
    rq_set(&q, "authorization", "Basic dXNlcjpwYXNz");
    EXPECT(&q, "InvalidProviderToken", 403);
    /* The path is checked before auth. */
    q.r.path = "/3/device/xyz";
    EXPECT(&q, "BadDeviceToken", 400);
}

TEST(invalid_provider_tokens)
{
    fixture();
    struct rq q;
    rq_valid(&q);
    char *t;
    rq_set(&q, "authorization", "bearer not.a.jwt");
    EXPECT(&q, "InvalidProviderToken", 403);
    rq_set(&q, "authorization", "bearer abc");
    EXPECT(&q, "InvalidProviderToken", 403);
    /* Unknown kid. */
    t = make_jwt(keys[0].pub, "UNKNOWN001", "TEAM000001", NOW_S);
    set_auth(&q, t);
    free(t);
    EXPECT(&q, "InvalidProviderToken", 403);
    /* iss not the key's team. */
    t = make_jwt(keys[0].pub, "KEY0000001", "TEAM000002", NOW_S);
    set_auth(&q, t);
    free(t);
    EXPECT(&q, "InvalidProviderToken", 403);
    /* Signed by another key than the kid's. */
    t = make_jwt(keys[1].pub, "KEY0000001", "TEAM000001", NOW_S);
    set_auth(&q, t);
    free(t);
    EXPECT(&q, "InvalidProviderToken", 403);
    /* iat as a string, iat far in the future (milliseconds by mistake). */
    t = jws_compact_sign("ES256", keys[0].pub, "{\"alg\":\"ES256\",\"kid\":\"KEY0000001\"}",
                         "{\"iss\":\"TEAM000001\",\"iat\":\"1800000000\"}");
    set_auth(&q, t);
    free(t);
    EXPECT(&q, "InvalidProviderToken", 403);
    t = make_jwt(keys[0].pub, "KEY0000001", "TEAM000001", NOW_MS);
    set_auth(&q, t);
    free(t);
    EXPECT(&q, "InvalidProviderToken", 403);
    /* Fractional and absurd iat values. */
    t = jws_compact_sign("ES256", keys[0].pub, "{\"alg\":\"ES256\",\"kid\":\"KEY0000001\"}",
                         "{\"iss\":\"TEAM000001\",\"iat\":1799999999.5}");
    set_auth(&q, t);
    free(t);
    EXPECT(&q, "InvalidProviderToken", 403);
    t = jws_compact_sign("ES256", keys[0].pub, "{\"alg\":\"ES256\",\"kid\":\"KEY0000001\"}",
                         "{\"iss\":\"TEAM000001\",\"iat\":1e30}");
    set_auth(&q, t);
    free(t);
    EXPECT(&q, "InvalidProviderToken", 403);
    /* Wrong alg in the header. */
    t = jws_compact_sign("ES256", keys[0].pub, "{\"alg\":\"ES384\",\"kid\":\"KEY0000001\"}",
                         "{\"iss\":\"TEAM000001\",\"iat\":1800000000}");
    set_auth(&q, t);
    free(t);
    EXPECT(&q, "InvalidProviderToken", 403);
    /* Tampered claims keep the old signature. */
    t = make_jwt(keys[0].pub, "KEY0000001", "TEAM000001", NOW_S);
    char *dot = strchr(t, '.');
    dot[3] ^= 1;
    set_auth(&q, t);
    free(t);
    EXPECT(&q, "InvalidProviderToken", 403);
    ASSERT_NULL(auth.jwt); /* nothing accepted */
    /* Nothing of the above bound the connection: a good token works. */
    t = make_jwt(keys[0].pub, "KEY0000001", "TEAM000001", NOW_S);
    set_auth(&q, t);
    free(t);
    EXPECT(&q, "OK", 200);
}

TEST(topic_not_allowed_for_key)
{
    fixture();
    char *topics[] = { "com.example.App" };
    keys[0].topics = topics;
    keys[0].ntopics = 1;
    struct rq q;
    rq_valid(&q);
    EXPECT(&q, "OK", 200);
    rq_set(&q, "apns-topic", "com.example.App.voip"); /* suffix of an allowed id */
    rq_set(&q, "apns-push-type", "voip");
    EXPECT(&q, "OK", 200);
    rq_set(&q, "apns-topic", "com.other.App"); /* same (cached) token */
    rq_set(&q, "apns-push-type", "alert");
    EXPECT(&q, "InvalidProviderToken", 403);
    sbx_apns_auth_clear(&auth); /* and on a fresh connection */
    EXPECT(&q, "InvalidProviderToken", 403);
}

TEST(expired_provider_token)
{
    fixture();
    struct rq q;
    rq_valid(&q);
    char *t = make_jwt(keys[0].pub, "KEY0000001", "TEAM000001", NOW_S - 3601);
    set_auth(&q, t);
    free(t);
    EXPECT(&q, "ExpiredProviderToken", 403);
    t = make_jwt(keys[0].pub, "KEY0000001", "TEAM000001", NOW_S - 3599);
    set_auth(&q, t);
    free(t);
    EXPECT(&q, "OK", 200);
    /* The same (cached) token expires as time passes. */
    ASSERT_STR_EQ("OK", run_at(&q, NOW_MS + 1000));
    ASSERT_STR_EQ("ExpiredProviderToken", run_at(&q, NOW_MS + 2000));
}

TEST(too_many_provider_token_updates)
{
    fixture();
    struct rq q;
    rq_valid(&q);
    char *a = make_jwt(keys[0].pub, "KEY0000001", "TEAM000001", NOW_S - 10);
    char *b = make_jwt(keys[0].pub, "KEY0000001", "TEAM000001", NOW_S + 50);
    set_auth(&q, a);
    ASSERT_STR_EQ("OK", run_at(&q, NOW_MS));
    set_auth(&q, b);
    struct sbx_apns_result res;
    sbx_apns_validate(&cfg, &auth, &q.r, NOW_MS + 60000, &res);
    ASSERT_STR_EQ("TooManyProviderTokenUpdates", res.reason);
    ASSERT_EQ_INT(429, res.status);
    ASSERT(!res.auth_valid);
    set_auth(&q, a); /* the old one still works */
    ASSERT_STR_EQ("OK", run_at(&q, NOW_MS + 120000));
    set_auth(&q, b); /* 20 minutes after the first: allowed */
    ASSERT_STR_EQ("TooManyProviderTokenUpdates", run_at(&q, NOW_MS + 1199000));
    ASSERT_STR_EQ("OK", run_at(&q, NOW_MS + 1200000));
    ASSERT_EQ_INT(2, auth.updates);
    set_auth(&q, a); /* going back is another update */
    ASSERT_STR_EQ("TooManyProviderTokenUpdates", run_at(&q, NOW_MS + 1300000));
    /* Configurable gap. */
    cfg.token_update_min_s = 60;
    ASSERT_STR_EQ("OK", run_at(&q, NOW_MS + 1300000));
    free(a);
    free(b);
}

TEST(connection_binds_team_and_key)
{
    fixture();
    struct rq q;
    rq_valid(&q);
    EXPECT(&q, "OK", 200);
    /* Same team, another key: UnrelatedKeyIdInToken, even after 20 min. */
    char *t = make_jwt(keys[1].pub, "KEY0000002", "TEAM000001", NOW_S + 1300);
    set_auth(&q, t);
    free(t);
    ASSERT_STR_EQ("UnrelatedKeyIdInToken", run_at(&q, NOW_MS + 1300000));
    /* Another team: InvalidProviderToken. */
    t = make_jwt(keys[2].pub, "KEY0000003", "TEAM000002", NOW_S + 1300);
    set_auth(&q, t);
    free(t);
    ASSERT_STR_EQ("InvalidProviderToken", run_at(&q, NOW_MS + 1300000));
    /* A new connection takes either. */
    sbx_apns_auth_clear(&auth);
    ASSERT_STR_EQ("OK", run_at(&q, NOW_MS + 1300000));
    ASSERT_STR_EQ("TEAM000002", auth.team);
}

/* A JWT whose signature is the DER form (what Java's SHA256withECDSA gives). */
static char *make_der_jwt(EVP_PKEY *key)
{
    char h[256], c[256];
    const char *hdr = "{\"alg\":\"ES256\",\"kid\":\"KEY0000001\"}";
    char claims[96];
    snprintf(claims, sizeof claims, "{\"iss\":\"TEAM000001\",\"iat\":%lld}", (long long)NOW_S);
    b64url_encode((const unsigned char *)hdr, strlen(hdr), h);
    b64url_encode((const unsigned char *)claims, strlen(claims), c);
    char input[600];
    snprintf(input, sizeof input, "%s.%s", h, c);
    unsigned char der[80];
    size_t derlen = sizeof der;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    ASSERT(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1);
    ASSERT(EVP_DigestSign(md, der, &derlen, (unsigned char *)input, strlen(input)) == 1);
    EVP_MD_CTX_free(md);
    ASSERT(derlen != 64 && derlen > 60);
    char s[200];
    b64url_encode(der, derlen, s);
    char *out = xmalloc(strlen(input) + strlen(s) + 2);
    sprintf(out, "%s.%s", input, s);
    return out;
}

TEST(der_signature_only_behind_flag)
{
    fixture();
    struct rq q;
    rq_valid(&q);
    char *t = make_der_jwt(keys[0].pub);
    set_auth(&q, t);
    EXPECT(&q, "InvalidProviderToken", 403);
    cfg.accept_der = true;
    EXPECT(&q, "OK", 200);
    /* A DER signature by the wrong key still fails. */
    sbx_apns_auth_clear(&auth);
    char *t2 = make_der_jwt(keys[1].pub);
    set_auth(&q, t2);
    EXPECT(&q, "InvalidProviderToken", 403);
    free(t);
    free(t2);
}

TEST(expiration_header)
{
    fixture();
    struct rq q;
    rq_valid(&q);
    const char *ok[] = { "0", "1800000000", "1" };
    for (size_t i = 0; i < 3; i++) {
        rq_set(&q, "apns-expiration", ok[i]);
        EXPECT(&q, "OK", 200);
    }
    const char *bad[] = { "", "abc", "-1", "1.5", "2026-11-28T00:00:00Z", "12345678901234567890" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rq_set(&q, "apns-expiration", bad[i]);
        EXPECT(&q, "BadExpirationDate", 400);
    }
    /* Auth comes before BadExpirationDate. */
    rq_set(&q, "authorization", NULL);
    EXPECT(&q, "MissingProviderToken", 403);
}

TEST(duplicate_headers)
{
    fixture();
    struct rq q;
    rq_valid(&q);
    rq_add(&q, "apns-topic", "com.example.App");
    EXPECT(&q, "DuplicateHeaders", 400);
    rq_valid(&q);
    rq_add(&q, "apns-priority", "5");
    EXPECT(&q, "DuplicateHeaders", 400);
    rq_valid(&q);
    rq_add(&q, "x-custom", "1");
    rq_add(&q, "x-custom", "2");
    EXPECT(&q, "OK", 200);
    /* BadExpirationDate comes before DuplicateHeaders. */
    rq_valid(&q);
    rq_add(&q, "apns-collapse-id", "a");
    rq_add(&q, "apns-collapse-id", "b");
    rq_set(&q, "apns-expiration", "x");
    EXPECT(&q, "BadExpirationDate", 400);
}

TEST(payload_sizes)
{
    fixture();
    struct rq q;
    rq_valid(&q);
    rq_body_len(&q, 0);
    EXPECT(&q, "PayloadEmpty", 400);
    rq_body_len(&q, 1);
    EXPECT(&q, "OK", 200); /* any non-empty body */
    rq_body_len(&q, 4096);
    EXPECT(&q, "OK", 200);
    rq_body_len(&q, 4097);
    EXPECT(&q, "PayloadTooLarge", 413);
    rq_set(&q, "apns-push-type", "voip");
    rq_set(&q, "apns-topic", "com.example.App.voip");
    EXPECT(&q, "OK", 200);
    rq_body_len(&q, 5120);
    EXPECT(&q, "OK", 200);
    rq_body_len(&q, 5121);
    EXPECT(&q, "PayloadTooLarge", 413);
    /* Capped storage: body_total decides. */
    q.r.body_len = 100;
    q.r.body_total = 1 << 20;
    EXPECT(&q, "PayloadTooLarge", 413);
    /* DuplicateHeaders comes before size checks. */
    rq_body_len(&q, 0);
    rq_add(&q, "apns-id", "eabeae54-14a8-11e5-b60b-1697f925ec7b");
    rq_add(&q, "apns-id", "eabeae54-14a8-11e5-b60b-1697f925ec7b");
    EXPECT(&q, "DuplicateHeaders", 400);
}

TEST(background_priority)
{
    fixture();
    struct rq q;
    rq_valid(&q);
    rq_set(&q, "apns-push-type", "background");
    rq_set(&q, "apns-priority", "5");
    EXPECT(&q, "OK", 200);
    rq_set(&q, "apns-priority", "1");
    EXPECT(&q, "OK", 200);
    rq_set(&q, "apns-priority", "10");
    EXPECT(&q, "BadPriority", 400);
    rq_set(&q, "apns-priority", NULL); /* absent means 10 */
    EXPECT(&q, "BadPriority", 400);
    rq_body_len(&q, 4097); /* size first */
    EXPECT(&q, "PayloadTooLarge", 413);
}

TEST(unregistered_and_bad_token_sets)
{
    fixture();
    char err[128];
    const char *dead = TOKEN " 1700000000123\n"
                       "b1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90\n";
    cfg.unregistered = sbx_tokens_parse(dead, strlen(dead), SBX_TOKENS_TIMESTAMP, NULL,
                                        1750000000000LL, err, sizeof err);
    const char *bad = "c1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90\n";
    cfg.bad_tokens = sbx_tokens_parse(bad, strlen(bad), SBX_TOKENS_PLAIN, NULL, 0, err, sizeof err);
    ASSERT_NOT_NULL(cfg.unregistered);
    ASSERT_NOT_NULL(cfg.bad_tokens);
    struct rq q;
    rq_valid(&q);
    struct sbx_apns_result res;
    ASSERT_STR_EQ("Unregistered", run(&q, &res));
    ASSERT_EQ_INT(410, res.status);
    ASSERT_EQ_INT(1700000000123LL, res.timestamp_ms);
    char body[128];
    sbx_apns_error_body(res.reason, res.timestamp_ms, body, sizeof body);
    ASSERT_STR_EQ("{\"reason\":\"Unregistered\",\"timestamp\":1700000000123}", body);
    q.r.path = "/3/device/B1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718293A4B5C6D7E8F90";
    ASSERT_STR_EQ("Unregistered", run(&q, &res));
    ASSERT_EQ_INT(1750000000000LL, res.timestamp_ms); /* load time default */
    q.r.path = "/3/device/c1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    EXPECT(&q, "BadDeviceToken", 400);
    /* PayloadEmpty comes before the dead-token sets. */
    q.r.path = "/3/device/" TOKEN;
    rq_body_len(&q, 0);
    EXPECT(&q, "PayloadEmpty", 400);
    sbx_tokens_free((struct sbx_tokens *)cfg.unregistered);
    sbx_tokens_free((struct sbx_tokens *)cfg.bad_tokens);
}

TEST(bench_mode_skips_auth)
{
    fixture();
    cfg.no_auth = true;
    struct rq q;
    rq_valid(&q);
    rq_set(&q, "authorization", NULL);
    struct sbx_apns_result res;
    ASSERT_STR_EQ("OK", run(&q, &res));
    ASSERT(res.auth_valid);
    rq_body_len(&q, 0); /* other checks still apply */
    EXPECT(&q, "PayloadEmpty", 400);
}

TEST(reason_status_table)
{
    ASSERT_EQ_INT(404, sbx_apns_reason_status("BadPath"));
    ASSERT_EQ_INT(405, sbx_apns_reason_status("MethodNotAllowed"));
    ASSERT_EQ_INT(403, sbx_apns_reason_status("ExpiredProviderToken"));
    ASSERT_EQ_INT(429, sbx_apns_reason_status("TooManyProviderTokenUpdates"));
    ASSERT_EQ_INT(413, sbx_apns_reason_status("PayloadTooLarge"));
    ASSERT_EQ_INT(410, sbx_apns_reason_status("Unregistered"));
    ASSERT_EQ_INT(503, sbx_apns_reason_status("Shutdown"));
    ASSERT_EQ_INT(400, sbx_apns_reason_status("BadTopic"));
    ASSERT_STR_EQ("TooManyRequests", sbx_apns_default_reason(429));
    ASSERT_STR_EQ("ServiceUnavailable", sbx_apns_default_reason(503));
    ASSERT_STR_EQ("InternalServerError", sbx_apns_default_reason(500));
    char body[64];
    ASSERT_EQ_INT(25, sbx_apns_error_body("MissingTopic", 0, body, sizeof body));
    ASSERT_STR_EQ("{\"reason\":\"MissingTopic\"}", body);
}

TEST(certgen_key_files_roundtrip)
{
    char dir[] = "/tmp/sbx-apns-XXXXXX";
    ASSERT_NOT_NULL(mkdtemp(dir));
    char p8[128], pub[128], err[256];
    snprintf(p8, sizeof p8, "%s/KEY0000001.p8", dir);
    snprintf(pub, sizeof pub, "%s/KEY0000001.pub.pem", dir);
    ASSERT_EQ_INT(0, certgen_ec_key(p8, pub, err, sizeof err));
    EVP_PKEY *priv = jws_load_private_key_file(p8, err, sizeof err);
    EVP_PKEY *pubk = jws_load_public_key_file(pub, err, sizeof err);
    ASSERT_NOT_NULL(priv);
    ASSERT_NOT_NULL(pubk);
    fixture();
    EVP_PKEY_free(keys[0].pub);
    keys[0].pub = pubk;
    signer = priv;
    struct rq q;
    rq_valid(&q);
    char *t = make_jwt(priv, "KEY0000001", "TEAM000001", NOW_S);
    set_auth(&q, t);
    EXPECT(&q, "OK", 200);
    unlink(p8);
    unlink(pub);
    rmdir(dir);
    free(t);
    free(default_jwt);
    EVP_PKEY_free(priv);
    EVP_PKEY_free(pubk);
    EVP_PKEY_free(keys[1].pub);
    EVP_PKEY_free(keys[2].pub);
}

TEST_MAIN(T(success_generates_uppercase_id), T(apns_id_echoed_and_bad_message_id),
          T(method_not_allowed), T(missing_topic), T(collapse_id_edges), T(priority_values),
          T(push_types_and_topic_suffixes), T(path_and_device_token), T(cross_environment_token),
          T(missing_provider_token), T(invalid_provider_tokens), T(topic_not_allowed_for_key),
          T(expired_provider_token), T(too_many_provider_token_updates),
          T(connection_binds_team_and_key), T(der_signature_only_behind_flag),
          T(expiration_header), T(duplicate_headers), T(payload_sizes), T(background_priority),
          T(unregistered_and_bad_token_sets), T(bench_mode_skips_auth), T(reason_status_table),
          T(certgen_key_files_roundtrip))
