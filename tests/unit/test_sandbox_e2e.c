/*
 * End-to-end tests of varsel-sandbox's APNs fake: the server (sandbox/
 * server.c + apns_service.c) runs in-process on a libuv loop and the
 * project's own HTTP/2 client (http2/client.h) talks to it over TLS on
 * 127.0.0.1. Checks replies, the stream-limit dance, the record file, token
 * file reloads, faults, the per-device-token limit (429 TooManyRequests),
 * and that a client exceeding an acknowledged stream limit gets GOAWAY
 * PROTOCOL_ERROR (raw frames over http2/tls.h).
 */
#include "tests/unit/test.h"
#include "tests/unit/sandbox_fixture.h"

#include "common/certgen.h"
#include "common/jws.h"
#include "common/util.h"
#include "http2/client.h"
#include "http2/tls.h"
#include "sandbox/apns_service.h"
#include "sandbox/ratelimit.h"
#include "sandbox/server.h"

#include <cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <sys/stat.h>

#define TOKEN_A "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
#define TOKEN_B "b1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
#define MAXREQ 400

struct result {
    int status, error, attempts;
    char apns_id[64], unique_id[64], body[256], retry_after[16];
    uint64_t rtt_ms;
};

struct fx {
    uv_loop_t loop;
    char dir[64], record_path[128], dead_path[128];
    SSL_CTX *sctx, *cctx;
    struct sbx_server *srv;
    struct sbx_apns_service prod, sbx;
    struct sbx_faults faults;
    struct sbx_record *rec;
    struct sbx_tokens_file dead;
    struct sbx_apns_key key;
    EVP_PKEY *priv;
    char *jwt;
    int port_prod, port_sbx;
    struct sbx_device_limits limits; /* APNs per-device limit, when limits_on */
    bool limits_on;
    /* the current batch */
    struct h2_pool *pool;
    struct result res[MAXREQ];
    int submitted, done;
    struct h2_pool_stats pool_stats;
};

static struct fx F;

static void fx_setup(void (*tune)(struct fx *))
{
    memset(&F, 0, sizeof F);
    ASSERT_EQ_INT(0, uv_loop_init(&F.loop));
    fixture_tmpdir("sbx-e2e", F.dir, sizeof F.dir);
    char err[256], p8[128], pub[128];
    ASSERT_EQ_INT(0, certgen_ca_and_server(F.dir, err, sizeof err));
    snprintf(p8, sizeof p8, "%s/KEY0000001.p8", F.dir);
    snprintf(pub, sizeof pub, "%s/KEY0000001.pub.pem", F.dir);
    ASSERT_EQ_INT(0, certgen_ec_key(p8, pub, err, sizeof err));
    F.priv = jws_load_private_key_file(p8, err, sizeof err);
    ASSERT_NOT_NULL(F.priv);
    snprintf(F.key.kid, sizeof F.key.kid, "KEY0000001");
    snprintf(F.key.team, sizeof F.key.team, "TEAM000001");
    F.key.pub = jws_load_public_key_file(pub, err, sizeof err);
    ASSERT_NOT_NULL(F.key.pub);
    char claims[96];
    snprintf(claims, sizeof claims, "{\"iss\":\"TEAM000001\",\"iat\":%lld}", (long long)now_s());
    F.jwt = jws_compact_sign("ES256", F.priv, "{\"alg\":\"ES256\",\"kid\":\"KEY0000001\"}", claims);
    ASSERT_NOT_NULL(F.jwt);

    static const char *const alpn[] = { "h2", NULL };
    F.sctx = fixture_server_ctx(F.dir, alpn);
    F.cctx = fixture_client_ctx(F.dir, alpn);

    snprintf(F.record_path, sizeof F.record_path, "%s/record.jsonl", F.dir);
    F.rec = sbx_record_open(F.record_path, err, sizeof err);
    ASSERT_NOT_NULL(F.rec);
    snprintf(F.dead_path, sizeof F.dead_path, "%s/dead.txt", F.dir);
    ASSERT_EQ_INT(0, sbx_tokens_file_open(&F.dead, F.dead_path, SBX_TOKENS_TIMESTAMP, err,
                                          sizeof err));
    sbx_faults_init(&F.faults, 99);
    if (tune)
        tune(&F);

    struct sbx_apns_service_options opt = {
        .faults = &F.faults, .record = F.rec, .unregistered = &F.dead,
    };
    opt.cfg.keys = &F.key;
    opt.cfg.nkeys = 1;
    if (F.limits_on) {
        memcpy(opt.device_limits, F.limits.apns, sizeof opt.device_limits);
        opt.ndevice_limits = F.limits.napns;
    }
    sbx_apns_service_init(&F.prod, &opt, SBX_ENV_PRODUCTION);
    sbx_apns_service_init(&F.sbx, &opt, SBX_ENV_SANDBOX);
    F.srv = sbx_server_new(&F.loop, F.sctx);
    F.port_prod = sbx_server_listen(F.srv, "apns", "127.0.0.1:0", &F.prod.svc, err, sizeof err);
    F.port_sbx = sbx_server_listen(F.srv, "apns_sandbox", "127.0.0.1:0", &F.sbx.svc, err,
                                   sizeof err);
    ASSERT(F.port_prod > 0);
    ASSERT(F.port_sbx > 0);
}

static void on_pool_closed(void *arg)
{
    uv_stop(&F.loop);
}

static void on_done(const struct h2_response *r, void *user)
{
    struct result *res = &F.res[(intptr_t)user];
    res->status = r->status;
    res->error = r->error;
    res->attempts = r->attempts;
    res->rtt_ms = r->rtt_ms;
    copy_header(r, "apns-id", res->apns_id, sizeof res->apns_id);
    copy_header(r, "apns-unique-id", res->unique_id, sizeof res->unique_id);
    copy_header(r, "retry-after", res->retry_after, sizeof res->retry_after);
    snprintf(res->body, sizeof res->body, "%.*s", (int)r->body_len, (const char *)r->body);
    if (++F.done == F.submitted) {
        h2_pool_get_stats(F.pool, &F.pool_stats);
        h2_pool_close(F.pool, on_pool_closed, NULL);
    }
}

static uint32_t request_timeout_ms = 10000;

static void pool_open(int port)
{
    char url[64];
    snprintf(url, sizeof url, "https://127.0.0.1:%d", port);
    struct h2_pool_config cfg = {
        .name = "test", .url = url, .ssl_ctx = F.cctx, .max_connections = 1,
        .initial_max_streams = 1, .request_timeout_ms = request_timeout_ms, .connect_timeout_ms = 5000,
        .max_attempts = 5,
    };
    F.pool = h2_pool_new(&F.loop, &cfg);
    ASSERT_NOT_NULL(F.pool);
    F.submitted = F.done = 0;
    memset(F.res, 0, sizeof F.res);
}

/* Queue one push; |jwt| NULL = no authorization header. */
static void push(const char *token, const char *topic, const char *jwt, const char *body,
                 const char *extra_name, const char *extra_value)
{
    char path[160], auth[1024];
    snprintf(path, sizeof path, "/3/device/%s", token);
    struct h2_header h[4];
    size_t n = 0;
    h[n++] = (struct h2_header){ "apns-topic", topic, 0 };
    if (jwt) {
        snprintf(auth, sizeof auth, "bearer %s", jwt);
        h[n++] = (struct h2_header){ "authorization", auth, H2_HDR_NO_INDEX };
    }
    if (extra_name)
        h[n++] = (struct h2_header){ extra_name, extra_value, 0 };
    ASSERT(F.submitted < MAXREQ);
    ASSERT_EQ_INT(0, h2_pool_submit(F.pool, "POST", path, h, n, (const uint8_t *)body,
                                    strlen(body), on_done, (void *)(intptr_t)F.submitted));
    F.submitted++;
}

static void run_batch(void)
{
    uv_run(&F.loop, UV_RUN_DEFAULT);
    ASSERT_EQ_INT(F.submitted, F.done);
}

static void on_server_closed(void *arg)
{
    cJSON *line = cJSON_CreateObject();
    cJSON *sum = sbx_server_summary(F.srv);
    if (F.prod.device_rate)
        cJSON_AddItemToObject(sum, "apns_production", sbx_rate_summary(F.prod.device_rate));
    cJSON_AddItemToObject(line, "summary", sum);
    sbx_record_write(F.rec, line);
    cJSON_Delete(line);
}

static void fx_teardown(void)
{
    sbx_server_shutdown(F.srv, on_server_closed, NULL);
    uv_run(&F.loop, UV_RUN_DEFAULT);
    ASSERT_EQ_INT(0, uv_loop_close(&F.loop));
    sbx_server_free(F.srv);
    sbx_apns_service_clear(&F.prod);
    sbx_apns_service_clear(&F.sbx);
    sbx_record_close(F.rec);
    sbx_tokens_file_close(&F.dead);
    SSL_CTX_free(F.sctx);
    SSL_CTX_free(F.cctx);
    EVP_PKEY_free(F.key.pub);
    EVP_PKEY_free(F.priv);
    free(F.jwt);
}

TEST(missing_token_then_success_and_record)
{
    fx_setup(NULL);
    pool_open(F.port_prod);
    push(TOKEN_A, "com.example.App", NULL, "{\"aps\":{\"alert\":\"x\"}}", NULL, NULL);
    run_batch();
    ASSERT_EQ_INT(403, F.res[0].status);
    ASSERT_STR_EQ("{\"reason\":\"MissingProviderToken\"}", F.res[0].body);
    ASSERT(sbx_apns_is_uuid(F.res[0].apns_id, strlen(F.res[0].apns_id)));

    pool_open(F.port_prod);
    push(TOKEN_A, "com.example.App", F.jwt, "{\"aps\":{\"alert\":\"hello\"}}", "apns-id",
         "eabeae54-14a8-11e5-b60b-1697f925ec7b");
    push(TOKEN_A, "com.example.App", F.jwt, "not json", "apns-collapse-id", "c1");
    run_batch();
    ASSERT_EQ_INT(200, F.res[0].status);
    ASSERT_STR_EQ("eabeae54-14a8-11e5-b60b-1697f925ec7b", F.res[0].apns_id);
    ASSERT_STR_EQ("", F.res[0].body);
    ASSERT_STR_EQ("", F.res[0].unique_id); /* production: no apns-unique-id */
    ASSERT_EQ_INT(200, F.res[1].status);
    fx_teardown();

    cJSON *rec = fixture_read_jsonl(F.record_path);
    ASSERT_EQ_INT(4, cJSON_GetArraySize(rec));
    const cJSON *l0 = cJSON_GetArrayItem(rec, 0), *l1 = cJSON_GetArrayItem(rec, 1),
                *l2 = cJSON_GetArrayItem(rec, 2), *sum = cJSON_GetArrayItem(rec, 3);
    ASSERT_EQ_INT(403, jnum(l0, "status"));
    ASSERT_STR_EQ("MissingProviderToken", jstr(l0, "reason"));
    ASSERT_EQ_INT(200, jnum(l1, "status"));
    ASSERT(cJSON_IsNull(cJSON_GetObjectItem(l1, "reason")));
    ASSERT_STR_EQ("apns", jstr(l1, "provider"));
    ASSERT_STR_EQ("production", jstr(l1, "env"));
    ASSERT_STR_EQ(TOKEN_A, jstr(l1, "token"));
    ASSERT_STR_EQ("com.example.App", jstr(l1, "topic"));
    ASSERT_STR_EQ("KEY0000001", jstr(l1, "kid"));
    ASSERT_STR_EQ("TEAM000001", jstr(l1, "iss"));
    ASSERT_STR_EQ("eabeae54-14a8-11e5-b60b-1697f925ec7b", jstr(l1, "apns_id"));
    ASSERT(jnum(l1, "at") > 1.7e12);
    ASSERT(jnum(l1, "stream") > 0);
    ASSERT_EQ_INT(2, jnum(l1, "connection"));
    const cJSON *payload = cJSON_GetObjectItem(l1, "payload");
    ASSERT(cJSON_IsObject(payload));
    ASSERT_STR_EQ("hello", jstr(cJSON_GetObjectItem(payload, "aps"), "alert"));
    ASSERT(cJSON_IsTrue(cJSON_GetObjectItem(l1, "payload_json")));
    ASSERT_STR_EQ("not json", jstr(l2, "payload"));
    ASSERT(cJSON_IsFalse(cJSON_GetObjectItem(l2, "payload_json")));
    ASSERT_STR_EQ("c1", jstr(l2, "collapse_id"));
    const cJSON *s = cJSON_GetObjectItem(sum, "summary");
    ASSERT_NOT_NULL(s);
    ASSERT_EQ_INT(2, jnum(s, "connections"));
    ASSERT_EQ_INT(2, jnum(s, "tls_handshakes"));
    ASSERT_EQ_INT(3, jnum(s, "requests"));
    cJSON_Delete(rec);
}

TEST(stream_limit_opens_after_valid_token)
{
    fx_setup(NULL);
    pool_open(F.port_prod);
    for (int i = 0; i < 200; i++)
        push(TOKEN_A, "com.example.App", F.jwt, "{\"aps\":{}}", NULL, NULL);
    run_batch();
    for (int i = 0; i < 200; i++)
        ASSERT_EQ_INT(200, F.res[i].status);
    /* One connection, and more than one stream at a time after the first. */
    const struct sbx_server_stats *st = sbx_server_stats(F.srv);
    ASSERT_EQ_INT(1, st->connections);
    ASSERT(st->max_streams_seen > 1);
    ASSERT_EQ_INT(0, F.pool_stats.refused);
    fx_teardown();
}

TEST(rejection_drops_limit_to_one)
{
    fx_setup(NULL);
    pool_open(F.port_prod);
    push(TOKEN_A, "com.example.App", F.jwt, "{}", NULL, NULL);
    run_batch();
    ASSERT_EQ_INT(200, F.res[0].status);
    /* Find the connection's advertised limit through a second batch on a
     * new pool: success → 1000, then a bad push → 1, then success → 1000. */
    pool_open(F.port_prod);
    push(TOKEN_A, "com.example.App", F.jwt, "{}", NULL, NULL);
    push("zz", "com.example.App", F.jwt, "{}", NULL, NULL);
    push(TOKEN_A, "com.example.App", F.jwt, "{}", NULL, NULL);
    run_batch();
    ASSERT_EQ_INT(200, F.res[0].status);
    ASSERT_EQ_INT(400, F.res[1].status);
    ASSERT_STR_EQ("{\"reason\":\"BadDeviceToken\"}", F.res[1].body);
    ASSERT_EQ_INT(200, F.res[2].status);
    fx_teardown();
}

TEST(sandbox_listener_adds_unique_id)
{
    fx_setup(NULL);
    pool_open(F.port_sbx);
    push(TOKEN_A, "com.example.App", F.jwt, "{}", NULL, NULL);
    push(TOKEN_A, "", F.jwt, "{}", NULL, NULL);
    run_batch();
    ASSERT_EQ_INT(200, F.res[0].status);
    ASSERT(sbx_apns_is_uuid(F.res[0].unique_id, strlen(F.res[0].unique_id)));
    ASSERT_EQ_INT(400, F.res[1].status);
    ASSERT_STR_EQ("", F.res[1].unique_id);
    ASSERT_STR_EQ("{\"reason\":\"MissingTopic\"}", F.res[1].body);
    fx_teardown();
    cJSON *rec = fixture_read_jsonl(F.record_path);
    ASSERT_STR_EQ("sandbox", jstr(cJSON_GetArrayItem(rec, 0), "env"));
    ASSERT_STR_EQ(F.res[0].unique_id, jstr(cJSON_GetArrayItem(rec, 0), "apns_unique_id"));
    cJSON_Delete(rec);
}

TEST(unregistered_file_reload_mid_run)
{
    fx_setup(NULL);
    pool_open(F.port_prod);
    push(TOKEN_B, "com.example.App", F.jwt, "{}", NULL, NULL);
    run_batch();
    ASSERT_EQ_INT(200, F.res[0].status);
    FILE *f = fopen(F.dead_path, "w");
    ASSERT_NOT_NULL(f);
    fprintf(f, "%s 1700000000123\n", TOKEN_B);
    fclose(f);
    sbx_tokens_file_refresh(&F.dead, true); /* what SIGHUP does */
    pool_open(F.port_prod);
    push(TOKEN_B, "com.example.App", F.jwt, "{}", NULL, NULL);
    push(TOKEN_A, "com.example.App", F.jwt, "{}", NULL, NULL);
    run_batch();
    ASSERT_EQ_INT(410, F.res[0].status);
    ASSERT_STR_EQ("{\"reason\":\"Unregistered\",\"timestamp\":1700000000123}", F.res[0].body);
    ASSERT_EQ_INT(200, F.res[1].status);
    fx_teardown();
}

TEST(header_list_over_8000_gets_431)
{
    fx_setup(NULL);
    pool_open(F.port_prod);
    static char big[8100];
    memset(big, 'x', sizeof big - 1);
    push(TOKEN_A, "com.example.App", F.jwt, "{}", "x-big", big);
    big[7000] = '\0'; /* under the limit with the other headers */
    push(TOKEN_A, "com.example.App", F.jwt, "{}", "x-big", big);
    run_batch();
    ASSERT_EQ_INT(431, F.res[0].status);
    ASSERT_STR_EQ("", F.res[0].body);
    ASSERT_EQ_INT(200, F.res[1].status);
    fx_teardown();
}

static void tune_goaway(struct fx *fx)
{
    char err[128];
    ASSERT_EQ_INT(1, sbx_faults_option(&fx->faults, "goaway-every", "7", err, sizeof err));
}

TEST(goaway_every_n_client_retries)
{
    fx_setup(tune_goaway);
    pool_open(F.port_prod);
    for (int i = 0; i < 50; i++)
        push(TOKEN_A, "com.example.App", F.jwt, "{}", NULL, NULL);
    run_batch();
    for (int i = 0; i < 50; i++)
        ASSERT_EQ_INT(200, F.res[i].status);
    const struct sbx_server_stats *st = sbx_server_stats(F.srv);
    ASSERT(st->goaways >= 7);
    ASSERT(st->connections >= 8);
    ASSERT(F.pool_stats.goaways >= 7);
    fx_teardown();
}

static void tune_faults(struct fx *fx)
{
    char err[128];
    ASSERT_EQ_INT(1, sbx_faults_option(&fx->faults, "fault-rate", "503:100:30", err, sizeof err));
    ASSERT_EQ_INT(1, sbx_faults_option(&fx->faults, "latency-ms", "150", err, sizeof err));
}

TEST(status_fault_and_latency)
{
    fx_setup(tune_faults);
    pool_open(F.port_prod);
    push(TOKEN_A, "com.example.App", F.jwt, "{}", NULL, NULL);
    push("", "com.example.App", F.jwt, "{}", NULL, NULL); /* errors are not replaced */
    run_batch();
    ASSERT_EQ_INT(503, F.res[0].status);
    ASSERT_STR_EQ("{\"reason\":\"ServiceUnavailable\"}", F.res[0].body);
    ASSERT_STR_EQ("30", F.res[0].retry_after);
    ASSERT(F.res[0].rtt_ms >= 140);
    ASSERT_EQ_INT(400, F.res[1].status);
    ASSERT_STR_EQ("{\"reason\":\"MissingDeviceToken\"}", F.res[1].body);
    fx_teardown();
    cJSON *rec = fixture_read_jsonl(F.record_path);
    const cJSON *l503 = NULL, *it;
    cJSON_ArrayForEach(it, rec)
        if (jnum(it, "status") == 503)
            l503 = it;
    ASSERT_NOT_NULL(l503);
    ASSERT_STR_EQ("503", jstr(l503, "fault"));
    ASSERT_STR_EQ("ServiceUnavailable", jstr(l503, "reason"));
    ASSERT_EQ_INT(30, jnum(l503, "retry_after"));
    cJSON_Delete(rec);
}

static void tune_reset(struct fx *fx)
{
    char err[128];
    ASSERT_EQ_INT(1, sbx_faults_option(&fx->faults, "reset-rate", "100", err, sizeof err));
}

TEST(tcp_reset_fault_is_not_recorded)
{
    fx_setup(tune_reset);
    pool_open(F.port_prod);
    push(TOKEN_A, "com.example.App", F.jwt, "{}", NULL, NULL);
    run_batch();
    ASSERT_EQ_INT(0, F.res[0].status);
    ASSERT_EQ_INT(H2_ERR_CONN_LOST, F.res[0].error);
    ASSERT_EQ_INT(5, F.res[0].attempts);
    ASSERT_EQ_INT(5, sbx_server_stats(F.srv)->tcp_resets);
    fx_teardown();
    cJSON *rec = fixture_read_jsonl(F.record_path);
    ASSERT_EQ_INT(1, cJSON_GetArraySize(rec)); /* only the summary */
    cJSON_Delete(rec);
}

static void tune_hang_and_rst(struct fx *fx)
{
    char err[128];
    ASSERT_EQ_INT(1, sbx_faults_option(&fx->faults, "hang-rate", "50", err, sizeof err));
    ASSERT_EQ_INT(1, sbx_faults_option(&fx->faults, "rst-stream-rate", "50", err, sizeof err));
}

TEST(hang_and_rst_stream_faults)
{
    fx_setup(tune_hang_and_rst);
    request_timeout_ms = 400;
    pool_open(F.port_prod);
    for (int i = 0; i < 6; i++)
        push(TOKEN_A, "com.example.App", F.jwt, "{}", NULL, NULL);
    run_batch();
    int timeouts = 0, protocol = 0;
    for (int i = 0; i < 6; i++) {
        ASSERT_EQ_INT(0, F.res[i].status);
        timeouts += F.res[i].error == H2_ERR_TIMEOUT;
        protocol += F.res[i].error == H2_ERR_PROTOCOL;
    }
    ASSERT_EQ_INT(6, timeouts + protocol);
    ASSERT(timeouts > 0 && protocol > 0); /* seed 99 gives both */
    const struct sbx_server_stats *st = sbx_server_stats(F.srv);
    ASSERT(st->hangs >= (uint64_t)timeouts); /* >: if the client retried */
    ASSERT(st->rst_streams >= (uint64_t)protocol);
    ASSERT_EQ_INT(0, st->responses);
    fx_teardown();
    cJSON *rec = fixture_read_jsonl(F.record_path);
    ASSERT_EQ_INT(1, cJSON_GetArraySize(rec)); /* nothing answered: summary only */
    cJSON_Delete(rec);
}

/* ---- raw client exceeding the acknowledged stream limit ---------------- */

struct raw {
    struct tls_conn *c;
    uint8_t in[8192];
    size_t inlen;
    bool closed;
};

static size_t hpack_literal(uint8_t *p, const char *name, const char *value)
{
    size_t n = 0, nl = strlen(name), vl = strlen(value);
    p[n++] = 0x00; /* literal without indexing, new name */
    p[n++] = (uint8_t)nl;
    memcpy(p + n, name, nl);
    n += nl;
    p[n++] = (uint8_t)vl;
    memcpy(p + n, value, vl);
    return n + vl;
}

static size_t frame_hdr(uint8_t *p, size_t len, uint8_t type, uint8_t flags, uint32_t sid)
{
    p[0] = (uint8_t)(len >> 16);
    p[1] = (uint8_t)(len >> 8);
    p[2] = (uint8_t)len;
    p[3] = type;
    p[4] = flags;
    p[5] = (uint8_t)(sid >> 24);
    p[6] = (uint8_t)(sid >> 16);
    p[7] = (uint8_t)(sid >> 8);
    p[8] = (uint8_t)sid;
    return 9;
}

static size_t headers_frame(uint8_t *out, uint32_t sid)
{
    uint8_t block[512];
    size_t b = 0;
    b += hpack_literal(block + b, ":method", "POST");
    b += hpack_literal(block + b, ":scheme", "https");
    b += hpack_literal(block + b, ":authority", "localhost");
    b += hpack_literal(block + b, ":path", "/3/device/" TOKEN_A);
    b += hpack_literal(block + b, "apns-topic", "com.example.App");
    size_t n = frame_hdr(out, b, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, sid);
    memcpy(out + n, block, b);
    return n + b;
}

static void raw_open(struct tls_conn *c, void *user)
{
    uint8_t buf[2048];
    size_t n = 0;
    memcpy(buf, NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN);
    n += NGHTTP2_CLIENT_MAGIC_LEN;
    n += frame_hdr(buf + n, 0, NGHTTP2_SETTINGS, 0, 0);
    /* Acknowledge the server's SETTINGS (MAX_CONCURRENT_STREAMS 1) up front:
     * the server applies the limit when it reads this ACK. */
    n += frame_hdr(buf + n, 0, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0);
    n += headers_frame(buf + n, 1); /* stays open: no END_STREAM */
    n += headers_frame(buf + n, 3); /* second concurrent stream: over the limit */
    ASSERT_EQ_INT(0, tls_conn_write(c, buf, n));
}

static void raw_data(struct tls_conn *c, const uint8_t *d, size_t len, void *user)
{
    struct raw *r = user;
    size_t n = len < sizeof r->in - r->inlen ? len : sizeof r->in - r->inlen;
    memcpy(r->in + r->inlen, d, n);
    r->inlen += n;
}

static void raw_close(struct tls_conn *c, int err, const char *reason, void *user)
{
    struct raw *r = user;
    r->closed = true;
    uv_stop(&F.loop);
}

TEST(over_acknowledged_limit_gets_goaway_protocol_error)
{
    fx_setup(NULL);
    static const struct tls_conn_callbacks cbs = { raw_open, raw_data, raw_close };
    struct raw r = { 0 };
    SSL_CTX *ctx = fixture_connect(&F.loop, F.dir, F.port_prod, &cbs, &r, &r.c);
    uv_run(&F.loop, UV_RUN_DEFAULT);
    ASSERT(r.closed);
    /* Walk the frames: expect a GOAWAY with PROTOCOL_ERROR. */
    bool goaway = false;
    for (size_t off = 0; off + 9 <= r.inlen;) {
        size_t len = (size_t)r.in[off] << 16 | (size_t)r.in[off + 1] << 8 | r.in[off + 2];
        if (r.in[off + 3] == NGHTTP2_GOAWAY && off + 9 + 8 <= r.inlen) {
            const uint8_t *p = r.in + off + 9 + 4;
            uint32_t code = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
            ASSERT_EQ_INT(NGHTTP2_PROTOCOL_ERROR, code);
            goaway = true;
        }
        off += 9 + len;
    }
    ASSERT(goaway);
    SSL_CTX_free(ctx);
    fx_teardown();
}

/* ---- raw client: observe SETTINGS across a request sequence ------------ */

struct seq {
    struct tls_conn *c;
    uint8_t in[65536];
    size_t inlen;
    const char *tokens[4];      /* requests to send, one at a time */
    int next, nreq;
    uint32_t mcs[16];           /* MAX_CONCURRENT_STREAMS values seen, in order */
    int nmcs;
    int finished;               /* responses complete */
    bool split_body;            /* send the body in several DATA frames */
};

static size_t hpack_int7(uint8_t *p, size_t v)
{
    if (v < 127) {
        p[0] = (uint8_t)v;
        return 1;
    }
    size_t n = 0;
    p[n++] = 127;
    v -= 127;
    while (v >= 128) {
        p[n++] = (uint8_t)(v % 128 + 128);
        v /= 128;
    }
    p[n++] = (uint8_t)v;
    return n;
}

static size_t hpack_lit(uint8_t *p, const char *name, const char *value)
{
    size_t n = 0, nl = strlen(name), vl = strlen(value);
    p[n++] = 0x00;
    n += hpack_int7(p + n, nl);
    memcpy(p + n, name, nl);
    n += nl;
    n += hpack_int7(p + n, vl);
    memcpy(p + n, value, vl);
    return n + vl;
}

static void seq_send_next(struct seq *q)
{
    if (q->next == q->nreq) {
        tls_conn_close(q->c, 0, "done");
        return;
    }
    uint32_t sid = (uint32_t)(2 * q->next + 1);
    const char *tok = q->tokens[q->next++];
    uint8_t block[2048], buf[4096];
    char path[128], auth[1024];
    snprintf(path, sizeof path, "/3/device/%s", tok);
    snprintf(auth, sizeof auth, "bearer %s", F.jwt);
    size_t b = 0, n = 0;
    b += hpack_lit(block + b, ":method", "POST");
    b += hpack_lit(block + b, ":scheme", "https");
    b += hpack_lit(block + b, ":authority", "localhost");
    b += hpack_lit(block + b, ":path", path);
    b += hpack_lit(block + b, "apns-topic", "com.example.App");
    b += hpack_lit(block + b, "authorization", auth);
    n += frame_hdr(buf + n, b, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, sid);
    memcpy(buf + n, block, b);
    n += b;
    if (q->split_body) { /* the body in three DATA frames */
        static const char *const parts[] = { "{\"aps\":", "{\"alert\":\"x\"}", "}" };
        for (int i = 0; i < 3; i++) {
            size_t pl = strlen(parts[i]);
            n += frame_hdr(buf + n, pl, NGHTTP2_DATA, i == 2 ? NGHTTP2_FLAG_END_STREAM : 0, sid);
            memcpy(buf + n, parts[i], pl);
            n += pl;
        }
    } else {
        n += frame_hdr(buf + n, 2, NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, sid);
        memcpy(buf + n, "{}", 2);
        n += 2;
    }
    ASSERT_EQ_INT(0, tls_conn_write(q->c, buf, n));
}

static void seq_open(struct tls_conn *c, void *user)
{
    struct seq *q = user;
    uint8_t buf[64];
    size_t n = NGHTTP2_CLIENT_MAGIC_LEN;
    memcpy(buf, NGHTTP2_CLIENT_MAGIC, n);
    n += frame_hdr(buf + n, 0, NGHTTP2_SETTINGS, 0, 0);
    ASSERT_EQ_INT(0, tls_conn_write(c, buf, n));
    seq_send_next(q);
}

static void seq_data(struct tls_conn *c, const uint8_t *d, size_t len, void *user)
{
    struct seq *q = user;
    ASSERT(q->inlen + len <= sizeof q->in);
    memcpy(q->in + q->inlen, d, len);
    q->inlen += len;
    size_t off = 0;
    while (off + 9 <= q->inlen) {
        size_t flen = (size_t)q->in[off] << 16 | (size_t)q->in[off + 1] << 8 | q->in[off + 2];
        if (off + 9 + flen > q->inlen)
            break;
        uint8_t type = q->in[off + 3], flags = q->in[off + 4];
        const uint8_t *pl = q->in + off + 9;
        if (type == NGHTTP2_SETTINGS && !(flags & NGHTTP2_FLAG_ACK)) {
            for (size_t i = 0; i + 6 <= flen; i += 6) {
                unsigned id = (unsigned)pl[i] << 8 | pl[i + 1];
                uint32_t v = (uint32_t)pl[i + 2] << 24 | (uint32_t)pl[i + 3] << 16 |
                             (uint32_t)pl[i + 4] << 8 | pl[i + 5];
                if (id == NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS && q->nmcs < 16)
                    q->mcs[q->nmcs++] = v;
            }
            uint8_t ack[9];
            frame_hdr(ack, 0, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0);
            ASSERT_EQ_INT(0, tls_conn_write(c, ack, 9));
        } else if ((type == NGHTTP2_HEADERS || type == NGHTTP2_DATA) &&
                   (flags & NGHTTP2_FLAG_END_STREAM)) {
            q->finished++;
            seq_send_next(q);
        }
        off += 9 + flen;
    }
    memmove(q->in, q->in + off, q->inlen - off);
    q->inlen -= off;
}

static void seq_close(struct tls_conn *c, int err, const char *reason, void *user)
{
    uv_stop(&F.loop);
}

TEST(settings_follow_successes_and_rejections)
{
    fx_setup(NULL);
    static const struct tls_conn_callbacks cbs = { seq_open, seq_data, seq_close };
    static struct seq q;
    memset(&q, 0, sizeof q);
    q.tokens[0] = TOKEN_A;
    q.tokens[1] = "nothex";
    q.tokens[2] = TOKEN_B;
    q.tokens[3] = TOKEN_A;
    q.nreq = 4;
    SSL_CTX *ctx = fixture_connect(&F.loop, F.dir, F.port_prod, &cbs, &q, &q.c);
    uv_run(&F.loop, UV_RUN_DEFAULT);
    ASSERT_EQ_INT(4, q.finished);
    /* initial 1; success → 1000; BadDeviceToken → 1; success → 1000; the
     * last success changes nothing. */
    ASSERT_EQ_INT(4, q.nmcs);
    ASSERT_EQ_INT(1, q.mcs[0]);
    ASSERT_EQ_INT(1000, q.mcs[1]);
    ASSERT_EQ_INT(1, q.mcs[2]);
    ASSERT_EQ_INT(1000, q.mcs[3]);
    SSL_CTX_free(ctx);
    fx_teardown();
}

TEST(body_in_several_data_frames)
{
    fx_setup(NULL);
    static const struct tls_conn_callbacks cbs = { seq_open, seq_data, seq_close };
    static struct seq q;
    memset(&q, 0, sizeof q);
    q.tokens[0] = TOKEN_A;
    q.nreq = 1;
    q.split_body = true;
    SSL_CTX *ctx = fixture_connect(&F.loop, F.dir, F.port_prod, &cbs, &q, &q.c);
    uv_run(&F.loop, UV_RUN_DEFAULT);
    ASSERT_EQ_INT(1, q.finished);
    SSL_CTX_free(ctx);
    fx_teardown();
    cJSON *rec = fixture_read_jsonl(F.record_path);
    const cJSON *l = cJSON_GetArrayItem(rec, 0);
    ASSERT_EQ_INT(200, jnum(l, "status"));
    ASSERT_EQ_INT(21, jnum(l, "payload_bytes"));
    ASSERT_STR_EQ("x", jstr(cJSON_GetObjectItem(cJSON_GetObjectItem(l, "payload"), "aps"), "alert"));
    cJSON_Delete(rec);
}

static char *body_of(size_t n)
{
    char *b = xmalloc(n + 1);
    memset(b, ' ', n);
    b[0] = '{';
    b[n - 1] = '}';
    b[n] = '\0';
    return b;
}

TEST(payload_size_edges_over_the_wire)
{
    fx_setup(NULL);
    pool_open(F.port_prod);
    char *b4096 = body_of(4096), *b4097 = body_of(4097), *b5120 = body_of(5120),
         *b5121 = body_of(5121), *b40k = body_of(40000);
    push(TOKEN_A, "com.example.App", F.jwt, b4096, NULL, NULL);
    push(TOKEN_A, "com.example.App", F.jwt, b4097, NULL, NULL);
    push(TOKEN_A, "com.example.App.voip", F.jwt, b5120, "apns-push-type", "voip");
    push(TOKEN_A, "com.example.App.voip", F.jwt, b5121, "apns-push-type", "voip");
    push(TOKEN_A, "com.example.App", F.jwt, b40k, NULL, NULL); /* several DATA frames */
    push(TOKEN_A, "com.example.App", F.jwt, "", NULL, NULL);
    run_batch();
    ASSERT_EQ_INT(200, F.res[0].status);
    ASSERT_EQ_INT(413, F.res[1].status);
    ASSERT_STR_EQ("{\"reason\":\"PayloadTooLarge\"}", F.res[1].body);
    ASSERT_EQ_INT(200, F.res[2].status);
    ASSERT_EQ_INT(413, F.res[3].status);
    ASSERT_EQ_INT(413, F.res[4].status);
    ASSERT_EQ_INT(400, F.res[5].status);
    ASSERT_STR_EQ("{\"reason\":\"PayloadEmpty\"}", F.res[5].body);
    free(b4096);
    free(b4097);
    free(b5120);
    free(b5121);
    free(b40k);
    fx_teardown();
    cJSON *rec = fixture_read_jsonl(F.record_path);
    const cJSON *it, *big = NULL; /* lines are in answer order */
    cJSON_ArrayForEach(it, rec)
        if (jnum(it, "payload_bytes") == 40000)
            big = it;
    ASSERT_NOT_NULL(big);
    ASSERT_EQ_INT(413, jnum(big, "status"));
    cJSON_Delete(rec);
}

static void tune_apns_rate(struct fx *fx)
{
    char err[256];
    sbx_device_limits_init(&fx->limits);
    ASSERT_STR_EQ("device 240/min", fx->limits.apns[0].name); /* the defaults */
    ASSERT_STR_EQ("device 5000/h", fx->limits.apns[1].name);
    ASSERT_EQ_INT(1, sbx_device_limits_option(&fx->limits, "apns-device-rate", "3/h", err,
                                              sizeof err));
    fx->limits_on = true;
}

/* (e) APNs per-device limit: the 4th push to one token within the window
 * is 429 TooManyRequests (no retry-after: Apple documents none); other
 * tokens, the same token on the other environment's listener, and
 * rejected pushes are not affected; the token's case does not matter. */
TEST(device_rate_limit_too_many_requests)
{
    fx_setup(tune_apns_rate);
    ASSERT(F.prod.device_rate && F.sbx.device_rate && F.prod.device_rate != F.sbx.device_rate);
    pool_open(F.port_prod);
    push(TOKEN_A, "com.example.App", F.jwt, "{}", NULL, NULL);
    push(TOKEN_A, "com.example.App", F.jwt, "", NULL, NULL); /* PayloadEmpty: not counted */
    push(TOKEN_A, "com.example.App", F.jwt, "{}", NULL, NULL);
    push(TOKEN_A, "com.example.App", F.jwt, "{}", NULL, NULL);
    push(TOKEN_A, "com.example.App", F.jwt, "{}", NULL, NULL);
    push(TOKEN_B, "com.example.App", F.jwt, "{}", NULL, NULL);
    run_batch();
    /* Streams refused while the limit is 1 are retried, so the answers
     * come in any order: count them. */
    ASSERT_EQ_INT(400, F.res[1].status);
    int ok = 0, limited = -1;
    for (int i = 0; i < 5; i++) {
        if (i == 1)
            continue;
        if (F.res[i].status == 200)
            ok++;
        else if (F.res[i].status == 429)
            limited = i;
        else
            TEST_FAIL_("push %d: status %d", i, F.res[i].status);
    }
    ASSERT_EQ_INT(3, ok);
    ASSERT(limited >= 0);
    ASSERT_STR_EQ("{\"reason\":\"TooManyRequests\"}", F.res[limited].body);
    ASSERT_STR_EQ("", F.res[limited].retry_after);
    ASSERT(F.res[limited].apns_id[0] != '\0');
    ASSERT_EQ_INT(200, F.res[5].status);

    char upper[65];
    for (size_t i = 0; i < 64; i++)
        upper[i] = (char)toupper((unsigned char)TOKEN_A[i]);
    upper[64] = '\0';
    pool_open(F.port_prod);
    push(upper, "com.example.App", F.jwt, "{}", NULL, NULL);
    run_batch();
    ASSERT_EQ_INT(429, F.res[0].status);
    pool_open(F.port_sbx); /* the development environment keeps its own counts */
    push(TOKEN_A, "com.example.App", F.jwt, "{}", NULL, NULL);
    run_batch();
    ASSERT_EQ_INT(200, F.res[0].status);
    fx_teardown();

    cJSON *rec = fixture_read_jsonl(F.record_path);
    int n429 = 0;
    const cJSON *it, *sum = NULL;
    cJSON_ArrayForEach(it, rec) {
        if (cJSON_GetObjectItem(it, "summary"))
            sum = cJSON_GetObjectItem(it, "summary");
        if (jnum(it, "status") != 429)
            continue;
        n429++;
        ASSERT_STR_EQ("TooManyRequests", jstr(it, "reason"));
        ASSERT_STR_EQ("device 3/h", jstr(it, "rate_limit"));
        ASSERT_STR_EQ("production", jstr(it, "env"));
        ASSERT_NULL(cJSON_GetObjectItem(it, "retry_after"));
        ASSERT_NULL(cJSON_GetObjectItem(it, "fault"));
    }
    ASSERT_EQ_INT(2, n429);
    ASSERT_NOT_NULL(sum);
    const cJSON *rl = cJSON_GetObjectItem(sum, "apns_production");
    ASSERT_EQ_INT(4, jnum(rl, "allowed"));
    ASSERT_EQ_INT(2, jnum(cJSON_GetObjectItem(rl, "limited"), "device 3/h"));
    ASSERT_EQ_INT(2, jnum(rl, "keys"));
    cJSON_Delete(rec);
}

/* ---- nghttp2 client: how the response headers were encoded -------------- */

struct hp {
    struct tls_conn *c;
    nghttp2_session *h2;
    int status;
    uint8_t flags_apns_id, flags_unique_id, flags_status;
    int seen;                   /* bit 0 apns-id, bit 1 apns-unique-id */
    bool closed;
};

static ssize_t hp_body(nghttp2_session *h2, int32_t sid, uint8_t *buf, size_t len,
                       uint32_t *data_flags, nghttp2_data_source *src, void *user)
{
    memcpy(buf, "{}", 2);
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return 2;
}

static int hp_on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *user)
{
    struct hp *h = user;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        h->status = atoi((const char *)value);
        h->flags_status = flags;
    } else if (namelen == 7 && memcmp(name, "apns-id", 7) == 0) {
        h->flags_apns_id = flags;
        h->seen |= 1;
    } else if (namelen == 14 && memcmp(name, "apns-unique-id", 14) == 0) {
        h->flags_unique_id = flags;
        h->seen |= 2;
    }
    return 0;
}

static int hp_on_close(nghttp2_session *h2, int32_t sid, uint32_t code, void *user)
{
    struct hp *h = user;
    tls_conn_close(h->c, 0, "done");
    return 0;
}

static void hp_flush(struct hp *h)
{
    const uint8_t *d;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(h->h2, &d)) > 0)
        tls_conn_write(h->c, d, (size_t)n);
}

static void hp_open(struct tls_conn *c, void *user)
{
    struct hp *h = user;
    nghttp2_session_callbacks *cbs;
    ASSERT_EQ_INT(0, nghttp2_session_callbacks_new(&cbs));
    nghttp2_session_callbacks_set_on_header_callback(cbs, hp_on_header);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, hp_on_close);
    ASSERT_EQ_INT(0, nghttp2_session_client_new(&h->h2, cbs, h));
    nghttp2_session_callbacks_del(cbs);
    ASSERT_EQ_INT(0, nghttp2_submit_settings(h->h2, NGHTTP2_FLAG_NONE, NULL, 0));
    char auth[1024];
    snprintf(auth, sizeof auth, "bearer %s", F.jwt);
#define NV(n, v) { (uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE }
    nghttp2_nv nva[] = {
        NV(":method", "POST"), NV(":scheme", "https"), NV(":authority", "localhost"),
        NV(":path", "/3/device/" TOKEN_A), NV("apns-topic", "com.example.App"),
        NV("authorization", auth),
    };
#undef NV
    nghttp2_data_provider prd = { .read_callback = hp_body };
    ASSERT(nghttp2_submit_request(h->h2, NULL, nva, sizeof nva / sizeof nva[0], &prd, NULL) > 0);
    hp_flush(h);
}

static void hp_data(struct tls_conn *c, const uint8_t *d, size_t len, void *user)
{
    struct hp *h = user;
    ASSERT((size_t)nghttp2_session_mem_recv(h->h2, d, len) == len);
    hp_flush(h);
}

static void hp_close(struct tls_conn *c, int err, const char *reason, void *user)
{
    struct hp *h = user;
    h->closed = true;
    nghttp2_session_del(h->h2);
    h->h2 = NULL;
    uv_stop(&F.loop);
}

/* apns-id and apns-unique-id are unique per response: sent as HPACK "never
 * indexed" literals, so they do not evict reusable dynamic-table entries. */
TEST(apns_ids_are_sent_never_indexed)
{
    fx_setup(NULL);
    static const struct tls_conn_callbacks cbs = { hp_open, hp_data, hp_close };
    struct hp h = { 0 };
    SSL_CTX *ctx = fixture_connect(&F.loop, F.dir, F.port_sbx, &cbs, &h, &h.c);
    uv_run(&F.loop, UV_RUN_DEFAULT);
    ASSERT(h.closed);
    ASSERT_EQ_INT(200, h.status);
    ASSERT_EQ_INT(3, h.seen);
    ASSERT_EQ_INT(NGHTTP2_NV_FLAG_NO_INDEX, h.flags_apns_id & NGHTTP2_NV_FLAG_NO_INDEX);
    ASSERT_EQ_INT(NGHTTP2_NV_FLAG_NO_INDEX, h.flags_unique_id & NGHTTP2_NV_FLAG_NO_INDEX);
    ASSERT_EQ_INT(0, h.flags_status & NGHTTP2_NV_FLAG_NO_INDEX);
    SSL_CTX_free(ctx);
    fx_teardown();
}

TEST_MAIN(T(missing_token_then_success_and_record), T(stream_limit_opens_after_valid_token),
          T(rejection_drops_limit_to_one), T(sandbox_listener_adds_unique_id),
          T(unregistered_file_reload_mid_run), T(goaway_every_n_client_retries),
          T(status_fault_and_latency), T(tcp_reset_fault_is_not_recorded),
          T(over_acknowledged_limit_gets_goaway_protocol_error),
          T(settings_follow_successes_and_rejections), T(header_list_over_8000_gets_431),
          T(hang_and_rst_stream_faults), T(body_in_several_data_frames),
          T(payload_size_edges_over_the_wire), T(device_rate_limit_too_many_requests),
          T(apns_ids_are_sent_never_indexed))
