/*
 * varsel-sandbox's HTTP/2 server: TCP listeners, TLS (http2/tls.h) and one
 * nghttp2 server session per connection, or, for services that ask for it,
 * HTTP/1.1 (sandbox/http1.h) on the same listener, chosen by ALPN. It is
 * protocol-neutral: each listener is bound to a struct sbx_service (APNs,
 * FCM, OAuth) that turns a complete request into a response. The server
 * owns streams, response timing (delays, hangs), resets, GOAWAY and the
 * connection counters; the service owns the meaning of requests.
 *
 * Ownership: the server owns its listeners and connections; services are
 * borrowed and must outlive the server. A struct sbx_conn is valid from the
 * service's conn_open until its conn_close returns; never keep it after.
 */
#ifndef VARSEL_SANDBOX_SERVER_H
#define VARSEL_SANDBOX_SERVER_H

#include "sandbox/request.h"

#include <cJSON.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct sbx_server;
struct sbx_conn;

enum sbx_action {
    SBX_ACT_REPLY = 0,   /* send status/headers/body (after delay_ms) */
    SBX_ACT_RST_STREAM,  /* RST_STREAM INTERNAL_ERROR instead of a reply */
    SBX_ACT_TCP_RESET,   /* reset the whole TCP connection */
    SBX_ACT_HANG,        /* never answer; the stream stays open */
};

#define SBX_RESP_MAX_HEADERS 8

/* What a service answers; the server copies everything it needs. */
struct sbx_response {
    enum sbx_action action;
    int status;                       /* HTTP status for SBX_ACT_REPLY */
    struct {
        const char *name;             /* lowercase */
        const char *value;
        bool no_index;                /* HPACK "never indexed" (HTTP/2): for values
                                         unique to this response (apns-id) */
    } headers[SBX_RESP_MAX_HEADERS];
    size_t nheaders;
    const char *body;                 /* NULL/0 = no body (HEADERS+END_STREAM) */
    size_t body_len;
    unsigned delay_ms;                /* answer after this many ms */
    void *tag;                        /* service data handed to finish(), owned by the service */
};

/* A protocol handler bound to one or more listeners. */
struct sbx_service {
    const char *name;                 /* log tag, e.g. "apns" */
    uint32_t initial_max_streams;     /* SETTINGS_MAX_CONCURRENT_STREAMS at connect */
    uint32_t max_header_list;         /* SETTINGS_MAX_HEADER_LIST_SIZE, enforced
                                         (HTTP/1.1: the same accounting) */
    /* Also serve HTTP/1.1: on ALPN "http/1.1", and without ALPN when the
     * client does not start with the HTTP/2 preface. The listener's TLS
     * context must offer "http/1.1" (sbx_server_listen_tls). When false, a
     * client that negotiates http/1.1 is disconnected. */
    bool http1;
    /* GOAWAY debug data for a client that opens a stream over an
     * acknowledged MAX_CONCURRENT_STREAMS: the server then sends one GOAWAY
     * PROTOCOL_ERROR carrying this text (e.g. Google's
     * "exceeded_max_concurrent_streams") and closes. NULL: nghttp2's own
     * GOAWAY ("request HEADERS: max concurrent streams exceeded"). */
    const char *over_limit_goaway;
    /* Accept a ":scheme" ending in ':' ("https:"), as Google's front end
     * does and nghttp2 does not: nghttp2's HTTP messaging checks are turned
     * off for these sessions and the server makes the same checks itself
     * (pseudo-headers present, once, first; no connection-specific headers;
     * content-length matching the body), failing a request with RST_STREAM
     * PROTOCOL_ERROR as nghttp2 would. */
    bool lenient_scheme;
    void *ctx;                        /* passed to every callback */
    /* New connection (after the TLS handshake); returns per-connection
     * state (may be NULL). */
    void *(*conn_open)(void *ctx, struct sbx_conn *c);
    /* Connection gone; free |state|. Pending streams were finished first. */
    void (*conn_close)(void *ctx, struct sbx_conn *c, void *state);
    /* A complete request (END_STREAM seen). Fill |resp| (pre-zeroed).
     * |req| and its buffers are borrowed for the call only. */
    void (*request)(void *ctx, struct sbx_conn *c, void *state,
                    const struct sbx_request *req, struct sbx_response *resp);
    /* Exactly once per response with a non-NULL tag: |answered| is true
     * when the reply (or RST_STREAM) was handed to nghttp2, false when the
     * stream or connection died first (hang, client reset, TCP reset).
     * Called before conn_close, so |c| and |state| are still valid. */
    void (*finish)(void *ctx, struct sbx_conn *c, void *state, void *tag, bool answered);
};

/* Server-wide counters (see sbx_server_summary for the JSON names). */
struct sbx_server_stats {
    uint64_t connections;       /* TCP connections accepted */
    uint64_t tls_handshakes;    /* completed handshakes */
    uint64_t tls_failures;      /* connections closed before the handshake completed */
    uint64_t requests;          /* complete requests handed to services */
    uint64_t responses;         /* replies submitted */
    uint64_t rst_streams;       /* RST_STREAM sent by fault */
    uint64_t tcp_resets;        /* connections reset by fault */
    uint64_t hangs;             /* requests never answered */
    uint64_t goaways;           /* GOAWAY frames submitted by services */
    uint64_t refused_streams;   /* streams nghttp2 refused or closed unanswered */
    uint32_t max_streams_seen;  /* peak concurrent streams on any connection */
};

/*
 * Create a server on |loop| using TLS context |ssl_ctx| (borrowed; must
 * outlive the server). Never fails (OOM aborts).
 */
struct sbx_server *sbx_server_new(uv_loop_t *loop, SSL_CTX *ssl_ctx);

/*
 * Listen on |addr| ("127.0.0.1:8443", "[::1]:0", port 0 = any free port)
 * for |svc| (borrowed). |name| keys the port in sbx_server_ports_json (e.g.
 * "apns", "apns_sandbox"). Returns the bound port (>0), or a negative libuv
 * error with |err| filled.
 */
int sbx_server_listen(struct sbx_server *srv, const char *name, const char *addr,
                      const struct sbx_service *svc, char *err, size_t errlen);

/* The same with a listener-specific TLS context |ssl_ctx| (borrowed, must
 * outlive the server; NULL = the server's), e.g. one whose ALPN list is
 * {"h2", "http/1.1"} for a service with http1 set. */
int sbx_server_listen_tls(struct sbx_server *srv, const char *name, const char *addr,
                          const struct sbx_service *svc, SSL_CTX *ssl_ctx,
                          char *err, size_t errlen);

/* {"apns":43121,...}: the bound ports by listener name; caller frees. */
char *sbx_server_ports_json(const struct sbx_server *srv);

/*
 * Stop listening and close every connection (pending requests are finished
 * with answered=false). |done| runs once everything is closed (may be NULL).
 * Call once.
 */
void sbx_server_shutdown(struct sbx_server *srv, void (*done)(void *arg), void *arg);

/* Free the server after shutdown completed (its handles are closed). */
void sbx_server_free(struct sbx_server *srv);

/* Counters so far. */
const struct sbx_server_stats *sbx_server_stats(const struct sbx_server *srv);

/*
 * Counters as a new cJSON object (caller owns), including a "per_connection"
 * array of {"connection","listener","http","requests","max_concurrent_streams"}
 * for up to the first 10000 connections ("http" is "h2" or "http/1.1";
 * for HTTP/1.1 the concurrent streams are pipelined requests awaiting
 * their answer).
 */
cJSON *sbx_server_summary(const struct sbx_server *srv);

/* ---- calls a service may make on a connection it was given ------------- */

/* Connection number (1, 2, ... in accept order). */
uint64_t sbx_conn_id(const struct sbx_conn *c);

/* Listener name the connection came in on ("apns", "apns_sandbox"). */
const char *sbx_conn_listener(const struct sbx_conn *c);

/* "h2" or "http/1.1" (the protocol the connection speaks). */
const char *sbx_conn_http(const struct sbx_conn *c);

/* Send SETTINGS_MAX_CONCURRENT_STREAMS |n| if it differs from the current
 * advertised value (HTTP/2 only; a no-op on HTTP/1.1). */
void sbx_conn_set_max_streams(struct sbx_conn *c, uint32_t n);

/* The currently advertised MAX_CONCURRENT_STREAMS. */
uint32_t sbx_conn_max_streams(const struct sbx_conn *c);

/*
 * Submit GOAWAY with |last_stream_id|, |error_code| and debug data
 * |debug| (may be NULL); streams above last_stream_id are closed
 * unanswered, the rest are answered, then the connection closes. On
 * HTTP/1.1 (where stream ids are request numbers 1, 2, ...) the answer to
 * request |last_stream_id| carries "connection: close" and the connection
 * closes after it; later requests are dropped unanswered.
 */
void sbx_conn_goaway(struct sbx_conn *c, int32_t last_stream_id, uint32_t error_code,
                     const char *debug);

/* Requests received on this connection so far (including the current one). */
uint64_t sbx_conn_requests(const struct sbx_conn *c);

#endif
