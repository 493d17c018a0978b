/*
 * HTTP/2 client connections and a pool per origin.
 *
 * Architecture. Three layers, each knowing only the one below:
 *
 *     h2_pool   FIFO queue of h2_req, list of h2_conn, timers
 *       h2_conn nghttp2 client session fed with nghttp2_session_mem_recv;
 *               output drained with nghttp2_session_mem_send into a buffer
 *               written with one tls_conn_write per flush
 *         tls_conn (http2/tls.c) TLS over memory BIOs on a uv_tcp_t
 *
 * Requests. h2_pool_submit copies everything into one allocation (struct
 * h2_req followed by the nghttp2_nv array, strings and body) and appends it
 * to the pool queue. A request is in exactly one place: the queue
 * (W_QUEUE), in flight on a connection (W_INFLIGHT), or the done list
 * (W_DONE) waiting for its callback. Independently it may be attached to
 * an HTTP/2 stream (req->conn != NULL) until nghttp2 closes that stream,
 * reports the HEADERS as not sent, or the connection is torn down. A
 * request is freed when its callback has run and it is detached; so a
 * timed-out request can call back at once while its stream is still being
 * reset, and nghttp2 never sees a dangling stream user pointer.
 *
 * Deferral. Nothing user-visible happens inside nghttp2 or tls callbacks:
 * they only move requests between lists and "kick" the pool. The kick is a
 * uv_idle_t (an active idle handle makes the loop poll without blocking);
 * its callback dispatches queued requests, flushes every session, and runs
 * the done callbacks. A user callback may therefore submit or close freely.
 *
 * Dispatch honours the live SETTINGS_MAX_CONCURRENT_STREAMS of each
 * connection (nghttp2_session_get_remote_settings; the configured
 * initial_max_streams until the peer's SETTINGS arrive) and picks the open
 * connection with the fewest streams. When every open connection is full
 * and requests wait, one more connection is started (uv_getaddrinfo, TCP,
 * TLS with ALPN h2), at most one handshake at a time, up to
 * max_connections; connections that received GOAWAY do not count.
 *
 * Faults. GOAWAY: nghttp2 closes streams above last_stream_id with
 * REFUSED_STREAM; those are re-queued at the front without counting as a
 * fault, unless the connection never produced a response and its GOAWAY
 * has last_stream_id 0 (a server that rejects every new connection must
 * not make us spin). RST_STREAM
 * REFUSED_STREAM and a dropped connection re-queue unanswered requests and
 * count a fault; after max_attempts faults the request fails. Connect
 * failures back off exponentially (100 ms doubling to 30 s, with jitter);
 * when nothing has connected for connect_timeout_ms the waiting requests
 * fail with H2_ERR_CONNECT. A connection that dies without ever answering
 * also advances the backoff. A single timer ("tick") checks request and
 * handshake deadlines and PINGs idle connections.
 */
#include "http2/client.h"

#include "common/log.h"
#include "common/util.h"
#include "http2/ngalloc.h"
#include "http2/tls.h"

#include <ctype.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TAG "h2"
#define RESP_HDR_MAX      16384  /* bytes of response header names+values kept */
#define BACKOFF_MIN_MS    100
#define BACKOFF_MAX_MS    30000
#define PING_TIMEOUT_MIN  5000
#define OBUF_WRITE_AT     (64 * 1024)
#define REASON_LEN        160
#define RH_INLINE         192    /* response headers kept inside the request:
                                    APNs answers with one or two */

enum req_where { W_QUEUE = 1, W_INFLIGHT, W_DONE, W_FIRED };
enum conn_state { C_CONNECTING = 1, C_OPEN, C_DRAINING, C_CLOSING };

struct h2_conn;

struct h2_req {
    struct h2_req *qprev, *qnext;  /* pool queue or done list */
    struct h2_req *cprev, *cnext;  /* connection's stream list */
    struct h2_pool *pool;
    struct h2_conn *conn;          /* attached stream's connection, or NULL */
    int32_t stream_id;
    enum req_where where;
    h2_done_cb cb;
    void *user;
    nghttp2_nv *nva;               /* points into this allocation */
    size_t nvlen;
    const uint8_t *body;           /* points into this allocation */
    size_t body_len, body_off;
    int attempts;                  /* sends */
    int faults;                    /* losses counted against max_attempts */
    uint64_t sent_ms;
    uint64_t done_ms;
    /* response */
    int status;
    int error;
    char reason[REASON_LEN];
    char *rh;                      /* "name\0value\0" pairs: rh_inline, or
                                      malloc'd when they do not fit */
    size_t rh_len, rh_cap, n_rh;
    char rh_inline[RH_INLINE];
    uint8_t *rbody;
    size_t rbody_len, rbody_cap;
    int truncated;
};

struct req_list {
    struct h2_req *first, *last;
};

struct h2_conn {
    struct h2_conn *prev, *next;
    struct h2_pool *pool;
    struct tls_conn *tls;          /* valid until its on_close */
    nghttp2_session *ngh;          /* created when TLS is up */
    enum conn_state state;
    struct req_list streams;       /* attached requests, in send order */
    size_t n_streams;
    uint64_t started_ms;
    uint64_t last_input_ms;
    uint64_t ping_sent_ms;
    int ping_outstanding;
    int goaway;
    int32_t goaway_last_id;
    uint64_t n_success;            /* complete responses on this connection */
    int proto_error;               /* closing because of an HTTP/2 error */
    char goaway_reason[REASON_LEN];
    char addr[64];                 /* peer address for logs */
    uint8_t *obuf;
    size_t olen, ocap;
};

struct h2_pool {
    uv_loop_t *loop;
    uv_idle_t kick;                /* deferred dispatch/flush/deliver */
    uv_timer_t tick;               /* deadlines and PINGs */
    uv_timer_t backoff;            /* reconnect delay */
    uv_getaddrinfo_t gai;
    int handles_open;
    int handles_closing;
    char *name;
    char *host;                    /* without brackets, for TLS and DNS */
    char *authority;               /* host[:port] as sent in :authority */
    size_t authority_len;
    char port_str[8];
    SSL_CTX *ssl_ctx;
    int max_connections;
    uint32_t initial_max_streams;
    uint32_t request_timeout_ms;
    uint32_t connect_timeout_ms;
    uint32_t ping_idle_ms;
    int max_attempts;
    int fail_fast;
    int failures_in_streak;        /* connect failures since the last success */
    uint32_t tick_ms;
    nghttp2_session_callbacks *ngcb;
    nghttp2_option *ngopt;
    struct ng_alloc ngalloc;       /* nghttp2's blocks and our h2_req (http2/ngalloc.h) */
    nghttp2_mem ngmem;             /* ngalloc's functions for nghttp2 */
    struct req_list queue;
    struct req_list done;
    size_t n_queued, n_inflight;
    struct h2_conn *conns;
    size_t n_conns;
    int resolving;
    int backoff_active;
    uint64_t backoff_ms;           /* current backoff step, 0 when healthy */
    uint64_t down_since;           /* first attempt of a failing streak, 0 = up */
    unsigned addr_rr;              /* which resolved address to use next */
    uint32_t rng;
    char last_error[REASON_LEN];
    int closing;
    void (*done_cb)(void *);
    void *done_arg;
    struct h2_pool_stats stats;
};

static void pool_kick(struct h2_pool *p);
static void pool_maybe_finish(struct h2_pool *p);
static void conn_close(struct h2_conn *c, int err, const char *reason);

/* ---- small helpers ----------------------------------------------------- */

const char *h2_strerror(int err)
{
    switch (err) {
    case H2_OK: return "ok";
    case H2_ERR_CONNECT: return "connect failed";
    case H2_ERR_CONN_LOST: return "connection lost";
    case H2_ERR_TIMEOUT: return "timeout";
    case H2_ERR_REFUSED: return "stream refused";
    case H2_ERR_GOAWAY: return "goaway";
    case H2_ERR_SHUTDOWN: return "shutdown";
    case H2_ERR_PROTOCOL: return "protocol error";
    default: return "unknown error";
    }
}

static void list_push_back(struct req_list *l, struct h2_req *r)
{
    r->qnext = NULL;
    r->qprev = l->last;
    if (l->last)
        l->last->qnext = r;
    else
        l->first = r;
    l->last = r;
}

static void list_push_front(struct req_list *l, struct h2_req *r)
{
    r->qprev = NULL;
    r->qnext = l->first;
    if (l->first)
        l->first->qprev = r;
    else
        l->last = r;
    l->first = r;
}

static void list_remove(struct req_list *l, struct h2_req *r)
{
    if (r->qprev)
        r->qprev->qnext = r->qnext;
    else
        l->first = r->qnext;
    if (r->qnext)
        r->qnext->qprev = r->qprev;
    else
        l->last = r->qprev;
    r->qprev = r->qnext = NULL;
}

static uint64_t pool_now(const struct h2_pool *p)
{
    return uv_now(p->loop);
}

static uint32_t pool_rand(struct h2_pool *p)
{
    /* xorshift32: jitter only, not security */
    uint32_t x = p->rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    p->rng = x;
    return x;
}

static void req_free(struct h2_req *r)
{
    if (r->rh != r->rh_inline)
        free(r->rh);
    free(r->rbody);
    ng_free(r, &r->pool->ngalloc); /* from the pool's free lists, as nghttp2's blocks */
}

static void req_reset_response(struct h2_req *r)
{
    r->status = 0;
    r->rh_len = 0;
    r->n_rh = 0;
    r->rbody_len = 0;
    r->truncated = 0;
    r->body_off = 0;
}

/* ---- request state changes --------------------------------------------- */

/* Attach |r| to stream |id| of |c|. */
static void conn_attach(struct h2_conn *c, struct h2_req *r, int32_t id)
{
    r->conn = c;
    r->stream_id = id;
    r->cnext = NULL;
    r->cprev = c->streams.last;
    if (c->streams.last)
        c->streams.last->cnext = r;
    else
        c->streams.first = r;
    c->streams.last = r;
    c->n_streams++;
    if (c->n_streams > c->pool->stats.max_streams_seen)
        c->pool->stats.max_streams_seen = (uint32_t)c->n_streams;
}

static void conn_detach(struct h2_conn *c, struct h2_req *r)
{
    if (r->cprev)
        r->cprev->cnext = r->cnext;
    else
        c->streams.first = r->cnext;
    if (r->cnext)
        r->cnext->cprev = r->cprev;
    else
        c->streams.last = r->cprev;
    r->cprev = r->cnext = NULL;
    r->conn = NULL;
    c->n_streams--;
}

static struct h2_req *conn_find(struct h2_conn *c, int32_t id)
{
    for (struct h2_req *r = c->streams.first; r; r = r->cnext)
        if (r->stream_id == id)
            return r;
    return NULL;
}

/* Leave the queue or the in-flight set. */
static void req_unplace(struct h2_pool *p, struct h2_req *r)
{
    if (r->where == W_QUEUE) {
        list_remove(&p->queue, r);
        p->n_queued--;
    } else if (r->where == W_INFLIGHT) {
        p->n_inflight--;
    }
}

/* Complete |r| with |err| (H2_OK keeps the response) and schedule its
 * callback. */
static void req_finish(struct h2_req *r, int err, const char *reason)
{
    struct h2_pool *p = r->pool;
    if (r->where == W_DONE || r->where == W_FIRED)
        return;
    req_unplace(p, r);
    r->error = err;
    r->done_ms = pool_now(p);
    if (err != H2_OK) {
        r->status = 0;
        r->n_rh = 0;
        r->rh_len = 0;
        r->rbody_len = 0;
        snprintf(r->reason, sizeof r->reason, "%s", reason ? reason : h2_strerror(err));
    } else {
        r->reason[0] = '\0';
    }
    r->where = W_DONE;
    list_push_back(&p->done, r);
    pool_kick(p);
}

/* Put an unanswered request back at the front of the queue (or onto
 * |batch| to be spliced there in order). */
static void req_requeue(struct h2_req *r, struct req_list *batch)
{
    struct h2_pool *p = r->pool;
    req_unplace(p, r);
    req_reset_response(r);
    r->where = W_QUEUE;
    p->n_queued++;
    p->stats.requeued++;
    if (batch)
        list_push_back(batch, r);
    else
        list_push_front(&p->queue, r);
    pool_kick(p);
}

/* |r| was lost to a fault of kind |err|: re-queue it or, after
 * max_attempts faults, fail it. */
static void req_lost(struct h2_req *r, int err, const char *reason, struct req_list *batch)
{
    struct h2_pool *p = r->pool;
    r->faults++;
    if (p->closing)
        req_finish(r, H2_ERR_SHUTDOWN, "pool closing");
    else if (r->faults >= p->max_attempts)
        req_finish(r, err, reason);
    else
        req_requeue(r, batch);
}

/* Stream of |r| was not processed because of GOAWAY. A connection that
 * answered something, or whose GOAWAY let some streams through, is merely
 * rotating: re-send for free. A GOAWAY with last_stream_id 0 on a
 * connection that never answered rejects everything: count a fault. */
static void req_goaway(struct h2_conn *c, struct h2_req *r)
{
    if (c->pool->closing)
        req_finish(r, H2_ERR_SHUTDOWN, "pool closing");
    else if (c->n_success > 0 || c->goaway_last_id > 0)
        req_requeue(r, NULL);
    else
        req_lost(r, H2_ERR_GOAWAY, c->goaway_reason[0] ? c->goaway_reason : "GOAWAY", NULL);
}

/* ---- nghttp2 callbacks -------------------------------------------------- */

static ssize_t body_read_cb(nghttp2_session *s, int32_t stream_id, uint8_t *buf,
                            size_t length, uint32_t *data_flags,
                            nghttp2_data_source *source, void *user)
{
    (void)source; (void)user;
    struct h2_req *r = nghttp2_session_get_stream_user_data(s, stream_id);
    if (r == NULL || r->where != W_INFLIGHT)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
    size_t n = r->body_len - r->body_off;
    if (n > length)
        n = length;
    memcpy(buf, r->body + r->body_off, n);
    r->body_off += n;
    if (r->body_off == r->body_len)
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int on_header_cb(nghttp2_session *s, const nghttp2_frame *frame,
                        const uint8_t *name, size_t namelen, const uint8_t *value,
                        size_t valuelen, uint8_t flags, void *user)
{
    (void)flags; (void)user;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct h2_req *r = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    if (r == NULL || r->where != W_INFLIGHT)
        return 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        int st = 0;
        for (size_t i = 0; i < valuelen && i < 3; i++)
            st = st * 10 + (isdigit(value[i]) ? value[i] - '0' : 0);
        r->status = st;  /* a final status replaces any 1xx block */
        r->rh_len = 0;
        r->n_rh = 0;
        return 0;
    }
    if (namelen > 0 && name[0] == ':')
        return 0;
    size_t need = namelen + valuelen + 2;
    if (r->rh_len + need > RESP_HDR_MAX)
        return 0;
    if (r->rh_len + need > r->rh_cap) {
        size_t cap = r->rh_cap * 2;
        while (cap < r->rh_len + need)
            cap *= 2;
        if (r->rh == r->rh_inline) {
            r->rh = xmalloc(cap);
            memcpy(r->rh, r->rh_inline, r->rh_len);
        } else {
            r->rh = xrealloc(r->rh, cap);
        }
        r->rh_cap = cap;
    }
    memcpy(r->rh + r->rh_len, name, namelen);
    r->rh[r->rh_len + namelen] = '\0';
    memcpy(r->rh + r->rh_len + namelen + 1, value, valuelen);
    r->rh[r->rh_len + namelen + 1 + valuelen] = '\0';
    r->rh_len += need;
    r->n_rh++;
    return 0;
}

static int on_data_chunk_cb(nghttp2_session *s, uint8_t flags, int32_t stream_id,
                            const uint8_t *data, size_t len, void *user)
{
    (void)flags; (void)user;
    struct h2_req *r = nghttp2_session_get_stream_user_data(s, stream_id);
    if (r == NULL || r->where != W_INFLIGHT)
        return 0;
    size_t room = H2_MAX_BODY - r->rbody_len;
    if (len > room) {
        len = room;
        r->truncated = 1;
    }
    if (len == 0)
        return 0;
    if (r->rbody_len + len > r->rbody_cap) {
        size_t cap = r->rbody_cap ? r->rbody_cap * 2 : 1024;
        while (cap < r->rbody_len + len)
            cap *= 2;
        if (cap > H2_MAX_BODY)
            cap = H2_MAX_BODY;
        r->rbody = xrealloc(r->rbody, cap);
        r->rbody_cap = cap;
    }
    memcpy(r->rbody + r->rbody_len, data, len);
    r->rbody_len += len;
    return 0;
}

/* Printable, bounded copy of GOAWAY debug data for logs and reasons. */
static void goaway_text(const uint8_t *d, size_t n, char *out, size_t outlen)
{
    size_t j = 0;
    for (size_t i = 0; i < n && j + 1 < outlen && i < 120; i++)
        out[j++] = (d[i] >= 0x20 && d[i] < 0x7f) ? (char)d[i] : '.';
    out[j] = '\0';
}

static int on_frame_recv_cb(nghttp2_session *s, const nghttp2_frame *frame, void *user)
{
    struct h2_conn *c = user;
    struct h2_pool *p = c->pool;
    switch (frame->hd.type) {
    case NGHTTP2_DATA:
    case NGHTTP2_HEADERS: {
        if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
            break;
        struct h2_req *r = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
        if (r == NULL || r->where != W_INFLIGHT || r->status < 200)
            break;
        if (c->n_success++ == 0)
            p->backoff_ms = 0; /* this origin answers: reset the backoff */
        p->stats.responses++;
        req_finish(r, H2_OK, NULL);
        break;
    }
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
            pool_kick(p); /* the stream limit may have risen */
        break;
    case NGHTTP2_GOAWAY: {
        char dbg[128];
        goaway_text(frame->goaway.opaque_data, frame->goaway.opaque_data_len, dbg, sizeof dbg);
        c->goaway = 1;
        c->goaway_last_id = frame->goaway.last_stream_id;
        snprintf(c->goaway_reason, sizeof c->goaway_reason, "GOAWAY %s%s%s",
                 nghttp2_http2_strerror(frame->goaway.error_code), dbg[0] ? ": " : "", dbg);
        if (c->state == C_OPEN)
            c->state = C_DRAINING;
        p->stats.goaways++;
        log_info(TAG, "%s: %s (last stream %d, %zu in flight) from %s", p->name,
                 c->goaway_reason, (int)frame->goaway.last_stream_id, c->n_streams, c->addr);
        pool_kick(p);
        break;
    }
    case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK)
            c->ping_outstanding = 0;
        break;
    case NGHTTP2_RST_STREAM:
        if (frame->rst_stream.error_code == NGHTTP2_REFUSED_STREAM)
            p->stats.refused++;
        break;
    default:
        break;
    }
    return 0;
}

static int on_stream_close_cb(nghttp2_session *s, int32_t stream_id, uint32_t error_code,
                              void *user)
{
    struct h2_conn *c = user;
    struct h2_req *r = nghttp2_session_get_stream_user_data(s, stream_id);
    if (r == NULL || r->conn != c)
        return 0;
    conn_detach(c, r);
    if (r->where == W_INFLIGHT) {
        if (c->goaway && stream_id > c->goaway_last_id) {
            req_goaway(c, r);
        } else if (error_code == NGHTTP2_REFUSED_STREAM) {
            req_lost(r, H2_ERR_REFUSED, "stream refused (REFUSED_STREAM)", NULL);
        } else if (error_code == NGHTTP2_NO_ERROR && r->status >= 200) {
            c->pool->stats.responses++;
            req_finish(r, H2_OK, NULL);
        } else {
            char reason[REASON_LEN];
            snprintf(reason, sizeof reason, "stream reset by peer: %s",
                     nghttp2_http2_strerror(error_code));
            req_finish(r, H2_ERR_PROTOCOL, reason);
        }
    }
    if (r->where == W_FIRED)
        req_free(r);
    pool_kick(c->pool);
    return 0;
}

static int on_frame_not_send_cb(nghttp2_session *s, const nghttp2_frame *frame,
                                int lib_error_code, void *user)
{
    struct h2_conn *c = user;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct h2_req *r = conn_find(c, frame->hd.stream_id);
    if (r == NULL)
        return 0;
    (void)nghttp2_session_set_stream_user_data(s, frame->hd.stream_id, NULL);
    conn_detach(c, r);
    if (r->where == W_INFLIGHT) {
        if (c->goaway || lib_error_code == NGHTTP2_ERR_START_STREAM_NOT_ALLOWED ||
            lib_error_code == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE) {
            req_goaway(c, r);
        } else {
            char reason[REASON_LEN];
            snprintf(reason, sizeof reason, "request not sent: %s",
                     nghttp2_strerror(lib_error_code));
            req_lost(r, H2_ERR_PROTOCOL, reason, NULL);
        }
    }
    if (r->where == W_FIRED)
        req_free(r);
    pool_kick(c->pool);
    return 0;
}

/* ---- connection ---------------------------------------------------------- */

static void conn_unlink(struct h2_pool *p, struct h2_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        p->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    p->n_conns--;
}

/* Move everything nghttp2 has queued to the tls layer, in as few
 * tls_conn_write calls as possible. Returns 0, or -1 if the connection is
 * now closing. */
static int conn_write_out(struct h2_conn *c)
{
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->ngh, &data);
        if (n < 0) {
            char reason[REASON_LEN];
            snprintf(reason, sizeof reason, "HTTP/2: %s", nghttp2_strerror((int)n));
            c->proto_error = 1;
            conn_close(c, TLS_ERR_PROTOCOL, reason);
            return -1;
        }
        if (n > 0) {
            if (c->olen + (size_t)n > c->ocap) {
                size_t cap = c->ocap ? c->ocap : 16384;
                while (cap < c->olen + (size_t)n)
                    cap *= 2;
                c->obuf = xrealloc(c->obuf, cap);
                c->ocap = cap;
            }
            memcpy(c->obuf + c->olen, data, (size_t)n);
            c->olen += (size_t)n;
        }
        if (c->olen > 0 && (n == 0 || c->olen >= OBUF_WRITE_AT)) {
            int r = tls_conn_write(c->tls, c->obuf, c->olen);
            c->olen = 0;
            if (r < 0)
                return -1; /* the tls layer closes and reports */
        }
        if (n == 0)
            return 0;
    }
}

/* Flush the session; end it when a GOAWAY connection has drained, and close
 * the connection once nghttp2 wants neither to read nor to write. */
static void conn_flush(struct h2_conn *c)
{
    if (c->ngh == NULL || c->state == C_CLOSING)
        return;
    if (c->state == C_DRAINING && c->n_streams == 0)
        (void)nghttp2_session_terminate_session(c->ngh, NGHTTP2_NO_ERROR);
    if (conn_write_out(c) < 0)
        return;
    if (!nghttp2_session_want_read(c->ngh) && !nghttp2_session_want_write(c->ngh)) {
        const char *why = c->pool->closing ? "pool closing"
                          : c->goaway      ? c->goaway_reason
                                           : "session finished";
        conn_close(c, 0, why);
    }
}

/* Ask the tls layer to close; on_close follows from the loop. */
static void conn_close(struct h2_conn *c, int err, const char *reason)
{
    if (c->state == C_CLOSING || c->tls == NULL)
        return;
    c->state = C_CLOSING;
    tls_conn_close(c->tls, err, reason);
}

static void schedule_backoff(struct h2_pool *p);

static void conn_on_open(struct tls_conn *t, void *user)
{
    struct h2_conn *c = user;
    struct h2_pool *p = c->pool;
    if (strcmp(tls_conn_alpn(t), "h2") != 0) {
        conn_close(c, TLS_ERR_ALPN, "ALPN: server did not select h2");
        return;
    }
    if (nghttp2_session_client_new3(&c->ngh, p->ngcb, c, p->ngopt, &p->ngmem) != 0) {
        c->ngh = NULL;
        conn_close(c, TLS_ERR_PROTOCOL, "nghttp2 session setup failed");
        return;
    }
    nghttp2_settings_entry iv[] = { { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 } };
    if (nghttp2_submit_settings(c->ngh, NGHTTP2_FLAG_NONE, iv, 1) != 0) {
        conn_close(c, TLS_ERR_PROTOCOL, "nghttp2 SETTINGS failed");
        return;
    }
    c->state = C_OPEN;
    c->last_input_ms = pool_now(p);
    p->down_since = 0;
    p->failures_in_streak = 0;
    p->stats.connects++;
    log_info(TAG, "%s: connected to %s (%zu connections)", p->name, c->addr, p->n_conns);
    pool_kick(p);
}

static void conn_on_data(struct tls_conn *t, const uint8_t *data, size_t len, void *user)
{
    (void)t;
    struct h2_conn *c = user;
    if (c->ngh == NULL || c->state == C_CLOSING)
        return;
    c->last_input_ms = pool_now(c->pool);
    ssize_t rv = nghttp2_session_mem_recv(c->ngh, data, len);
    if (rv < 0) {
        char reason[REASON_LEN];
        snprintf(reason, sizeof reason, "HTTP/2: %s", nghttp2_strerror((int)rv));
        log_warn(TAG, "%s: %s from %s", c->pool->name, reason, c->addr);
        c->proto_error = 1;
        if (conn_write_out(c) == 0) /* nghttp2 may have queued a GOAWAY */
            conn_close(c, TLS_ERR_PROTOCOL, reason);
        return;
    }
    pool_kick(c->pool);
}

/* The tls connection is gone: settle every attached request, then free. */
static void conn_on_close(struct tls_conn *t, int err, const char *reason, void *user)
{
    (void)t;
    struct h2_conn *c = user;
    struct h2_pool *p = c->pool;
    int was_open = c->ngh != NULL;
    c->tls = NULL;
    conn_unlink(p, c);
    if (!was_open) {
        p->stats.connect_failures++;
        snprintf(p->last_error, sizeof p->last_error, "%s", reason);
        if (!p->closing) {
            log_warn(TAG, "%s: connect to %s failed: %s", p->name, c->addr, reason);
            schedule_backoff(p);
        }
    } else {
        struct req_list batch = { NULL, NULL };
        size_t lost = 0;
        char why[REASON_LEN];
        snprintf(why, sizeof why, "connection lost: %s", reason);
        struct h2_req *r;
        while ((r = c->streams.first) != NULL) {
            conn_detach(c, r);
            if (r->where == W_INFLIGHT) {
                lost++;
                req_lost(r, c->proto_error ? H2_ERR_PROTOCOL : H2_ERR_CONN_LOST, why, &batch);
            }
            if (r->where == W_FIRED)
                req_free(r);
        }
        if (batch.first != NULL) {
            /* splice the re-queued requests, in send order, at the front */
            batch.last->qnext = p->queue.first;
            if (p->queue.first)
                p->queue.first->qprev = batch.last;
            else
                p->queue.last = batch.last;
            p->queue.first = batch.first;
        }
        if (lost > 0) {
            p->stats.conn_lost++;
            log_warn(TAG, "%s: connection to %s lost with %zu in flight: %s", p->name,
                     c->addr, lost, reason);
        } else {
            log_info(TAG, "%s: connection to %s closed: %s", p->name, c->addr, reason);
        }
        if (c->n_success == 0 && !p->closing)
            schedule_backoff(p); /* ended without answering: don't hammer */
        nghttp2_session_del(c->ngh);
    }
    free(c->obuf);
    free(c);
    pool_kick(p);
    pool_maybe_finish(p);
}

static const struct tls_conn_callbacks conn_tls_cb = {
    conn_on_open, conn_on_data, conn_on_close,
};

/* Submit |r| on |c|. Returns 0, or -1 if the connection cannot take new
 * streams (|r| is left where it was). */
static int conn_send(struct h2_conn *c, struct h2_req *r)
{
    struct h2_pool *p = c->pool;
    nghttp2_data_provider prd;
    prd.source.ptr = NULL;
    prd.read_callback = body_read_cb;
    req_reset_response(r);
    int32_t id = nghttp2_submit_request(c->ngh, NULL, r->nva, r->nvlen,
                                        r->body_len > 0 ? &prd : NULL, r);
    if (id < 0) {
        log_info(TAG, "%s: no new streams on %s: %s", p->name, c->addr, nghttp2_strerror(id));
        c->state = C_DRAINING;
        return -1;
    }
    list_remove(&p->queue, r);
    p->n_queued--;
    r->where = W_INFLIGHT;
    p->n_inflight++;
    r->attempts++;
    r->sent_ms = pool_now(p);
    conn_attach(c, r, id);
    return 0;
}

/* ---- pool: connecting ------------------------------------------------------ */

static void on_backoff(uv_timer_t *t)
{
    struct h2_pool *p = t->data;
    p->backoff_active = 0;
    pool_kick(p);
}

const char *h2_response_header(const struct h2_response *r, const char *name)
{
    for (size_t i = 0; i < r->n_headers; i++)
        if (strcmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

int h2_response_retry_after(const struct h2_response *r)
{
    const char *v = h2_response_header(r, "retry-after");
    if (v == NULL || *v < '0' || *v > '9')
        return -1;
    long s = strtol(v, NULL, 10);
    return s > 86400 ? 86400 : (int)s;
}

bool h2_pool_unreachable(const struct h2_pool *p, const char **why)
{
    if (p->down_since == 0 || p->failures_in_streak == 0)
        return false;
    for (const struct h2_conn *c = p->conns; c; c = c->next)
        if (c->state == C_OPEN || c->state == C_DRAINING)
            return false;
    if (!p->fail_fast && pool_now(p) - p->down_since < p->connect_timeout_ms)
        return false;
    if (why)
        *why = p->last_error[0] ? p->last_error : "cannot connect";
    return true;
}

/* Fail every queued request with H2_ERR_CONNECT if nothing has connected for
 * the connect-timeout window, then wait before the next attempt. */
static void schedule_backoff(struct h2_pool *p)
{
    int any_open = 0;
    for (struct h2_conn *c = p->conns; c; c = c->next)
        if (c->state == C_OPEN || c->state == C_DRAINING)
            any_open = 1;
    uint64_t now = pool_now(p);
    if (p->down_since == 0)
        p->down_since = now;
    p->failures_in_streak++;
    if (!any_open && p->n_queued > 0 &&
        (p->fail_fast || now - p->down_since >= p->connect_timeout_ms)) {
        char reason[REASON_LEN + 32];
        snprintf(reason, sizeof reason, "cannot connect: %s",
                 p->last_error[0] ? p->last_error : "unknown");
        log_warn(TAG, "%s: failing %zu queued requests: %s", p->name, p->n_queued, reason);
        while (p->queue.first != NULL)
            req_finish(p->queue.first, H2_ERR_CONNECT, reason);
    }
    p->backoff_ms = p->backoff_ms ? p->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (p->backoff_ms > BACKOFF_MAX_MS)
        p->backoff_ms = BACKOFF_MAX_MS;
    uint64_t half = p->backoff_ms / 2;
    uint64_t delay = half + pool_rand(p) % (half + 1);
    p->backoff_active = 1;
    p->addr_rr++;
    uv_timer_start(&p->backoff, on_backoff, delay, 0);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct h2_pool *p = req->data;
    p->resolving = 0;
    if (p->closing) {
        if (res)
            uv_freeaddrinfo(res);
        pool_maybe_finish(p);
        return;
    }
    if (status < 0 || res == NULL) {
        snprintf(p->last_error, sizeof p->last_error, "resolve %s: %s", p->host,
                 uv_strerror(status));
        p->stats.connect_failures++;
        log_warn(TAG, "%s: %s", p->name, p->last_error);
        schedule_backoff(p);
        if (res)
            uv_freeaddrinfo(res);
        return;
    }
    unsigned n = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next)
        n++;
    struct addrinfo *ai = res;
    for (unsigned i = p->addr_rr % n; i > 0; i--)
        ai = ai->ai_next;

    struct h2_conn *c = xcalloc(1, sizeof *c);
    c->pool = p;
    c->state = C_CONNECTING;
    c->started_ms = pool_now(p);
    char ip[INET6_ADDRSTRLEN] = "?";
    if (ai->ai_family == AF_INET6) {
        uv_ip6_name((const struct sockaddr_in6 *)ai->ai_addr, ip, sizeof ip);
        snprintf(c->addr, sizeof c->addr, "[%s]:%s", ip, p->port_str);
    } else {
        uv_ip4_name((const struct sockaddr_in *)ai->ai_addr, ip, sizeof ip);
        snprintf(c->addr, sizeof c->addr, "%s:%s", ip, p->port_str);
    }
    int r = tls_conn_connect(p->loop, p->ssl_ctx, ai->ai_addr, p->host, 1, &conn_tls_cb, c,
                             &c->tls);
    uv_freeaddrinfo(res);
    if (r < 0) {
        snprintf(p->last_error, sizeof p->last_error, "connect %s: %s", c->addr,
                 uv_strerror(r));
        free(c);
        p->stats.connect_failures++;
        log_warn(TAG, "%s: %s", p->name, p->last_error);
        schedule_backoff(p);
        return;
    }
    c->next = p->conns;
    if (p->conns)
        p->conns->prev = c;
    p->conns = c;
    p->n_conns++;
}

static void on_tick(uv_timer_t *t);

/* Start one more connection if requests wait and every connection is full. */
static void pool_maybe_connect(struct h2_pool *p)
{
    if (p->closing || p->n_queued == 0 || p->resolving || p->backoff_active)
        return;
    int active = 0;
    for (struct h2_conn *c = p->conns; c; c = c->next) {
        if (c->state == C_CONNECTING)
            return; /* one handshake at a time */
        if (c->state == C_OPEN)
            active++;
    }
    if (active >= p->max_connections)
        return;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    if (p->down_since == 0)
        p->down_since = pool_now(p);
    p->gai.data = p;
    int r = uv_getaddrinfo(p->loop, &p->gai, on_resolved, p->host, p->port_str, &hints);
    if (r < 0) {
        snprintf(p->last_error, sizeof p->last_error, "resolve %s: %s", p->host,
                 uv_strerror(r));
        p->stats.connect_failures++;
        schedule_backoff(p);
        return;
    }
    p->resolving = 1;
    if (!uv_is_active((uv_handle_t *)&p->tick))
        uv_timer_start(&p->tick, on_tick, p->tick_ms, p->tick_ms);
}

/* ---- pool: dispatch, delivery, timers ----------------------------------- */

static uint32_t conn_limit(struct h2_conn *c)
{
    return nghttp2_session_get_remote_settings(c->ngh, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
}

static void pool_dispatch(struct h2_pool *p)
{
    while (p->queue.first != NULL) {
        struct h2_conn *best = NULL;
        for (struct h2_conn *c = p->conns; c; c = c->next) {
            if (c->state != C_OPEN || c->n_streams >= conn_limit(c))
                continue;
            if (best == NULL || c->n_streams < best->n_streams)
                best = c;
        }
        if (best == NULL)
            break;
        (void)conn_send(best, p->queue.first); /* on failure |best| is draining */
    }
    pool_maybe_connect(p);
}

static void deliver(struct h2_pool *p)
{
    struct h2_req *r;
    while ((r = p->done.first) != NULL) {
        list_remove(&p->done, r);
        r->where = W_FIRED;
        struct h2_header stack_hdrs[32];
        struct h2_header *hdrs = stack_hdrs;
        if (r->n_rh > 32)
            hdrs = xmalloc(r->n_rh * sizeof *hdrs);
        const char *s = r->rh;
        for (size_t i = 0; i < r->n_rh; i++) {
            hdrs[i].name = s;
            s += strlen(s) + 1;
            hdrs[i].value = s;
            s += strlen(s) + 1;
            hdrs[i].flags = 0;
        }
        struct h2_response resp = {
            .status = r->error == H2_OK ? r->status : 0,
            .error = r->error,
            .error_reason = r->error != H2_OK ? r->reason : NULL,
            .headers = hdrs,
            .n_headers = r->n_rh,
            .body = r->rbody,
            .body_len = r->rbody_len,
            .body_truncated = r->truncated,
            .attempts = r->attempts,
            .rtt_ms = r->attempts > 0 && r->done_ms >= r->sent_ms ? r->done_ms - r->sent_ms : 0,
        };
        if (r->cb != NULL)
            r->cb(&resp, r->user);
        if (hdrs != stack_hdrs)
            free(hdrs);
        if (r->conn == NULL)
            req_free(r);
    }
}

static void on_kick(uv_idle_t *h)
{
    struct h2_pool *p = h->data;
    uv_idle_stop(&p->kick);
    if (!p->closing)
        pool_dispatch(p);
    for (struct h2_conn *c = p->conns; c; c = c->next)
        conn_flush(c);
    deliver(p);
    pool_maybe_finish(p);
}

static void pool_kick(struct h2_pool *p)
{
    if (!p->handles_closing)
        uv_idle_start(&p->kick, on_kick);
}

static void on_tick(uv_timer_t *t)
{
    struct h2_pool *p = t->data;
    uint64_t now = pool_now(p);
    uint32_t ping_to = p->ping_idle_ms > PING_TIMEOUT_MIN ? p->ping_idle_ms : PING_TIMEOUT_MIN;
    int touched = 0;
    for (struct h2_conn *c = p->conns; c; c = c->next) {
        if (c->state == C_CONNECTING) {
            if (now - c->started_ms >= p->connect_timeout_ms) {
                char reason[64];
                snprintf(reason, sizeof reason, "connect timeout (%u ms)", p->connect_timeout_ms);
                conn_close(c, UV_ETIMEDOUT, reason);
            }
            continue;
        }
        if (c->ngh == NULL || c->state == C_CLOSING)
            continue;
        if (p->request_timeout_ms > 0) {
            for (struct h2_req *r = c->streams.first; r; r = r->cnext) {
                if (r->where != W_INFLIGHT || now - r->sent_ms < p->request_timeout_ms)
                    continue;
                (void)nghttp2_submit_rst_stream(c->ngh, NGHTTP2_FLAG_NONE, r->stream_id,
                                                NGHTTP2_CANCEL);
                char reason[64];
                snprintf(reason, sizeof reason, "no answer within %u ms", p->request_timeout_ms);
                p->stats.timeouts++;
                req_finish(r, H2_ERR_TIMEOUT, reason);
                touched = 1;
            }
        }
        if (p->ping_idle_ms > 0) {
            if (c->ping_outstanding && now - c->ping_sent_ms >= ping_to) {
                log_warn(TAG, "%s: no PING ACK from %s in %u ms", p->name, c->addr, ping_to);
                conn_close(c, UV_ETIMEDOUT, "PING timeout");
                continue;
            }
            if (!c->ping_outstanding && now - c->last_input_ms >= p->ping_idle_ms &&
                nghttp2_submit_ping(c->ngh, NGHTTP2_FLAG_NONE, NULL) == 0) {
                c->ping_outstanding = 1;
                c->ping_sent_ms = now;
                p->stats.pings++;
                touched = 1;
            }
        }
    }
    if (touched)
        pool_kick(p);
    if (p->conns == NULL && !p->resolving)
        uv_timer_stop(&p->tick);
}

/* ---- pool: lifecycle ----------------------------------------------------- */

/* Parse "https://host[:port][/...]" into host (brackets removed), port and
 * the :authority value. Returns 0 or -1. */
static int parse_url(const char *url, char **host, int *port, char **authority)
{
    if (url == NULL || strncasecmp(url, "https://", 8) != 0)
        return -1;
    const char *h = url + 8, *hend, *rest;
    int v6 = 0;
    if (*h == '[') {
        hend = strchr(h, ']');
        if (hend == NULL)
            return -1;
        h++;
        rest = hend + 1;
        v6 = 1;
    } else {
        hend = h + strcspn(h, ":/?#");
        rest = hend;
    }
    if (hend == h)
        return -1;
    int prt = 443;
    if (*rest == ':') {
        char *end;
        long v = strtol(rest + 1, &end, 10);
        if (end == rest + 1 || v < 1 || v > 65535 || (*end != '\0' && *end != '/'))
            return -1;
        prt = (int)v;
    } else if (*rest != '\0' && *rest != '/') {
        return -1;
    }
    *host = xstrndup(h, (size_t)(hend - h));
    *port = prt;
    char buf[300];
    snprintf(buf, sizeof buf, "%s%s%s", v6 ? "[" : "", *host, v6 ? "]" : "");
    if (prt != 443) {
        size_t l = strlen(buf);
        snprintf(buf + l, sizeof buf - l, ":%d", prt);
    }
    *authority = xstrdup(buf);
    return 0;
}

struct h2_pool *h2_pool_new(uv_loop_t *loop, const struct h2_pool_config *cfg)
{
    const char *name = cfg->name ? cfg->name : "h2";
    char *host = NULL, *authority = NULL;
    int port = 0;
    if (cfg->ssl_ctx == NULL || cfg->max_connections < 1 ||
        parse_url(cfg->url, &host, &port, &authority) < 0) {
        log_error(TAG, "%s: invalid pool config (url, ssl_ctx or max_connections)", name);
        return NULL;
    }
    struct h2_pool *p = xcalloc(1, sizeof *p);
    p->loop = loop;
    p->name = xstrdup(name);
    p->host = host;
    p->authority = authority;
    p->authority_len = strlen(authority);
    snprintf(p->port_str, sizeof p->port_str, "%d", port);
    p->ssl_ctx = cfg->ssl_ctx;
    p->max_connections = cfg->max_connections;
    p->initial_max_streams = cfg->initial_max_streams ? cfg->initial_max_streams : 1;
    p->request_timeout_ms = cfg->request_timeout_ms;
    p->connect_timeout_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms : 10000;
    p->fail_fast = cfg->fail_fast;
    p->ping_idle_ms = cfg->ping_idle_ms;
    p->max_attempts = cfg->max_attempts > 0 ? cfg->max_attempts : 1;
    uint32_t base = p->connect_timeout_ms;
    if (p->request_timeout_ms > 0 && p->request_timeout_ms < base)
        base = p->request_timeout_ms;
    if (p->ping_idle_ms > 0 && p->ping_idle_ms < base)
        base = p->ping_idle_ms;
    p->tick_ms = base / 10;
    if (p->tick_ms < 10)
        p->tick_ms = 10;
    if (p->tick_ms > 1000)
        p->tick_ms = 1000;
    p->rng = (uint32_t)(now_ms() ^ (uintptr_t)p) | 1u;

    nghttp2_session_callbacks_new(&p->ngcb);
    nghttp2_session_callbacks_set_on_header_callback(p->ngcb, on_header_cb);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(p->ngcb, on_data_chunk_cb);
    nghttp2_session_callbacks_set_on_frame_recv_callback(p->ngcb, on_frame_recv_cb);
    nghttp2_session_callbacks_set_on_stream_close_callback(p->ngcb, on_stream_close_cb);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(p->ngcb, on_frame_not_send_cb);
    nghttp2_option_new(&p->ngopt);
    p->ngmem = ng_alloc_mem(&p->ngalloc);
    nghttp2_option_set_peer_max_concurrent_streams(p->ngopt, p->initial_max_streams);
    if (p->ngcb == NULL || p->ngopt == NULL) {
        fprintf(stderr, "out of memory (nghttp2)\n");
        abort();
    }

    uv_idle_init(loop, &p->kick);
    uv_timer_init(loop, &p->tick);
    uv_timer_init(loop, &p->backoff);
    p->kick.data = p;
    p->tick.data = p;
    p->backoff.data = p;
    p->handles_open = 3;
    log_info(TAG, "%s: pool for %s (max %d connections)", p->name, p->authority,
             p->max_connections);
    return p;
}

int h2_pool_submit(struct h2_pool *p, const char *method, const char *path,
                   const struct h2_header *hdrs, size_t n_hdrs,
                   const uint8_t *body, size_t body_len, h2_done_cb cb, void *user)
{
    if (p->closing)
        return H2_ERR_SHUTDOWN;
    size_t ml = strlen(method), pl = strlen(path);
    size_t nvlen = n_hdrs + 4;
    size_t strings = ml + 1 + pl + 1;
    size_t lens_stack[2 * 16];
    size_t *lens = n_hdrs <= 16 ? lens_stack : xmalloc(2 * n_hdrs * sizeof *lens);
    for (size_t i = 0; i < n_hdrs; i++) {
        lens[2 * i] = strlen(hdrs[i].name);
        lens[2 * i + 1] = strlen(hdrs[i].value);
        strings += lens[2 * i + 1] + 1;
        if (!(hdrs[i].flags & H2_HDR_STATIC_NAME))
            strings += lens[2 * i] + 1;
    }
    size_t need = sizeof(struct h2_req) + nvlen * sizeof(nghttp2_nv) + strings + body_len;
    /* From the pool's size-class free lists (a request of the short APNs
     * body is ~1.3 KB: a fresh malloc of that size costs ~700 instructions).
     * Only the struct needs zeroing, not the strings and body after it. */
    struct h2_req *r = ng_malloc(need, &p->ngalloc);
    if (r == NULL) {
        fprintf(stderr, "out of memory (%zu bytes)\n", need);
        abort();
    }
    memset(r, 0, sizeof *r);
    r->rh = r->rh_inline;
    r->rh_cap = sizeof r->rh_inline;
    nghttp2_nv *nv = (nghttp2_nv *)(r + 1);
    char *s = (char *)(nv + nvlen);

#define NV_SET(i_, n_, nl_, v_, vl_, f_)                                       \
    do {                                                                       \
        nv[i_].name = (uint8_t *)(n_);                                         \
        nv[i_].namelen = (nl_);                                                \
        nv[i_].value = (uint8_t *)(v_);                                        \
        nv[i_].valuelen = (vl_);                                               \
        nv[i_].flags = (f_);                                                   \
    } while (0)

    /* Every name and value lives in this allocation (or the pool) until the
     * stream is closed, so nghttp2 need not copy them (NO_COPY_*): that
     * saves an allocation and a copy of all headers per request. */
    const uint8_t keep = NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE;
    memcpy(s, method, ml + 1);
    NV_SET(0, ":method", 7, s, ml, keep);
    s += ml + 1;
    NV_SET(1, ":scheme", 7, "https", 5, keep);
    NV_SET(2, ":authority", 10, p->authority, p->authority_len, keep);
    memcpy(s, path, pl + 1);
    NV_SET(3, ":path", 5, s, pl, NGHTTP2_NV_FLAG_NO_INDEX | keep);
    s += pl + 1;
    for (size_t i = 0; i < n_hdrs; i++) {
        size_t nl = lens[2 * i], vl = lens[2 * i + 1];
        const char *name = hdrs[i].name;
        if (!(hdrs[i].flags & H2_HDR_STATIC_NAME)) {
            /* HTTP/2 wants lowercase names (ASCII only: no locale lookup). */
            char *lc = s;
            memcpy(lc, hdrs[i].name, nl + 1);
            for (size_t k = 0; k < nl; k++)
                lc[k] = (char)(lc[k] + ((unsigned char)(lc[k] - 'A') < 26 ? 'a' - 'A' : 0));
            name = lc;
            s += nl + 1;
        }
        memcpy(s, hdrs[i].value, vl + 1);
        NV_SET(4 + i, name, nl, s, vl,
               ((hdrs[i].flags & H2_HDR_NO_INDEX) ? NGHTTP2_NV_FLAG_NO_INDEX : 0) | keep);
        s += vl + 1;
    }
#undef NV_SET
    if (lens != lens_stack)
        free(lens);
    if (body_len > 0)
        memcpy(s, body, body_len);
    r->nva = nv;
    r->nvlen = nvlen;
    r->body = (const uint8_t *)s;
    r->body_len = body_len;
    r->pool = p;
    r->cb = cb;
    r->user = user;
    r->where = W_QUEUE;
    list_push_back(&p->queue, r);
    p->n_queued++;
    pool_kick(p);
    return 0;
}

size_t h2_pool_inflight(const struct h2_pool *p)
{
    return p->n_inflight;
}

size_t h2_pool_queued(const struct h2_pool *p)
{
    return p->n_queued;
}

size_t h2_pool_connections(const struct h2_pool *p)
{
    return p->n_conns;
}

void h2_pool_get_stats(const struct h2_pool *p, struct h2_pool_stats *out)
{
    *out = p->stats;
}

static void on_pool_handle_closed(uv_handle_t *h)
{
    struct h2_pool *p = h->data;
    if (--p->handles_open > 0)
        return;
    void (*done)(void *) = p->done_cb;
    void *arg = p->done_arg;
    nghttp2_session_callbacks_del(p->ngcb);
    nghttp2_option_del(p->ngopt);
    ng_alloc_release(&p->ngalloc);
    free(p->name);
    free(p->host);
    free(p->authority);
    free(p);
    if (done != NULL)
        done(arg);
}

/* Close the pool's own handles once nothing else refers to it. */
static void pool_maybe_finish(struct h2_pool *p)
{
    if (!p->closing || p->handles_closing)
        return;
    if (p->done.first != NULL || p->conns != NULL || p->resolving)
        return;
    p->handles_closing = 1;
    uv_close((uv_handle_t *)&p->kick, on_pool_handle_closed);
    uv_close((uv_handle_t *)&p->tick, on_pool_handle_closed);
    uv_close((uv_handle_t *)&p->backoff, on_pool_handle_closed);
}

void h2_pool_close(struct h2_pool *p, void (*done)(void *arg), void *arg)
{
    if (p->closing)
        return;
    p->closing = 1;
    p->done_cb = done;
    p->done_arg = arg;
    log_info(TAG, "%s: closing (%zu queued, %zu in flight)", p->name, p->n_queued,
             p->n_inflight);
    while (p->queue.first != NULL)
        req_finish(p->queue.first, H2_ERR_SHUTDOWN, "pool closing");
    for (struct h2_conn *c = p->conns; c; c = c->next) {
        for (struct h2_req *r = c->streams.first; r; r = r->cnext)
            if (r->where == W_INFLIGHT)
                req_finish(r, H2_ERR_SHUTDOWN, "pool closing");
        if (c->ngh != NULL && c->state != C_CLOSING) {
            nghttp2_session_terminate_session(c->ngh, NGHTTP2_NO_ERROR);
            conn_flush(c);
            conn_close(c, 0, "pool closing");
        } else {
            conn_close(c, UV_ECANCELED, "pool closing");
        }
    }
    if (p->resolving)
        (void)uv_cancel((uv_req_t *)&p->gai);
    uv_timer_stop(&p->backoff);
    uv_timer_stop(&p->tick);
    pool_kick(p);
    pool_maybe_finish(p);
}
