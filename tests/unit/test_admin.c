/*
 * The admin server (daemon/admin.c): the request parser glue fed in pieces,
 * routing and path decoding, the bearer-token check, and the server itself
 * on a loopback socket with small limits (keep-alive, pipelining, 405, 401,
 * 404, 431, 413, slowloris and idle deadlines, the connection cap, readyz
 * while Redis is unreachable, clean close).
 */
#include "tests/unit/test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

#include "common/log.h"
#include "common/util.h"
#include "config/config.h"
#include "daemon/admin.h"
#include "daemon/pipeline.h"
#include "daemon/stats.h"

/* ---- parser glue ---------------------------------------------------------- */

/* Feed |s| in pieces of |step| bytes; returns the bytes used. */
static size_t feed(struct admin_http *h, const char *s, size_t step)
{
    size_t len = strlen(s), off = 0;
    while (off < len && !h->complete && h->error == 0) {
        size_t n = len - off < step ? len - off : step;
        size_t used = admin_http_feed(h, s + off, n);
        off += used;
        if (used < n)
            break;
    }
    return off;
}

TEST(parse_simple_get_any_split)
{
    static const char req[] = "GET /v1/stats?x=1 HTTP/1.1\r\nHost: a\r\n"
                              "Authorization: Bearer sekrit-token\r\n\r\n";
    for (size_t step = 1; step <= sizeof req; step++) {
        struct admin_http h;
        admin_http_init(&h, 0);
        ASSERT_EQ_INT(strlen(req), feed(&h, req, step));
        ASSERT(h.complete);
        ASSERT_EQ_INT(0, h.error);
        ASSERT_EQ_INT(HTTP_GET, h.req.method);
        ASSERT_STR_EQ("/v1/stats?x=1", h.req.url);
        ASSERT_STR_EQ("Bearer sekrit-token", h.req.auth);
        ASSERT_EQ_INT(1, h.req.auth_count);
        ASSERT(h.req.keep_alive);
    }
}

TEST(parse_keep_alive_rules)
{
    static const struct {
        const char *req;
        bool keep;
    } cases[] = {
        { "GET / HTTP/1.1\r\n\r\n", true },
        { "GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false },
        { "GET / HTTP/1.0\r\n\r\n", false },
        { "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct admin_http h;
        admin_http_init(&h, 0);
        feed(&h, cases[i].req, 1000);
        ASSERT(h.complete);
        ASSERT_EQ_INT(cases[i].keep, h.req.keep_alive);
    }
}

TEST(parse_pipelined_requests)
{
    static const char two[] = "GET /healthz HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n"
                              "Authorization: Bearer x\r\n\r\nGET /readyz HTTP/1.1\r\n\r\n";
    struct admin_http h;
    admin_http_init(&h, 0);
    size_t off = 0, len = strlen(two);
    const char *urls[] = { "/healthz", "/metrics", "/readyz" };
    for (int i = 0; i < 3; i++) {
        size_t used = admin_http_feed(&h, two + off, len - off);
        ASSERT(h.complete);
        ASSERT_STR_EQ(urls[i], h.req.url);
        ASSERT_EQ_INT(i == 1 ? 1 : 0, h.req.auth_count);
        off += used;
        /* Nothing more is taken until the request is done with. */
        ASSERT_EQ_INT(0, admin_http_feed(&h, two + off, len - off));
        admin_http_next(&h);
    }
    ASSERT_EQ_INT(len, off);
}

TEST(parse_header_name_split_and_duplicates)
{
    struct admin_http h;
    admin_http_init(&h, 0);
    const char *parts[] = { "GET / HTTP/1.1\r\nAutho", "rIzAtion: Bea", "rer abc\r\n",
                            "authorization: Bearer def\r\nX-Authorization: no\r\n\r\n" };
    for (size_t i = 0; i < 4; i++)
        ASSERT_EQ_INT(strlen(parts[i]), admin_http_feed(&h, parts[i], strlen(parts[i])));
    ASSERT(h.complete);
    ASSERT_STR_EQ("Bearer abc", h.req.auth);
    ASSERT_EQ_INT(2, h.req.auth_count);
}

TEST(parse_body_and_methods)
{
    struct admin_http h;
    admin_http_init(&h, 0);
    feed(&h, "POST /v1/stats HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 3);
    ASSERT(h.complete);
    ASSERT_EQ_INT(HTTP_POST, h.req.method);
    ASSERT_EQ_INT(5, h.req.body_bytes);
    admin_http_init(&h, 0);
    feed(&h, "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 7);
    ASSERT(h.complete);
    ASSERT_EQ_INT(3, h.req.body_bytes);
}

TEST(parse_errors)
{
    static const struct {
        const char *req;
        int status;
    } cases[] = {
        { "GARBAGE\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400 },
        { "GET / HTTP/9.1x\r\n\r\n", 400 },
        { "GET /\x01 HTTP/1.1\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct admin_http h;
        admin_http_init(&h, 0);
        feed(&h, cases[i].req, 1000);
        ASSERT(!h.complete);
        ASSERT_EQ_INT(cases[i].status, h.error);
        /* After an error nothing more is taken. */
        ASSERT_EQ_INT(0, admin_http_feed(&h, "GET / HTTP/1.1\r\n\r\n", 18));
    }
}

TEST(parse_limits)
{
    /* Headers over the limit: 431, whatever the piece size. */
    char big[4096];
    snprintf(big, sizeof big, "GET / HTTP/1.1\r\nX-Pad: %0*d\r\n\r\n", 1500, 0);
    for (size_t step = 1; step <= 2048; step *= 4) {
        struct admin_http h;
        admin_http_init(&h, 1024);
        size_t used = feed(&h, big, step);
        ASSERT_EQ_INT(431, h.error);
        ASSERT(used <= 1024);
    }
    /* Exactly at the limit is fine. */
    char exact[1024 + 1];
    int n = snprintf(exact, sizeof exact, "GET / HTTP/1.1\r\nX-Pad: ");
    int pad = 1024 - n - 4;
    memset(exact + n, 'a', (size_t)pad);
    memcpy(exact + n + pad, "\r\n\r\n", 5);
    ASSERT_EQ_INT(1024, strlen(exact));
    struct admin_http h;
    admin_http_init(&h, 1024);
    feed(&h, exact, 100);
    ASSERT(h.complete);
    /* A body over the limit: 413. */
    admin_http_init(&h, 1024);
    feed(&h, "GET / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n", 1000);
    ASSERT(!h.complete && h.error == 0);
    char body[2048];
    memset(body, 'b', sizeof body - 1);
    body[sizeof body - 1] = '\0';
    feed(&h, body, 300);
    ASSERT_EQ_INT(413, h.error);
    /* A request target over ADMIN_URL_MAX: 414 (with a bigger request limit). */
    char *longurl = xmalloc(ADMIN_URL_MAX + 64);
    n = snprintf(longurl, 16, "GET /");
    memset(longurl + n, 'u', ADMIN_URL_MAX);
    snprintf(longurl + n + ADMIN_URL_MAX, 32, " HTTP/1.1\r\n\r\n");
    admin_http_init(&h, 16384);
    feed(&h, longurl, 512);
    ASSERT_EQ_INT(414, h.error);
    free(longurl);
    /* An Authorization value that does not fit is flagged, not cut. */
    char *longauth = xmalloc(2048);
    n = snprintf(longauth, 64, "GET / HTTP/1.1\r\nAuthorization: Bearer ");
    memset(longauth + n, 't', 1000);
    snprintf(longauth + n + 1000, 16, "\r\n\r\n");
    admin_http_init(&h, 0);
    feed(&h, longauth, 100);
    ASSERT(h.complete && h.req.auth_too_long);
    free(longauth);
}

/* ---- routing, decoding, tokens ------------------------------------------------ */

TEST(route_endpoints)
{
    struct admin_target t;
    static const struct {
        const char *url;
        enum admin_route_id route;
    } cases[] = {
        { "/", ADMIN_R_PAGE },
        { "/?token=abc", ADMIN_R_PAGE },
        { "/healthz", ADMIN_R_HEALTHZ },
        { "/healthz?x=1", ADMIN_R_HEALTHZ },
        { "/readyz", ADMIN_R_READYZ },
        { "/metrics", ADMIN_R_METRICS },
        { "/v1/stats", ADMIN_R_STATS },
        { "/v1/events/oslo/ev-1", ADMIN_R_EVENT },
        { "/v1/devices/oslo/kari", ADMIN_R_DEVICES },
        { "http://127.0.0.1:9470/healthz", ADMIN_R_HEALTHZ },
        { "/healthz/", ADMIN_R_NONE },
        { "//healthz", ADMIN_R_NONE },
        { "/v1", ADMIN_R_NONE },
        { "/v1/events/oslo", ADMIN_R_NONE },
        { "/v1/events/oslo/a/b", ADMIN_R_NONE },
        { "/v1/x/y/z/a/b/c/d", ADMIN_R_NONE },
        { "/index.html", ADMIN_R_NONE },
        { "/%68ealthz", ADMIN_R_NONE },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ASSERT_EQ_INT(0, admin_route(cases[i].url, strlen(cases[i].url), &t));
        if ((int)cases[i].route != (int)t.route)
            TEST_FAIL_("%s: route %d, expected %d", cases[i].url, t.route, cases[i].route);
        ASSERT_EQ_INT(0, t.status);
    }
}

TEST(route_decodes_segments)
{
    struct admin_target t;
    const char *u = "/v1/events/oslo/msg%2F2026%20%C3%A6%3A1";
    ASSERT_EQ_INT(0, admin_route(u, strlen(u), &t));
    ASSERT_EQ_INT(ADMIN_R_EVENT, t.route);
    ASSERT_EQ_INT(0, t.status);
    ASSERT_STR_EQ("oslo", t.arg[0]);
    ASSERT_STR_EQ("msg/2026 \xC3\xA6:1", t.arg[1]);
    u = "/v1/devices/my-town_2/guardian%2D17";
    ASSERT_EQ_INT(0, admin_route(u, strlen(u), &t));
    ASSERT_EQ_INT(ADMIN_R_DEVICES, t.route);
    ASSERT_STR_EQ("my-town_2", t.arg[0]);
    ASSERT_STR_EQ("guardian-17", t.arg[1]);
    /* The query is not part of the id. */
    u = "/v1/events/oslo/ev-1?token=zzz";
    ASSERT_EQ_INT(0, admin_route(u, strlen(u), &t));
    ASSERT_STR_EQ("ev-1", t.arg[1]);
    ASSERT(!t.has_query_token);
}

TEST(route_rejects_bad_segments)
{
    static const char *const bad[] = {
        "/v1/events/oslo/a%00b",     /* NUL */
        "/v1/events/oslo/a%0Ab",     /* LF */
        "/v1/events/oslo/a%7f",      /* DEL */
        "/v1/events/oslo/a%1",       /* short escape */
        "/v1/events/oslo/a%zz",      /* bad escape */
        "/v1/events/oslo/",          /* empty id */
        "/v1/events//x",             /* empty tenant */
        "/v1/events/Oslo/x",         /* not a slug */
        "/v1/events/-oslo/x",
        "/v1/devices/os%20lo/x",
        "/v1/devices/oslo%7Bx%7D/kari",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct admin_target t;
        admin_route(bad[i], strlen(bad[i]), &t);
        if (t.status != 400)
            TEST_FAIL_("%s: status %d, expected 400", bad[i], t.status);
        ASSERT(t.route == ADMIN_R_EVENT || t.route == ADMIN_R_DEVICES);
        ASSERT_NOT_NULL(t.why);
    }
    /* A segment longer than ADMIN_SEGMENT_MAX decoded bytes. */
    char u[ADMIN_SEGMENT_MAX + 64];
    int n = snprintf(u, sizeof u, "/v1/events/oslo/");
    memset(u + n, 'x', ADMIN_SEGMENT_MAX + 1);
    u[n + ADMIN_SEGMENT_MAX + 1] = '\0';
    struct admin_target t;
    admin_route(u, strlen(u), &t);
    ASSERT_EQ_INT(400, t.status);
    u[n + ADMIN_SEGMENT_MAX] = '\0';
    admin_route(u, strlen(u), &t);
    ASSERT_EQ_INT(0, t.status);
    /* A target that is no URL at all. */
    ASSERT_EQ_INT(-1, admin_route("*", 1, &t));
    ASSERT_EQ_INT(400, t.status);
    ASSERT_EQ_INT(-1, admin_route("", 0, &t));
}

TEST(route_query_token)
{
    struct admin_target t;
    const char *u = "/?a=1&token=ab%2Bc%26d+e&b=2";
    ASSERT_EQ_INT(0, admin_route(u, strlen(u), &t));
    ASSERT_EQ_INT(ADMIN_R_PAGE, t.route);
    ASSERT(t.has_query_token);
    ASSERT_STR_EQ("ab+c&d+e", t.query_token);
    u = "/?tokenx=1&xtoken=2";
    admin_route(u, strlen(u), &t);
    ASSERT(!t.has_query_token);
    u = "/?token=%00";
    admin_route(u, strlen(u), &t);
    ASSERT(!t.has_query_token);
    u = "/?token=";
    admin_route(u, strlen(u), &t);
    ASSERT(t.has_query_token);
    ASSERT_STR_EQ("", t.query_token);
}

TEST(pct_decode)
{
    char out[8];
    ASSERT_EQ_INT(3, admin_pct_decode("a%41b", 5, out, sizeof out));
    ASSERT_STR_EQ("aAb", out);
    ASSERT_EQ_INT(-1, admin_pct_decode("%4", 2, out, sizeof out));
    ASSERT_EQ_INT(-1, admin_pct_decode("%g1", 3, out, sizeof out));
    ASSERT_EQ_INT(-1, admin_pct_decode("a\tb", 3, out, sizeof out));
    ASSERT_EQ_INT(-1, admin_pct_decode("%09", 3, out, sizeof out));
    ASSERT_EQ_INT(-1, admin_pct_decode("12345678", 8, out, sizeof out)); /* no room for NUL */
    ASSERT_EQ_INT(7, admin_pct_decode("1234567", 7, out, sizeof out));
    ASSERT_EQ_INT(0, admin_pct_decode("", 0, out, sizeof out));
}

TEST(token_check)
{
    const char *tok = "s3cret-token-0123456789";
    static const struct {
        const char *hdr;
        bool ok;
    } cases[] = {
        { "Bearer s3cret-token-0123456789", true },
        { "bearer s3cret-token-0123456789", true },
        { "BEARER \t s3cret-token-0123456789  ", true },
        { "  Bearer s3cret-token-0123456789", true },
        { "Bearer s3cret-token-012345678", false },
        { "Bearer s3cret-token-01234567890", false },
        { "Bearer S3cret-token-0123456789", false },
        { "Bearers3cret-token-0123456789", false },
        { "Basic s3cret-token-0123456789", false },
        { "s3cret-token-0123456789", false },
        { "Bearer", false },
        { "Bearer ", false },
        { "", false },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (admin_token_ok(tok, cases[i].hdr, strlen(cases[i].hdr)) != cases[i].ok)
            TEST_FAIL_("\"%s\": expected %s", cases[i].hdr, cases[i].ok ? "ok" : "refused");
    }
    ASSERT(!admin_token_ok(NULL, "Bearer x", 8));
}

/* ---- the server on a socket ------------------------------------------------------ */

struct rig {
    uv_loop_t loop;
    struct admin *admin;
    struct pipeline_app app;
    int port;
};

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    ASSERT_EQ_INT(0, bind(fd, (struct sockaddr *)&sa, sizeof sa));
    socklen_t l = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &l);
    close(fd);
    return ntohs(sa.sin_port);
}

/* An admin server whose Redis is unreachable (port 1), with small limits. */
static void rig_start(struct rig *r, const char *token)
{
    memset(r, 0, sizeof *r);
    log_set_level(LOG_ERROR);
    stats_init("test");
    ASSERT_EQ_INT(0, uv_loop_init(&r->loop));
    r->port = free_port();
    r->app.name = "demo";
    struct admin_config c = {
        .host = "127.0.0.1",
        .port = r->port,
        .token = token,
        .redis = { .name = "admin", .host = "127.0.0.1", .port = 1 },
        .stream = "varsel:events",
        .group = "varsel",
        .prefix = "varsel:",
        .apps = &r->app,
        .n_apps = 1,
        .version = "test",
        .max_connections = 4,
        .max_request = 2048,
        .request_timeout_ms = 300,
        .redis_timeout_ms = 200,
    };
    char err[128];
    ASSERT_EQ_INT(0, admin_new(&r->loop, &c, &r->admin, err, sizeof err));
    struct admin_stats st;
    admin_get_stats(r->admin, &st);
    ASSERT(st.listening);
}

static void spin(struct rig *r, int ms)
{
    uint64_t end = mono_ms() + (uint64_t)ms;
    do {
        uv_run(&r->loop, UV_RUN_NOWAIT);
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    } while (mono_ms() < end);
}

/* Close the server and check the loop ends with nothing left open. */
static void rig_stop(struct rig *r)
{
    admin_close(r->admin);
    for (int i = 0; i < 100 && uv_run(&r->loop, UV_RUN_NOWAIT) != 0; i++)
        spin(r, 5);
    ASSERT_EQ_INT(0, uv_loop_close(&r->loop));
    stats_free();
}

static int dial(struct rig *r)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)r->port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    ASSERT_EQ_INT(0, connect(fd, (struct sockaddr *)&sa, sizeof sa));
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

static void say(int fd, const char *s)
{
    ASSERT_EQ_INT((long)strlen(s), (long)send(fd, s, strlen(s), MSG_NOSIGNAL));
}

/*
 * Read what the server sends within |ms| (running the loop meanwhile) into
 * |buf|; stops early after |want| complete answers or at EOF. Returns the
 * bytes read; *eof tells whether the server closed.
 */
static size_t hear(struct rig *r, int fd, char *buf, size_t cap, int want, int ms, bool *eof)
{
    size_t len = 0;
    *eof = false;
    buf[0] = '\0'; /* nothing heard yet: the answer count below reads buf */
    uint64_t end = mono_ms() + (uint64_t)ms;
    while (mono_ms() < end) {
        spin(r, 2);
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
            *eof = true;
            break;
        }
        if (n > 0) {
            len += (size_t)n;
            buf[len] = '\0';
        }
        /* Count complete answers by their Content-Length. */
        int done = 0;
        const char *p = buf;
        while (p && *p) {
            const char *he = strstr(p, "\r\n\r\n");
            const char *cl = strstr(p, "Content-Length: ");
            if (!he || !cl || cl > he)
                break;
            size_t blen = strtoul(cl + 16, NULL, 10);
            if ((size_t)(buf + len - (he + 4)) < blen)
                break;
            done++;
            p = he + 4 + blen;
        }
        if (want > 0 && done >= want)
            break;
    }
    buf[len] = '\0';
    return len;
}

TEST(server_keep_alive_pipelining_and_errors)
{
    struct rig r;
    rig_start(&r, NULL);
    int fd = dial(&r);
    char buf[16384];
    bool eof;
    /* Three pipelined requests in one packet, answered in order. */
    say(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\n\r\n"
            "POST /healthz HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi");
    hear(&r, fd, buf, sizeof buf, 3, 2000, &eof);
    ASSERT(!eof);
    const char *a = strstr(buf, "HTTP/1.1 200 OK\r\n");
    const char *b = strstr(buf, "HTTP/1.1 404 Not Found\r\n");
    const char *c = strstr(buf, "HTTP/1.1 405 Method Not Allowed\r\n");
    ASSERT(a && b && c && a < b && b < c);
    ASSERT_STR_CONTAINS(buf, "\r\n\r\nok");
    ASSERT_STR_CONTAINS(buf, "{\"error\":\"not found\"}");
    ASSERT_STR_CONTAINS(buf, "Allow: GET\r\n");
    ASSERT_STR_CONTAINS(buf, "Connection: keep-alive\r\n");
    /* Same connection: the metrics, then a malformed request closes it. */
    say(fd, "GET /metrics HTTP/1.1\r\n\r\n");
    hear(&r, fd, buf, sizeof buf, 1, 2000, &eof);
    ASSERT_STR_CONTAINS(buf, "Content-Type: text/plain; version=0.0.4");
    ASSERT_STR_CONTAINS(buf, "varsel_build_info{version=\"test\"} 1");
    say(fd, "BLAH\r\n\r\n");
    hear(&r, fd, buf, sizeof buf, 0, 3000, &eof);
    ASSERT_STR_CONTAINS(buf, "HTTP/1.1 400 Bad Request\r\n");
    ASSERT_STR_CONTAINS(buf, "Connection: close\r\n");
    ASSERT(eof);
    close(fd);
    /* HTTP/1.0 without keep-alive: answered, then closed. */
    fd = dial(&r);
    say(fd, "GET /healthz HTTP/1.0\r\n\r\n");
    hear(&r, fd, buf, sizeof buf, 0, 3000, &eof);
    ASSERT_STR_CONTAINS(buf, "HTTP/1.1 200 OK\r\n");
    ASSERT(eof);
    close(fd);
    struct admin_stats st;
    admin_get_stats(r.admin, &st);
    ASSERT_EQ_INT(6, st.requests);
    ASSERT_EQ_INT(3, st.status_2xx);
    ASSERT_EQ_INT(3, st.status_4xx); /* 404, 405, 400 */
    rig_stop(&r);
}

TEST(server_limits)
{
    struct rig r;
    rig_start(&r, NULL);
    char buf[8192];
    bool eof;
    /* Headers over max_request (2048): 431 and closed; the rest unread. */
    int fd = dial(&r);
    char big[6000];
    snprintf(big, sizeof big, "GET / HTTP/1.1\r\nX-Pad: %0*d\r\n\r\n", 5000, 0);
    say(fd, big);
    hear(&r, fd, buf, sizeof buf, 0, 3000, &eof);
    ASSERT_STR_CONTAINS(buf, "HTTP/1.1 431 Request Header Fields Too Large\r\n");
    ASSERT(eof);
    close(fd);
    /* A body over the limit: 413. */
    fd = dial(&r);
    say(fd, "GET /healthz HTTP/1.1\r\nContent-Length: 100000\r\n\r\n");
    char body[3000];
    memset(body, 'x', sizeof body - 1);
    body[sizeof body - 1] = '\0';
    say(fd, body);
    hear(&r, fd, buf, sizeof buf, 0, 3000, &eof);
    ASSERT_STR_CONTAINS(buf, "HTTP/1.1 413 ");
    ASSERT(eof);
    close(fd);
    /* Connection cap (4): the fifth is closed at once. */
    int fds[5];
    for (int i = 0; i < 5; i++)
        fds[i] = dial(&r);
    spin(&r, 50);
    hear(&r, fds[4], buf, sizeof buf, 0, 500, &eof);
    ASSERT(eof);
    ASSERT_EQ_INT(0, strlen(buf));
    /* The first four still work. */
    for (int i = 0; i < 4; i++) {
        say(fds[i], "GET /healthz HTTP/1.1\r\n\r\n");
        hear(&r, fds[i], buf, sizeof buf, 1, 2000, &eof);
        ASSERT_STR_CONTAINS(buf, "200 OK");
    }
    struct admin_stats st;
    admin_get_stats(r.admin, &st);
    ASSERT_EQ_INT(1, st.rejected);
    ASSERT_EQ_INT(4, st.open);
    for (int i = 0; i < 5; i++)
        close(fds[i]);
    spin(&r, 50);
    admin_get_stats(r.admin, &st);
    ASSERT_EQ_INT(0, st.open);
    rig_stop(&r);
}

TEST(server_deadlines)
{
    struct rig r;
    rig_start(&r, NULL);
    char buf[4096];
    bool eof;
    /* Slowloris: half a request, one more byte now and then: 408 at 300 ms. */
    int slow = dial(&r), idle = dial(&r);
    say(slow, "GET /healthz HTTP/1.1\r\nX-A: ");
    uint64_t t0 = mono_ms();
    for (int i = 0; i < 3; i++) {
        spin(&r, 60);
        say(slow, "a");
    }
    hear(&r, slow, buf, sizeof buf, 0, 2000, &eof);
    uint64_t took = mono_ms() - t0;
    ASSERT_STR_CONTAINS(buf, "HTTP/1.1 408 Request Timeout\r\n");
    ASSERT(eof);
    ASSERT(took >= 250 && took < 1500);
    /* Idle keep-alive connection: closed without a word. */
    hear(&r, idle, buf, sizeof buf, 0, 1000, &eof);
    ASSERT(eof);
    ASSERT_EQ_INT(0, strlen(buf));
    close(slow);
    close(idle);
    struct admin_stats st;
    admin_get_stats(r.admin, &st);
    ASSERT_EQ_INT(2, st.timeouts);
    rig_stop(&r);
}

TEST(server_auth_and_redis_down)
{
    struct rig r;
    rig_start(&r, "tok-0123456789abcdef");
    char buf[16384];
    bool eof;
    int fd = dial(&r);
    /* Open endpoints. */
    say(fd, "GET /healthz HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n");
    hear(&r, fd, buf, sizeof buf, 2, 2000, &eof);
    ASSERT_STR_CONTAINS(buf, "HTTP/1.1 200 OK");
    ASSERT(strstr(buf, "401") == NULL);
    /* The rest needs the token. */
    static const char *const closed[] = { "/", "/readyz", "/v1/stats", "/v1/events/oslo/e1",
                                          "/v1/devices/oslo/kari", "/v1/events/BAD/x" };
    for (size_t i = 0; i < sizeof closed / sizeof closed[0]; i++) {
        char req[256];
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\n\r\n", closed[i]);
        say(fd, req);
        hear(&r, fd, buf, sizeof buf, 1, 2000, &eof);
        ASSERT_STR_CONTAINS(buf, "HTTP/1.1 401 Unauthorized\r\n");
        ASSERT_STR_CONTAINS(buf, "WWW-Authenticate: Bearer");
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nAuthorization: Bearer nope\r\n\r\n",
                 closed[i]);
        say(fd, req);
        hear(&r, fd, buf, sizeof buf, 1, 2000, &eof);
        ASSERT_STR_CONTAINS(buf, "HTTP/1.1 401 Unauthorized\r\n");
    }
    /* Two Authorization headers are refused even if one is right. */
    say(fd, "GET /v1/stats HTTP/1.1\r\nAuthorization: Bearer tok-0123456789abcdef\r\n"
            "Authorization: Bearer x\r\n\r\n");
    hear(&r, fd, buf, sizeof buf, 1, 2000, &eof);
    ASSERT_STR_CONTAINS(buf, "401");
    /* With the token. */
    say(fd, "GET /v1/stats HTTP/1.1\r\nAuthorization: Bearer tok-0123456789abcdef\r\n\r\n");
    hear(&r, fd, buf, sizeof buf, 1, 2000, &eof);
    ASSERT_STR_CONTAINS(buf, "HTTP/1.1 200 OK\r\n");
    ASSERT_STR_CONTAINS(buf, "\"families\":{");
    ASSERT_STR_CONTAINS(buf, "\"admin\":{");
    ASSERT_STR_CONTAINS(buf, "\"time_ms\":");
    /* A bad tenant, once authenticated: 400. */
    say(fd, "GET /v1/events/BAD/x HTTP/1.1\r\nAuthorization: Bearer tok-0123456789abcdef\r\n\r\n");
    hear(&r, fd, buf, sizeof buf, 1, 2000, &eof);
    ASSERT_STR_CONTAINS(buf, "HTTP/1.1 400 Bad Request\r\n");
    /* The page takes the token from the query too; the API does not. */
    say(fd, "GET /?token=tok-0123456789abcdef HTTP/1.1\r\n\r\n");
    hear(&r, fd, buf, sizeof buf, 1, 2000, &eof);
    ASSERT_STR_CONTAINS(buf, "HTTP/1.1 200 OK\r\n");
    ASSERT_STR_CONTAINS(buf, "Content-Type: text/html");
    ASSERT_STR_CONTAINS(buf, "Content-Security-Policy: default-src 'none'");
    ASSERT_STR_CONTAINS(buf, "id=\"backlog-lag\"");
    say(fd, "GET /v1/stats?token=tok-0123456789abcdef HTTP/1.1\r\n\r\n");
    hear(&r, fd, buf, sizeof buf, 1, 2000, &eof);
    ASSERT_STR_CONTAINS(buf, "401");
    /* Redis is unreachable: readyz says why; lookups get 503. */
    say(fd, "GET /readyz HTTP/1.1\r\nAuthorization: bearer tok-0123456789abcdef\r\n\r\n");
    hear(&r, fd, buf, sizeof buf, 1, 2000, &eof);
    ASSERT_STR_CONTAINS(buf, "HTTP/1.1 503 Service Unavailable\r\n");
    ASSERT_STR_CONTAINS(buf, "\"ready\":false");
    ASSERT_STR_CONTAINS(buf, "redis: the admin connection is down");
    ASSERT_STR_CONTAINS(buf, "redis: the pipeline's cmd connection is down");
    ASSERT_STR_CONTAINS(buf, "app demo: no provider client");
    say(fd, "GET /v1/devices/oslo/kari HTTP/1.1\r\nAuthorization: Bearer tok-0123456789abcdef\r\n\r\n");
    hear(&r, fd, buf, sizeof buf, 1, 2000, &eof);
    ASSERT_STR_CONTAINS(buf, "HTTP/1.1 503 ");
    ASSERT_STR_CONTAINS(buf, "redis is not connected");
    ASSERT(!eof);
    /* Stopping: readyz says so too. */
    admin_set_stopping(r.admin);
    say(fd, "GET /readyz HTTP/1.1\r\nAuthorization: Bearer tok-0123456789abcdef\r\n\r\n");
    hear(&r, fd, buf, sizeof buf, 1, 2000, &eof);
    ASSERT_STR_CONTAINS(buf, "shutting down");
    /* Closing with a connection open ends it. */
    admin_close(r.admin);
    r.admin = NULL;
    hear(&r, fd, buf, sizeof buf, 0, 1000, &eof);
    ASSERT(eof);
    close(fd);
    rig_stop(&r);
}

TEST(server_bind_conflict_retries)
{
    /* The port is taken: admin_new still succeeds, not listening. */
    int hold = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(hold, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct rig r;
    rig_start(&r, NULL);
    struct admin_stats st;
    admin_close(r.admin);
    spin(&r, 20);
    /* Start a second server on the first one's port while it is held. */
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)r.port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    ASSERT_EQ_INT(0, bind(hold, (struct sockaddr *)&sa, sizeof sa));
    ASSERT_EQ_INT(0, listen(hold, 4));
    struct admin_config c = { .host = "127.0.0.1", .port = r.port,
                              .redis = { .host = "127.0.0.1", .port = 1 } };
    char err[128];
    struct admin *a2 = NULL;
    ASSERT_EQ_INT(0, admin_new(&r.loop, &c, &a2, err, sizeof err));
    admin_get_stats(a2, &st);
    ASSERT(!st.listening);
    admin_close(a2);
    close(hold);
    /* A bad literal is refused outright. */
    c.host = "localhost";
    ASSERT_EQ_INT(-1, admin_new(&r.loop, &c, &a2, err, sizeof err));
    ASSERT_STR_CONTAINS(err, "[admin] listen");
    r.admin = NULL;
    rig_stop(&r);
}

/* ---- the [admin] keys ------------------------------------------------------------ */

/* Load "[admin]\n|admin|" plus a minimal app from a temp dir; returns the
 * config or NULL with the error in |err|. */
static struct config *load_admin(const char *admin, char *err, size_t errlen)
{
    char dir[] = "/tmp/varsel-admin-cfg-XXXXXX";
    ASSERT_NOT_NULL(mkdtemp(dir));
    char path[128], sa[128];
    snprintf(sa, sizeof sa, "%s/sa.json", dir);
    FILE *fp = fopen(sa, "w");
    fputs("{\"project_id\":\"p\",\"client_email\":\"a@b\",\"private_key\":\"k\","
          "\"token_uri\":\"https://oauth2.googleapis.com/token\"}", fp);
    fclose(fp);
    snprintf(path, sizeof path, "%s/v.ini", dir);
    fp = fopen(path, "w");
    fprintf(fp, "[admin]\n%s[app demo]\nfcm_service_account_file = sa.json\n", admin);
    fclose(fp);
    struct config *cfg = NULL;
    config_load(path, &cfg, err, errlen);
    unlink(sa);
    unlink(path);
    rmdir(dir);
    return cfg;
}

TEST(config_admin_keys)
{
    char err[512];
    struct config *cfg = load_admin("", err, sizeof err);
    ASSERT_NOT_NULL(cfg);
    ASSERT(cfg->admin.enabled && cfg->admin.loopback);
    ASSERT_STR_EQ("127.0.0.1", cfg->admin.host);
    ASSERT_EQ_INT(9470, cfg->admin.port);
    ASSERT_NULL(cfg->admin.token);
    config_free(cfg);
    static const char *const off[] = { "listen = off\n", "listen = OFF\n", "listen =\n" };
    for (size_t i = 0; i < 3; i++) {
        cfg = load_admin(off[i], err, sizeof err);
        ASSERT_NOT_NULL(cfg);
        ASSERT(!cfg->admin.enabled);
        config_free(cfg);
    }
    cfg = load_admin("listen = [::1]:9999\n", err, sizeof err);
    ASSERT_NOT_NULL(cfg);
    ASSERT(cfg->admin.enabled && cfg->admin.loopback);
    ASSERT_STR_EQ("::1", cfg->admin.host);
    ASSERT_EQ_INT(9999, cfg->admin.port);
    config_free(cfg);
    cfg = load_admin("listen = 127.8.9.1:80\n", err, sizeof err);
    ASSERT(cfg && cfg->admin.loopback);
    config_free(cfg);
    /* Not loopback: a token is required, and the error names the key. */
    static const char *const open_addr[] = { "listen = 0.0.0.0:9470\n", "listen = [::]:9470\n",
                                             "listen = 10.1.2.3:9470\n",
                                             "listen = [::ffff:10.0.0.1]:1\n" };
    for (size_t i = 0; i < 4; i++) {
        ASSERT_NULL(load_admin(open_addr[i], err, sizeof err));
        ASSERT_STR_CONTAINS(err, ":2: [admin] token: required when [admin] listen");
        ASSERT_STR_CONTAINS(err, "is not a loopback address");
        char with[160];
        snprintf(with, sizeof with, "%stoken = 0123456789abcdef-XYZ\n", open_addr[i]);
        cfg = load_admin(with, err, sizeof err);
        ASSERT_NOT_NULL(cfg);
        ASSERT(cfg->admin.enabled && !cfg->admin.loopback);
        ASSERT_STR_EQ("0123456789abcdef-XYZ", cfg->admin.token);
        config_free(cfg);
    }
    cfg = load_admin("listen = [::ffff:127.0.0.1]:1\n", err, sizeof err);
    ASSERT(cfg && cfg->admin.loopback);
    config_free(cfg);
    /* Bad addresses. */
    static const char *const bad[] = { "listen = localhost:9470\n", "listen = 127.0.0.1\n",
                                       "listen = 127.0.0.1:0\n", "listen = 127.0.0.1:70000\n",
                                       "listen = ::1:9470\n", "listen = [::1]\n",
                                       "listen = 256.1.1.1:1\n", "listen = :9470\n" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (load_admin(bad[i], err, sizeof err) != NULL)
            TEST_FAIL_("accepted: %s", bad[i]);
        ASSERT_STR_CONTAINS(err, "[admin] listen: expected IPv4:port, [IPv6]:port or off");
    }
    /* Tokens: length and characters; a refused token is never echoed. */
    ASSERT_NULL(load_admin("token = short\n", err, sizeof err));
    ASSERT_STR_CONTAINS(err, "[admin] token: expected 16..256 characters");
    ASSERT_NULL(load_admin("token = 0123456789abcdef\xc3\xa6\n", err, sizeof err));
    ASSERT_STR_CONTAINS(err, "[admin] token: expected printable ASCII without spaces");
    ASSERT(strstr(err, "0123456789abcdef") == NULL);
    ASSERT_NULL(load_admin("token =\n", err, sizeof err));
    ASSERT_STR_CONTAINS(err, "[admin] token: empty value");
    ASSERT_NULL(load_admin("bind = 1\n", err, sizeof err));
    ASSERT_STR_CONTAINS(err, "[admin] bind: unknown key");
}

TEST(server_on_ipv6_loopback)
{
    uv_loop_t loop;
    ASSERT_EQ_INT(0, uv_loop_init(&loop));
    log_set_level(LOG_ERROR);
    stats_init("test");
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_addr = in6addr_loopback };
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        /* No IPv6 on this machine: nothing to check. */
        close(fd);
        return;
    }
    socklen_t l = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &l);
    close(fd);
    struct admin_config c = { .host = "::1", .port = ntohs(sa.sin6_port),
                              .redis = { .host = "127.0.0.1", .port = 1 } };
    char err[128];
    struct admin *a = NULL;
    ASSERT_EQ_INT(0, admin_new(&loop, &c, &a, err, sizeof err));
    struct admin_stats st;
    admin_get_stats(a, &st);
    ASSERT(st.listening);
    fd = socket(AF_INET6, SOCK_STREAM, 0);
    ASSERT_EQ_INT(0, connect(fd, (struct sockaddr *)&sa, sizeof sa));
    say(fd, "GET /healthz HTTP/1.0\r\n\r\n");
    fcntl(fd, F_SETFL, O_NONBLOCK);
    char buf[1024];
    size_t len = 0;
    for (int i = 0; i < 2000; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        ssize_t n = recv(fd, buf + len, sizeof buf - 1 - len, 0);
        if (n == 0)
            break;
        if (n > 0)
            len += (size_t)n;
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
    buf[len] = '\0';
    ASSERT_STR_CONTAINS(buf, "HTTP/1.1 200 OK");
    close(fd);
    admin_close(a);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_EQ_INT(0, uv_loop_close(&loop));
    stats_free();
}

TEST_MAIN(T(parse_simple_get_any_split), T(parse_keep_alive_rules), T(parse_pipelined_requests),
          T(parse_header_name_split_and_duplicates), T(parse_body_and_methods), T(parse_errors),
          T(parse_limits), T(route_endpoints), T(route_decodes_segments),
          T(route_rejects_bad_segments), T(route_query_token), T(pct_decode), T(token_check),
          T(server_keep_alive_pipelining_and_errors), T(server_limits), T(server_deadlines),
          T(server_auth_and_redis_down), T(server_bind_conflict_retries),
          T(config_admin_keys), T(server_on_ipv6_loopback))
