/*
 * varsel-sandbox HTTP/2 server.
 *
 * Architecture. Layers, each knowing only the one below:
 *
 *   uv_tcp listener --accept--> tls_conn (http2/tls.c, memory BIOs)
 *       --plaintext--> nghttp2 server session (mem_recv / mem_send)
 *       --complete request--> struct sbx_service (sandbox/apns_service.c ...)
 *
 * One struct sbx_conn per accepted socket embeds a uv_timer_t for delayed
 * answers and owns the nghttp2 session and a list of open streams. A stream
 * collects headers and body until END_STREAM, then the service fills a
 * struct sbx_response which the stream keeps (copied) until it is submitted:
 * at once, after delay_ms (the connection timer scans due streams), never
 * (hang), or replaced by RST_STREAM / a TCP reset. Every response tag gets
 * exactly one finish() call: at submission (answered) or when the stream or
 * connection dies first.
 *
 * Storage. nghttp2's blocks and the streams come from one http2/ngalloc
 * allocator per server (free lists; the server runs on one loop). A
 * stream's request strings (pseudo-headers, header names and values) and
 * the response's header strings and body live in its bump arena (inline
 * buffer, then malloc'ed chunks; the request body has a buffer of its own);
 * the header and nghttp2_nv arrays are inline up to HDRS_INLINE /
 * SBX_RESP_MAX_HEADERS + 1.
 * All of it stays valid until stream_free, which releases it at once.
 *
 * Lifetime. tls_conn's on_close is the single teardown point: streams are
 * finished and freed, the nghttp2 session deleted, the service told, and the
 * struct freed in the timer's close callback. nghttp2_session_del() does not
 * call stream-close callbacks, so the stream list is ours to free.
 *
 * Stream limits are nghttp2's: it refuses streams over a pending (not yet
 * acknowledged) MAX_CONCURRENT_STREAMS with RST_STREAM REFUSED_STREAM and
 * answers streams over an acknowledged limit with GOAWAY PROTOCOL_ERROR. A
 * service may replace that GOAWAY's text (over_limit_goaway): the
 * on_invalid_frame_recv callback spots the case, makes nghttp2_session_
 * mem_recv fail, and the server writes its own single GOAWAY frame.
 *
 * HTTP/1.1 (services with http1 set): the connection speaks HTTP/1.1 when
 * ALPN selected "http/1.1", or when there was no ALPN and the first bytes
 * are not the HTTP/2 client preface (PROTO_SNIFF buffers them until it can
 * tell). sandbox/http1.c parses requests; each becomes a struct stream
 * numbered 1, 2, 3... and goes through the same dispatch. Answers leave in
 * request order (h1_pump writes the oldest stream once it is due), so a
 * delayed or hung answer holds back the ones behind it, as on a real
 * HTTP/1.1 connection. RST_STREAM has no HTTP/1.1 form: the connection is
 * closed instead. GOAWAY becomes "connection: close" on the last answer.
 */
#include "sandbox/server.h"

#include "common/log.h"
#include "common/util.h"
#include "http2/ngalloc.h"
#include "http2/tls.h"
#include "sandbox/http1.h"

#include <nghttp2/nghttp2.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BODY_CAP (64 * 1024)    /* request bytes stored; the rest only counted */
#define OUT_CHUNK (32 * 1024)   /* coalesce nghttp2 output into TLS writes */
#define SUMMARY_CONNS 10000     /* per-connection rows kept for the summary */
#define ARENA_INLINE 2048       /* per-stream string bytes without a malloc */
#define ARENA_CHUNK 4096        /* minimum overflow chunk */
#define HDRS_INLINE 16          /* request headers without a malloc */

struct listener {
    uv_tcp_t tcp;
    struct sbx_server *srv;
    const struct sbx_service *svc;
    SSL_CTX *ssl_ctx;               /* NULL = the server's */
    char name[32];
    int port;
    struct listener *next;
};

/* Overflow storage of a stream's arena (strings that do not fit the inline
 * buffer); freed together with the stream. */
struct arena_chunk {
    struct arena_chunk *next;
    size_t cap, used;
    char data[];
};

/*
 * One request/response exchange. Its strings (pseudo-headers, header names
 * and values, response header strings and body) live in a bump arena:
 * arena[] inline, then malloc'ed chunks; all freed in stream_free (the
 * request body is malloc'ed on its own). Everything before |arena| is
 * zeroed by stream_new; the inline storage from |arena| on is only written
 * as it is used.
 */
struct stream {
    struct sbx_conn *conn;
    int32_t id;
    struct stream *prev, *next;     /* conn->streams */
    /* request */
    char *method, *path, *scheme, *authority;
    struct sbx_header *hdrs;        /* hdrs_inline, or malloc'ed past HDRS_INLINE */
    size_t nhdrs, caphdrs;
    size_t header_bytes;
    bool headers_too_large;
    uint8_t *body;                  /* malloc'ed, grown by doubling */
    size_t body_len, body_cap, body_total;
    bool dispatched;
    /* response */
    enum sbx_action action;
    bool prepared;                  /* the service answered; waiting or sent */
    bool submitted;
    uint64_t due_mono;              /* submit at this mono_ms */
    int status;
    size_t nnv;                     /* entries of nva[] in use */
    char *resp_body;                /* in the arena */
    size_t resp_len, resp_off;
    void *tag;
    bool tag_pending;               /* finish() not yet called */
    bool h1_keep_alive;             /* HTTP/1.1: the client keeps the connection */
    /* lenient_scheme services: our own HTTP/2 request checks */
    const char *bad;                /* why the request is malformed, NULL if not */
    bool regular_seen;              /* a regular header arrived (pseudo ones must precede) */
    int64_t content_length;         /* -1 when absent */
    struct arena_chunk *chunks;     /* overflow, newest first */
    size_t arena_used;
    /* ---- not zeroed: used from the start, as far as set ---- */
    char arena[ARENA_INLINE];
    struct sbx_header hdrs_inline[HDRS_INLINE];
    nghttp2_nv nva[SBX_RESP_MAX_HEADERS + 1]; /* [0] is :status; strings in the arena */
    char status_text[12];
};

struct conn_row {
    uint64_t id;
    const char *listener;
    const char *http;
    uint64_t requests;
    uint32_t max_active;
};

enum conn_proto {
    PROTO_NONE = 0,                 /* before the TLS handshake */
    PROTO_SNIFF,                    /* no ALPN, HTTP/1.1 allowed: reading the preface */
    PROTO_H2,
    PROTO_HTTP1,
};

struct sbx_conn {
    struct sbx_server *srv;
    struct listener *lst;
    struct tls_conn *tls;           /* NULL once on_close ran */
    enum conn_proto proto;
    nghttp2_session *h2;            /* PROTO_H2 */
    struct sbx_http1 *h1;           /* PROTO_HTTP1 */
    int32_t h1_next_id;             /* last request number given */
    int32_t h1_last_id;             /* GOAWAY: close after this request (0 = none) */
    uint8_t sniff[24];              /* PROTO_SNIFF: bytes read so far */
    size_t sniff_len;
    bool over_limit;                /* a stream over the acknowledged limit arrived */
    bool alpn_refused;              /* http/1.1 negotiated on an HTTP/2-only service */
    uv_timer_t timer;               /* delayed answers */
    void *state;                    /* the service's */
    bool service_open;
    bool closing;                   /* no more I/O; teardown pending */
    uint64_t id;
    struct stream *streams;
    struct sbx_conn *prev, *next;   /* srv->conns */
    uint32_t max_streams;           /* advertised */
    uint32_t active, max_active;
    uint64_t requests;
};

struct sbx_server {
    uv_loop_t *loop;
    SSL_CTX *ssl_ctx;
    struct listener *listeners;
    struct sbx_conn *conns;
    uint64_t next_conn_id;
    unsigned live_handles;          /* listeners + connections not yet freed */
    bool shutting_down;
    void (*done)(void *);
    void *done_arg;
    struct sbx_server_stats stats;
    struct conn_row *rows;
    size_t nrows;
    struct ng_alloc ngalloc;        /* nghttp2's blocks and our streams (http2/ngalloc.h) */
    nghttp2_mem ngmem;
};

static void conn_flush(struct sbx_conn *c);
static void conn_schedule(struct sbx_conn *c);
static void h1_pump(struct sbx_conn *c);

/* ---- streams ------------------------------------------------------------ */

static struct stream *stream_new(struct sbx_conn *c, int32_t id)
{
    struct stream *s = ng_malloc(sizeof *s, &c->srv->ngalloc);
    if (s == NULL) {
        fprintf(stderr, "out of memory (%zu bytes)\n", sizeof *s);
        abort();
    }
    memset(s, 0, offsetof(struct stream, arena));
    s->hdrs = s->hdrs_inline;
    s->caphdrs = HDRS_INLINE;
    s->conn = c;
    s->id = id;
    s->content_length = -1;
    s->next = c->streams;
    if (c->streams)
        c->streams->prev = s;
    c->streams = s;
    return s;
}

static void stream_finish(struct stream *s, bool answered)
{
    if (!s->tag_pending)
        return;
    s->tag_pending = false;
    struct sbx_conn *c = s->conn;
    const struct sbx_service *svc = c->lst->svc;
    if (svc->finish)
        svc->finish(svc->ctx, c, c->state, s->tag, answered);
}

/* Unlink and free |s| (finishing its tag unanswered if still pending). */
static void stream_free(struct stream *s)
{
    struct sbx_conn *c = s->conn;
    stream_finish(s, false);
    if (s->prev)
        s->prev->next = s->next;
    else
        c->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    if (s->hdrs != s->hdrs_inline)
        free(s->hdrs);
    free(s->body);
    struct arena_chunk *ch = s->chunks;
    while (ch) {
        struct arena_chunk *next = ch->next;
        free(ch);
        ch = next;
    }
    ng_free(s, &c->srv->ngalloc);
}

/* |n| bytes of |s|'s arena (no alignment: strings and bytes only). */
static char *arena_alloc(struct stream *s, size_t n)
{
    if (n <= ARENA_INLINE - s->arena_used) {
        char *p = s->arena + s->arena_used;
        s->arena_used += n;
        return p;
    }
    struct arena_chunk *ch = s->chunks;
    if (ch == NULL || n > ch->cap - ch->used) {
        size_t cap = n > ARENA_CHUNK ? n : ARENA_CHUNK;
        ch = xmalloc(sizeof *ch + cap);
        ch->cap = cap;
        ch->used = 0;
        ch->next = s->chunks;
        s->chunks = ch;
    }
    char *p = ch->data + ch->used;
    ch->used += n;
    return p;
}

/* A NUL-terminated copy of |len| bytes at |p| in |s|'s arena. */
static char *arena_strndup(struct stream *s, const void *p, size_t len)
{
    char *d = arena_alloc(s, len + 1);
    memcpy(d, p, len);
    d[len] = '\0';
    return d;
}

/* Append a regular request header (copied). */
static void stream_add_header(struct stream *s, const void *name, size_t namelen,
                              const void *value, size_t valuelen)
{
    if (s->nhdrs == s->caphdrs) {
        s->caphdrs *= 2;
        if (s->hdrs == s->hdrs_inline) {
            s->hdrs = xmalloc(s->caphdrs * sizeof *s->hdrs);
            memcpy(s->hdrs, s->hdrs_inline, s->nhdrs * sizeof *s->hdrs);
        } else {
            s->hdrs = xrealloc(s->hdrs, s->caphdrs * sizeof *s->hdrs);
        }
    }
    struct sbx_header *h = &s->hdrs[s->nhdrs++];
    h->name = arena_strndup(s, name, namelen);
    h->namelen = namelen;
    h->value = arena_strndup(s, value, valuelen);
    h->valuelen = valuelen;
}

/* Store up to BODY_CAP request body bytes (the rest only counted by the
 * caller). */
static void stream_add_body(struct stream *s, const uint8_t *data, size_t len)
{
    if (s->body_len >= BODY_CAP)
        return;
    size_t n = BODY_CAP - s->body_len < len ? BODY_CAP - s->body_len : len;
    if (s->body_len + n > s->body_cap) {
        size_t cap = s->body_cap ? s->body_cap : 1024;
        while (cap < s->body_len + n)
            cap *= 2;
        s->body_cap = cap < BODY_CAP ? cap : BODY_CAP;
        s->body = xrealloc(s->body, s->body_cap);
    }
    memcpy(s->body + s->body_len, data, n);
    s->body_len += n;
}

static ssize_t read_resp_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                              size_t length, uint32_t *data_flags,
                              nghttp2_data_source *source, void *user_data)
{
    struct stream *s = source->ptr;
    size_t n = s->resp_len - s->resp_off;
    if (n > length)
        n = length;
    memcpy(buf, s->resp_body + s->resp_off, n);
    s->resp_off += n;
    if (s->resp_off == s->resp_len)
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* Hand the prepared answer to nghttp2. On HTTP/1.1 only mark it due: the
 * caller runs h1_pump(), which writes answers in request order. */
static void stream_submit(struct stream *s)
{
    struct sbx_conn *c = s->conn;
    struct sbx_server *srv = c->srv;
    s->submitted = true;
    if (c->proto == PROTO_HTTP1)
        return;
    if (s->action == SBX_ACT_RST_STREAM) {
        nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
        srv->stats.rst_streams++;
        stream_finish(s, false);
        return;
    }
    nghttp2_data_provider prd = { .source.ptr = s, .read_callback = read_resp_body };
    int rv = nghttp2_submit_response(c->h2, s->id, s->nva, s->nnv,
                                     s->resp_len > 0 ? &prd : NULL);
    if (rv != 0) {
        log_debug("server", "conn %llu stream %d: cannot answer: %s",
                  (unsigned long long)c->id, s->id, nghttp2_strerror(rv));
        stream_finish(s, false);
        return;
    }
    srv->stats.responses++;
    stream_finish(s, true);
}

/* Copy the service's response into |s|. */
static void stream_prepare(struct stream *s, const struct sbx_response *r)
{
    s->prepared = true;
    s->action = r->action;
    s->status = r->status;
    s->tag = r->tag;
    s->tag_pending = r->tag != NULL;
    if (r->action != SBX_ACT_REPLY)
        return;
    size_t nh = r->nheaders > SBX_RESP_MAX_HEADERS ? SBX_RESP_MAX_HEADERS : r->nheaders;
    int stlen = snprintf(s->status_text, sizeof s->status_text, "%d", r->status);
    s->nva[0] = (nghttp2_nv){ (uint8_t *)":status", (uint8_t *)s->status_text, 7,
                              (size_t)stlen, NGHTTP2_NV_FLAG_NONE };
    s->nnv = 1;
    for (size_t i = 0; i < nh; i++) {
        nghttp2_nv *nv = &s->nva[s->nnv++];
        nv->namelen = strlen(r->headers[i].name);
        nv->valuelen = strlen(r->headers[i].value);
        nv->name = (uint8_t *)arena_strndup(s, r->headers[i].name, nv->namelen);
        nv->value = (uint8_t *)arena_strndup(s, r->headers[i].value, nv->valuelen);
        /* A value unique to this response would only evict useful entries
         * from both HPACK dynamic tables. */
        nv->flags = r->headers[i].no_index ? NGHTTP2_NV_FLAG_NO_INDEX : NGHTTP2_NV_FLAG_NONE;
    }
    if (r->body && r->body_len > 0) {
        s->resp_body = arena_alloc(s, r->body_len);
        memcpy(s->resp_body, r->body, r->body_len);
        s->resp_len = r->body_len;
    }
}

/* END_STREAM seen: give the request to the service and act on its answer. */
static void stream_dispatch(struct stream *s)
{
    struct sbx_conn *c = s->conn;
    struct sbx_server *srv = c->srv;
    const struct sbx_service *svc = c->lst->svc;
    if (s->dispatched)
        return;
    s->dispatched = true;
    c->requests++;
    srv->stats.requests++;

    struct sbx_request req = {
        .method = s->method, .path = s->path, .scheme = s->scheme,
        .authority = s->authority, .headers = s->hdrs, .nheaders = s->nhdrs,
        .body = s->body, .body_len = s->body_len, .body_total = s->body_total,
        .headers_too_large = s->headers_too_large,
        .conn_id = c->id, .stream_id = s->id,
    };
    struct sbx_response resp;
    memset(&resp, 0, sizeof resp);
    svc->request(svc->ctx, c, c->state, &req, &resp);
    stream_prepare(s, &resp);

    switch (resp.action) {
    case SBX_ACT_HANG:
        srv->stats.hangs++;
        return;
    case SBX_ACT_TCP_RESET:
        srv->stats.tcp_resets++;
        log_info(svc->name, "conn %llu stream %d: resetting the TCP connection (fault)",
                 (unsigned long long)c->id, s->id);
        if (c->tls && !c->closing) {
            c->closing = true;
            tls_conn_reset(c->tls);
        }
        return;
    case SBX_ACT_REPLY:
    case SBX_ACT_RST_STREAM:
        break;
    }
    if (resp.delay_ms > 0) {
        s->due_mono = mono_ms() + resp.delay_ms;
        conn_schedule(c);
    } else {
        stream_submit(s);
    }
}

/* ---- nghttp2 callbacks -------------------------------------------------- */

static struct stream *get_stream(nghttp2_session *h2, int32_t id)
{
    return nghttp2_session_get_stream_user_data(h2, id);
}

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *frame, void *user)
{
    struct sbx_conn *c = user;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct stream *s = stream_new(c, frame->hd.stream_id);
    nghttp2_session_set_stream_user_data(h2, frame->hd.stream_id, s);
    c->active++;
    if (c->active > c->max_active)
        c->max_active = c->active;
    if (c->active > c->srv->stats.max_streams_seen)
        c->srv->stats.max_streams_seen = c->active;
    return 0;
}

static void set_pseudo(struct stream *s, char **field, const uint8_t *v, size_t len)
{
    if (*field == NULL)
        *field = arena_strndup(s, v, len);
}

static bool name_is(const uint8_t *name, size_t len, const char *want)
{
    return strlen(want) == len && memcmp(name, want, len) == 0;
}

/* RFC 3986 scheme (ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )), plus one
 * trailing ':' as Google's front end tolerates (firebase-admin-node sends
 * ":scheme: https:" on HTTP/2). */
static bool scheme_ok(const uint8_t *v, size_t len)
{
    if (len > 0 && v[len - 1] == ':')
        len--;
    if (len == 0 || !((v[0] | 0x20) >= 'a' && (v[0] | 0x20) <= 'z'))
        return false;
    for (size_t i = 1; i < len; i++) {
        uint8_t ch = v[i];
        if (!(((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '+' || ch == '-' || ch == '.'))
            return false;
    }
    return true;
}

/*
 * nghttp2's HTTP messaging checks (nghttp2_http.c) redone for sessions
 * where they are off (lenient_scheme): the same rules, except that the
 * :scheme value may end with one ':'. Marks the stream bad; it is reset at
 * END_STREAM.
 */
static void lenient_check(struct stream *s, const uint8_t *name, size_t namelen,
                          const uint8_t *value, size_t valuelen)
{
    if (s->bad)
        return;
    for (size_t i = 0; i < namelen; i++) {
        if (name[i] >= 'A' && name[i] <= 'Z') {
            s->bad = "uppercase header name";
            return;
        }
    }
    if (namelen > 0 && name[0] == ':') {
        char **slot = name_is(name, namelen, ":method")      ? &s->method
                      : name_is(name, namelen, ":path")      ? &s->path
                      : name_is(name, namelen, ":scheme")    ? &s->scheme
                      : name_is(name, namelen, ":authority") ? &s->authority
                                                             : NULL;
        if (s->regular_seen)
            s->bad = "pseudo-header after a regular header";
        else if (slot == NULL)
            s->bad = "unknown pseudo-header";
        else if (*slot != NULL)
            s->bad = "duplicate pseudo-header";
        else if (valuelen == 0 && slot != &s->authority)
            s->bad = "empty pseudo-header";
        else if (slot == &s->scheme && !scheme_ok(value, valuelen))
            s->bad = "bad :scheme";
        return;
    }
    s->regular_seen = true;
    if (name_is(name, namelen, "connection") || name_is(name, namelen, "keep-alive") ||
        name_is(name, namelen, "proxy-connection") || name_is(name, namelen, "transfer-encoding") ||
        name_is(name, namelen, "upgrade")) {
        s->bad = "connection-specific header";
    } else if (name_is(name, namelen, "te") &&
               !(valuelen == 8 && strncasecmp((const char *)value, "trailers", 8) == 0)) {
        s->bad = "te other than trailers";
    } else if (name_is(name, namelen, "content-length")) {
        int64_t n = 0;
        if (s->content_length != -1 || valuelen == 0 || valuelen > 15)
            s->bad = "bad content-length";
        for (size_t i = 0; i < valuelen && !s->bad; i++) {
            if (value[i] < '0' || value[i] > '9')
                s->bad = "bad content-length";
            n = n * 10 + (value[i] - '0');
        }
        s->content_length = n;
    }
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    struct sbx_conn *c = user;
    struct stream *s = get_stream(h2, frame->hd.stream_id);
    if (s == NULL || s->dispatched)
        return 0;
    if (c->lst->svc->lenient_scheme)
        lenient_check(s, name, namelen, value, valuelen);
    s->header_bytes += namelen + valuelen + 32;
    if (s->header_bytes > c->lst->svc->max_header_list && c->lst->svc->max_header_list) {
        s->headers_too_large = true;
        return 0;
    }
    if (namelen > 0 && name[0] == ':') {
        if (namelen == 7 && memcmp(name, ":method", 7) == 0)
            set_pseudo(s, &s->method, value, valuelen);
        else if (namelen == 5 && memcmp(name, ":path", 5) == 0)
            set_pseudo(s, &s->path, value, valuelen);
        else if (namelen == 7 && memcmp(name, ":scheme", 7) == 0)
            set_pseudo(s, &s->scheme, value, valuelen);
        else if (namelen == 10 && memcmp(name, ":authority", 10) == 0)
            set_pseudo(s, &s->authority, value, valuelen);
        return 0;
    }
    stream_add_header(s, name, namelen, value, valuelen);
    return 0;
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *user)
{
    struct stream *s = get_stream(h2, stream_id);
    if (s == NULL || s->dispatched)
        return 0;
    s->body_total += len;
    stream_add_body(s, data, len);
    return 0;
}

/* lenient_scheme: the whole-request checks nghttp2 would have made. */
static const char *lenient_final_check(const struct stream *s)
{
    if (s->bad)
        return s->bad;
    if (s->method == NULL || s->path == NULL || s->scheme == NULL)
        return "missing pseudo-header";
    if (s->authority == NULL && sbx_request_header(&(struct sbx_request){ .headers = s->hdrs,
                                                       .nheaders = s->nhdrs },
                                                   "host", NULL, NULL) == NULL)
        return "no :authority and no host";
    if (s->content_length >= 0 && (uint64_t)s->content_length != (uint64_t)s->body_total)
        return "content-length does not match the body";
    return NULL;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, void *user)
{
    struct sbx_conn *c = user;
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        struct stream *s = get_stream(h2, frame->hd.stream_id);
        if (s == NULL)
            return 0;
        const char *bad = c->lst->svc->lenient_scheme && !s->dispatched
                              ? lenient_final_check(s) : NULL;
        if (bad) {
            /* What nghttp2 does with a malformed request. */
            log_info(c->lst->svc->name, "conn %llu stream %d: malformed request (%s): "
                     "RST_STREAM PROTOCOL_ERROR", (unsigned long long)c->id, s->id, bad);
            s->dispatched = true;
            nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_PROTOCOL_ERROR);
            return 0;
        }
        stream_dispatch(s);
    }
    return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t stream_id, uint32_t error_code,
                           void *user)
{
    struct sbx_conn *c = user;
    struct stream *s = get_stream(h2, stream_id);
    if (s == NULL)
        return 0;
    if (!s->submitted) {
        c->srv->stats.refused_streams++;
        log_debug(c->lst->svc->name, "conn %llu stream %d closed unanswered (%s)",
                  (unsigned long long)c->id, stream_id, nghttp2_http2_strerror(error_code));
    }
    if (c->active > 0)
        c->active--;
    nghttp2_session_set_stream_user_data(h2, stream_id, NULL);
    stream_free(s);
    return 0;
}

static int on_frame_send(nghttp2_session *h2, const nghttp2_frame *frame, void *user)
{
    struct sbx_conn *c = user;
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        log_info(c->lst->svc->name, "conn %llu: sent GOAWAY last_stream_id=%d error=%s%s%.*s",
                 (unsigned long long)c->id, frame->goaway.last_stream_id,
                 nghttp2_http2_strerror(frame->goaway.error_code),
                 frame->goaway.opaque_data_len ? " " : "",
                 (int)(frame->goaway.opaque_data_len > 200 ? 200 : frame->goaway.opaque_data_len),
                 (const char *)frame->goaway.opaque_data);
    } else if (frame->hd.type == NGHTTP2_RST_STREAM &&
               frame->rst_stream.error_code == NGHTTP2_REFUSED_STREAM) {
        log_info(c->lst->svc->name, "conn %llu stream %d: REFUSED_STREAM (over the advertised "
                 "MAX_CONCURRENT_STREAMS)", (unsigned long long)c->id, frame->hd.stream_id);
    }
    return 0;
}

/*
 * nghttp2 found a frame invalid. For a HEADERS frame opening a stream over
 * the acknowledged MAX_CONCURRENT_STREAMS, a service with over_limit_goaway
 * wants its own GOAWAY instead of nghttp2's: fail the callback so
 * nghttp2_session_mem_recv returns before nghttp2 queues its GOAWAY, and
 * let on_tls_data write ours.
 */
static int on_invalid_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame,
                                 int lib_error_code, void *user)
{
    struct sbx_conn *c = user;
    if (frame->hd.type != NGHTTP2_HEADERS || c->lst->svc->over_limit_goaway == NULL)
        return 0;
    uint32_t limit = nghttp2_session_get_local_settings(h2, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    if (c->active < limit)
        return 0;
    c->over_limit = true;
    return NGHTTP2_ERR_CALLBACK_FAILURE;
}

static nghttp2_session_callbacks *make_callbacks(void)
{
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        abort();
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, on_invalid_frame_recv);
    return cbs;
}

/* ---- connection I/O ----------------------------------------------------- */

/* Drain nghttp2's output into TLS; close when the session is finished. */
static void conn_flush(struct sbx_conn *c)
{
    if (c->tls == NULL || c->closing || c->h2 == NULL)
        return;
    uint8_t out[OUT_CHUNK];
    size_t used = 0;
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->h2, &data);
        if (n < 0) {
            log_warn(c->lst->svc->name, "conn %llu: nghttp2 send: %s",
                     (unsigned long long)c->id, nghttp2_strerror((int)n));
            c->closing = true;
            tls_conn_close(c->tls, UV_EPROTO, "nghttp2 send error");
            return;
        }
        if (n == 0)
            break;
        if (used + (size_t)n > sizeof out && used > 0) {
            if (tls_conn_write(c->tls, out, used) != 0)
                return;
            used = 0;
        }
        if ((size_t)n > sizeof out) {
            if (tls_conn_write(c->tls, data, (size_t)n) != 0)
                return;
        } else {
            memcpy(out + used, data, (size_t)n);
            used += (size_t)n;
        }
    }
    if (used > 0 && tls_conn_write(c->tls, out, used) != 0)
        return;
    if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2)) {
        c->closing = true;
        tls_conn_close(c->tls, 0, "HTTP/2 session finished");
    }
}

static void on_timer(uv_timer_t *t)
{
    struct sbx_conn *c = t->data;
    if (c->closing || (c->h2 == NULL && c->h1 == NULL))
        return;
    uint64_t now = mono_ms();
    struct stream *s = c->streams;
    while (s) {
        struct stream *next = s->next; /* submit never frees synchronously */
        if (s->prepared && !s->submitted && s->due_mono > 0 && s->due_mono <= now &&
            (s->action == SBX_ACT_REPLY || s->action == SBX_ACT_RST_STREAM))
            stream_submit(s);
        s = next;
    }
    conn_schedule(c);
    if (c->proto == PROTO_HTTP1)
        h1_pump(c);
    else
        conn_flush(c);
}

/* Arm the timer for the earliest delayed answer. */
static void conn_schedule(struct sbx_conn *c)
{
    uint64_t next = 0;
    for (struct stream *s = c->streams; s; s = s->next)
        if (s->prepared && !s->submitted && s->due_mono > 0 &&
            (s->action == SBX_ACT_REPLY || s->action == SBX_ACT_RST_STREAM) &&
            (next == 0 || s->due_mono < next))
            next = s->due_mono;
    if (next == 0) {
        uv_timer_stop(&c->timer);
        return;
    }
    uint64_t now = mono_ms();
    uv_timer_start(&c->timer, on_timer, next > now ? next - now : 0, 0);
}

/* ---- HTTP/1.1 ------------------------------------------------------------ */

/* The oldest request still held by the connection. */
static struct stream *h1_oldest(struct sbx_conn *c)
{
    struct stream *best = NULL;
    for (struct stream *s = c->streams; s; s = s->next)
        if (best == NULL || s->id < best->id)
            best = s;
    return best;
}

/* Close an HTTP/1.1 connection after what has been written. */
static void h1_close(struct sbx_conn *c, const char *why)
{
    if (c->tls && !c->closing) {
        c->closing = true;
        tls_conn_close(c->tls, 0, why);
    }
}

/*
 * Write the answers that are due, oldest first, and stop at the first one
 * that is not (delayed, hung, or its request still being read). Frees each
 * stream once written. May close the connection.
 */
static void h1_pump(struct sbx_conn *c)
{
    struct sbx_server *srv = c->srv;
    while (c->tls && !c->closing) {
        struct stream *s = h1_oldest(c);
        if (s == NULL || !s->prepared || !s->submitted)
            return;
        if (s->action == SBX_ACT_RST_STREAM) {
            /* No HTTP/1.1 equivalent: drop the connection instead. */
            srv->stats.rst_streams++;
            stream_finish(s, false);
            log_info(c->lst->svc->name, "conn %llu request %d: closing the connection "
                     "(stream reset fault on HTTP/1.1)", (unsigned long long)c->id, s->id);
            h1_close(c, "stream reset fault");
            return;
        }
        bool close = !s->h1_keep_alive || (c->h1_last_id > 0 && s->id >= c->h1_last_id);
        struct sbx_http1_field f[SBX_RESP_MAX_HEADERS];
        size_t nf = 0;
        for (size_t i = 1; i < s->nnv && nf < SBX_RESP_MAX_HEADERS; i++) /* [0] is :status */
            f[nf++] = (struct sbx_http1_field){ (const char *)s->nva[i].name,
                                                (const char *)s->nva[i].value };
        size_t outlen;
        char *out = sbx_http1_response(s->status, f, nf, s->resp_body, s->resp_len, close, &outlen);
        int rv = tls_conn_write(c->tls, (const uint8_t *)out, outlen);
        free(out);
        if (rv != 0) {
            stream_finish(s, false);
            return;
        }
        srv->stats.responses++;
        stream_finish(s, true);
        if (c->active > 0)
            c->active--;
        stream_free(s);
        if (close) {
            h1_close(c, c->h1_last_id > 0 ? "HTTP/1.1 connection: close (GOAWAY)"
                                          : "HTTP/1.1 connection: close");
            return;
        }
    }
}

/* sandbox/http1.c parsed a complete request: make it a stream and dispatch. */
static void h1_on_request(void *user, const struct sbx_request *req, bool keep_alive)
{
    struct sbx_conn *c = user;
    int32_t id = ++c->h1_next_id;
    if (c->h1_last_id > 0 && id > c->h1_last_id) {
        c->srv->stats.refused_streams++; /* after "GOAWAY": dropped unanswered */
        return;
    }
    if (c->closing || c->tls == NULL)
        return;
    struct stream *s = stream_new(c, id);
    c->active++;
    if (c->active > c->max_active)
        c->max_active = c->active;
    if (c->active > c->srv->stats.max_streams_seen)
        c->srv->stats.max_streams_seen = c->active;
    s->h1_keep_alive = keep_alive;
    const char *method = req->method ? req->method : "";
    const char *path = req->path ? req->path : "";
    const char *scheme = req->scheme ? req->scheme : "https";
    s->method = arena_strndup(s, method, strlen(method));
    s->path = arena_strndup(s, path, strlen(path));
    s->scheme = arena_strndup(s, scheme, strlen(scheme));
    s->authority = req->authority ? arena_strndup(s, req->authority, strlen(req->authority))
                                  : NULL;
    s->headers_too_large = req->headers_too_large;
    for (size_t i = 0; i < req->nheaders; i++)
        stream_add_header(s, req->headers[i].name, req->headers[i].namelen,
                          req->headers[i].value, req->headers[i].valuelen);
    if (req->body_len > 0)
        stream_add_body(s, req->body, req->body_len);
    s->body_total = req->body_total;
    stream_dispatch(s); /* never frees |s| on HTTP/1.1 */
    h1_pump(c);
}

static void h1_on_continue(void *user)
{
    struct sbx_conn *c = user;
    /* Only when nothing is queued ahead: interim answers keep the order. */
    if (c->tls && !c->closing && c->streams == NULL)
        tls_conn_write(c->tls, (const uint8_t *)SBX_HTTP1_CONTINUE, strlen(SBX_HTTP1_CONTINUE));
}

static const struct sbx_http1_callbacks h1_cbs = {
    .on_request = h1_on_request,
    .on_continue = h1_on_continue,
};

static void h1_feed(struct sbx_conn *c, const uint8_t *data, size_t len)
{
    if (sbx_http1_feed(c->h1, data, len) == 0)
        return;
    log_info(c->lst->svc->name, "conn %llu: malformed HTTP/1.1 request: %s",
             (unsigned long long)c->id, sbx_http1_error(c->h1));
    if (c->tls && !c->closing && c->streams == NULL) {
        static const char text[] = "Your client has issued a malformed or illegal request.\n";
        struct sbx_http1_field f[] = { { "content-type", "text/plain; charset=UTF-8" } };
        size_t outlen;
        char *out = sbx_http1_response(400, f, 1, text, sizeof text - 1, true, &outlen);
        tls_conn_write(c->tls, (const uint8_t *)out, outlen);
        free(out);
    }
    h1_close(c, "malformed HTTP/1.1 request");
}

static void h1_start(struct sbx_conn *c)
{
    const struct sbx_service *svc = c->lst->svc;
    c->proto = PROTO_HTTP1;
    c->h1 = sbx_http1_new(svc->max_header_list, BODY_CAP, &h1_cbs, c);
}

/* ---- HTTP/2 ---------------------------------------------------------------- */

/*
 * A client opened a stream over the acknowledged limit and the service
 * wants Google's answer: one GOAWAY PROTOCOL_ERROR with its debug text,
 * written directly (nghttp2 gave up on the session), then close.
 */
static void h2_over_limit(struct sbx_conn *c)
{
    const char *debug = c->lst->svc->over_limit_goaway;
    size_t dlen = strlen(debug);
    uint8_t frame[9 + 8 + 256];
    if (dlen > 256)
        dlen = 256;
    int32_t last = nghttp2_session_get_last_proc_stream_id(c->h2);
    size_t plen = 8 + dlen;
    frame[0] = (uint8_t)(plen >> 16);
    frame[1] = (uint8_t)(plen >> 8);
    frame[2] = (uint8_t)plen;
    frame[3] = NGHTTP2_GOAWAY;
    frame[4] = 0;
    memset(frame + 5, 0, 4);
    frame[9] = (uint8_t)((uint32_t)last >> 24 & 0x7f);
    frame[10] = (uint8_t)((uint32_t)last >> 16);
    frame[11] = (uint8_t)((uint32_t)last >> 8);
    frame[12] = (uint8_t)last;
    frame[13] = frame[14] = frame[15] = 0;
    frame[16] = NGHTTP2_PROTOCOL_ERROR;
    memcpy(frame + 17, debug, dlen);
    c->srv->stats.goaways++;
    log_info(c->lst->svc->name, "conn %llu: stream over MAX_CONCURRENT_STREAMS %u: sent GOAWAY "
             "last_stream_id=%d error=PROTOCOL_ERROR %s", (unsigned long long)c->id,
             nghttp2_session_get_local_settings(c->h2, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS),
             last, debug);
    if (c->tls && !c->closing) {
        tls_conn_write(c->tls, frame, 9 + plen);
        c->closing = true;
        tls_conn_close(c->tls, 0, "stream over the concurrent-stream limit");
    }
}

static void h2_feed(struct sbx_conn *c, const uint8_t *data, size_t len)
{
    ssize_t rv = nghttp2_session_mem_recv(c->h2, data, len);
    if (rv < 0) {
        if (c->over_limit) {
            h2_over_limit(c);
            return;
        }
        log_info(c->lst->svc->name, "conn %llu: HTTP/2 error: %s", (unsigned long long)c->id,
                 nghttp2_strerror((int)rv));
        conn_flush(c); /* a GOAWAY may be queued */
        if (!c->closing && c->tls) {
            c->closing = true;
            tls_conn_close(c->tls, 0, nghttp2_strerror((int)rv));
        }
        return;
    }
    conn_flush(c);
}

/* Create the nghttp2 session and queue the server's SETTINGS. */
static int h2_start(struct sbx_conn *c)
{
    const struct sbx_service *svc = c->lst->svc;
    nghttp2_session_callbacks *cbs = make_callbacks();
    nghttp2_option *opt = NULL;
    if (svc->lenient_scheme) {
        /* Our own request checks replace nghttp2's (lenient_check). */
        if (nghttp2_option_new(&opt) != 0)
            abort();
        nghttp2_option_set_no_http_messaging(opt, 1);
    }
    int rv = nghttp2_session_server_new3(&c->h2, cbs, c, opt, &c->srv->ngmem);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0) {
        log_error(svc->name, "nghttp2_session_server_new: %s", nghttp2_strerror(rv));
        c->h2 = NULL;
        c->closing = true;
        tls_conn_close(c->tls, UV_ENOMEM, "nghttp2 setup failed");
        return -1;
    }
    c->proto = PROTO_H2;
    c->max_streams = svc->initial_max_streams;
    nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, 4096 },
        { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, c->max_streams },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 65535 },
        { NGHTTP2_SETTINGS_MAX_FRAME_SIZE, 16384 },
        { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, svc->max_header_list ? svc->max_header_list : 8000 },
    };
    nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
    return 0;
}

/* No ALPN on an HTTP/1.1-capable listener: HTTP/2 only if the client sends
 * the preface ("PRI * HTTP/2.0..."), decided as soon as a byte differs. */
static void sniff_feed(struct sbx_conn *c, const uint8_t *data, size_t len)
{
    size_t take = len < NGHTTP2_CLIENT_MAGIC_LEN - c->sniff_len
                      ? len : NGHTTP2_CLIENT_MAGIC_LEN - c->sniff_len;
    memcpy(c->sniff + c->sniff_len, data, take);
    c->sniff_len += take;
    if (memcmp(c->sniff, NGHTTP2_CLIENT_MAGIC, c->sniff_len) != 0) {
        log_debug(c->lst->svc->name, "conn %llu: no ALPN, not the HTTP/2 preface: HTTP/1.1",
                  (unsigned long long)c->id);
        h1_start(c);
        h1_feed(c, c->sniff, c->sniff_len);
        if (!c->closing && len > take)
            h1_feed(c, data + take, len - take);
        return;
    }
    if (c->sniff_len < NGHTTP2_CLIENT_MAGIC_LEN)
        return;
    if (h2_start(c) != 0)
        return;
    h2_feed(c, c->sniff, c->sniff_len);
    if (!c->closing && c->h2 && len > take)
        h2_feed(c, data + take, len - take);
}

static void on_tls_data(struct tls_conn *t, const uint8_t *data, size_t len, void *user)
{
    struct sbx_conn *c = user;
    if (c->closing)
        return;
    switch (c->proto) {
    case PROTO_SNIFF: sniff_feed(c, data, len); break;
    case PROTO_HTTP1: h1_feed(c, data, len); break;
    case PROTO_H2:
        if (c->h2)
            h2_feed(c, data, len);
        break;
    case PROTO_NONE: break;
    }
}

static void on_tls_open(struct tls_conn *t, void *user)
{
    struct sbx_conn *c = user;
    struct sbx_server *srv = c->srv;
    const struct sbx_service *svc = c->lst->svc;
    srv->stats.tls_handshakes++;

    const char *alpn = tls_conn_alpn(t);
    if (strcmp(alpn, "http/1.1") == 0) {
        if (!svc->http1) {
            log_info(svc->name, "conn %llu on %s: ALPN http/1.1 is not served here; closing",
                     (unsigned long long)c->id, c->lst->name);
            c->closing = true;
            c->alpn_refused = true;
            tls_conn_close(t, 0, "ALPN http/1.1 not served");
            return;
        }
        h1_start(c);
    } else if (alpn[0] == '\0' && svc->http1) {
        c->proto = PROTO_SNIFF;
    } else if (h2_start(c) != 0) {
        return;
    }
    log_info(svc->name, "conn %llu open on %s (ALPN %s)", (unsigned long long)c->id,
             c->lst->name, alpn[0] ? alpn : "none");
    c->state = svc->conn_open ? svc->conn_open(svc->ctx, c) : NULL;
    c->service_open = true;
    if (c->proto == PROTO_H2)
        conn_flush(c);
}

static void on_conn_timer_closed(uv_handle_t *h)
{
    struct sbx_conn *c = h->data;
    struct sbx_server *srv = c->srv;
    free(c);
    if (--srv->live_handles == 0 && srv->shutting_down && srv->done)
        srv->done(srv->done_arg);
}

static void on_tls_close(struct tls_conn *t, int err, const char *reason, void *user)
{
    struct sbx_conn *c = user;
    struct sbx_server *srv = c->srv;
    const struct sbx_service *svc = c->lst->svc;
    c->tls = NULL;
    c->closing = true;
    uv_timer_stop(&c->timer);
    while (c->streams) {
        if (c->streams->prepared && !c->streams->submitted)
            srv->stats.refused_streams++;
        stream_free(c->streams);
    }
    if (c->h2)
        nghttp2_session_del(c->h2);
    c->h2 = NULL;
    sbx_http1_free(c->h1);
    c->h1 = NULL;
    if (c->service_open) {
        log_info(svc->name, "conn %llu closed: %llu requests, max %u concurrent streams: %s",
                 (unsigned long long)c->id, (unsigned long long)c->requests, c->max_active,
                 reason ? reason : "closed");
        if (svc->conn_close)
            svc->conn_close(svc->ctx, c, c->state);
    } else if (!c->alpn_refused) {
        srv->stats.tls_failures++;
        log_info(svc->name, "conn %llu closed before the TLS handshake completed: %s",
                 (unsigned long long)c->id, reason ? reason : "closed");
    }
    if (srv->nrows < SUMMARY_CONNS) {
        if (srv->nrows % 64 == 0)
            srv->rows = xrealloc(srv->rows, (srv->nrows + 64) * sizeof *srv->rows);
        srv->rows[srv->nrows++] = (struct conn_row){ c->id, c->lst->name, sbx_conn_http(c),
                                                     c->requests, c->max_active };
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    uv_close((uv_handle_t *)&c->timer, on_conn_timer_closed);
}

static const struct tls_conn_callbacks tls_cbs = {
    .on_open = on_tls_open,
    .on_data = on_tls_data,
    .on_close = on_tls_close,
};

static void on_connection(uv_stream_t *server, int status)
{
    struct listener *l = server->data;
    struct sbx_server *srv = l->srv;
    if (status < 0) {
        log_warn(l->svc->name, "accept on %s: %s", l->name, uv_strerror(status));
        return;
    }
    struct sbx_conn *c = xcalloc(1, sizeof *c);
    c->srv = srv;
    c->lst = l;
    c->id = ++srv->next_conn_id;
    uv_timer_init(srv->loop, &c->timer);
    c->timer.data = c;
    srv->live_handles++;
    int rv = tls_conn_accept(server, l->ssl_ctx ? l->ssl_ctx : srv->ssl_ctx, &tls_cbs, c,
                             &c->tls);
    if (rv != 0) {
        log_warn(l->svc->name, "accept on %s: %s", l->name, uv_strerror(rv));
        c->closing = true;
        uv_close((uv_handle_t *)&c->timer, on_conn_timer_closed);
        return;
    }
    srv->stats.connections++;
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
}

/* ---- public API --------------------------------------------------------- */

struct sbx_server *sbx_server_new(uv_loop_t *loop, SSL_CTX *ssl_ctx)
{
    struct sbx_server *srv = xcalloc(1, sizeof *srv);
    srv->loop = loop;
    srv->ssl_ctx = ssl_ctx;
    srv->ngmem = ng_alloc_mem(&srv->ngalloc);
    return srv;
}

/* Parse "host:port" / "[v6]:port" into |ss|. */
static int parse_addr(const char *addr, struct sockaddr_storage *ss)
{
    char host[128];
    const char *colon;
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (end == NULL || end[1] != ':' || (size_t)(end - addr - 1) >= sizeof host)
            return UV_EINVAL;
        memcpy(host, addr + 1, (size_t)(end - addr - 1));
        host[end - addr - 1] = '\0';
        colon = end + 1;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL || (size_t)(colon - addr) >= sizeof host)
            return UV_EINVAL;
        memcpy(host, addr, (size_t)(colon - addr));
        host[colon - addr] = '\0';
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || port < 0 || port > 65535)
        return UV_EINVAL;
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) == 0)
        return 0;
    if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) == 0)
        return 0;
    return UV_EINVAL;
}

static void on_listener_closed(uv_handle_t *h)
{
    struct listener *l = h->data;
    struct sbx_server *srv = l->srv;
    l->tcp.data = NULL;
    if (--srv->live_handles == 0 && srv->shutting_down && srv->done)
        srv->done(srv->done_arg);
}

int sbx_server_listen(struct sbx_server *srv, const char *name, const char *addr,
                      const struct sbx_service *svc, char *err, size_t errlen)
{
    return sbx_server_listen_tls(srv, name, addr, svc, NULL, err, errlen);
}

int sbx_server_listen_tls(struct sbx_server *srv, const char *name, const char *addr,
                          const struct sbx_service *svc, SSL_CTX *ssl_ctx,
                          char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    int rv = parse_addr(addr, &ss);
    if (rv != 0) {
        snprintf(err, errlen, "bad listen address \"%s\" (want HOST:PORT or [V6]:PORT)", addr);
        return rv;
    }
    struct listener *l = xcalloc(1, sizeof *l);
    l->srv = srv;
    l->svc = svc;
    l->ssl_ctx = ssl_ctx;
    snprintf(l->name, sizeof l->name, "%s", name);
    uv_tcp_init(srv->loop, &l->tcp);
    l->tcp.data = l;
    l->next = srv->listeners;
    srv->listeners = l;
    srv->live_handles++;
    if ((rv = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0)) != 0 ||
        (rv = uv_listen((uv_stream_t *)&l->tcp, 511, on_connection)) != 0) {
        snprintf(err, errlen, "listen on %s: %s", addr, uv_strerror(rv));
        return rv;
    }
    struct sockaddr_storage bound;
    int len = sizeof bound;
    if ((rv = uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&bound, &len)) != 0) {
        snprintf(err, errlen, "getsockname: %s", uv_strerror(rv));
        return rv;
    }
    l->port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                          : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    log_info(svc->name, "listening on %s (%s), port %d", addr, name, l->port);
    return l->port;
}

char *sbx_server_ports_json(const struct sbx_server *srv)
{
    cJSON *o = cJSON_CreateObject();
    for (const struct listener *l = srv->listeners; l; l = l->next)
        if (l->port > 0)
            cJSON_AddNumberToObject(o, l->name, l->port);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (s == NULL)
        abort();
    char *copy = xstrdup(s);
    cJSON_free(s);
    return copy;
}

void sbx_server_shutdown(struct sbx_server *srv, void (*done)(void *), void *arg)
{
    srv->shutting_down = true;
    srv->done = done;
    srv->done_arg = arg;
    for (struct listener *l = srv->listeners; l; l = l->next)
        if (!uv_is_closing((uv_handle_t *)&l->tcp))
            uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
    /* tls_conn_close never calls on_close synchronously: the list is stable.
     * Connections already closing get their on_close later anyway. */
    for (struct sbx_conn *c = srv->conns; c; c = c->next) {
        if (c->tls && !c->closing) {
            c->closing = true;
            tls_conn_close(c->tls, 0, "sandbox shutting down");
        }
    }
    if (srv->live_handles == 0 && done)
        done(arg);
}

void sbx_server_free(struct sbx_server *srv)
{
    if (srv == NULL)
        return;
    struct listener *l = srv->listeners;
    while (l) {
        struct listener *next = l->next;
        free(l);
        l = next;
    }
    free(srv->rows);
    ng_alloc_release(&srv->ngalloc);
    free(srv);
}

const struct sbx_server_stats *sbx_server_stats(const struct sbx_server *srv)
{
    return &srv->stats;
}

cJSON *sbx_server_summary(const struct sbx_server *srv)
{
    const struct sbx_server_stats *st = &srv->stats;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "connections", (double)st->connections);
    cJSON_AddNumberToObject(o, "tls_handshakes", (double)st->tls_handshakes);
    cJSON_AddNumberToObject(o, "tls_failures", (double)st->tls_failures);
    cJSON_AddNumberToObject(o, "requests", (double)st->requests);
    cJSON_AddNumberToObject(o, "responses", (double)st->responses);
    cJSON_AddNumberToObject(o, "rst_streams", (double)st->rst_streams);
    cJSON_AddNumberToObject(o, "tcp_resets", (double)st->tcp_resets);
    cJSON_AddNumberToObject(o, "hangs", (double)st->hangs);
    cJSON_AddNumberToObject(o, "goaways", (double)st->goaways);
    cJSON_AddNumberToObject(o, "unanswered_streams", (double)st->refused_streams);
    cJSON_AddNumberToObject(o, "max_concurrent_streams", st->max_streams_seen);
    cJSON *arr = cJSON_AddArrayToObject(o, "per_connection");
    for (size_t i = 0; i < srv->nrows; i++) {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddNumberToObject(r, "connection", (double)srv->rows[i].id);
        cJSON_AddStringToObject(r, "listener", srv->rows[i].listener);
        cJSON_AddStringToObject(r, "http", srv->rows[i].http);
        cJSON_AddNumberToObject(r, "requests", (double)srv->rows[i].requests);
        cJSON_AddNumberToObject(r, "max_concurrent_streams", srv->rows[i].max_active);
        cJSON_AddItemToArray(arr, r);
    }
    /* Connections still open (summary taken before shutdown). */
    for (const struct sbx_conn *c = srv->conns; c; c = c->next) {
        if (srv->nrows + 1 > SUMMARY_CONNS)
            break;
        cJSON *r = cJSON_CreateObject();
        cJSON_AddNumberToObject(r, "connection", (double)c->id);
        cJSON_AddStringToObject(r, "listener", c->lst->name);
        cJSON_AddStringToObject(r, "http", sbx_conn_http(c));
        cJSON_AddNumberToObject(r, "requests", (double)c->requests);
        cJSON_AddNumberToObject(r, "max_concurrent_streams", c->max_active);
        cJSON_AddItemToArray(arr, r);
    }
    return o;
}

uint64_t sbx_conn_id(const struct sbx_conn *c) { return c->id; }

const char *sbx_conn_listener(const struct sbx_conn *c) { return c->lst->name; }

const char *sbx_conn_http(const struct sbx_conn *c)
{
    return c->proto == PROTO_HTTP1 ? "http/1.1" : "h2";
}

uint32_t sbx_conn_max_streams(const struct sbx_conn *c) { return c->max_streams; }

uint64_t sbx_conn_requests(const struct sbx_conn *c) { return c->requests; }

void sbx_conn_set_max_streams(struct sbx_conn *c, uint32_t n)
{
    if (c->h2 == NULL || c->closing || n == c->max_streams)
        return;
    nghttp2_settings_entry iv = { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, n };
    if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, &iv, 1) == 0) {
        log_debug(c->lst->svc->name, "conn %llu: MAX_CONCURRENT_STREAMS %u -> %u",
                  (unsigned long long)c->id, c->max_streams, n);
        c->max_streams = n;
    }
}

void sbx_conn_goaway(struct sbx_conn *c, int32_t last_stream_id, uint32_t error_code,
                     const char *debug)
{
    if (c->proto == PROTO_HTTP1) {
        if (c->closing || (c->h1_last_id > 0 && c->h1_last_id <= last_stream_id))
            return;
        c->h1_last_id = last_stream_id > 0 ? last_stream_id : 1;
        c->srv->stats.goaways++;
        log_info(c->lst->svc->name, "conn %llu: HTTP/1.1 connection: close after request %d "
                 "(GOAWAY)", (unsigned long long)c->id, c->h1_last_id);
        /* Requests after it are already parsed? Drop them unanswered. */
        struct stream *s = c->streams;
        while (s) {
            struct stream *next = s->next;
            if (s->id > c->h1_last_id) {
                c->srv->stats.refused_streams++;
                if (c->active > 0)
                    c->active--;
                stream_free(s);
            }
            s = next;
        }
        return;
    }
    if (c->h2 == NULL || c->closing)
        return;
    size_t dlen = debug ? strlen(debug) : 0;
    if (nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE, last_stream_id, error_code,
                              (const uint8_t *)debug, dlen) == 0)
        c->srv->stats.goaways++;
}
