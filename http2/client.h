/*
 * HTTP/2 client: a pool of TLS connections to one origin with a FIFO request
 * queue, used by apns/ and fcm/. Each connection is uv_tcp ⇄ tls_conn ⇄
 * nghttp2 client session; the pool dispatches queued requests to connections
 * only while they are below the peer's live SETTINGS_MAX_CONCURRENT_STREAMS,
 * opens more connections (one handshake at a time, up to max_connections)
 * when all are full, re-sends requests lost to GOAWAY, REFUSED_STREAM or a
 * dropped connection, and times requests out.
 *
 * Threading: everything runs on the pool's uv loop; no call is thread-safe.
 * Callbacks are never invoked from inside h2_pool_submit() or
 * h2_pool_close(): they run from the loop (a uv_prepare handle), so a
 * callback may call h2_pool_submit() or h2_pool_close() freely.
 */
#ifndef VARSEL_H2_CLIENT_H
#define VARSEL_H2_CLIENT_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#define H2_HDR_NO_INDEX 1 /* send never-indexed (NGHTTP2_NV_FLAG_NO_INDEX):
                             use for authorization and :path */
#define H2_HDR_STATIC_NAME 2 /* the name is lowercase and outlives the request
                                (a literal): referenced, not copied */

struct h2_header {
    const char *name;  /* lowercase for requests */
    const char *value;
    uint8_t flags;     /* H2_HDR_NO_INDEX, H2_HDR_STATIC_NAME or 0 */
};

enum h2_error {
    H2_OK = 0,
    H2_ERR_CONNECT = -1,    /* resolve/connect/TLS failed for the whole
                               connect-timeout window */
    H2_ERR_CONN_LOST = -2,  /* connection dropped with the request unanswered,
                               max_attempts times */
    H2_ERR_TIMEOUT = -3,    /* no complete answer within request_timeout_ms */
    H2_ERR_REFUSED = -4,    /* RST_STREAM REFUSED_STREAM, max_attempts times */
    H2_ERR_GOAWAY = -5,     /* GOAWAY with last_stream_id 0 on connections
                               that never answered anything, max_attempts
                               times (other GOAWAYs re-send for free) */
    H2_ERR_SHUTDOWN = -6,   /* h2_pool_close() */
    H2_ERR_PROTOCOL = -7,   /* stream reset by the peer (other than
                               REFUSED_STREAM) or an HTTP/2 protocol error */
};

/* Static name of an h2_error ("connect", "timeout", ...). */
const char *h2_strerror(int err);

struct h2_response {
    int status;                     /* HTTP status, 0 when no answer came */
    int error;                      /* enum h2_error; 0 when status != 0 */
    const char *error_reason;       /* human text when error != 0, e.g.
                                       "connection reset" or "TLS:
                                       certificate verify failed: ..." */
    const struct h2_header *headers; /* response headers (no pseudo-headers),
                                        borrowed for the callback only */
    size_t n_headers;
    const uint8_t *body;            /* borrowed; at most H2_MAX_BODY bytes */
    size_t body_len;
    int body_truncated;             /* 1 if the peer sent more than H2_MAX_BODY */
    int attempts;                   /* times sent on a connection */
    uint64_t rtt_ms;                /* last send -> response complete */
};

#define H2_MAX_BODY (64 * 1024)

/* Fires exactly once per submitted request; |resp| is valid for the call. */
typedef void (*h2_done_cb)(const struct h2_response *resp, void *user);

/* The first response header called |name| (lowercase), or NULL. */
const char *h2_response_header(const struct h2_response *r, const char *name);
/* Retry-After in seconds (the delay-seconds form), or -1 when absent or an
 * HTTP date. */
int h2_response_retry_after(const struct h2_response *r);

struct h2_pool_config {
    const char *name;             /* for logs, e.g. "apns demo production"; copied */
    const char *url;              /* "https://host[:port][/path]" (path ignored);
                                     host may be an IP literal, IPv6 in [] */
    SSL_CTX *ssl_ctx;             /* client ctx with ALPN h2 (tls_client_ctx_new),
                                     owned by the caller, must outlive the pool */
    int max_connections;          /* >= 1 */
    uint32_t initial_max_streams; /* assumed peer stream limit until its SETTINGS
                                     arrive: 1 for APNs, 100 for FCM */
    uint32_t request_timeout_ms;  /* per send (time waiting in the queue is not
                                     counted), 0 = none (e.g. 30000) */
    uint32_t connect_timeout_ms;  /* per handshake, and the window after which
                                     waiting requests fail with H2_ERR_CONNECT
                                     when nothing connects (e.g. 10000) */
    uint32_t ping_idle_ms;        /* PING after this long without input, 0 = never;
                                     no PING ACK within max(ping_idle_ms, 5 s)
                                     closes the connection */
    int max_attempts;             /* a request lost this many times (connection
                                     drop, REFUSED_STREAM) fails; >= 1, e.g. 3 */
    int fail_fast;                /* when connecting fails and no connection
                                     is up, fail the queued requests at once
                                     (H2_ERR_CONNECT) instead of after
                                     connect_timeout_ms: for callers with
                                     durable retries of their own */
};

struct h2_pool_stats {
    uint64_t connects;          /* handshakes that reached HTTP/2 */
    uint64_t connect_failures;  /* resolve, TCP, TLS or ALPN failures */
    uint64_t goaways;           /* GOAWAY frames received */
    uint64_t conn_lost;         /* connections dropped with streams in flight */
    uint64_t refused;           /* RST_STREAM REFUSED_STREAM received */
    uint64_t requeued;          /* requests put back in the queue */
    uint64_t timeouts;          /* requests failed with H2_ERR_TIMEOUT */
    uint64_t responses;         /* complete responses (any status) */
    uint64_t pings;             /* PINGs sent */
    uint32_t max_streams_seen;  /* most concurrent streams on one connection */
};

struct h2_pool;

/*
 * Create a pool. Nothing connects until the first h2_pool_submit(). Returns
 * NULL if the config is invalid (bad URL, no ssl_ctx, max_connections < 1);
 * the reason is logged. The pool owns its uv handles; free it with
 * h2_pool_close().
 */
struct h2_pool *h2_pool_new(uv_loop_t *loop, const struct h2_pool_config *cfg);

/*
 * Queue a request for |method| |path| with extra |hdrs| (the pseudo-headers
 * :method, :scheme https, :authority and :path are added; :path is sent
 * never-indexed) and |body| (may be NULL when body_len is 0). Copies method,
 * path, headers and body into one allocation. |cb| fires exactly once, later,
 * from the loop (response, error, timeout or shutdown). Returns 0, or
 * H2_ERR_SHUTDOWN if the pool is closing (|cb| then never fires).
 */
int h2_pool_submit(struct h2_pool *p, const char *method, const char *path,
                   const struct h2_header *hdrs, size_t n_hdrs,
                   const uint8_t *body, size_t body_len, h2_done_cb cb, void *user);

/* Requests sent on a connection and not yet answered. */
size_t h2_pool_inflight(const struct h2_pool *p);
/* Requests waiting for a stream slot (including re-queued ones). */
size_t h2_pool_queued(const struct h2_pool *p);
/* Connections alive: handshaking, open, or draining after GOAWAY. */
size_t h2_pool_connections(const struct h2_pool *p);
/*
 * true when no connection is up and connecting has failed for at least
 * connect_timeout_ms; |*why| (may be NULL) gets the last error. Callers use
 * it as a circuit breaker: while it holds, send only one probe request and
 * treat the rest as a transient failure (retry later) instead of queueing.
 */
bool h2_pool_unreachable(const struct h2_pool *p, const char **why);
/* Copy the pool's counters into |out|. */
void h2_pool_get_stats(const struct h2_pool *p, struct h2_pool_stats *out);

/*
 * Fail queued and in-flight requests with H2_ERR_SHUTDOWN (their callbacks
 * run from the loop), send GOAWAY and close every connection. |done|
 * (may be NULL) fires from the loop once every handle is closed and the pool
 * has been freed. May be called from inside a request callback. Until |done|
 * fires, h2_pool_submit() returns H2_ERR_SHUTDOWN and further
 * h2_pool_close() calls are ignored; after it, |p| is gone.
 */
void h2_pool_close(struct h2_pool *p, void (*done)(void *arg), void *arg);

#endif
