/*
 * Test-only scripted HTTP/2 server over TLS (http2/tls.c server mode plus an
 * nghttp2 server session) that runs in the test's own uv loop. Used by
 * tests/unit/test_h2client.c, which #includes h2_testserver.c (files in
 * tests/unit not named test_*.c are not built on their own).
 *
 * Every request to any path is answered 200 with headers "apns-id" (a
 * counter) and "x-path" (the request path) and the request body echoed,
 * except "/hang" (never answered) and "/big" (big_body bytes). Faults are
 * scripted through struct h2ts_config, which may be changed between runs.
 */
#ifndef VARSEL_H2_TESTSERVER_H
#define VARSEL_H2_TESTSERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct h2ts_config {
    uint32_t max_streams;   /* SETTINGS_MAX_CONCURRENT_STREAMS first sent */
    uint32_t raise_to;      /* after the first response on a connection, raise
                               the limit to this (0 = never) */
    uint32_t delay_ms;      /* hold each response this long (0 = answer at once) */
    int goaway_after;       /* after this many requests on a connection send
                               GOAWAY {"reason":"Shutdown"} ... (0 = never) */
    int goaway_keep;        /* ... with last_stream_id = the id of this request
                               number (0 = last_stream_id 0), and never answer
                               the streams above it */
    int goaway_conns;       /* only the first N connections do it (0 = all) */
    int refuse_every;       /* RST_STREAM REFUSED_STREAM for every k-th request
                               whose path was never refused before (0 = never) */
    int reset_after;        /* TCP reset after this many requests on a
                               connection (0 = never) */
    int reset_conns;        /* only the first N connections do it (0 = all) */
    size_t big_body;        /* response size for "/big" */
};

struct h2ts_stats {
    int conns;              /* connections accepted */
    int handshakes;         /* TLS handshakes completed */
    int requests;           /* complete requests received */
    int responses;          /* responses submitted */
    int refused;            /* REFUSED_STREAM we sent on purpose */
    int goaways;            /* GOAWAYs we sent on purpose */
    int resets;             /* connections reset on purpose */
    int max_open;           /* most concurrent open streams on one connection */
    int max_open_at_1;      /* the same, while the advertised limit was 1 */
    int violations;         /* opens above the advertised limit, or library
                               RST_STREAM/GOAWAY caused by the client */
    int pings;              /* PINGs received (not ACKs) */
    int rst_received;       /* RST_STREAM frames from the client */
    int auth_no_index;      /* "authorization" headers received never-indexed */
    int auth_indexed;       /* "authorization" headers received indexable */
    char authority[80];     /* last :authority seen */
};

struct h2ts;

/* Start listening on 127.0.0.1 (free port) with |cert|/|key|, ALPN h2.
 * Returns NULL on failure (message on stderr). */
struct h2ts *h2ts_start(uv_loop_t *loop, const char *cert, const char *key,
                        const struct h2ts_config *cfg);
/* Listening port. */
int h2ts_port(const struct h2ts *s);
/* Live, mutable script; takes effect for new connections/requests. */
struct h2ts_config *h2ts_config(struct h2ts *s);
/* Counters so far. */
const struct h2ts_stats *h2ts_stats(const struct h2ts *s);
/* Connections currently open. */
int h2ts_open_conns(const struct h2ts *s);
/* Stop listening, close every connection; the server frees itself once all
 * its handles are closed (run the loop). */
void h2ts_stop(struct h2ts *s);

#endif
