/*
 * Scripted in-process HTTP/2 TLS server for the h2 client tests; see
 * h2_testserver.h. Structure: a uv_tcp_t listener accepts with
 * tls_conn_accept; each connection owns an nghttp2 server session fed from
 * on_data; responses are submitted at once or, with delay_ms, from a
 * periodic timer that answers every due stream. Streams and connections are
 * freed only from nghttp2's on_stream_close and the tls on_close.
 */
#include "tests/unit/h2_testserver.h"

#include "common/util.h"
#include "http2/tls.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ts_conn;

struct ts_stream {
    struct ts_stream *next, *prev;   /* connection's stream list */
    struct ts_conn *conn;
    int32_t id;
    char path[256];
    uint8_t *body;                   /* request body, then response body */
    size_t body_len, body_cap, body_off;
    int complete;                    /* request fully received */
    int answered;
    int dropped;                     /* above our GOAWAY, or /hang */
    uint64_t due_ms;
    char apns_id[32];
    char path_hdr[256];
    char len_hdr[24];
};

struct ts_conn {
    struct ts_conn *next, *prev;
    struct h2ts *srv;
    struct tls_conn *tls;
    nghttp2_session *ngh;
    struct ts_stream *streams;
    int index;                       /* 1-based accept order */
    int n_requests;
    int open;                        /* streams open now */
    uint32_t limit;                  /* advertised limit */
    int raised;
    int32_t goaway_last;             /* -1 = no GOAWAY sent */
    int closing;
};

struct h2ts {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_timer_t timer;
    int handles_open;
    int stopping;
    SSL_CTX *ctx;
    struct h2ts_config cfg;
    struct h2ts_stats st;
    struct ts_conn *conns;
    int n_conns;
    int port;
    int apns_counter;
    char **refused_paths;
    size_t n_refused;
};

static void ts_flush(struct ts_conn *c);

static void ts_maybe_free(struct h2ts *s)
{
    if (!s->stopping || s->handles_open > 0 || s->n_conns > 0)
        return;
    for (size_t i = 0; i < s->n_refused; i++)
        free(s->refused_paths[i]);
    free(s->refused_paths);
    SSL_CTX_free(s->ctx);
    free(s);
}

static void ts_handle_closed(uv_handle_t *h)
{
    struct h2ts *s = h->data;
    s->handles_open--;
    ts_maybe_free(s);
}

static void ts_stream_free(struct ts_stream *st)
{
    struct ts_conn *c = st->conn;
    if (st->prev)
        st->prev->next = st->next;
    else
        c->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    free(st->body);
    free(st);
}

static ssize_t ts_body_read(nghttp2_session *ngh, int32_t id, uint8_t *buf, size_t len,
                            uint32_t *flags, nghttp2_data_source *src, void *user)
{
    (void)ngh; (void)id; (void)user;
    struct ts_stream *st = src->ptr;
    size_t n = st->body_len - st->body_off;
    if (n > len)
        n = len;
    memcpy(buf, st->body + st->body_off, n);
    st->body_off += n;
    if (st->body_off == st->body_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static void ts_respond(struct ts_stream *st)
{
    struct ts_conn *c = st->conn;
    struct h2ts *s = c->srv;
    if (st->answered || st->dropped || c->closing)
        return;
    st->answered = 1;
    if (strcmp(st->path, "/big") == 0) {
        free(st->body);
        st->body = xmalloc(s->cfg.big_body ? s->cfg.big_body : 1);
        for (size_t i = 0; i < s->cfg.big_body; i++)
            st->body[i] = (uint8_t)('a' + i % 26);
        st->body_len = s->cfg.big_body;
    }
    st->body_off = 0;
    snprintf(st->apns_id, sizeof st->apns_id, "id-%d", ++s->apns_counter);
    snprintf(st->path_hdr, sizeof st->path_hdr, "%s", st->path);
    snprintf(st->len_hdr, sizeof st->len_hdr, "%zu", st->body_len);
    nghttp2_nv nv[] = {
        { (uint8_t *)":status", (uint8_t *)"200", 7, 3, 0 },
        { (uint8_t *)"apns-id", (uint8_t *)st->apns_id, 7, strlen(st->apns_id), 0 },
        { (uint8_t *)"x-path", (uint8_t *)st->path_hdr, 6, strlen(st->path_hdr), 0 },
        { (uint8_t *)"content-length", (uint8_t *)st->len_hdr, 14, strlen(st->len_hdr), 0 },
    };
    nghttp2_data_provider prd = { .source.ptr = st, .read_callback = ts_body_read };
    if (nghttp2_submit_response(c->ngh, st->id, nv, 4, st->body_len ? &prd : NULL) != 0)
        return;
    s->st.responses++;
    if (s->cfg.raise_to && !c->raised) {
        c->raised = 1;
        nghttp2_settings_entry iv = { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, s->cfg.raise_to };
        nghttp2_submit_settings(c->ngh, NGHTTP2_FLAG_NONE, &iv, 1);
        c->limit = s->cfg.raise_to;
    }
}

static int ts_path_refused_before(struct h2ts *s, const char *path)
{
    for (size_t i = 0; i < s->n_refused; i++)
        if (strcmp(s->refused_paths[i], path) == 0)
            return 1;
    return 0;
}

/* A request is complete: apply the script. */
static void ts_request_done(struct ts_stream *st)
{
    struct ts_conn *c = st->conn;
    struct h2ts *s = c->srv;
    st->complete = 1;
    c->n_requests++;
    s->st.requests++;
    if (c->goaway_last >= 0 && st->id > c->goaway_last) {
        st->dropped = 1;
        return;
    }
    if (s->cfg.refuse_every > 0 && s->st.requests % s->cfg.refuse_every == 0 &&
        !ts_path_refused_before(s, st->path)) {
        s->refused_paths = xrealloc(s->refused_paths, (s->n_refused + 1) * sizeof(char *));
        s->refused_paths[s->n_refused++] = xstrdup(st->path);
        s->st.refused++;
        st->dropped = 1;
        nghttp2_submit_rst_stream(c->ngh, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_REFUSED_STREAM);
        return;
    }
    if (strcmp(st->path, "/hang") == 0) {
        st->dropped = 1;
        return;
    }
    if (s->cfg.goaway_after > 0 && c->n_requests == s->cfg.goaway_after &&
        (s->cfg.goaway_conns == 0 || c->index <= s->cfg.goaway_conns)) {
        int32_t last = 0;
        if (s->cfg.goaway_keep > 0) {
            /* the id of the goaway_keep-th request: client ids are 1,3,5... in
             * order on a fresh connection */
            last = 2 * s->cfg.goaway_keep - 1;
        }
        static const char dbg[] = "{\"reason\":\"Shutdown\"}";
        nghttp2_submit_goaway(c->ngh, NGHTTP2_FLAG_NONE, last, NGHTTP2_NO_ERROR,
                              (const uint8_t *)dbg, sizeof dbg - 1);
        c->goaway_last = last;
        s->st.goaways++;
        for (struct ts_stream *o = c->streams; o; o = o->next)
            if (o->id > last)
                o->dropped = 1;
        if (st->dropped)
            return;
    }
    if (s->cfg.reset_after > 0 && c->n_requests == s->cfg.reset_after &&
        (s->cfg.reset_conns == 0 || c->index <= s->cfg.reset_conns)) {
        s->st.resets++;
        c->closing = 1;
        tls_conn_reset(c->tls);
        return;
    }
    if (s->cfg.delay_ms == 0)
        ts_respond(st);
    else
        st->due_ms = uv_now(s->loop) + s->cfg.delay_ms;
}

static int ts_on_begin_headers(nghttp2_session *ngh, const nghttp2_frame *frame, void *user)
{
    struct ts_conn *c = user;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct ts_stream *st = xcalloc(1, sizeof *st);
    st->conn = c;
    st->id = frame->hd.stream_id;
    st->next = c->streams;
    if (c->streams)
        c->streams->prev = st;
    c->streams = st;
    nghttp2_session_set_stream_user_data(ngh, st->id, st);
    c->open++;
    struct h2ts_stats *S = &c->srv->st;
    if (c->open > S->max_open)
        S->max_open = c->open;
    if (c->limit == 1 && c->open > S->max_open_at_1)
        S->max_open_at_1 = c->open;
    if ((uint32_t)c->open > c->limit)
        S->violations++;
    return 0;
}

static int ts_on_header(nghttp2_session *ngh, const nghttp2_frame *frame, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *user)
{
    struct ts_conn *c = user;
    struct ts_stream *st = nghttp2_session_get_stream_user_data(ngh, frame->hd.stream_id);
    if (st == NULL)
        return 0;
    if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
        size_t n = valuelen < sizeof st->path - 1 ? valuelen : sizeof st->path - 1;
        memcpy(st->path, value, n);
        st->path[n] = '\0';
    } else if (namelen == 10 && memcmp(name, ":authority", 10) == 0) {
        size_t n = valuelen < sizeof c->srv->st.authority - 1 ? valuelen
                                                               : sizeof c->srv->st.authority - 1;
        memcpy(c->srv->st.authority, value, n);
        c->srv->st.authority[n] = '\0';
    } else if (namelen == 13 && memcmp(name, "authorization", 13) == 0) {
        if (flags & NGHTTP2_NV_FLAG_NO_INDEX)
            c->srv->st.auth_no_index++;
        else
            c->srv->st.auth_indexed++;
    }
    return 0;
}

static int ts_on_data(nghttp2_session *ngh, uint8_t flags, int32_t id, const uint8_t *data,
                      size_t len, void *user)
{
    (void)flags; (void)user;
    struct ts_stream *st = nghttp2_session_get_stream_user_data(ngh, id);
    if (st == NULL)
        return 0;
    if (st->body_len + len > st->body_cap) {
        st->body_cap = (st->body_len + len) * 2;
        st->body = xrealloc(st->body, st->body_cap);
    }
    memcpy(st->body + st->body_len, data, len);
    st->body_len += len;
    return 0;
}

static int ts_on_frame_recv(nghttp2_session *ngh, const nghttp2_frame *frame, void *user)
{
    struct ts_conn *c = user;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
    case NGHTTP2_DATA:
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            struct ts_stream *st = nghttp2_session_get_stream_user_data(ngh, frame->hd.stream_id);
            if (st != NULL && !st->complete)
                ts_request_done(st);
        }
        break;
    case NGHTTP2_PING:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
            c->srv->st.pings++;
        break;
    case NGHTTP2_RST_STREAM:
        c->srv->st.rst_received++;
        break;
    default:
        break;
    }
    return 0;
}

static int ts_on_frame_send(nghttp2_session *ngh, const nghttp2_frame *frame, void *user)
{
    (void)ngh;
    struct ts_conn *c = user;
    /* RST_STREAM or GOAWAY the library produced on its own means the client
     * broke a rule (e.g. opened more streams than allowed) */
    if (frame->hd.type == NGHTTP2_RST_STREAM &&
        frame->rst_stream.error_code != NGHTTP2_REFUSED_STREAM)
        c->srv->st.violations++;
    if (frame->hd.type == NGHTTP2_RST_STREAM &&
        frame->rst_stream.error_code == NGHTTP2_REFUSED_STREAM) {
        struct ts_stream *st = nghttp2_session_get_stream_user_data(ngh, frame->hd.stream_id);
        if (st == NULL || !st->dropped)
            c->srv->st.violations++;
    }
    if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR)
        c->srv->st.violations++;
    return 0;
}

static int ts_on_stream_close(nghttp2_session *ngh, int32_t id, uint32_t err, void *user)
{
    (void)err;
    struct ts_conn *c = user;
    struct ts_stream *st = nghttp2_session_get_stream_user_data(ngh, id);
    if (st == NULL)
        return 0;
    c->open--;
    ts_stream_free(st);
    return 0;
}

static void ts_flush(struct ts_conn *c)
{
    if (c->closing || c->ngh == NULL)
        return;
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->ngh, &data);
        if (n < 0) {
            c->closing = 1;
            tls_conn_close(c->tls, -1, "mem_send failed");
            return;
        }
        if (n == 0)
            break;
        if (tls_conn_write(c->tls, data, (size_t)n) < 0)
            return;
    }
    if (!nghttp2_session_want_read(c->ngh) && !nghttp2_session_want_write(c->ngh)) {
        c->closing = 1;
        tls_conn_close(c->tls, 0, "session done");
    }
}

static void ts_conn_open(struct tls_conn *t, void *user)
{
    struct ts_conn *c = user;
    struct h2ts *s = c->srv;
    s->st.handshakes++;
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, ts_on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, ts_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, ts_on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, ts_on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, ts_on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, ts_on_stream_close);
    nghttp2_session_server_new(&c->ngh, cb, c);
    nghttp2_session_callbacks_del(cb);
    c->limit = s->cfg.max_streams ? s->cfg.max_streams : 0xffffffffu;
    nghttp2_settings_entry iv = { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, c->limit };
    nghttp2_submit_settings(c->ngh, NGHTTP2_FLAG_NONE, &iv, s->cfg.max_streams ? 1 : 0);
    (void)t;
    ts_flush(c);
}

static void ts_conn_data(struct tls_conn *t, const uint8_t *data, size_t len, void *user)
{
    (void)t;
    struct ts_conn *c = user;
    if (c->closing || c->ngh == NULL)
        return;
    if (nghttp2_session_mem_recv(c->ngh, data, len) < 0) {
        c->srv->st.violations++;
        ts_flush(c);
        if (!c->closing) {
            c->closing = 1;
            tls_conn_close(c->tls, -1, "mem_recv failed");
        }
        return;
    }
    ts_flush(c);
}

static void ts_conn_close(struct tls_conn *t, int err, const char *reason, void *user)
{
    (void)t; (void)err; (void)reason;
    struct ts_conn *c = user;
    struct h2ts *s = c->srv;
    while (c->streams)
        ts_stream_free(c->streams);
    nghttp2_session_del(c->ngh);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->n_conns--;
    free(c);
    ts_maybe_free(s);
}

static const struct tls_conn_callbacks ts_tls_cb = { ts_conn_open, ts_conn_data, ts_conn_close };

static void ts_on_connection(uv_stream_t *l, int status)
{
    struct h2ts *s = l->data;
    if (status < 0 || s->stopping)
        return;
    struct ts_conn *c = xcalloc(1, sizeof *c);
    c->srv = s;
    c->goaway_last = -1;
    if (tls_conn_accept(l, s->ctx, &ts_tls_cb, c, &c->tls) != 0) {
        free(c);
        return;
    }
    c->index = ++s->st.conns;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
}

static void ts_on_timer(uv_timer_t *t)
{
    struct h2ts *s = t->data;
    uint64_t now = uv_now(s->loop);
    for (struct ts_conn *c = s->conns; c; c = c->next) {
        if (c->closing || c->ngh == NULL)
            continue;
        int any = 0;
        for (struct ts_stream *st = c->streams; st; st = st->next) {
            if (st->complete && !st->answered && !st->dropped && st->due_ms <= now) {
                ts_respond(st);
                any = 1;
            }
        }
        if (any)
            ts_flush(c);
    }
}

struct h2ts *h2ts_start(uv_loop_t *loop, const char *cert, const char *key,
                        const struct h2ts_config *cfg)
{
    static const char *const alpn[] = { "h2", NULL };
    char err[256];
    SSL_CTX *ctx = tls_server_ctx_new(cert, key, alpn, err, sizeof err);
    if (ctx == NULL) {
        fprintf(stderr, "h2ts: %s\n", err);
        return NULL;
    }
    struct h2ts *s = xcalloc(1, sizeof *s);
    s->loop = loop;
    s->ctx = ctx;
    s->cfg = *cfg;
    uv_tcp_init(loop, &s->listener);
    uv_timer_init(loop, &s->timer);
    s->listener.data = s;
    s->timer.data = s;
    s->handles_open = 2;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_bind(&s->listener, (struct sockaddr *)&sa, 0) != 0 ||
        uv_listen((uv_stream_t *)&s->listener, 64, ts_on_connection) != 0 ||
        uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len) != 0) {
        fprintf(stderr, "h2ts: listen failed\n");
        h2ts_stop(s);
        return NULL;
    }
    s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    uv_timer_start(&s->timer, ts_on_timer, 2, 2);
    return s;
}

int h2ts_port(const struct h2ts *s)
{
    return s->port;
}

struct h2ts_config *h2ts_config(struct h2ts *s)
{
    return &s->cfg;
}

const struct h2ts_stats *h2ts_stats(const struct h2ts *s)
{
    return &s->st;
}

int h2ts_open_conns(const struct h2ts *s)
{
    return s->n_conns;
}

void h2ts_stop(struct h2ts *s)
{
    if (s->stopping)
        return;
    s->stopping = 1;
    for (struct ts_conn *c = s->conns; c; c = c->next) {
        if (!c->closing) {
            c->closing = 1;
            tls_conn_close(c->tls, 0, "server stop");
        }
    }
    uv_close((uv_handle_t *)&s->listener, ts_handle_closed);
    uv_close((uv_handle_t *)&s->timer, ts_handle_closed);
}
