/*
 * TLS over OpenSSL memory BIOs on an embedded uv_tcp_t.
 *
 * Architecture. Each struct tls_conn owns one uv_tcp_t, one uv_timer_t (only
 * used to bound a graceful shutdown), one SSL and two memory BIOs:
 *
 *     socket --uv_read--> rbio --SSL_read--> on_data (plaintext)
 *     tls_conn_write --SSL_write--> wbio --flush--> uv_write --> socket
 *
 * OpenSSL never touches the socket. The write side is not a memory BIO but
 * our own (wout_method): OpenSSL's ciphertext is appended straight to heap
 * blocks of ~17 KB; after every SSL call (handshake, read, write, shutdown)
 * flush_wbio() hands the blocks filled so far to uv_write. A block and its
 * uv_write_t live in one allocation freed in the write callback. (A memory
 * BIO zeroes its buffer before each copy and is copied out again: two more
 * passes over every byte sent.)
 *
 * Lifetime. Closing is two-phase: tls_conn_close()/tls_conn_reset() or any
 * internal error set CLOSING and record the first error; the uv handles are
 * closed (after a bounded uv_shutdown for orderly closes with queued data),
 * and when the last close callback runs, on_close fires exactly once and the
 * struct is freed. Nothing is freed inside a user callback, and once CLOSING
 * is set no further on_data/on_open is delivered.
 */
#include "http2/tls.h"

#include "common/log.h"
#include "common/util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <limits.h>
#include <stdlib.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#define TLS_READ_BUF      (16 * 1024 + 512) /* one uv read: a full TLS record */
#define TLS_PLAIN_CHUNK   (16 * 1024) /* one SSL_read */
#define TLS_SHUTDOWN_MS   2000        /* bound on a graceful close */
#define TLS_WOUT_BLOCK    (17 * 1024) /* a write block: a full TLS record fits */
#define TLS_WOUT_SPARE    4           /* written blocks kept for reuse per connection */

enum {
    F_SERVER       = 1 << 0,
    F_OPEN         = 1 << 1, /* handshake done, on_open delivered */
    F_CLOSING      = 1 << 2, /* no more user callbacks except on_close */
    F_HANDLES_DOWN = 1 << 3, /* uv_close issued on both handles */
    F_SILENT       = 1 << 4, /* setup failed: no on_close */
    F_REQUIRE_ALPN = 1 << 5,
    F_CONNECTED    = 1 << 6, /* TCP connected / accepted */
    F_SHUTTING     = 1 << 7, /* uv_shutdown in progress */
};

struct tls_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;              /* graceful shutdown bound */
    uv_connect_t connect_req;
    uv_shutdown_t shutdown_req;
    SSL *ssl;
    BIO *rbio;                     /* ciphertext from the socket, owned by ssl */
    BIO *wbio;                     /* ciphertext to the socket, owned by ssl
                                      (wout_method: fills wout_head..wout_tail) */
    struct write_req *wout_head, *wout_tail; /* blocks not yet given to uv_write */
    size_t wout_pending;           /* bytes in them */
    struct write_req *wout_spare;  /* written blocks for reuse (a 17 KB malloc
                                      would consolidate glibc's fast bins) */
    int n_spare;
    struct tls_conn_callbacks cb;
    void *user;
    unsigned flags;
    int handles_open;              /* uv handles not yet closed */
    int close_err;                 /* first error recorded */
    char close_reason[160];
    char alpn[32];
    char rbuf[TLS_READ_BUF];
};

struct write_req {
    uv_write_t req;
    struct tls_conn *conn;
    struct write_req *next;        /* wout list, until handed to uv_write */
    size_t len, cap;
    uint8_t data[];
};

/* ---- the write BIO ------------------------------------------------------ */

static int wout_write(BIO *b, const char *data, int len)
{
    struct tls_conn *c = BIO_get_data(b);
    if (c == NULL || len <= 0)
        return 0;
    size_t left = (size_t)len;
    while (left > 0) {
        struct write_req *w = c->wout_tail;
        if (w == NULL || w->len == w->cap) {
            size_t cap = left > TLS_WOUT_BLOCK ? left : TLS_WOUT_BLOCK;
            if (c->wout_spare && cap == TLS_WOUT_BLOCK) {
                w = c->wout_spare;
                c->wout_spare = w->next;
                c->n_spare--;
            } else {
                w = xmalloc(sizeof *w + cap);
            }
            w->conn = c;
            w->next = NULL;
            w->len = 0;
            w->cap = cap;
            if (c->wout_tail)
                c->wout_tail->next = w;
            else
                c->wout_head = w;
            c->wout_tail = w;
        }
        size_t k = w->cap - w->len < left ? w->cap - w->len : left;
        memcpy(w->data + w->len, data, k);
        w->len += k;
        data += k;
        left -= k;
        c->wout_pending += k;
    }
    return len;
}

static void wout_drop(struct tls_conn *c)
{
    while (c->wout_head) {
        struct write_req *w = c->wout_head;
        c->wout_head = w->next;
        free(w);
    }
    c->wout_tail = NULL;
    c->wout_pending = 0;
}

static void wout_free_spares(struct tls_conn *c)
{
    while (c->wout_spare) {
        struct write_req *w = c->wout_spare;
        c->wout_spare = w->next;
        free(w);
    }
    c->n_spare = 0;
}

static long wout_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    struct tls_conn *c = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_WPENDING:
        return c ? (long)c->wout_pending : 0;
    case BIO_CTRL_PENDING:
        return 0;
    case BIO_CTRL_RESET:
        if (c)
            wout_drop(c);
        return 1;
    default:
        return 0;
    }
}

static int wout_create(BIO *b)
{
    BIO_set_data(b, NULL);
    BIO_set_init(b, 1);
    return 1;
}

static int wout_destroy(BIO *b)
{
    struct tls_conn *c = BIO_get_data(b);
    if (c) {
        wout_drop(c);
        wout_free_spares(c);
    }
    BIO_set_data(b, NULL);
    return 1;
}

static BIO_METHOD *wout_meth;
static void wout_method_init(void)
{
    wout_meth = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "varsel-wout");
    if (wout_meth == NULL || !BIO_meth_set_write(wout_meth, wout_write) ||
        !BIO_meth_set_ctrl(wout_meth, wout_ctrl) ||
        !BIO_meth_set_create(wout_meth, wout_create) ||
        !BIO_meth_set_destroy(wout_meth, wout_destroy)) {
        fprintf(stderr, "out of memory (BIO_meth_new)\n");
        abort();
    }
}

static const BIO_METHOD *wout_method(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, wout_method_init);
    return wout_meth;
}

static void conn_fail(struct tls_conn *c, int err, const char *reason);

/* ---- contexts ---------------------------------------------------------- */

/* Build the ALPN wire format (length-prefixed names) from a NULL-terminated
 * list into |out| (|cap| bytes). Returns the length or -1 if it does not fit
 * or a name is empty or longer than 255 bytes. */
static int alpn_wire(const char *const *alpn, unsigned char *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; alpn != NULL && alpn[i] != NULL; i++) {
        size_t l = strlen(alpn[i]);
        if (l == 0 || l > 255 || n + 1 + l > cap)
            return -1;
        out[n++] = (unsigned char)l;
        memcpy(out + n, alpn[i], l);
        n += l;
    }
    return (int)n;
}

/* Copy the most recent OpenSSL error into |err| with a prefix. */
static void ssl_err_text(const char *prefix, char *err, size_t errlen)
{
    unsigned long e = ERR_peek_last_error();
    char buf[200] = "unknown error";
    if (e != 0)
        ERR_error_string_n(e, buf, sizeof buf);
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s: %s", prefix, buf);
    ERR_clear_error();
}

/* Server-side ALPN data lives in the SSL_CTX's ex_data so it is freed with
 * the context. */
static int alpn_ex_idx = -1;

static void alpn_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
                         long argl, void *argp)
{
    (void)parent; (void)ad; (void)idx; (void)argl; (void)argp;
    free(ptr);
}

struct alpn_pref {
    int len;
    unsigned char wire[256];
};

/* Select the first protocol of the server's preference list that the client
 * offered; without overlap continue without ALPN (APNs accepts that too). */
static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    const struct alpn_pref *pref = arg;
    for (int i = 0; i < pref->len; i += 1 + pref->wire[i]) {
        unsigned l = pref->wire[i];
        for (unsigned j = 0; j < inlen; j += 1u + in[j]) {
            if (j + 1u + in[j] > inlen)
                break;
            if (in[j] == l && memcmp(in + j + 1, pref->wire + i + 1, l) == 0) {
                *out = in + j + 1;
                *outlen = (unsigned char)l;
                return SSL_TLSEXT_ERR_OK;
            }
        }
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/*
 * libuv writes with write(2), so a write to a socket the peer has reset
 * raises SIGPIPE, whose default action kills the process. Every program
 * using this module needs it ignored; creating any TLS context does that
 * (process-wide, idempotent) unless a handler is already installed.
 */
static void ignore_sigpipe(void)
{
    struct sigaction old;
    if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);
}

static SSL_CTX *ctx_common(const SSL_METHOD *method, char *err, size_t errlen)
{
    ignore_sigpipe();
    SSL_CTX *ctx = SSL_CTX_new(method);
    if (ctx == NULL) {
        ssl_err_text("SSL_CTX_new", err, errlen);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    return ctx;
}

/* Whether |dir| (a single directory) holds a name like "5ad8a5d6.0". */
static bool dir_has_hashed_certs(const char *dir)
{
    if (dir == NULL || strchr(dir, ':') != NULL)
        return false;
    DIR *d = opendir(dir);
    if (d == NULL)
        return false;
    bool found = false;
    struct dirent *e;
    while (!found && (e = readdir(d)) != NULL) {
        const char *n = e->d_name;
        size_t i = 0;
        while (i < 8 && isxdigit((unsigned char)n[i]))
            i++;
        found = i == 8 && n[8] == '.' && isdigit((unsigned char)n[9]);
    }
    closedir(d);
    return found;
}

/* Whether |file| is OpenSSL's default bundle (after symlinks). */
static bool is_default_bundle(const char *file)
{
    char a[PATH_MAX], b[PATH_MAX];
    return realpath(file, a) != NULL && realpath(X509_get_default_cert_file(), b) != NULL &&
           strcmp(a, b) == 0;
}

/*
 * The system trust store. SSL_CTX_set_default_verify_paths parses the whole
 * bundle (~140 certificates, ~240 million instructions, a few MB) at
 * start-up; a hashed certificate directory (Debian's /etc/ssl/certs, which
 * update-ca-certificates fills from the same certificates as the bundle)
 * is read lazily instead: only the issuers a handshake asks for. An
 * SSL_CERT_FILE other than the default bundle, or a directory without
 * hashed names, falls back to the default paths.
 */
static int load_system_store(SSL_CTX *ctx)
{
    const char *dir = getenv(X509_get_default_cert_dir_env());
    const char *file = getenv(X509_get_default_cert_file_env());
    if (dir == NULL)
        dir = X509_get_default_cert_dir();
    if ((file == NULL || is_default_bundle(file)) && dir_has_hashed_certs(dir))
        return SSL_CTX_load_verify_dir(ctx, dir);
    return SSL_CTX_set_default_verify_paths(ctx);
}

SSL_CTX *tls_client_ctx_new(const char *ca_file, const char *const *alpn,
                            const char *cert_file, const char *key_file,
                            char *err, size_t errlen)
{
    unsigned char wire[256];
    int wlen = alpn_wire(alpn, wire, sizeof wire);
    if (wlen < 0) {
        snprintf(err, errlen, "bad ALPN list");
        return NULL;
    }
    SSL_CTX *ctx = ctx_common(TLS_client_method(), err, errlen);
    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (load_system_store(ctx) != 1)
        ERR_clear_error(); /* no system store is not fatal when ca_file is given */
    if (ca_file != NULL && SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
        ssl_err_text(ca_file, err, errlen);
        goto fail;
    }
    if (wlen > 0 && SSL_CTX_set_alpn_protos(ctx, wire, (unsigned)wlen) != 0) {
        ssl_err_text("ALPN", err, errlen);
        goto fail;
    }
    if (cert_file != NULL || key_file != NULL) {
        if (cert_file == NULL || key_file == NULL) {
            snprintf(err, errlen, "client certificate needs both cert and key");
            goto fail;
        }
        if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
            ssl_err_text(cert_file, err, errlen);
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(ctx) != 1) {
            ssl_err_text(key_file, err, errlen);
            goto fail;
        }
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file,
                            const char *const *alpn, char *err, size_t errlen)
{
    struct alpn_pref *pref = xcalloc(1, sizeof *pref);
    pref->len = alpn_wire(alpn, pref->wire, sizeof pref->wire);
    if (pref->len < 0) {
        snprintf(err, errlen, "bad ALPN list");
        free(pref);
        return NULL;
    }
    SSL_CTX *ctx = ctx_common(TLS_server_method(), err, errlen);
    if (ctx == NULL) {
        free(pref);
        return NULL;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        ssl_err_text(cert_file, err, errlen);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        ssl_err_text(key_file, err, errlen);
        goto fail;
    }
    if (pref->len > 0) {
        if (alpn_ex_idx < 0)
            alpn_ex_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, alpn_ex_free);
        if (alpn_ex_idx < 0 || SSL_CTX_set_ex_data(ctx, alpn_ex_idx, pref) != 1) {
            ssl_err_text("ex_data", err, errlen);
            goto fail;
        }
        SSL_CTX_set_alpn_select_cb(ctx, alpn_select_cb, pref);
    } else {
        free(pref);
    }
    return ctx;
fail:
    free(pref);
    SSL_CTX_free(ctx);
    return NULL;
}

/* ---- teardown ---------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    struct tls_conn *c = h->data;
    if (--c->handles_open > 0)
        return;
    if (!(c->flags & F_SILENT) && c->cb.on_close != NULL)
        c->cb.on_close(c, c->close_err, c->close_reason, c->user);
    SSL_free(c->ssl); /* frees both BIOs */
    free(c);
}

/* Close both handles now; pending writes are cancelled. */
static void close_handles(struct tls_conn *c)
{
    if (c->flags & F_HANDLES_DOWN)
        return;
    c->flags |= F_HANDLES_DOWN;
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

static void record_close(struct tls_conn *c, int err, const char *reason)
{
    c->flags |= F_CLOSING;
    c->close_err = err;
    snprintf(c->close_reason, sizeof c->close_reason, "%s",
             reason != NULL ? reason : (err == 0 ? "closed" : "error"));
    if (c->flags & F_CONNECTED)
        uv_read_stop((uv_stream_t *)&c->tcp);
}

static void on_shutdown_timer(uv_timer_t *t)
{
    close_handles(t->data);
}

static void on_shutdown_done(uv_shutdown_t *req, int status)
{
    (void)status;
    struct tls_conn *c = req->data;
    c->flags &= ~F_SHUTTING;
    close_handles(c);
}

/* Fatal error: drop pending writes and close. */
static void conn_fail(struct tls_conn *c, int err, const char *reason)
{
    if (c->flags & F_CLOSING)
        return;
    record_close(c, err, reason);
    close_handles(c);
}

/* ---- write path -------------------------------------------------------- */

static void on_write_done(uv_write_t *req, int status)
{
    struct write_req *w = req->data;
    struct tls_conn *c = w->conn;
    if (w->cap == TLS_WOUT_BLOCK && c->n_spare < TLS_WOUT_SPARE &&
        !(c->flags & F_HANDLES_DOWN)) {
        w->next = c->wout_spare;
        c->wout_spare = w;
        c->n_spare++;
    } else {
        free(w);
    }
    if (status < 0 && status != UV_ECANCELED && !(c->flags & F_CLOSING)) {
        char reason[96];
        snprintf(reason, sizeof reason, "write: %s", uv_strerror(status));
        conn_fail(c, status, reason);
    }
}

/* Move all ciphertext OpenSSL has produced to the socket. Returns 0 or a
 * negative libuv error (the connection is then failing). */
static int flush_wbio(struct tls_conn *c)
{
    while (c->wout_head) {
        if (c->flags & F_HANDLES_DOWN) {
            wout_drop(c);
            return UV_ECANCELED;
        }
        struct write_req *w = c->wout_head;
        c->wout_head = w->next;
        if (c->wout_head == NULL)
            c->wout_tail = NULL;
        c->wout_pending -= w->len;
        w->req.data = w;
        uv_buf_t buf = uv_buf_init((char *)w->data, (unsigned)w->len);
        int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write_done);
        if (r < 0) {
            free(w);
            wout_drop(c);
            char reason[96];
            snprintf(reason, sizeof reason, "write: %s", uv_strerror(r));
            conn_fail(c, r, reason);
            return r;
        }
    }
    return 0;
}

int tls_conn_write(struct tls_conn *c, const uint8_t *data, size_t len)
{
    if (c->flags & F_CLOSING)
        return UV_ECANCELED;
    if (!(c->flags & F_OPEN))
        return UV_ENOTCONN;
    while (len > 0) {
        int chunk = len > INT32_MAX ? INT32_MAX : (int)len;
        ERR_clear_error();
        int n = SSL_write(c->ssl, data, chunk);
        if (n <= 0) {
            char reason[200];
            ssl_err_text("TLS write", reason, sizeof reason);
            conn_fail(c, TLS_ERR_PROTOCOL, reason);
            return TLS_ERR_PROTOCOL;
        }
        data += n;
        len -= (size_t)n;
    }
    return flush_wbio(c);
}

/* ---- read path --------------------------------------------------------- */

/* Reason text for a failed handshake: the verify result when the chain or
 * host check failed, otherwise the OpenSSL error. */
static void handshake_reason(struct tls_conn *c, char *out, size_t outlen)
{
    long vr = SSL_get_verify_result(c->ssl);
    if (vr != X509_V_OK) {
        snprintf(out, outlen, "TLS: certificate verify failed: %s",
                 X509_verify_cert_error_string(vr));
        ERR_clear_error();
        return;
    }
    ssl_err_text("TLS handshake", out, outlen);
}

/* Advance the handshake. Returns 1 when open, 0 when it needs more input,
 * -1 when the connection failed. */
static int do_handshake(struct tls_conn *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    int fr = flush_wbio(c);
    if (r == 1) {
        if (fr < 0)
            return -1;
        const unsigned char *p = NULL;
        unsigned plen = 0;
        SSL_get0_alpn_selected(c->ssl, &p, &plen);
        if (p == NULL || plen >= sizeof c->alpn)
            plen = 0;
        if (plen > 0)
            memcpy(c->alpn, p, plen);
        c->alpn[plen] = '\0';
        if ((c->flags & F_REQUIRE_ALPN) && plen == 0) {
            conn_fail(c, TLS_ERR_ALPN, "TLS: peer selected no ALPN protocol");
            return -1;
        }
        c->flags |= F_OPEN;
        if (c->cb.on_open != NULL)
            c->cb.on_open(c, c->user);
        return (c->flags & F_CLOSING) ? -1 : 1;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return fr < 0 ? -1 : 0;
    char reason[200];
    handshake_reason(c, reason, sizeof reason);
    conn_fail(c, TLS_ERR_HANDSHAKE, reason);
    return -1;
}

/* Decrypt everything available and deliver it. */
static void read_plaintext(struct tls_conn *c)
{
    uint8_t buf[TLS_PLAIN_CHUNK];
    while (!(c->flags & F_CLOSING)) {
        ERR_clear_error();
        int n = SSL_read(c->ssl, buf, sizeof buf);
        if (n > 0) {
            if (c->cb.on_data != NULL)
                c->cb.on_data(c, buf, (size_t)n, c->user);
            continue;
        }
        int e = SSL_get_error(c->ssl, n);
        if (flush_wbio(c) < 0)
            return;
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            return;
        if (e == SSL_ERROR_ZERO_RETURN) {
            /* close_notify: answer it and close in order */
            tls_conn_close(c, 0, "peer closed");
            return;
        }
        char reason[200];
        ssl_err_text("TLS", reason, sizeof reason);
        conn_fail(c, TLS_ERR_PROTOCOL, reason);
        return;
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct tls_conn *c = h->data;
    *buf = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct tls_conn *c = s->data;
    (void)buf;
    if (c->flags & F_CLOSING)
        return;
    if (nread == 0)
        return;
    if (nread < 0) {
        if (nread == UV_EOF) {
            if (c->flags & F_OPEN)
                conn_fail(c, 0, "peer closed connection");
            else
                conn_fail(c, TLS_ERR_HANDSHAKE, "TLS: connection closed during handshake");
        } else {
            char reason[96];
            snprintf(reason, sizeof reason, "read: %s", uv_strerror((int)nread));
            conn_fail(c, (int)nread, reason);
        }
        return;
    }
    if (BIO_write(c->rbio, c->rbuf, (int)nread) != (int)nread) {
        conn_fail(c, TLS_ERR_PROTOCOL, "TLS: BIO_write failed");
        return;
    }
    if (!(c->flags & F_OPEN) && do_handshake(c) <= 0)
        return;
    read_plaintext(c);
}

/* ---- setup ------------------------------------------------------------- */

static struct tls_conn *conn_new(uv_loop_t *loop, SSL_CTX *ctx,
                                 const struct tls_conn_callbacks *cb, void *user)
{
    struct tls_conn *c = xcalloc(1, sizeof *c);
    c->ssl = SSL_new(ctx);
    if (c->ssl == NULL) {
        ERR_clear_error();
        free(c);
        return NULL;
    }
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(wout_method());
    if (c->rbio == NULL || c->wbio == NULL) {
        BIO_free(c->rbio);
        BIO_free(c->wbio);
        SSL_free(c->ssl);
        free(c);
        return NULL;
    }
    /* an empty memory BIO reports "retry", not EOF */
    BIO_set_mem_eof_return(c->rbio, -1);
    BIO_set_data(c->wbio, c);
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    if (cb != NULL)
        c->cb = *cb;
    c->user = user;
    uv_tcp_init(loop, &c->tcp);
    uv_timer_init(loop, &c->timer);
    c->handles_open = 2;
    c->tcp.data = c;
    c->timer.data = c;
    c->connect_req.data = c;
    c->shutdown_req.data = c;
    return c;
}

/* Setup failed after the handles exist: close them without callbacks. */
static void conn_abort_silent(struct tls_conn *c)
{
    c->flags |= F_SILENT | F_CLOSING;
    close_handles(c);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct tls_conn *c = req->data;
    if (c->flags & F_CLOSING)
        return;
    if (status < 0) {
        char reason[96];
        snprintf(reason, sizeof reason, "connect: %s", uv_strerror(status));
        conn_fail(c, status, reason);
        return;
    }
    c->flags |= F_CONNECTED;
    uv_tcp_nodelay(&c->tcp, 1);
    int r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (r < 0) {
        conn_fail(c, r, "read start failed");
        return;
    }
    do_handshake(c); /* sends ClientHello */
}

/* True if |host| is an IPv4 or IPv6 literal. */
static int is_ip_literal(const char *host)
{
    unsigned char tmp[16];
    return inet_pton(AF_INET, host, tmp) == 1 || inet_pton(AF_INET6, host, tmp) == 1;
}

int tls_conn_connect(uv_loop_t *loop, SSL_CTX *ctx, const struct sockaddr *addr,
                     const char *host, int require_alpn,
                     const struct tls_conn_callbacks *cb, void *user,
                     struct tls_conn **out)
{
    if (host == NULL || *host == '\0' || addr == NULL)
        return UV_EINVAL;
    struct tls_conn *c = conn_new(loop, ctx, cb, user);
    if (c == NULL)
        return UV_ENOMEM;
    if (require_alpn)
        c->flags |= F_REQUIRE_ALPN;
    SSL_set_connect_state(c->ssl);
    X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
    int ok;
    if (is_ip_literal(host)) {
        ok = X509_VERIFY_PARAM_set1_ip_asc(param, host);
    } else {
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        ok = X509_VERIFY_PARAM_set1_host(param, host, 0) &&
             SSL_set_tlsext_host_name(c->ssl, host);
    }
    if (!ok) {
        ERR_clear_error();
        conn_abort_silent(c);
        return UV_EINVAL;
    }
    int r = uv_tcp_connect(&c->connect_req, &c->tcp, addr, on_connect);
    if (r < 0) {
        conn_abort_silent(c);
        return r;
    }
    *out = c;
    return 0;
}

int tls_conn_accept(uv_stream_t *server, SSL_CTX *ctx,
                    const struct tls_conn_callbacks *cb, void *user,
                    struct tls_conn **out)
{
    struct tls_conn *c = conn_new(server->loop, ctx, cb, user);
    if (c == NULL)
        return UV_ENOMEM;
    c->flags |= F_SERVER;
    SSL_set_accept_state(c->ssl);
    int r = uv_accept(server, (uv_stream_t *)&c->tcp);
    if (r == 0) {
        c->flags |= F_CONNECTED;
        uv_tcp_nodelay(&c->tcp, 1);
        r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    }
    if (r < 0) {
        conn_abort_silent(c);
        return r;
    }
    *out = c;
    return 0;
}

/* ---- accessors and close ----------------------------------------------- */

size_t tls_conn_write_queue_size(const struct tls_conn *c)
{
    return c->tcp.write_queue_size;
}

const char *tls_conn_alpn(const struct tls_conn *c)
{
    return c->alpn;
}

void tls_conn_set_user(struct tls_conn *c, void *user)
{
    c->user = user;
}

void tls_conn_close(struct tls_conn *c, int err, const char *reason)
{
    if (c->flags & F_CLOSING)
        return;
    record_close(c, err, reason);
    if (err != 0 || !(c->flags & F_CONNECTED)) {
        close_handles(c);
        return;
    }
    if (c->flags & F_OPEN) {
        ERR_clear_error();
        (void)SSL_shutdown(c->ssl); /* queue close_notify */
        ERR_clear_error();
        if (flush_wbio(c) < 0)
            return;
    }
    if (c->tcp.write_queue_size == 0) {
        close_handles(c);
        return;
    }
    /* let queued writes drain, but not forever */
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown_done) < 0) {
        close_handles(c);
        return;
    }
    c->flags |= F_SHUTTING;
    uv_timer_start(&c->timer, on_shutdown_timer, TLS_SHUTDOWN_MS, 0);
}

void tls_conn_reset(struct tls_conn *c)
{
    if (c->flags & F_CLOSING)
        return;
    record_close(c, UV_ECONNABORTED, "connection reset (local)");
    c->flags |= F_HANDLES_DOWN;
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    if (!(c->flags & F_CONNECTED) ||
        uv_tcp_close_reset(&c->tcp, on_handle_closed) != 0)
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}
