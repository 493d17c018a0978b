/*
 * sandbox/server.c with a test service over real TLS + HTTP/2 (the
 * project's client, http2/client.h): requests bigger than a stream's inline
 * storage (more than 16 headers, more header bytes than the inline arena,
 * bodies small, medium and over the 64 KB cap) reach the service intact;
 * response headers are copied intact whatever their size; the header-list
 * limit drops exactly the headers past it and flags the request.
 */
#include "tests/unit/test.h"
#include "tests/unit/sandbox_fixture.h"

#include "common/certgen.h"
#include "common/util.h"
#include "http2/client.h"
#include "http2/tls.h"
#include "sandbox/server.h"

#include <stdio.h>
#include <string.h>

#define NREQ 4

/* What the service saw, per request (by the "x-req" header). */
struct seen {
    bool got;
    char method[16], path[128], scheme[16], authority[64];
    char names[64][16];
    char *values[64];
    size_t nheaders;
    size_t body_len, body_total;
    uint32_t body_hash;
    bool body_ok;               /* matches the pattern the client sent */
    bool too_large;
    size_t accounted;           /* header bytes as the server counts them */
};

static struct {
    uv_loop_t loop;
    char dir[64];
    SSL_CTX *sctx, *cctx;
    struct sbx_server *srv;
    struct sbx_service svc, small;
    struct h2_pool *pool;
    struct seen seen[NREQ];
    struct h2_response_copy {
        int status;
        char hdr[SBX_RESP_MAX_HEADERS][2100];
        size_t body_len;
    } res[NREQ];
    int submitted, done;
} F;

static uint8_t body_byte(size_t i) { return (uint8_t)(i * 7 + 3); }

static char value_char(size_t h, size_t i) { return (char)('a' + (h + i) % 26); }

static void on_request(void *ctx, struct sbx_conn *c, void *state, const struct sbx_request *req,
                       struct sbx_response *resp)
{
    const char *r = sbx_request_header(req, "x-req", NULL, NULL);
    ASSERT_NOT_NULL(r);
    int i = atoi(r);
    ASSERT(i >= 0 && i < NREQ);
    struct seen *s = &F.seen[i];
    s->got = true;
    snprintf(s->method, sizeof s->method, "%s", req->method);
    snprintf(s->path, sizeof s->path, "%s", req->path);
    snprintf(s->scheme, sizeof s->scheme, "%s", req->scheme);
    snprintf(s->authority, sizeof s->authority, "%s", req->authority ? req->authority : "");
    s->accounted = 4 * 32 + strlen(req->method) + 7 + strlen(req->path) + 5 +
                   strlen(req->scheme) + 7 + (req->authority ? strlen(req->authority) + 10 : 0);
    for (size_t k = 0; k < req->nheaders && k < 64; k++) {
        const struct sbx_header *h = &req->headers[k];
        ASSERT_EQ_INT(strlen(h->name), h->namelen);
        ASSERT_EQ_INT(strlen(h->value), h->valuelen);
        snprintf(s->names[k], sizeof s->names[k], "%s", h->name);
        s->values[k] = xstrdup(h->value);
        s->accounted += h->namelen + h->valuelen + 32;
    }
    s->nheaders = req->nheaders;
    s->body_len = req->body_len;
    s->body_total = req->body_total;
    s->body_ok = true;
    for (size_t k = 0; k < req->body_len; k++)
        if (req->body[k] != body_byte(k))
            s->body_ok = false;
    s->too_large = req->headers_too_large;

    /* Eight headers from a buffer that dies with this call, one of them
     * bigger than a stream's whole inline arena. */
    static char vals[SBX_RESP_MAX_HEADERS][2100];
    static const char *const names[SBX_RESP_MAX_HEADERS] = {
        "x-r0", "x-r1", "x-r2", "x-r3", "x-r4", "x-r5", "x-r6", "x-big",
    };
    for (int k = 0; k < SBX_RESP_MAX_HEADERS; k++) {
        size_t n = k == SBX_RESP_MAX_HEADERS - 1 ? 2050 : 10 + (size_t)k;
        for (size_t j = 0; j < n; j++)
            vals[k][j] = value_char((size_t)k, j);
        vals[k][n] = '\0';
        resp->headers[k].name = names[k];
        resp->headers[k].value = vals[k];
        resp->headers[k].no_index = k == 0;
    }
    resp->nheaders = SBX_RESP_MAX_HEADERS;
    resp->status = req->headers_too_large ? 431 : 200;
    static char body[64];
    resp->body_len = (size_t)snprintf(body, sizeof body, "%zu", req->body_len);
    resp->body = body;
}

static void on_pool_closed(void *arg) { uv_stop(&F.loop); }

static void on_done(const struct h2_response *r, void *user)
{
    struct h2_response_copy *res = &F.res[(intptr_t)user];
    res->status = r->status;
    res->body_len = r->body_len;
    static const char *const names[SBX_RESP_MAX_HEADERS] = {
        "x-r0", "x-r1", "x-r2", "x-r3", "x-r4", "x-r5", "x-r6", "x-big",
    };
    for (int k = 0; k < SBX_RESP_MAX_HEADERS; k++)
        copy_header(r, names[k], res->hdr[k], sizeof res->hdr[k]);
    if (++F.done == F.submitted)
        h2_pool_close(F.pool, on_pool_closed, NULL);
}

static void setup(void)
{
    memset(&F, 0, sizeof F);
    ASSERT_EQ_INT(0, uv_loop_init(&F.loop));
    fixture_tmpdir("sbx-server", F.dir, sizeof F.dir);
    char err[256];
    ASSERT_EQ_INT(0, certgen_ca_and_server(F.dir, err, sizeof err));
    static const char *const alpn[] = { "h2", NULL };
    F.sctx = fixture_server_ctx(F.dir, alpn);
    F.cctx = fixture_client_ctx(F.dir, alpn);
    F.svc = (struct sbx_service){ .name = "test", .initial_max_streams = 100,
                                  .max_header_list = 64000, .request = on_request };
    F.small = F.svc;
    F.small.max_header_list = 4000;
    F.srv = sbx_server_new(&F.loop, F.sctx);
}

static void teardown(void)
{
    sbx_server_shutdown(F.srv, NULL, NULL);
    uv_run(&F.loop, UV_RUN_DEFAULT);
    ASSERT_EQ_INT(0, uv_loop_close(&F.loop));
    sbx_server_free(F.srv);
    SSL_CTX_free(F.sctx);
    SSL_CTX_free(F.cctx);
    for (int i = 0; i < NREQ; i++)
        for (size_t k = 0; k < F.seen[i].nheaders && k < 64; k++)
            free(F.seen[i].values[k]);
}

static void pool_open(int port)
{
    char url[64];
    snprintf(url, sizeof url, "https://127.0.0.1:%d", port);
    struct h2_pool_config cfg = {
        .name = "test", .url = url, .ssl_ctx = F.cctx, .max_connections = 1,
        .initial_max_streams = 1, .request_timeout_ms = 10000, .connect_timeout_ms = 5000,
        .max_attempts = 1,
    };
    F.pool = h2_pool_new(&F.loop, &cfg);
    ASSERT_NOT_NULL(F.pool);
}

/* Request |idx| with |nh| headers "x-h-NN" of |vlen| bytes and a body of
 * |blen| pattern bytes. */
static void submit(int idx, size_t nh, size_t vlen, size_t blen)
{
    static char vals[NREQ][60][300];
    static char names[60][8];
    static uint8_t body[70000];
    static char req_no[NREQ][4];
    struct h2_header h[64];
    size_t n = 0;
    snprintf(req_no[idx], sizeof req_no[idx], "%d", idx);
    h[n++] = (struct h2_header){ "x-req", req_no[idx], 0 };
    ASSERT(nh <= 60 && vlen < 300 && blen <= sizeof body);
    for (size_t k = 0; k < nh; k++) {
        snprintf(names[k], sizeof names[k], "x-h-%02zu", k);
        for (size_t j = 0; j < vlen; j++)
            vals[idx][k][j] = value_char(k, j);
        vals[idx][k][vlen] = '\0';
        h[n++] = (struct h2_header){ names[k], vals[idx][k], 0 };
    }
    for (size_t j = 0; j < blen; j++)
        body[j] = body_byte(j);
    ASSERT_EQ_INT(0, h2_pool_submit(F.pool, "POST", "/some/path?q=1", h, n, body, blen, on_done,
                                    (void *)(intptr_t)idx));
    F.submitted++;
}

/* The x-h-NN headers service |s| saw: the first |want| of those sent. */
static void check_headers(const struct seen *s, size_t want, size_t vlen)
{
    size_t got = 0;
    for (size_t k = 0; k < s->nheaders; k++) {
        if (strncmp(s->names[k], "x-h-", 4) != 0)
            continue;
        char name[8];
        snprintf(name, sizeof name, "x-h-%02zu", got);
        ASSERT_STR_EQ(name, s->names[k]);
        ASSERT_EQ_INT(vlen, strlen(s->values[k]));
        for (size_t j = 0; j < vlen; j++)
            ASSERT(s->values[k][j] == value_char(got, j));
        got++;
    }
    ASSERT_EQ_INT(want, got);
}

static void check_response(int idx, int status, size_t body_len)
{
    ASSERT_EQ_INT(status, F.res[idx].status);
    for (int k = 0; k < SBX_RESP_MAX_HEADERS; k++) {
        size_t n = k == SBX_RESP_MAX_HEADERS - 1 ? 2050 : 10 + (size_t)k;
        ASSERT_EQ_INT(n, strlen(F.res[idx].hdr[k]));
        for (size_t j = 0; j < n; j++)
            ASSERT(F.res[idx].hdr[k][j] == value_char((size_t)k, j));
    }
    char want[32];
    ASSERT_EQ_INT((size_t)snprintf(want, sizeof want, "%zu", body_len), F.res[idx].body_len);
}

TEST(big_requests_and_responses_arrive_intact)
{
    setup();
    char err[256];
    int port = sbx_server_listen(F.srv, "test", "127.0.0.1:0", &F.svc, err, sizeof err);
    ASSERT(port > 0);
    pool_open(port);
    submit(0, 3, 20, 300);        /* fits the inline storage */
    submit(1, 20, 50, 3000);      /* > 16 headers, body beyond the inline arena */
    submit(2, 50, 250, 70000);    /* ~13 KB of headers, body over the 64 KB cap */
    submit(3, 0, 0, 0);           /* no body */
    uv_run(&F.loop, UV_RUN_DEFAULT);
    ASSERT_EQ_INT(NREQ, F.done);
    static const size_t nh[NREQ] = { 3, 20, 50, 0 }, vl[NREQ] = { 20, 50, 250, 0 };
    static const size_t bl[NREQ] = { 300, 3000, 65536, 0 }, bt[NREQ] = { 300, 3000, 70000, 0 };
    for (int i = 0; i < NREQ; i++) {
        const struct seen *s = &F.seen[i];
        ASSERT(s->got);
        ASSERT_STR_EQ("POST", s->method);
        ASSERT_STR_EQ("/some/path?q=1", s->path);
        ASSERT_STR_EQ("https", s->scheme);
        ASSERT(strncmp(s->authority, "127.0.0.1:", 10) == 0);
        ASSERT(!s->too_large);
        check_headers(s, nh[i], vl[i]);
        ASSERT_EQ_INT(bl[i], s->body_len);
        ASSERT_EQ_INT(bt[i], s->body_total);
        ASSERT(s->body_ok);
        check_response(i, 200, bl[i]);
    }
    teardown();
}

TEST(header_list_limit_drops_the_rest_and_flags)
{
    setup();
    char err[256];
    int port = sbx_server_listen(F.srv, "small", "127.0.0.1:0", &F.small, err, sizeof err);
    ASSERT(port > 0);
    pool_open(port);
    submit(0, 30, 200, 10);       /* ~7 KB of headers over a 4000-byte limit */
    submit(1, 10, 200, 10);       /* ~2.5 KB: under it */
    uv_run(&F.loop, UV_RUN_DEFAULT);
    ASSERT_EQ_INT(2, F.done);
    const struct seen *s = &F.seen[0];
    ASSERT(s->got);
    ASSERT(s->too_large);
    /* Everything up to the limit kept, nothing after: the next x-h header
     * (name 6 bytes + value 200 + 32) would have gone over. */
    ASSERT(s->accounted <= 4000);
    ASSERT(s->accounted + 6 + 200 + 32 > 4000);
    size_t kept = 0;
    for (size_t k = 0; k < s->nheaders; k++)
        kept += strncmp(s->names[k], "x-h-", 4) == 0;
    ASSERT(kept > 0 && kept < 30);
    check_headers(s, kept, 200);
    ASSERT_STR_EQ("POST", s->method);
    ASSERT_EQ_INT(10, s->body_len);
    check_response(0, 431, 10);
    ASSERT(!F.seen[1].too_large);
    check_headers(&F.seen[1], 10, 200);
    check_response(1, 200, 10);
    teardown();
}

TEST_MAIN(T(big_requests_and_responses_arrive_intact), T(header_list_limit_drops_the_rest_and_flags))
