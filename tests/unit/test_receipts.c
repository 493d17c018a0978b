/*
 * The settle batch (queue/receipts.c): how the script's reply reaches each
 * settlement's callback, and, against a real redis-server (started here
 * on a free loopback port, stopped by PID), what a batch writes: a status hash of the wrong type
 * fails only its own settlements, the later of two settlements of one
 * device wins, a batch with more distinct strings than the string table
 * holds settles everything, and a batch of one that clears a retry.
 */
#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <stdarg.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "queue/receipts.h"
#include "queue/redis.h"
#include "tests/unit/test.h"

/* ---- reply dispatch, no server -------------------------------------------- */

TEST(reply_count_gives_each_an_integer_1)
{
    redisReply all = { .type = REDIS_REPLY_INTEGER, .integer = 3 };
    for (size_t i = 0; i < 3; i++) {
        redisReply *r = receipts_batch_reply_for(&all, 3, i);
        ASSERT_NOT_NULL(r);
        ASSERT_EQ_INT(REDIS_REPLY_INTEGER, r->type);
        ASSERT_EQ_INT(1, (int)r->integer);
    }
}

TEST(reply_wrong_count_or_shape_is_an_error)
{
    redisReply two = { .type = REDIS_REPLY_INTEGER, .integer = 2 };
    redisReply neg = { .type = REDIS_REPLY_INTEGER, .integer = -3 };
    redisReply st = { .type = REDIS_REPLY_STATUS, .str = "OK", .len = 2 };
    redisReply e1 = { .type = REDIS_REPLY_INTEGER, .integer = 1 };
    redisReply *els[2] = { &e1, &e1 };
    redisReply shortarr = { .type = REDIS_REPLY_ARRAY, .elements = 2, .element = els };
    redisReply *bad[] = { &two, &neg, &st, &shortarr };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++)
        for (size_t i = 0; i < 3; i++) {
            redisReply *r = receipts_batch_reply_for(bad[k], 3, i);
            ASSERT_NOT_NULL(r);
            ASSERT_EQ_INT(REDIS_REPLY_ERROR, r->type);
        }
}

TEST(reply_array_gives_each_its_element_errors_pass_through)
{
    redisReply ok = { .type = REDIS_REPLY_INTEGER, .integer = 1 };
    redisReply err = { .type = REDIS_REPLY_ERROR, .str = "WRONGTYPE x", .len = 11 };
    redisReply *els[3] = { &ok, &err, &ok };
    redisReply arr = { .type = REDIS_REPLY_ARRAY, .elements = 3, .element = els };
    ASSERT(receipts_batch_reply_for(&arr, 3, 0) == &ok);
    ASSERT(receipts_batch_reply_for(&arr, 3, 1) == &err);
    ASSERT(receipts_batch_reply_for(&arr, 3, 2) == &ok);
    redisReply whole = { .type = REDIS_REPLY_ERROR, .str = "NOSCRIPT", .len = 8 };
    ASSERT(receipts_batch_reply_for(&whole, 3, 1) == &whole);
    ASSERT_NULL(receipts_batch_reply_for(NULL, 3, 1));
}

/* ---- against redis-server ------------------------------------------------- */

static pid_t server_pid;
static int server_port;

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t l = sizeof a;
    ASSERT(bind(s, (struct sockaddr *)&a, sizeof a) == 0);
    ASSERT(getsockname(s, (struct sockaddr *)&a, &l) == 0);
    close(s);
    return ntohs(a.sin_port);
}

static void server_stop(void)
{
    if (server_pid > 0) {
        kill(server_pid, SIGTERM);
        waitpid(server_pid, NULL, 0);
        server_pid = 0;
    }
}

/* Start redis-server (scripts/setup.sh installs it; a missing one fails
 * the test: nothing is skipped). */
static bool server_start(void)
{
    if (system("command -v redis-server >/dev/null 2>&1") != 0) {
        TEST_FAIL_("no redis-server on PATH (scripts/setup.sh installs it)");
        return false;
    }
    server_port = free_port();
    char port[16];
    snprintf(port, sizeof port, "%d", server_port);
    server_pid = fork();
    if (server_pid == 0) {
        freopen("/dev/null", "w", stdout);
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no", (char *)NULL);
        _exit(127);
    }
    atexit(server_stop);
    for (int i = 0; i < 200; i++) {
        redisContext *c = redisConnect("127.0.0.1", server_port);
        if (c && !c->err) {
            redisReply *r = redisCommand(c, "PING");
            bool up = r && r->type == REDIS_REPLY_STATUS;
            freeReplyObject(r);
            redisFree(c);
            if (up)
                return true;
        } else if (c) {
            redisFree(c);
        }
        usleep(25 * 1000);
    }
    TEST_FAIL_("redis-server did not start");
    return false;
}

struct outcome {
    int calls;
    int type;        /* reply type, -1 for NULL */
    long long value; /* integer replies */
};

static void on_settled(redisAsyncContext *ac, void *reply_, void *priv)
{
    struct outcome *o = priv;
    redisReply *r = reply_;
    o->calls++;
    o->type = r ? r->type : -1;
    o->value = r && r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
}

static bool ready;
static void on_ready(struct redis_conn *c, void *u) { ready = true; }
static void on_down(struct redis_conn *c, void *u) { ready = false; }

static struct redis_conn *connect_async(uv_loop_t *loop)
{
    struct redis_conn_config cfg = { .name = "test", .host = "127.0.0.1", .port = server_port };
    struct redis_conn *c = redis_conn_new(loop, &cfg, on_ready, on_down, NULL);
    receipts_init(c);
    for (int i = 0; i < 500 && !ready; i++)
        uv_run(loop, UV_RUN_ONCE);
    ASSERT(ready);
    return c;
}

static void run_until(uv_loop_t *loop, const struct outcome *o, size_t n)
{
    for (int spins = 0; spins < 2000; spins++) {
        size_t done = 0;
        for (size_t i = 0; i < n; i++)
            done += o[i].calls > 0;
        if (done == n)
            return;
        uv_run(loop, UV_RUN_ONCE);
    }
    TEST_FAIL_("callbacks did not all come");
}

static redisContext *sync_conn(void)
{
    redisContext *c = redisConnect("127.0.0.1", server_port);
    ASSERT(c && !c->err);
    return c;
}

static redisReply *cmd(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    ASSERT_NOT_NULL(r);
    return r;
}

static const struct settle_keys keys = { .prefix = "t:", .receipts_maxlen = 100000,
                                         .dead_maxlen = 1000, .status_ttl_s = 3600,
                                         .dead_payload_ttl_s = 60 };

/* The value of |field| in a receipt stream entry's field list. */
static const char *entry_field(const redisReply *fields, const char *name)
{
    for (size_t i = 0; i + 1 < fields->elements; i += 2)
        if (strcmp(fields->element[i]->str, name) == 0)
            return fields->element[i + 1]->str;
    return NULL;
}

/* A redis-server of its own, a sync connection for the checks, and an
 * async one with a settle batch on its own loop. */
struct rig {
    redisContext *s;
    uv_loop_t loop;
    struct redis_conn *c;
    struct receipts_batch *b;
};

static void rig_open(struct rig *g, const struct settle_keys *k)
{
    ASSERT(server_start());
    g->s = sync_conn();
    uv_loop_init(&g->loop);
    g->c = connect_async(&g->loop);
    g->b = receipts_batch_new(&g->loop, g->c, k);
}

static void rig_close(struct rig *g)
{
    receipts_batch_close(g->b);
    redis_conn_close(g->c);
    uv_run(&g->loop, UV_RUN_DEFAULT);
    uv_loop_close(&g->loop);
    redisFree(g->s);
    server_stop();
}

/*
 * One batch of 300 settlements over 20 events, with 100 distinct reasons
 * (more strings than the table holds: the batch is split), some retries
 * and give-ups, two settlements of one device (the later status stays),
 * and one event whose status hash has the wrong type.
 */
TEST(batch_against_redis)
{
    struct rig g;
    rig_open(&g, &keys);
    redisContext *s = g.s;
    uv_loop_t *loop = &g.loop;
    struct receipts_batch *b = g.b;
    freeReplyObject(cmd(s, "SET t:{ten}:status:ev-bad x"));
    enum { N = 299 };
    static struct outcome out[N + 1];
    char ev[N + 1][32], user[N + 1][32], dev[N + 1][32], reason[N + 1][32], pid[N + 1][32],
        rid[N + 1][32];
    for (int i = 0; i < N + 1; i++) {
        snprintf(ev[i], sizeof ev[i], i % 20 == 7 ? "ev-bad" : "ev-%d", i % 20);
        snprintf(user[i], sizeof user[i], "u%d", i);
        snprintf(dev[i], sizeof dev[i], "d%d", i);
        snprintf(reason[i], sizeof reason[i], i % 3 ? "" : "reason-%d", i);
        snprintf(pid[i], sizeof pid[i], "p%d", i);
        snprintf(rid[i], sizeof rid[i], "r%d", i);
    }
    for (int i = 0; i < N + 1; i++) {
        struct receipt r = { .event = ev[i], .tenant = "ten", .user = user[i], .device = dev[i],
                             .platform = i % 2 ? "ios" : "android", .app = "app",
                             .status = i % 10 == 3 ? "retrying" : "sent",
                             .attempt = 1 + i % 4, .provider_id = pid[i],
                             .http_status = i % 5 ? 200 : 410, .reason = reason[i],
                             .latency_ms = i, .at_ms = 1700000000000 + i };
        struct settle_opts o = { SETTLE_FINAL, NULL, 0, NULL, NULL };
        if (i % 10 == 3)
            o = (struct settle_opts){ SETTLE_RETRY, rid[i], 5000 + i, "{\"x\":1}", NULL };
        else if (i % 10 == 5)
            o = (struct settle_opts){ SETTLE_GIVE_UP, rid[i], 0, "{\"y\":2}", "too old" };
        ASSERT_EQ_INT(0, receipts_batch_add(b, &r, &o, on_settled, &out[i]));
    }
    run_until(loop, out, N + 1);
    for (int i = 0; i < N + 1; i++) {
        ASSERT_EQ_INT(1, out[i].calls);
        if (strcmp(ev[i], "ev-bad") == 0) {
            ASSERT_EQ_INT(REDIS_REPLY_ERROR, out[i].type);
        } else {
            if (out[i].type != REDIS_REPLY_INTEGER || out[i].value != 1)
                TEST_FAIL_("settlement %d: type %d value %lld", i, out[i].type,
                           out[i].value);
        }
    }
    /* The table overflowed: the settlements went in several script runs. */
    redisReply *info = cmd(s, "INFO commandstats");
    const char *calls = strstr(info->str, "cmdstat_evalsha:calls=");
    ASSERT_NOT_NULL(calls);
    ASSERT(atoi(calls + 22) >= 3);
    freeReplyObject(info);
    /* Every receipt is written, in order, with its values. */
    redisReply *x = cmd(s, "XRANGE t:receipts - +");
    ASSERT_EQ_INT(N + 1, (int)x->elements);
    for (int i = 0; i < N + 1; i++) {
        redisReply *f = x->element[i]->element[1];
        ASSERT_EQ_INT(26, (int)f->elements);
        ASSERT_STR_EQ("event", f->element[0]->str);
        ASSERT_STR_EQ("at", f->element[24]->str);
        ASSERT_STR_EQ(ev[i], entry_field(f, "event"));
        ASSERT_STR_EQ(user[i], entry_field(f, "user"));
        ASSERT_STR_EQ(dev[i], entry_field(f, "device"));
        ASSERT_STR_EQ(pid[i], entry_field(f, "provider_id"));
        ASSERT_STR_EQ(reason[i], entry_field(f, "reason"));
        ASSERT_STR_EQ(i % 2 ? "ios" : "android", entry_field(f, "platform"));
        ASSERT_STR_EQ(i % 5 ? "200" : "410", entry_field(f, "http_status"));
        char t[32];
        snprintf(t, sizeof t, "%d", 1 + i % 4);
        ASSERT_STR_EQ(t, entry_field(f, "attempt"));
        snprintf(t, sizeof t, "%lld", 1700000000000LL + i);
        ASSERT_STR_EQ(t, entry_field(f, "at"));
    }
    freeReplyObject(x);
    /* Statuses: the good events' all written with a TTL, the bad one untouched. */
    for (int i = 0; i < N + 1; i++) {
        if (strcmp(ev[i], "ev-bad") == 0)
            continue;
        redisReply *r = cmd(s, "HGET t:{ten}:status:%s %s:%s", ev[i], user[i], dev[i]);
        ASSERT_EQ_INT(REDIS_REPLY_STRING, r->type);
        ASSERT_STR_EQ(i % 10 == 3 ? "retrying" : "sent", r->str);
        freeReplyObject(r);
    }
    redisReply *r = cmd(s, "TTL t:{ten}:status:ev-0");
    ASSERT(r->integer > 3000 && r->integer <= 3600);
    freeReplyObject(r);
    r = cmd(s, "GET t:{ten}:status:ev-bad");
    ASSERT_STR_EQ("x", r->str);
    freeReplyObject(r);
    /* Retries scheduled, give-ups dead-lettered with their payload. */
    r = cmd(s, "ZSCORE t:retry r13");
    ASSERT_STR_EQ("5013", r->str);
    freeReplyObject(r);
    r = cmd(s, "HGET t:retry:data r13");
    ASSERT_STR_EQ("{\"x\":1}", r->str);
    freeReplyObject(r);
    r = cmd(s, "XRANGE t:dead - + COUNT 1");
    ASSERT_EQ_INT(1, (int)r->elements);
    ASSERT_STR_EQ("too old", entry_field(r->element[0]->element[1], "reason"));
    ASSERT_STR_EQ("delivery_sent", entry_field(r->element[0]->element[1], "code"));
    ASSERT_STR_EQ("u5", entry_field(r->element[0]->element[1], "user"));
    ASSERT_STR_EQ("t:dead:payload:ten:u5:d5:ev-5",
                  entry_field(r->element[0]->element[1], "original_key"));
    freeReplyObject(r);
    r = cmd(s, "GET t:dead:payload:ten:u5:d5:ev-5");
    ASSERT_STR_EQ("{\"y\":2}", r->str);
    freeReplyObject(r);
    r = cmd(s, "XLEN t:dead");
    ASSERT_EQ_INT((N + 1) / 10, (int)r->integer);
    freeReplyObject(r);

    /* One batch, all succeeding (the script answers the count): two
     * settlements of one device, the later status stays. */
    static struct outcome two[4];
    const char *st2[4] = { "sent", "retrying", "sent", "failed" };
    const char *dv2[4] = { "dA", "dB", "dC", "dA" };
    for (int i = 0; i < 4; i++) {
        struct receipt r2 = { .event = "ev-two", .tenant = "ten", .user = "w", .device = dv2[i],
                              .platform = "ios", .app = "app", .status = st2[i], .attempt = 1,
                              .provider_id = "", .http_status = 200, .reason = "",
                              .latency_ms = 1, .at_ms = 2 };
        ASSERT_EQ_INT(0, receipts_batch_add(b, &r2, NULL, on_settled, &two[i]));
    }
    run_until(loop, two, 4);
    for (int i = 0; i < 4; i++) {
        ASSERT_EQ_INT(1, two[i].calls);
        ASSERT_EQ_INT(REDIS_REPLY_INTEGER, two[i].type);
        ASSERT_EQ_INT(1, (int)two[i].value);
    }
    r = cmd(s, "HGET t:{ten}:status:ev-two w:dA");
    ASSERT_STR_EQ("failed", r->str);
    freeReplyObject(r);
    r = cmd(s, "HLEN t:{ten}:status:ev-two");
    ASSERT_EQ_INT(3, (int)r->integer);
    freeReplyObject(r);

    /* A batch of one (a receipt.opened alone in its loop turn) that
     * clears a scheduled retry. */
    struct outcome one = { 0 };
    struct receipt ro = { .event = "ev-1", .tenant = "ten", .user = "u1", .device = "d1",
                          .platform = "ios", .app = "app", .status = "opened", .attempt = 1,
                          .provider_id = "", .http_status = 0, .reason = "",
                          .latency_ms = 5, .at_ms = 1 };
    struct settle_opts oo = { SETTLE_FINAL, "r13", 0, NULL, NULL };
    ASSERT_EQ_INT(0, receipts_batch_add(b, &ro, &oo, on_settled, &one));
    run_until(loop, &one, 1);
    ASSERT_EQ_INT(REDIS_REPLY_INTEGER, one.type);
    ASSERT_EQ_INT(1, (int)one.value);
    r = cmd(s, "HGET t:{ten}:status:ev-1 u1:d1");
    ASSERT_STR_EQ("opened", r->str);
    freeReplyObject(r);
    r = cmd(s, "ZSCORE t:retry r13");
    ASSERT_EQ_INT(REDIS_REPLY_NIL, r->type);
    freeReplyObject(r);
    r = cmd(s, "HEXISTS t:retry:data r13");
    ASSERT_EQ_INT(0, (int)r->integer);
    freeReplyObject(r);

    rig_close(&g);
}

/*
 * The receipts stream stays near receipts_maxlen: it is trimmed (MAXLEN ~,
 * whole nodes of at most 100 entries) once per batch, so it may run over
 * by one batch and one node, never more.
 */
TEST(receipts_stream_is_capped_per_batch)
{
    struct settle_keys k = keys;
    k.receipts_maxlen = 500;
    struct rig g;
    rig_open(&g, &k);
    enum { ROUNDS = 20, PER = 150 };
    static struct outcome out[ROUNDS * PER];
    static char user[ROUNDS * PER][16];
    for (int i = 0; i < ROUNDS * PER; i++) {
        snprintf(user[i], sizeof user[i], "u%d", i);
        struct receipt r = { .event = "ev-cap", .tenant = "ten", .user = user[i],
                             .device = "d", .platform = "ios", .app = "app",
                             .status = "sent", .attempt = 1, .provider_id = "p",
                             .http_status = 200, .reason = "", .latency_ms = 1,
                             .at_ms = 1700000000000 + i };
        ASSERT_EQ_INT(0, receipts_batch_add(g.b, &r, NULL, on_settled, &out[i]));
        if (i % PER == PER - 1) /* one batch per loop turn, as varseld's */
            run_until(&g.loop, out + i + 1 - PER, PER);
    }
    redisReply *r = cmd(g.s, "XLEN t:receipts");
    if (r->integer < 500 || r->integer > 500 + PER + 100)
        TEST_FAIL_("%lld receipts kept with receipts_maxlen 500", r->integer);
    freeReplyObject(r);
    /* The newest receipt is the last one written. */
    r = cmd(g.s, "XREVRANGE t:receipts + - COUNT 1");
    ASSERT_STR_EQ(user[ROUNDS * PER - 1], entry_field(r->element[0]->element[1], "user"));
    freeReplyObject(r);
    rig_close(&g);
}

TEST_MAIN(T(reply_count_gives_each_an_integer_1), T(reply_wrong_count_or_shape_is_an_error),
          T(reply_array_gives_each_its_element_errors_pass_through), T(batch_against_redis),
          T(receipts_stream_is_capped_per_batch))
