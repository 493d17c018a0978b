/*
 * Tests for http2/client.c against the scripted in-process HTTP/2 TLS
 * server (tests/unit/h2_testserver.c) in the same uv loop: stream limits
 * (static and raised after the first answer), GOAWAY, REFUSED_STREAM, TCP
 * resets, timeouts, several connections, connect and TLS failures, PINGs,
 * re-entrant callbacks, and a clean shutdown that leaks nothing.
 */
#include "tests/unit/test.h"

#include "common/certgen.h"
#include "common/log.h"
#include "common/util.h"
#include "http2/client.h"
#include "http2/tls.h"
#include "tests/unit/h2_testserver.h"

#include "tests/unit/h2_testserver.c"

#include <stdint.h>
#include <uv.h>

/* ---- fixture ------------------------------------------------------------ */

static char tmpdir[256];

static void cleanup_tmpdir(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup failed\n");
}

static const char *path_in(const char *name)
{
    static char buf[4][400];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", tmpdir, name);
    return buf[i];
}

#define MAXREQ 1024

struct result {
    int calls;          /* callbacks for this request */
    int status;
    int error;
    int attempts;
    char reason[200];
    char apns_id[32];
    char x_path[64];
    size_t body_len;
    int body_ok;        /* echoed body matched */
    int truncated;
};

struct fx {
    uv_loop_t loop;
    struct h2ts *srv;
    SSL_CTX *cctx;
    struct h2_pool *pool;
    struct h2_pool_config pcfg;
    char url[64];
    struct result res[MAXREQ];
    int ctx_id[MAXREQ];
    int n_sub;
    int n_done;
    int pool_closed;
    /* re-entrancy scripts */
    int chain_left;          /* submit another request from each callback */
    int close_in_cb_at;      /* call h2_pool_close from the n-th callback */
    size_t max_inflight_seen;
};

static struct fx *F;

static void pool_closed_cb(void *arg)
{
    struct fx *f = arg;
    f->pool_closed++;
}

static void fx_init(struct fx *f, const struct h2ts_config *scfg, int with_ca)
{
    memset(f, 0, sizeof *f);
    F = f;
    log_set_level(getenv("H2_DEBUG") ? LOG_DEBUG : LOG_ERROR);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/varsel-h2-XXXXXX");
    ASSERT_NOT_NULL(mkdtemp(tmpdir));
    atexit(cleanup_tmpdir);
    char err[256] = "";
    ASSERT_EQ_INT(0, certgen_ca_and_server(tmpdir, err, sizeof err));
    ASSERT_EQ_INT(0, uv_loop_init(&f->loop));
    f->srv = h2ts_start(&f->loop, path_in("server.pem"), path_in("server.key"), scfg);
    ASSERT_NOT_NULL(f->srv);
    static const char *const h2[] = { "h2", NULL };
    f->cctx = tls_client_ctx_new(with_ca ? path_in("ca.pem") : NULL, h2, NULL, NULL, err,
                                 sizeof err);
    ASSERT_NOT_NULL(f->cctx);
    snprintf(f->url, sizeof f->url, "https://127.0.0.1:%d", h2ts_port(f->srv));
    f->pcfg = (struct h2_pool_config){
        .name = "test",
        .url = f->url,
        .ssl_ctx = f->cctx,
        .max_connections = 1,
        .initial_max_streams = 100,
        .request_timeout_ms = 10000,
        .connect_timeout_ms = 3000,
        .ping_idle_ms = 0,
        .max_attempts = 3,
    };
}

static void fx_pool(struct fx *f)
{
    f->pool = h2_pool_new(&f->loop, &f->pcfg);
    ASSERT_NOT_NULL(f->pool);
}

static void on_done(const struct h2_response *resp, void *user);

static void submit_n(struct fx *f, const char *prefix, int n)
{
    for (int i = 0; i < n; i++) {
        int id = f->n_sub++;
        ASSERT(id < MAXREQ);
        f->ctx_id[id] = id;
        char path[64], body[64];
        snprintf(path, sizeof path, "%s/%d", prefix, id);
        int bl = snprintf(body, sizeof body, "{\"n\":%d}", id);
        struct h2_header hdrs[] = {
            { "authorization", "bearer secret-token", H2_HDR_NO_INDEX },
            { "Apns-Topic", "no.example.app", 0 },
        };
        ASSERT_EQ_INT(0, h2_pool_submit(f->pool, "POST", path, hdrs, 2, (const uint8_t *)body,
                                        (size_t)bl, on_done, &f->ctx_id[id]));
    }
}

static void on_done(const struct h2_response *resp, void *user)
{
    struct fx *f = F;
    int id = *(int *)user;
    struct result *r = &f->res[id];
    r->calls++;
    r->status = resp->status;
    r->error = resp->error;
    r->attempts = resp->attempts;
    r->truncated = resp->body_truncated;
    r->body_len = resp->body_len;
    if (resp->error_reason)
        snprintf(r->reason, sizeof r->reason, "%s", resp->error_reason);
    if (resp->status != 0)
        ASSERT_EQ_INT(0, resp->error);
    else
        ASSERT(resp->error != 0 && resp->error_reason != NULL);
    for (size_t i = 0; i < resp->n_headers; i++) {
        if (strcmp(resp->headers[i].name, "apns-id") == 0)
            snprintf(r->apns_id, sizeof r->apns_id, "%s", resp->headers[i].value);
        if (strcmp(resp->headers[i].name, "x-path") == 0)
            snprintf(r->x_path, sizeof r->x_path, "%s", resp->headers[i].value);
    }
    char body[64];
    int bl = snprintf(body, sizeof body, "{\"n\":%d}", id);
    r->body_ok = resp->body_len == (size_t)bl && memcmp(resp->body, body, (size_t)bl) == 0;
    f->n_done++;
    if (f->chain_left > 0 && !(f->close_in_cb_at > 0 && f->n_done >= f->close_in_cb_at)) {
        f->chain_left--;
        submit_n(f, "/chain", 1);
    }
    if (f->close_in_cb_at > 0 && f->n_done == f->close_in_cb_at) {
        h2_pool_close(f->pool, pool_closed_cb, f);
        ASSERT_EQ_INT(H2_ERR_SHUTDOWN, h2_pool_submit(f->pool, "GET", "/x", NULL, 0, NULL, 0,
                                                      on_done, &f->ctx_id[0]));
    }
}

/* Run the loop until |cond| holds or |ms| pass (then fail). */
#define RUN_UNTIL(f, cond, ms)                                                 \
    do {                                                                       \
        uint64_t dl_ = mono_ms() + (ms);                                       \
        while (!(cond)) {                                                      \
            if (mono_ms() > dl_)                                               \
                TEST_FAIL_("timed out waiting for %s (done %d of %d)", #cond,  \
                           (f)->n_done, (f)->n_sub);                           \
            if ((f)->pool && !(f)->pool_closed) {                              \
                size_t inf_ = h2_pool_inflight((f)->pool);                     \
                if (inf_ > (f)->max_inflight_seen)                             \
                    (f)->max_inflight_seen = inf_;                             \
            }                                                                  \
            uv_run(&(f)->loop, UV_RUN_ONCE);                                   \
        }                                                                      \
    } while (0)

/* Close the pool and the server, and require that nothing is left. */
static void fx_done(struct fx *f)
{
    if (f->pool && !f->pool_closed) {
        h2_pool_close(f->pool, pool_closed_cb, f);
        h2_pool_close(f->pool, pool_closed_cb, f); /* ignored */
        RUN_UNTIL(f, f->pool_closed == 1, 5000);
    }
    h2ts_stop(f->srv);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    ASSERT_EQ_INT(1, f->pool == NULL || f->pool_closed == 1);
    ASSERT_EQ_INT(0, uv_loop_close(&f->loop));
    SSL_CTX_free(f->cctx);
    for (int i = 0; i < f->n_sub; i++)
        ASSERT_EQ_INT(1, f->res[i].calls);
}

static void assert_all_ok(struct fx *f)
{
    for (int i = 0; i < f->n_sub; i++) {
        struct result *r = &f->res[i];
        if (r->calls != 1 || r->status != 200 || !r->body_ok)
            TEST_FAIL_("request %d: calls %d status %d error %d (%s) body_ok %d", i, r->calls,
                       r->status, r->error, r->reason, r->body_ok);
        char want[64];
        snprintf(want, sizeof want, "/r/%d", i);
        if (strncmp(r->x_path, "/r/", 3) == 0)
            ASSERT_STR_EQ(want, r->x_path);
        ASSERT(r->apns_id[0] != '\0');
    }
}

/* ---- tests ---------------------------------------------------------------- */

TEST(many_requests_one_connection_respect_limit)
{
    struct fx f;
    struct h2ts_config sc = { .max_streams = 100, .delay_ms = 5 };
    fx_init(&f, &sc, 1);
    fx_pool(&f);
    submit_n(&f, "/r", 300);
    ASSERT_EQ_INT(300, h2_pool_queued(f.pool));
    ASSERT_EQ_INT(0, f.n_done); /* callbacks never fire inside submit */
    RUN_UNTIL(&f, f.n_done == 300, 20000);
    assert_all_ok(&f);
    const struct h2ts_stats *st = h2ts_stats(f.srv);
    ASSERT_EQ_INT(300, st->requests);
    ASSERT_EQ_INT(1, st->conns);
    ASSERT_EQ_INT(100, st->max_open);  /* used the whole limit, never more */
    ASSERT_EQ_INT(0, st->violations);
    ASSERT_EQ_INT(300, st->auth_no_index);
    ASSERT_EQ_INT(0, st->auth_indexed);
    char auth[80];
    snprintf(auth, sizeof auth, "127.0.0.1:%d", h2ts_port(f.srv));
    ASSERT_STR_EQ(auth, st->authority);
    ASSERT_EQ_INT(100, f.max_inflight_seen);
    struct h2_pool_stats ps;
    h2_pool_get_stats(f.pool, &ps);
    ASSERT_EQ_INT(1, ps.connects);
    ASSERT_EQ_INT(300, ps.responses);
    ASSERT_EQ_INT(100, ps.max_streams_seen);
    ASSERT_EQ_INT(0, h2_pool_inflight(f.pool));
    ASSERT_EQ_INT(0, h2_pool_queued(f.pool));
    ASSERT_EQ_INT(1, h2_pool_connections(f.pool));
    for (int i = 0; i < 300; i++)
        ASSERT_EQ_INT(1, f.res[i].attempts);
    fx_done(&f);
}

TEST(apns_style_limit_one_then_raised)
{
    struct fx f;
    /* The first answer waits 300 ms: long enough to look at the pool while
     * it is pending, even under valgrind. */
    struct h2ts_config sc = { .max_streams = 1, .raise_to = 1000, .delay_ms = 300 };
    fx_init(&f, &sc, 1);
    f.pcfg.initial_max_streams = 1;
    fx_pool(&f);
    submit_n(&f, "/r", 300);
    /* while the first answer is pending, exactly one stream is open */
    RUN_UNTIL(&f, h2ts_stats(f.srv)->requests >= 1, 5000);
    for (int i = 0; i < 5; i++)
        uv_run(&f.loop, UV_RUN_NOWAIT);
    ASSERT_EQ_INT(1, h2_pool_inflight(f.pool));
    ASSERT_EQ_INT(299, h2_pool_queued(f.pool));
    RUN_UNTIL(&f, f.n_done == 300, 20000);
    assert_all_ok(&f);
    const struct h2ts_stats *st = h2ts_stats(f.srv);
    ASSERT_EQ_INT(1, st->max_open_at_1);
    ASSERT(st->max_open > 100); /* the raise was used */
    ASSERT_EQ_INT(0, st->violations);
    ASSERT_EQ_INT(1, st->conns);
    fx_done(&f);
}

TEST(goaway_resends_streams_above_last_id)
{
    struct fx f;
    /* first connection: GOAWAY after 50 requests, keeping only the first 20 */
    struct h2ts_config sc = { .max_streams = 100, .delay_ms = 30, .goaway_after = 50,
                              .goaway_keep = 20, .goaway_conns = 1 };
    fx_init(&f, &sc, 1);
    f.pcfg.max_attempts = 1; /* a GOAWAY re-send must not count as a fault */
    fx_pool(&f);
    submit_n(&f, "/r", 300);
    RUN_UNTIL(&f, f.n_done == 300, 20000);
    assert_all_ok(&f);
    const struct h2ts_stats *st = h2ts_stats(f.srv);
    ASSERT_EQ_INT(1, st->goaways);
    ASSERT_EQ_INT(2, st->conns);
    ASSERT(st->requests > 300); /* some were sent twice */
    ASSERT_EQ_INT(0, st->violations);
    struct h2_pool_stats ps;
    h2_pool_get_stats(f.pool, &ps);
    ASSERT_EQ_INT(1, ps.goaways);
    ASSERT(ps.requeued >= 30);
    int twice = 0;
    for (int i = 0; i < 300; i++)
        twice += f.res[i].attempts == 2;
    ASSERT(twice >= 30);
    ASSERT_EQ_INT(0, ps.conn_lost);
    fx_done(&f);
}

TEST(goaway_zero_on_every_connection_fails_without_spinning)
{
    struct fx f;
    /* like BadCertificateEnvironment: GOAWAY last_stream_id 0 at once */
    struct h2ts_config sc = { .max_streams = 100, .goaway_after = 1, .goaway_keep = 0 };
    fx_init(&f, &sc, 1);
    f.pcfg.max_attempts = 3;
    fx_pool(&f);
    submit_n(&f, "/r", 5);
    RUN_UNTIL(&f, f.n_done == 5, 10000);
    for (int i = 0; i < 5; i++) {
        ASSERT_EQ_INT(H2_ERR_GOAWAY, f.res[i].error);
        ASSERT_EQ_INT(0, f.res[i].status);
        ASSERT_STR_CONTAINS(f.res[i].reason, "Shutdown");
        ASSERT_EQ_INT(3, f.res[i].attempts);
    }
    const struct h2ts_stats *st = h2ts_stats(f.srv);
    ASSERT(st->conns >= 3 && st->conns <= 4);
    fx_done(&f);
}

TEST(refused_streams_are_resent)
{
    struct fx f;
    struct h2ts_config sc = { .max_streams = 100, .refuse_every = 7 };
    fx_init(&f, &sc, 1);
    fx_pool(&f);
    submit_n(&f, "/r", 300);
    RUN_UNTIL(&f, f.n_done == 300, 20000);
    assert_all_ok(&f);
    const struct h2ts_stats *st = h2ts_stats(f.srv);
    ASSERT(st->refused >= 40);
    int resent = 0;
    for (int i = 0; i < 300; i++)
        resent += f.res[i].attempts == 2;
    ASSERT_EQ_INT(st->refused, resent);
    struct h2_pool_stats ps;
    h2_pool_get_stats(f.pool, &ps);
    ASSERT_EQ_INT(st->refused, ps.refused);
    ASSERT_EQ_INT(0, st->violations);
    fx_done(&f);
}

TEST(tcp_reset_mid_stream_resends)
{
    struct fx f;
    /* the first two connections are reset after 40 requests, answers held */
    struct h2ts_config sc = { .max_streams = 100, .delay_ms = 50, .reset_after = 40,
                              .reset_conns = 2 };
    fx_init(&f, &sc, 1);
    fx_pool(&f);
    submit_n(&f, "/r", 300);
    RUN_UNTIL(&f, f.n_done == 300, 20000);
    assert_all_ok(&f);
    const struct h2ts_stats *st = h2ts_stats(f.srv);
    ASSERT_EQ_INT(2, st->resets);
    ASSERT_EQ_INT(3, st->conns);
    struct h2_pool_stats ps;
    h2_pool_get_stats(f.pool, &ps);
    ASSERT_EQ_INT(2, ps.conn_lost);
    ASSERT(ps.requeued >= 100);
    int max_att = 0;
    for (int i = 0; i < 300; i++)
        if (f.res[i].attempts > max_att)
            max_att = f.res[i].attempts;
    ASSERT_EQ_INT(3, max_att); /* the first 100 were lost twice */
    fx_done(&f);
}

TEST(resets_exhaust_max_attempts)
{
    struct fx f;
    struct h2ts_config sc = { .max_streams = 100, .delay_ms = 50, .reset_after = 1 };
    fx_init(&f, &sc, 1);
    f.pcfg.max_attempts = 2;
    fx_pool(&f);
    submit_n(&f, "/r", 1);
    RUN_UNTIL(&f, f.n_done == 1, 10000);
    ASSERT_EQ_INT(H2_ERR_CONN_LOST, f.res[0].error);
    ASSERT_EQ_INT(2, f.res[0].attempts);
    ASSERT_STR_CONTAINS(f.res[0].reason, "connection lost");
    ASSERT_EQ_INT(2, h2ts_stats(f.srv)->resets);
    fx_done(&f);
}

TEST(request_timeout_cancels_stream)
{
    struct fx f;
    struct h2ts_config sc = { .max_streams = 100 };
    fx_init(&f, &sc, 1);
    f.pcfg.request_timeout_ms = 200;
    fx_pool(&f);
    int id = f.n_sub++;
    f.ctx_id[id] = id;
    uint64_t t0 = mono_ms();
    ASSERT_EQ_INT(0, h2_pool_submit(f.pool, "POST", "/hang", NULL, 0, (const uint8_t *)"x", 1,
                                    on_done, &f.ctx_id[id]));
    RUN_UNTIL(&f, f.n_done == 1, 5000);
    uint64_t took = mono_ms() - t0;
    ASSERT_EQ_INT(H2_ERR_TIMEOUT, f.res[0].error);
    ASSERT_EQ_INT(0, f.res[0].status);
    ASSERT(took >= 200 && took < 2000);
    RUN_UNTIL(&f, h2ts_stats(f.srv)->rst_received == 1, 2000);
    /* the connection is still good */
    submit_n(&f, "/r", 3);
    RUN_UNTIL(&f, f.n_done == 4, 5000);
    for (int i = 1; i < 4; i++)
        ASSERT_EQ_INT(200, f.res[i].status);
    ASSERT_EQ_INT(1, h2ts_stats(f.srv)->conns);
    struct h2_pool_stats ps;
    h2_pool_get_stats(f.pool, &ps);
    ASSERT_EQ_INT(1, ps.timeouts);
    fx_done(&f);
}

TEST(opens_more_connections_when_full)
{
    struct fx f;
    /* Answers take 1 s, so the first 100 are still out while the second
     * and third connections' handshakes finish, even under valgrind. */
    struct h2ts_config sc = { .max_streams = 100, .delay_ms = 1000 };
    fx_init(&f, &sc, 1);
    f.pcfg.max_connections = 3;
    fx_pool(&f);
    submit_n(&f, "/r", 300);
    RUN_UNTIL(&f, f.n_done == 300, 20000);
    assert_all_ok(&f);
    const struct h2ts_stats *st = h2ts_stats(f.srv);
    ASSERT_EQ_INT(3, st->conns);
    ASSERT(st->max_open <= 100);
    ASSERT_EQ_INT(0, st->violations);
    ASSERT_EQ_INT(3, h2_pool_connections(f.pool));
    ASSERT(f.max_inflight_seen > 200);
    fx_done(&f);
}

TEST(close_fails_queued_and_inflight_with_shutdown)
{
    struct fx f;
    struct h2ts_config sc = { .max_streams = 1, .delay_ms = 200 };
    fx_init(&f, &sc, 1);
    f.pcfg.initial_max_streams = 1;
    fx_pool(&f);
    submit_n(&f, "/r", 50);
    RUN_UNTIL(&f, h2ts_stats(f.srv)->requests == 1, 5000);
    ASSERT_EQ_INT(1, h2_pool_inflight(f.pool));
    ASSERT_EQ_INT(49, h2_pool_queued(f.pool));
    h2_pool_close(f.pool, pool_closed_cb, &f);
    ASSERT_EQ_INT(0, f.n_done); /* deferred */
    ASSERT_EQ_INT(H2_ERR_SHUTDOWN, h2_pool_submit(f.pool, "GET", "/x", NULL, 0, NULL, 0,
                                                  on_done, &f.ctx_id[0]));
    RUN_UNTIL(&f, f.pool_closed == 1, 5000);
    ASSERT_EQ_INT(50, f.n_done);
    for (int i = 0; i < 50; i++) {
        ASSERT_EQ_INT(H2_ERR_SHUTDOWN, f.res[i].error);
        ASSERT_EQ_INT(0, f.res[i].status);
    }
    fx_done(&f);
}

TEST(close_from_inside_callback_and_chained_submits)
{
    struct fx f;
    struct h2ts_config sc = { .max_streams = 10 };
    fx_init(&f, &sc, 1);
    fx_pool(&f);
    f.chain_left = 40;          /* each callback submits one more */
    f.close_in_cb_at = 30;      /* and the 30th closes the pool */
    submit_n(&f, "/r", 5);
    RUN_UNTIL(&f, f.pool_closed == 1, 10000);
    int ok = 0, shut = 0;
    for (int i = 0; i < f.n_sub; i++) {
        ASSERT_EQ_INT(1, f.res[i].calls);
        ok += f.res[i].status == 200;
        shut += f.res[i].error == H2_ERR_SHUTDOWN;
    }
    ASSERT(ok >= 29);
    ASSERT_EQ_INT(f.n_sub, ok + shut);
    ASSERT(f.n_sub > 30);
    fx_done(&f);
}

TEST(connect_refused_fails_after_window_with_backoff)
{
    struct fx f;
    struct h2ts_config sc = { .max_streams = 100 };
    fx_init(&f, &sc, 1);
    /* a port nobody listens on */
    uv_tcp_t tmp;
    uv_tcp_init(&f.loop, &tmp);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    ASSERT_EQ_INT(0, uv_tcp_bind(&tmp, (struct sockaddr *)&sa, 0));
    struct sockaddr_storage ss;
    int len = sizeof ss;
    uv_tcp_getsockname(&tmp, (struct sockaddr *)&ss, &len);
    int port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    uv_close((uv_handle_t *)&tmp, NULL);
    snprintf(f.url, sizeof f.url, "https://127.0.0.1:%d/ignored/path", port);
    f.pcfg.connect_timeout_ms = 1000;
    fx_pool(&f);
    uint64_t t0 = mono_ms();
    submit_n(&f, "/r", 3);
    RUN_UNTIL(&f, f.n_done == 3, 10000);
    uint64_t took = mono_ms() - t0;
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ_INT(H2_ERR_CONNECT, f.res[i].error);
        ASSERT_STR_CONTAINS(f.res[i].reason, "connection refused");
        ASSERT_EQ_INT(0, f.res[i].attempts);
    }
    ASSERT(took >= 1000 && took < 5000);
    struct h2_pool_stats ps;
    h2_pool_get_stats(f.pool, &ps);
    /* 100, 200, 400, 800 ms steps with jitter: a handful, not a spin */
    ASSERT(ps.connect_failures >= 3 && ps.connect_failures <= 12);
    fx_done(&f);
}

TEST(tls_verify_failure_is_a_connect_error)
{
    struct fx f;
    struct h2ts_config sc = { .max_streams = 100 };
    fx_init(&f, &sc, 0); /* client does not trust the test CA */
    f.pcfg.connect_timeout_ms = 2000; /* the handshake fails first, even under valgrind */
    fx_pool(&f);
    submit_n(&f, "/r", 2);
    RUN_UNTIL(&f, f.n_done == 2, 10000);
    for (int i = 0; i < 2; i++) {
        ASSERT_EQ_INT(H2_ERR_CONNECT, f.res[i].error);
        ASSERT_STR_CONTAINS(f.res[i].reason, "certificate verify failed");
    }
    ASSERT_EQ_INT(0, h2ts_stats(f.srv)->handshakes);
    fx_done(&f);
}

TEST(idle_connection_is_pinged)
{
    struct fx f;
    struct h2ts_config sc = { .max_streams = 100 };
    fx_init(&f, &sc, 1);
    f.pcfg.ping_idle_ms = 50;
    fx_pool(&f);
    submit_n(&f, "/r", 1);
    RUN_UNTIL(&f, f.n_done == 1, 5000);
    RUN_UNTIL(&f, h2ts_stats(f.srv)->pings >= 2, 5000);
    struct h2_pool_stats ps;
    h2_pool_get_stats(f.pool, &ps);
    ASSERT(ps.pings >= 2);
    ASSERT_EQ_INT(1, h2_pool_connections(f.pool)); /* ACKs keep it alive */
    fx_done(&f);
}

TEST(big_body_is_truncated)
{
    struct fx f;
    struct h2ts_config sc = { .max_streams = 100, .big_body = 100000 };
    fx_init(&f, &sc, 1);
    fx_pool(&f);
    int id = f.n_sub++;
    f.ctx_id[id] = id;
    ASSERT_EQ_INT(0, h2_pool_submit(f.pool, "GET", "/big", NULL, 0, NULL, 0, on_done,
                                    &f.ctx_id[id]));
    RUN_UNTIL(&f, f.n_done == 1, 5000);
    ASSERT_EQ_INT(200, f.res[0].status);
    ASSERT_EQ_INT(H2_MAX_BODY, f.res[0].body_len);
    ASSERT_EQ_INT(1, f.res[0].truncated);
    fx_done(&f);
}

TEST(dns_name_url_with_sni_and_address_rotation)
{
    struct fx f;
    struct h2ts_config sc = { .max_streams = 100 };
    fx_init(&f, &sc, 1);
    /* "localhost" may resolve to ::1 first, where nobody listens: the pool
     * then rotates to 127.0.0.1 after a backoff */
    snprintf(f.url, sizeof f.url, "https://localhost:%d", h2ts_port(f.srv));
    fx_pool(&f);
    submit_n(&f, "/r", 20);
    RUN_UNTIL(&f, f.n_done == 20, 10000);
    assert_all_ok(&f);
    char auth[80];
    snprintf(auth, sizeof auth, "localhost:%d", h2ts_port(f.srv));
    ASSERT_STR_EQ(auth, h2ts_stats(f.srv)->authority);
    fx_done(&f);
}

TEST(bad_config_is_rejected)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    log_set_level(LOG_ERROR);
    struct h2_pool_config c = { .name = "x", .url = "http://127.0.0.1:1", .max_connections = 1 };
    c.ssl_ctx = (SSL_CTX *)&c; /* never dereferenced when the URL is bad */
    ASSERT_NULL(h2_pool_new(&loop, &c));
    c.url = "https://[::1";
    ASSERT_NULL(h2_pool_new(&loop, &c));
    c.url = "https://host:99999";
    ASSERT_NULL(h2_pool_new(&loop, &c));
    c.url = "https://host:443";
    c.max_connections = 0;
    ASSERT_NULL(h2_pool_new(&loop, &c));
    ASSERT_EQ_INT(0, uv_loop_close(&loop));
    ASSERT_STR_EQ("timeout", h2_strerror(H2_ERR_TIMEOUT));
}

TEST_MAIN(T(many_requests_one_connection_respect_limit), T(apns_style_limit_one_then_raised),
          T(goaway_resends_streams_above_last_id),
          T(goaway_zero_on_every_connection_fails_without_spinning),
          T(refused_streams_are_resent), T(tcp_reset_mid_stream_resends),
          T(resets_exhaust_max_attempts), T(request_timeout_cancels_stream),
          T(opens_more_connections_when_full), T(close_fails_queued_and_inflight_with_shutdown),
          T(close_from_inside_callback_and_chained_submits),
          T(connect_refused_fails_after_window_with_backoff),
          T(tls_verify_failure_is_a_connect_error), T(idle_connection_is_pinged),
          T(big_body_is_truncated), T(dns_name_url_with_sni_and_address_rotation),
          T(bad_config_is_rejected))
