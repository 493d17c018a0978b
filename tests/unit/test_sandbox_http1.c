/*
 * Tests of varsel-sandbox's HTTP/1.1 support.
 *
 * Pure part (sandbox/http1.c): requests split across reads (down to one
 * byte at a time), pipelined requests in one read, keep-alive and
 * Connection: close, HTTP/1.0, Content-Length and chunked bodies,
 * Expect: 100-continue, header and body caps, malformed input, Upgrade,
 * and the response bytes.
 *
 * End to end (sandbox/server.c with the FCM and OAuth services
 * in-process, a raw TLS client on 127.0.0.1): ALPN "http/1.1" and no ALPN
 * (the server tells HTTP/1.1 from the HTTP/2 preface), keep-alive with
 * pipelining and a request split over two writes, /token then a send on
 * one connection, GOAWAY as "connection: close", a malformed request, and
 * the record's "http" field.
 */
#include "tests/unit/test.h"
#include "tests/unit/sandbox_fixture.h"

#include "common/certgen.h"
#include "common/jws.h"
#include "common/util.h"
#include "http2/tls.h"
#include "sandbox/fcm_service.h"
#include "sandbox/http1.h"
#include "sandbox/oauth_service.h"
#include "sandbox/server.h"

#include <cJSON.h>
#include <dirent.h>
#include <http_parser.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>

/* ---- pure parser ------------------------------------------------------------ */

#define MAXR 8

struct got {
    int n;
    char method[MAXR][16], path[MAXR][256], authority[MAXR][64], body[MAXR][512];
    char hdrs[MAXR][512];          /* "name=value;" in order */
    size_t body_total[MAXR];
    bool keep_alive[MAXR], too_large[MAXR];
    int continues;
};

static struct got G;

static void on_req(void *user, const struct sbx_request *req, bool keep_alive)
{
    struct got *g = user;
    ASSERT(g->n < MAXR);
    int i = g->n++;
    snprintf(g->method[i], sizeof g->method[i], "%s", req->method);
    snprintf(g->path[i], sizeof g->path[i], "%s", req->path);
    snprintf(g->authority[i], sizeof g->authority[i], "%s", req->authority ? req->authority : "");
    snprintf(g->body[i], sizeof g->body[i], "%.*s", (int)req->body_len, (const char *)req->body);
    size_t o = 0;
    for (size_t k = 0; k < req->nheaders; k++)
        o += (size_t)snprintf(g->hdrs[i] + o, sizeof g->hdrs[i] - o, "%s=%s;",
                              req->headers[k].name, req->headers[k].value);
    g->body_total[i] = req->body_total;
    g->keep_alive[i] = keep_alive;
    g->too_large[i] = req->headers_too_large;
    ASSERT_STR_EQ("https", req->scheme);
}

static void on_cont(void *user)
{
    ((struct got *)user)->continues++;
}

static const struct sbx_http1_callbacks cbs = { on_req, on_cont };

static struct sbx_http1 *parser(size_t max_hdr, size_t body_cap)
{
    memset(&G, 0, sizeof G);
    return sbx_http1_new(max_hdr, body_cap, &cbs, &G);
}

static int feed(struct sbx_http1 *p, const char *s)
{
    return sbx_http1_feed(p, (const uint8_t *)s, strlen(s));
}

#define REQ1 "POST /v1/projects/p/messages:send HTTP/1.1\r\nHost: fcm.googleapis.com\r\n" \
             "Content-Type: application/json\r\nAuthorization: Bearer abc\r\n" \
             "Content-Length: 13\r\n\r\n{\"message\":1}"

TEST(one_request)
{
    struct sbx_http1 *p = parser(0, 65536);
    ASSERT_EQ_INT(0, feed(p, REQ1));
    ASSERT_EQ_INT(1, G.n);
    ASSERT_STR_EQ("POST", G.method[0]);
    ASSERT_STR_EQ("/v1/projects/p/messages:send", G.path[0]);
    ASSERT_STR_EQ("fcm.googleapis.com", G.authority[0]);
    ASSERT_STR_EQ("{\"message\":1}", G.body[0]);
    ASSERT_EQ_INT(13, G.body_total[0]);
    ASSERT(G.keep_alive[0]);
    ASSERT_STR_EQ("host=fcm.googleapis.com;content-type=application/json;authorization=Bearer abc;"
                  "content-length=13;", G.hdrs[0]);
    ASSERT_EQ_INT(1, sbx_http1_requests(p));
    ASSERT_STR_EQ("", sbx_http1_error(p));
    sbx_http1_free(p);
}

TEST(split_across_reads)
{
    /* One byte at a time: URL, names, values and body all arrive in pieces. */
    struct sbx_http1 *p = parser(0, 65536);
    const char *r = REQ1;
    for (size_t i = 0; r[i]; i++) {
        ASSERT_EQ_INT(0, sbx_http1_feed(p, (const uint8_t *)r + i, 1));
        ASSERT_EQ_INT(r[i + 1] ? 0 : 1, G.n);
    }
    ASSERT_STR_EQ("/v1/projects/p/messages:send", G.path[0]);
    ASSERT_STR_EQ("host=fcm.googleapis.com;content-type=application/json;authorization=Bearer abc;"
                  "content-length=13;", G.hdrs[0]);
    ASSERT_STR_EQ("{\"message\":1}", G.body[0]);
    /* And the next request on the same connection, in three uneven pieces. */
    ASSERT_EQ_INT(0, feed(p, "GET /a HT"));
    ASSERT_EQ_INT(0, feed(p, "TP/1.1\r\nHost: x\r\nX-Long-Hea"));
    ASSERT_EQ_INT(1, G.n);
    ASSERT_EQ_INT(0, feed(p, "der: v1 \r\n\r\n"));
    ASSERT_EQ_INT(2, G.n);
    ASSERT_STR_EQ("GET", G.method[1]);
    ASSERT_STR_EQ("host=x;x-long-header=v1;", G.hdrs[1]); /* trailing blank trimmed */
    ASSERT_STR_EQ("", G.body[1]);
    sbx_http1_free(p);
}

TEST(pipelined_and_keep_alive)
{
    struct sbx_http1 *p = parser(0, 65536);
    ASSERT_EQ_INT(0, feed(p, REQ1 REQ1 "GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"));
    ASSERT_EQ_INT(3, G.n);
    ASSERT(G.keep_alive[0] && G.keep_alive[1]);
    ASSERT(!G.keep_alive[2]);
    sbx_http1_free(p);
    p = parser(0, 65536);
    ASSERT_EQ_INT(0, feed(p, "GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    ASSERT_EQ_INT(2, G.n);
    ASSERT(!G.keep_alive[0]);
    ASSERT(G.keep_alive[1]);
    ASSERT_STR_EQ("", G.authority[0]);
    sbx_http1_free(p);
}

TEST(chunked_body)
{
    struct sbx_http1 *p = parser(0, 65536);
    ASSERT_EQ_INT(0, feed(p, "POST /token HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "5\r\ngrant\r\n"));
    ASSERT_EQ_INT(0, G.n);
    ASSERT_EQ_INT(0, feed(p, "6;ext=1\r\n_type="));
    ASSERT_EQ_INT(0, feed(p, "\r\n3\r\nabc\r\n0\r\n\r\n"));
    ASSERT_EQ_INT(1, G.n);
    ASSERT_STR_EQ("grant_type=abc", G.body[0]);
    ASSERT_EQ_INT(14, G.body_total[0]);
    sbx_http1_free(p);
}

TEST(expect_continue)
{
    struct sbx_http1 *p = parser(0, 65536);
    ASSERT_EQ_INT(0, feed(p, "POST /t HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                             "Content-Length: 2\r\n\r\n"));
    ASSERT_EQ_INT(1, G.continues);
    ASSERT_EQ_INT(0, G.n);
    ASSERT_EQ_INT(0, feed(p, "{}"));
    ASSERT_EQ_INT(1, G.n);
    sbx_http1_free(p);
}

TEST(caps)
{
    /* 40 + 32 per header: the second one is over 100 bytes. */
    struct sbx_http1 *p = parser(100, 4);
    ASSERT_EQ_INT(0, feed(p, "POST / HTTP/1.1\r\nHost: hhhh\r\nX-A: 0123456789012345678901234567890"
                             "123456789\r\nContent-Length: 10\r\n\r\n0123456789"));
    ASSERT_EQ_INT(1, G.n);
    ASSERT(G.too_large[0]);
    ASSERT_STR_EQ("host=hhhh;", G.hdrs[0]);
    ASSERT_STR_EQ("0123", G.body[0]);
    ASSERT_EQ_INT(10, G.body_total[0]);
    /* The next request starts with clean counters. */
    ASSERT_EQ_INT(0, feed(p, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
    ASSERT(!G.too_large[1]);
    sbx_http1_free(p);
}

TEST(malformed_and_upgrade)
{
    struct sbx_http1 *p = parser(0, 65536);
    ASSERT_EQ_INT(-1, feed(p, "\x16\x03\x01 not http\r\n\r\n"));
    ASSERT(strlen(sbx_http1_error(p)) > 0);
    ASSERT_EQ_INT(-1, feed(p, REQ1)); /* nothing more after an error */
    ASSERT_EQ_INT(0, G.n);
    sbx_http1_free(p);
    p = parser(0, 65536);
    ASSERT_EQ_INT(-1, feed(p, "POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"));
    sbx_http1_free(p);
    p = parser(0, 65536);
    ASSERT_EQ_INT(0, feed(p, "GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
                             "HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\nPRI * HTTP/2.0\r\n"));
    ASSERT_EQ_INT(1, G.n);
    ASSERT(!G.keep_alive[0]);
    ASSERT_EQ_INT(0, feed(p, REQ1)); /* ignored */
    ASSERT_EQ_INT(1, G.n);
    sbx_http1_free(p);
}

TEST(response_bytes)
{
    struct sbx_http1_field f[] = { { "content-type", "application/json; charset=UTF-8" },
                                   { "retry-after", "30" } };
    size_t n;
    char *r = sbx_http1_response(429, f, 2, "{}", 2, false, &n);
    const char *want = "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json; "
                       "charset=UTF-8\r\nretry-after: 30\r\ncontent-length: 2\r\n\r\n{}";
    ASSERT_EQ_INT(strlen(want), n);
    ASSERT(memcmp(r, want, n) == 0);
    free(r);
    r = sbx_http1_response(200, NULL, 0, NULL, 0, true, &n);
    want = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    ASSERT_EQ_INT(strlen(want), n);
    ASSERT(memcmp(r, want, n) == 0);
    free(r);
    ASSERT_STR_EQ("Not Found", sbx_http1_reason(404));
    ASSERT_STR_EQ("Service Unavailable", sbx_http1_reason(503));
    ASSERT_STR_EQ("Request Header Fields Too Large", sbx_http1_reason(431));
    ASSERT_STR_EQ("Unknown", sbx_http1_reason(299));
}

/* ---- end to end --------------------------------------------------------------- */

#define PROJECT "demo-proj"
#define PATH "/v1/projects/" PROJECT "/messages:send"
#define EMAIL "sa@" PROJECT ".iam.gserviceaccount.com"
#define KID "0123456789abcdef0123456789abcdef01234567"
#define TOKEN_A "cAbCdEfGhIjKlMnOpQrStUv:APA91bHvalidtokenvalidtoken0123456789"

struct fx {
    uv_loop_t loop;
    char dir[64], record_path[128];
    SSL_CTX *sctx;
    struct sbx_server *srv;
    struct sbx_fcm_service fcm;
    struct sbx_oauth_service oauth;
    struct sbx_oauth_account acct;
    struct sbx_faults faults;
    struct sbx_record *rec;
    EVP_PKEY *priv;
    int port;
};

static struct fx F;

static void fx_setup(void (*tune)(struct fx *))
{
    memset(&F, 0, sizeof F);
    ASSERT_EQ_INT(0, uv_loop_init(&F.loop));
    fixture_tmpdir("sbx-h1", F.dir, sizeof F.dir);
    char err[256], key[128], pub[128], spec[300];
    ASSERT_EQ_INT(0, certgen_ca_and_server(F.dir, err, sizeof err));
    snprintf(key, sizeof key, "%s/sa.key", F.dir);
    snprintf(pub, sizeof pub, "%s/sa.pub.pem", F.dir);
    ASSERT_EQ_INT(0, certgen_rsa_key(key, pub, err, sizeof err));
    F.priv = jws_load_private_key_file(key, err, sizeof err);
    snprintf(spec, sizeof spec, "%s:%s:%s:%s", pub, KID, EMAIL, PROJECT);
    ASSERT_EQ_INT(0, sbx_oauth_account_load(&F.acct, spec, err, sizeof err));
    static const char *const salpn[] = { "h2", "http/1.1", NULL };
    F.sctx = fixture_server_ctx(F.dir, salpn);
    snprintf(F.record_path, sizeof F.record_path, "%s/record.jsonl", F.dir);
    F.rec = sbx_record_open(F.record_path, err, sizeof err);
    sbx_faults_init(&F.faults, 5);
    if (tune)
        tune(&F);
    struct sbx_oauth_service_options oopt = { .accounts = &F.acct, .naccounts = 1,
                                              .record = F.rec };
    sbx_oauth_service_init(&F.oauth, &oopt);
    struct sbx_fcm_service_options fopt = { .oauth = &F.oauth, .faults = &F.faults,
                                            .record = F.rec };
    sbx_fcm_service_init(&F.fcm, &fopt);
    F.srv = sbx_server_new(&F.loop, F.sctx);
    F.port = sbx_server_listen(F.srv, "fcm", "127.0.0.1:0", &F.fcm.svc, err, sizeof err);
    ASSERT(F.port > 0);
}

static void fx_teardown(void)
{
    sbx_server_shutdown(F.srv, NULL, NULL);
    uv_run(&F.loop, UV_RUN_DEFAULT);
    ASSERT_EQ_INT(0, uv_loop_close(&F.loop));
    sbx_server_free(F.srv);
    sbx_fcm_service_clear(&F.fcm);
    sbx_oauth_service_clear(&F.oauth);
    sbx_record_close(F.rec);
    sbx_oauth_account_clear(&F.acct);
    SSL_CTX_free(F.sctx);
    EVP_PKEY_free(F.priv);
}

/* A raw HTTP/1.1 client: writes |parts| 60 ms apart, parses responses. */
struct h1c {
    struct tls_conn *c;
    uv_timer_t timer;
    char *parts[4];
    int nparts, next;
    int want;                    /* close after this many responses (0 = wait for the server) */
    http_parser hp;
    http_parser_settings hs;
    int n;                       /* complete responses */
    int status[MAXR];
    char body[MAXR][2048];
    char connection[MAXR][32];
    char last_field[64];
    bool field_is_connection;
    bool h2_settings;            /* an HTTP/2 SETTINGS frame came back instead */
    bool closed, timer_closed;
    int (*after)(struct h1c *, int i); /* called per response; may queue another part */
};

static int hp_status(http_parser *p, const char *at, size_t len) { return 0; }

static int hp_field(http_parser *p, const char *at, size_t len)
{
    struct h1c *h = p->data;
    snprintf(h->last_field, sizeof h->last_field, "%.*s", (int)len, at);
    h->field_is_connection = strcasecmp(h->last_field, "connection") == 0;
    return 0;
}

static int hp_value(http_parser *p, const char *at, size_t len)
{
    struct h1c *h = p->data;
    if (h->field_is_connection && h->n < MAXR)
        snprintf(h->connection[h->n], sizeof h->connection[0], "%.*s", (int)len, at);
    return 0;
}

static int hp_body(http_parser *p, const char *at, size_t len)
{
    struct h1c *h = p->data;
    if (h->n < MAXR) {
        size_t o = strlen(h->body[h->n]);
        snprintf(h->body[h->n] + o, sizeof h->body[0] - o, "%.*s", (int)len, at);
    }
    return 0;
}

static int hp_done(http_parser *p)
{
    struct h1c *h = p->data;
    if (h->n < MAXR)
        h->status[h->n] = (int)p->status_code;
    int i = h->n++;
    if (h->after)
        h->after(h, i);
    if (h->want && h->n == h->want)
        tls_conn_close(h->c, 0, "done");
    return 0;
}

static void h1c_write_next(struct h1c *h)
{
    if (h->next >= h->nparts || h->closed)
        return;
    const char *p = h->parts[h->next++];
    ASSERT_EQ_INT(0, tls_conn_write(h->c, (const uint8_t *)p, strlen(p)));
}

static void h1c_timer(uv_timer_t *t)
{
    struct h1c *h = t->data;
    h1c_write_next(h);
    if (h->next >= h->nparts)
        uv_timer_stop(t);
}

static void h1c_open(struct tls_conn *c, void *user)
{
    struct h1c *h = user;
    h1c_write_next(h);
    if (h->next < h->nparts)
        uv_timer_start(&h->timer, h1c_timer, 60, 60);
}

static void h1c_data(struct tls_conn *c, const uint8_t *d, size_t len, void *user)
{
    struct h1c *h = user;
    if (h->n == 0 && len >= 9 && d[3] == NGHTTP2_SETTINGS) {
        h->h2_settings = true;
        tls_conn_close(c, 0, "h2");
        return;
    }
    http_parser_execute(&h->hp, &h->hs, (const char *)d, len);
}

static void h1c_timer_closed(uv_handle_t *t)
{
    ((struct h1c *)t->data)->timer_closed = true;
}

static void h1c_close(struct tls_conn *c, int err, const char *reason, void *user)
{
    struct h1c *h = user;
    h->closed = true;
    uv_timer_stop(&h->timer);
    uv_close((uv_handle_t *)&h->timer, h1c_timer_closed);
    uv_stop(&F.loop);
}

/* Connect with ALPN |alpn| (NULL = none), send |parts|, run to the end. */
static void h1c_run(struct h1c *h, const char *const *alpn)
{
    SSL_CTX *ctx = fixture_client_ctx(F.dir, alpn);
    http_parser_init(&h->hp, HTTP_RESPONSE);
    h->hp.data = h;
    http_parser_settings_init(&h->hs);
    h->hs.on_status = hp_status;
    h->hs.on_header_field = hp_field;
    h->hs.on_header_value = hp_value;
    h->hs.on_body = hp_body;
    h->hs.on_message_complete = hp_done;
    uv_timer_init(&F.loop, &h->timer);
    h->timer.data = h;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", F.port, &sa);
    static const struct tls_conn_callbacks tcbs = { h1c_open, h1c_data, h1c_close };
    ASSERT_EQ_INT(0, tls_conn_connect(&F.loop, ctx, (struct sockaddr *)&sa, "localhost", 0, &tcbs,
                                      h, &h->c));
    uv_run(&F.loop, UV_RUN_DEFAULT);
    ASSERT(h->closed);
    while (!h->timer_closed)
        uv_run(&F.loop, UV_RUN_NOWAIT);
    SSL_CTX_free(ctx);
    for (int i = 0; i < h->nparts; i++)
        free(h->parts[i]);
}

static char *post(const char *path, const char *auth, const char *body, const char *extra)
{
    char *r = xmalloc(8192);
    snprintf(r, 8192, "POST %s HTTP/1.1\r\nHost: fcm.googleapis.com\r\n%s%s%s"
             "Content-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n%s", path,
             auth ? "Authorization: " : "", auth ? auth : "", auth ? "\r\n" : "", strlen(body),
             extra ? extra : "", body);
    return r;
}

static char bearer[300];

static void issue_bearer(void)
{
    char tok[SBX_OAUTH_TOKEN_MAX];
    sbx_oauth_tokens_issue(F.oauth.tokens, &F.acct, now_ms(), 3600000, tok);
    snprintf(bearer, sizeof bearer, "Bearer %s", tok);
}

#define MSG "{\"message\":{\"token\":\"" TOKEN_A "\"}}"

TEST(e2e_keep_alive_pipelining_and_split)
{
    fx_setup(NULL);
    issue_bearer();
    static struct h1c h;
    memset(&h, 0, sizeof h);
    /* Two requests in one write, then one request split over two writes. */
    char *a = post(PATH, bearer, MSG, NULL), *b = post(PATH, NULL, MSG, NULL);
    char *both = xmalloc(strlen(a) + strlen(b) + 1);
    strcpy(both, a);
    strcat(both, b);
    char *c = post("/nope", bearer, MSG, NULL);
    size_t half = strlen(c) / 2;
    h.parts[0] = both;
    h.parts[1] = xstrndup(c, half);
    h.parts[2] = xstrdup(c + half);
    h.nparts = 3;
    h.want = 3;
    free(a);
    free(b);
    free(c);
    static const char *const alpn[] = { "http/1.1", NULL };
    h1c_run(&h, alpn);
    ASSERT_EQ_INT(3, h.n);
    ASSERT_EQ_INT(200, h.status[0]);
    ASSERT_STR_CONTAINS(h.body[0], "\"name\": \"projects/demo-proj/messages/0:");
    ASSERT_EQ_INT(401, h.status[1]);
    ASSERT_STR_CONTAINS(h.body[1], "Request is missing required authentication credential");
    ASSERT_EQ_INT(404, h.status[2]);
    ASSERT_STR_CONTAINS(h.body[2], "That\xe2\x80\x99s an error.");
    ASSERT_STR_EQ("", h.connection[0]);
    const struct sbx_server_stats *st = sbx_server_stats(F.srv);
    ASSERT_EQ_INT(1, st->connections);
    ASSERT_EQ_INT(3, st->responses);
    fx_teardown();
    cJSON *rec = fixture_read_jsonl(F.record_path);
    ASSERT_EQ_INT(3, cJSON_GetArraySize(rec));
    const cJSON *l0 = cJSON_GetArrayItem(rec, 0);
    ASSERT_STR_EQ("http/1.1", jstr(l0, "http"));
    ASSERT_EQ_INT(1, cJSON_GetObjectItem(l0, "stream")->valueint); /* request numbers */
    ASSERT_EQ_INT(3, cJSON_GetObjectItem(cJSON_GetArrayItem(rec, 2), "stream")->valueint);
    cJSON_Delete(rec);
}

/* After the token response, send the FCM request with it. */
static int then_send(struct h1c *h, int i)
{
    if (i != 0)
        return 0;
    cJSON *j = cJSON_Parse(h->body[0]);
    ASSERT_NOT_NULL(j);
    char auth[300];
    snprintf(auth, sizeof auth, "Bearer %s", jstr(j, "access_token"));
    cJSON_Delete(j);
    h->parts[h->nparts++] = post(PATH, auth, MSG, NULL);
    h1c_write_next(h);
    return 0;
}

TEST(e2e_token_then_send_without_alpn)
{
    fx_setup(NULL);
    char claims[512], aud[80], form[4096];
    snprintf(aud, sizeof aud, "https://127.0.0.1:%d/token", F.port);
    snprintf(claims, sizeof claims, "{\"iss\":\"%s\",\"scope\":\"%s\",\"aud\":\"%s\",\"iat\":%lld,"
             "\"exp\":%lld}", EMAIL, SBX_OAUTH_SCOPE_FCM, aud, (long long)now_s(),
             (long long)now_s() + 3600);
    char *jwt = jws_compact_sign("RS256", F.priv, "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\""
                                 KID "\"}", claims);
    snprintf(form, sizeof form, "grant_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Agrant-type%%3A"
             "jwt-bearer&assertion=%s", jwt);
    free(jwt);
    static struct h1c h;
    memset(&h, 0, sizeof h);
    char *r = xmalloc(8192);
    /* Host is what the aud is compared with, as firebase-admin/gaxios send it. */
    snprintf(r, 8192, "POST /token HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: "
             "application/x-www-form-urlencoded\r\nContent-Length: %zu\r\n\r\n%s", F.port,
             strlen(form), form);
    h.parts[0] = r;
    h.nparts = 1;
    h.want = 2;
    h.after = then_send;
    h1c_run(&h, NULL); /* no ALPN, as Node's https module */
    ASSERT_EQ_INT(2, h.n);
    ASSERT_EQ_INT(200, h.status[0]);
    ASSERT_STR_CONTAINS(h.body[0], "\"token_type\": \"Bearer\"");
    ASSERT_EQ_INT(200, h.status[1]);
    fx_teardown();
    cJSON *rec = fixture_read_jsonl(F.record_path);
    ASSERT_STR_EQ("oauth", jstr(cJSON_GetArrayItem(rec, 0), "provider"));
    ASSERT_STR_EQ("http/1.1", jstr(cJSON_GetArrayItem(rec, 0), "http"));
    ASSERT_STR_EQ("fcm", jstr(cJSON_GetArrayItem(rec, 1), "provider"));
    ASSERT(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetArrayItem(rec, 1), "authorization_ok")));
    cJSON_Delete(rec);
}

TEST(e2e_no_alpn_h2_preface_is_h2)
{
    fx_setup(NULL);
    static struct h1c h;
    memset(&h, 0, sizeof h);
    /* The HTTP/2 client preface alone; the server answers with SETTINGS. */
    h.parts[0] = xstrdup("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    h.nparts = 1;
    h1c_run(&h, NULL);
    ASSERT(h.h2_settings);
    fx_teardown();
}

static void tune_goaway(struct fx *fx)
{
    char err[128];
    ASSERT_EQ_INT(1, sbx_faults_option(&fx->faults, "goaway-every", "2", err, sizeof err));
}

TEST(e2e_goaway_is_connection_close)
{
    fx_setup(tune_goaway);
    issue_bearer();
    static struct h1c h;
    memset(&h, 0, sizeof h);
    char *a = post(PATH, bearer, MSG, NULL);
    size_t l = strlen(a);
    char *three = xmalloc(3 * l + 1);
    snprintf(three, 3 * l + 1, "%s%s%s", a, a, a);
    free(a);
    h.parts[0] = three;
    h.nparts = 1;
    static const char *const alpn[] = { "http/1.1", NULL };
    h1c_run(&h, alpn); /* the server closes */
    ASSERT_EQ_INT(2, h.n);
    ASSERT_EQ_INT(200, h.status[0]);
    ASSERT_EQ_INT(200, h.status[1]);
    ASSERT_STR_EQ("", h.connection[0]);
    ASSERT_STR_EQ("close", h.connection[1]);
    ASSERT_EQ_INT(1, sbx_server_stats(F.srv)->goaways);
    ASSERT_EQ_INT(1, sbx_server_stats(F.srv)->refused_streams); /* the third, dropped */
    fx_teardown();
}

TEST(e2e_connection_close_and_malformed)
{
    fx_setup(NULL);
    issue_bearer();
    static struct h1c h;
    memset(&h, 0, sizeof h);
    h.parts[0] = post(PATH, bearer, MSG, "Connection: close\r\n");
    h.nparts = 1;
    static const char *const alpn[] = { "http/1.1", NULL };
    h1c_run(&h, alpn);
    ASSERT_EQ_INT(1, h.n);
    ASSERT_EQ_INT(200, h.status[0]);
    ASSERT_STR_EQ("close", h.connection[0]);
    memset(&h, 0, sizeof h);
    h.parts[0] = xstrdup("BREW /pot HTCPCP/1.0\r\n\r\n");
    h.nparts = 1;
    h1c_run(&h, alpn);
    ASSERT_EQ_INT(1, h.n);
    ASSERT_EQ_INT(400, h.status[0]);
    ASSERT_STR_EQ("close", h.connection[0]);
    fx_teardown();
}

static void tune_rst(struct fx *fx)
{
    char err[128];
    ASSERT_EQ_INT(1, sbx_faults_option(&fx->faults, "rst-stream-rate", "100", err, sizeof err));
}

TEST(e2e_stream_reset_closes_http1)
{
    fx_setup(tune_rst);
    issue_bearer();
    static struct h1c h;
    memset(&h, 0, sizeof h);
    h.parts[0] = post(PATH, bearer, MSG, NULL);
    h.nparts = 1;
    static const char *const alpn[] = { "http/1.1", NULL };
    h1c_run(&h, alpn);
    ASSERT_EQ_INT(0, h.n);
    ASSERT_EQ_INT(1, sbx_server_stats(F.srv)->rst_streams);
    fx_teardown();
    cJSON *rec = fixture_read_jsonl(F.record_path);
    ASSERT_EQ_INT(0, cJSON_GetArraySize(rec)); /* not answered: not recorded */
    cJSON_Delete(rec);
}

TEST_MAIN(T(one_request), T(split_across_reads), T(pipelined_and_keep_alive), T(chunked_body),
          T(expect_continue), T(caps), T(malformed_and_upgrade), T(response_bytes),
          T(e2e_keep_alive_pipelining_and_split), T(e2e_token_then_send_without_alpn),
          T(e2e_no_alpn_h2_preface_is_h2), T(e2e_goaway_is_connection_close),
          T(e2e_connection_close_and_malformed), T(e2e_stream_reset_closes_http1))
