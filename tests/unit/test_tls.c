/*
 * Tests for common/certgen.c and http2/tls.c: generated certificates verify,
 * a real TLS handshake between tls_conn_accept and tls_conn_connect on the
 * loopback negotiates ALPN and echoes data, verification fails for wrong
 * names and untrusted CAs, and on_close fires exactly once in every path.
 */
#include "tests/unit/test.h"

#include "common/certgen.h"
#include "http2/tls.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdint.h>
#include <sys/stat.h>
#include <uv.h>

/* ---- fixtures ---------------------------------------------------------- */

static char tmpdir[256];

static void cleanup_tmpdir(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup failed\n");
}

static void make_certs(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/varsel-tls-XXXXXX");
    ASSERT_NOT_NULL(mkdtemp(tmpdir));
    atexit(cleanup_tmpdir);
    char err[256] = "";
    int r = certgen_ca_and_server(tmpdir, err, sizeof err);
    if (r != 0)
        fprintf(stderr, "certgen: %s\n", err);
    ASSERT_EQ_INT(0, r);
}

static const char *path_in(const char *name)
{
    static char buf[4][400];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", tmpdir, name);
    return buf[i];
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    static char buf[16384];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* One side of a test connection: counters and captured data. */
struct side {
    struct tls_conn *conn;
    int opened, closed, close_err;
    char close_reason[200];
    char alpn[32];
    uint8_t *got;
    size_t got_len, got_cap;
    int echo;               /* server: echo everything back */
    size_t close_after;     /* client: close once this many bytes came back */
    int reset_on_data;      /* server: tls_conn_reset on first data */
    const uint8_t *send;    /* client: send on open */
    size_t send_len;
};

struct fixture {
    uv_loop_t loop;
    uv_tcp_t listener;
    SSL_CTX *sctx, *cctx;
    struct side srv, cli;
    int port;
};

static void side_open(struct tls_conn *c, void *user)
{
    struct side *s = user;
    s->opened++;
    snprintf(s->alpn, sizeof s->alpn, "%s", tls_conn_alpn(c));
    if (s->send_len > 0)
        ASSERT_EQ_INT(0, tls_conn_write(c, s->send, s->send_len));
}

static void side_data(struct tls_conn *c, const uint8_t *d, size_t n, void *user)
{
    struct side *s = user;
    ASSERT(s->closed == 0);
    if (s->got_len + n > s->got_cap) {
        s->got_cap = (s->got_len + n) * 2;
        s->got = realloc(s->got, s->got_cap);
        ASSERT_NOT_NULL(s->got);
    }
    memcpy(s->got + s->got_len, d, n);
    s->got_len += n;
    if (s->reset_on_data) {
        tls_conn_reset(c);
        tls_conn_reset(c); /* idempotent */
        return;
    }
    if (s->echo)
        ASSERT_EQ_INT(0, tls_conn_write(c, d, n));
    if (s->close_after > 0 && s->got_len >= s->close_after) {
        tls_conn_close(c, 0, "test done");
        tls_conn_close(c, 0, "twice"); /* idempotent */
        ASSERT(tls_conn_write(c, d, 1) < 0);
    }
}

static void side_close(struct tls_conn *c, int err, const char *reason, void *user)
{
    struct side *s = user;
    (void)c;
    s->closed++;
    s->close_err = err;
    snprintf(s->close_reason, sizeof s->close_reason, "%s", reason);
    s->conn = NULL;
    if (getenv("TLS_DEBUG"))
        fprintf(stderr, "close %s err=%d %s\n", s->echo ? "srv" : "cli", err, reason);
}

static const struct tls_conn_callbacks side_cb = { side_open, side_data, side_close };

static void on_listener_conn(uv_stream_t *server, int status)
{
    struct fixture *f = server->data;
    ASSERT_EQ_INT(0, status);
    ASSERT(f->srv.conn == NULL);
    ASSERT_EQ_INT(0, tls_conn_accept(server, f->sctx, &side_cb, &f->srv, &f->srv.conn));
}

static void fixture_init(struct fixture *f, const char *const *server_alpn,
                         const char *client_ca)
{
    memset(f, 0, sizeof *f);
    static const char *const h2[] = { "h2", NULL };
    char err[256] = "";
    f->sctx = tls_server_ctx_new(path_in("server.pem"), path_in("server.key"),
                                 server_alpn, err, sizeof err);
    if (f->sctx == NULL)
        fprintf(stderr, "server ctx: %s\n", err);
    ASSERT_NOT_NULL(f->sctx);
    f->cctx = tls_client_ctx_new(client_ca, h2, NULL, NULL, err, sizeof err);
    if (f->cctx == NULL)
        fprintf(stderr, "client ctx: %s\n", err);
    ASSERT_NOT_NULL(f->cctx);
    ASSERT_EQ_INT(0, uv_loop_init(&f->loop));
    ASSERT_EQ_INT(0, uv_tcp_init(&f->loop, &f->listener));
    f->listener.data = f;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    ASSERT_EQ_INT(0, uv_tcp_bind(&f->listener, (struct sockaddr *)&sa, 0));
    ASSERT_EQ_INT(0, uv_listen((uv_stream_t *)&f->listener, 16, on_listener_conn));
    struct sockaddr_storage ss;
    int len = sizeof ss;
    ASSERT_EQ_INT(0, uv_tcp_getsockname(&f->listener, (struct sockaddr *)&ss, &len));
    f->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    f->srv.echo = 1;
}

static void connect_client(struct fixture *f, const char *host, int require_alpn)
{
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", f->port, &sa);
    ASSERT_EQ_INT(0, tls_conn_connect(&f->loop, f->cctx, (struct sockaddr *)&sa, host,
                                      require_alpn, &side_cb, &f->cli, &f->cli.conn));
}

static void run_until_client_closed(struct fixture *f)
{
    while (f->cli.closed == 0)
        ASSERT(uv_run(&f->loop, UV_RUN_ONCE) != 0 || f->cli.closed);
}

/* Close everything and require the loop to end with no open handle. */
static void fixture_done(struct fixture *f)
{
    if (f->srv.conn != NULL && f->srv.closed == 0)
        tls_conn_close(f->srv.conn, 0, "fixture done");
    uv_close((uv_handle_t *)&f->listener, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    ASSERT_EQ_INT(0, uv_loop_close(&f->loop));
    ASSERT(f->cli.closed <= 1);
    ASSERT(f->srv.closed <= 1);
    SSL_CTX_free(f->sctx);
    SSL_CTX_free(f->cctx);
    free(f->srv.got);
    free(f->cli.got);
}

/* ---- certgen ----------------------------------------------------------- */

static X509 *load_cert(const char *path)
{
    FILE *fp = fopen(path, "r");
    ASSERT_NOT_NULL(fp);
    X509 *x = PEM_read_X509(fp, NULL, NULL, NULL);
    fclose(fp);
    ASSERT_NOT_NULL(x);
    return x;
}

TEST(certgen_server_cert_verifies)
{
    make_certs();
    X509 *ca = load_cert(path_in("ca.pem"));
    X509 *srv = load_cert(path_in("server.pem"));
    ASSERT_EQ_INT(1, X509_check_host(srv, "localhost", 0, 0, NULL));
    ASSERT_EQ_INT(0, X509_check_host(srv, "example.com", 0, 0, NULL));
    ASSERT_EQ_INT(1, X509_check_ip_asc(srv, "127.0.0.1", 0));
    ASSERT_EQ_INT(1, X509_check_ip_asc(srv, "::1", 0));
    ASSERT_EQ_INT(0, X509_check_ip_asc(srv, "10.0.0.1", 0));
    ASSERT_EQ_INT(1, X509_check_ca(ca) >= 1);
    ASSERT_EQ_INT(0, X509_check_ca(srv));

    X509_STORE *store = X509_STORE_new();
    X509_STORE_add_cert(store, ca);
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    ASSERT_EQ_INT(1, X509_STORE_CTX_init(ctx, store, srv, NULL));
    ASSERT_EQ_INT(1, X509_verify_cert(ctx));
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);

    /* server.pem carries the chain: leaf then CA */
    const char *pem = read_file(path_in("server.pem"));
    const char *first = strstr(pem, "BEGIN CERTIFICATE");
    ASSERT_NOT_NULL(first);
    ASSERT_NOT_NULL(strstr(first + 1, "BEGIN CERTIFICATE"));
    ASSERT_STR_CONTAINS(read_file(path_in("server.key")), "-----BEGIN PRIVATE KEY-----");
    ASSERT_STR_CONTAINS(read_file(path_in("ca.key")), "-----BEGIN PRIVATE KEY-----");
    X509_free(ca);
    X509_free(srv);
}

static EVP_PKEY *load_key(const char *path, int priv)
{
    FILE *fp = fopen(path, "r");
    ASSERT_NOT_NULL(fp);
    EVP_PKEY *k = priv ? PEM_read_PrivateKey(fp, NULL, NULL, NULL)
                       : PEM_read_PUBKEY(fp, NULL, NULL, NULL);
    fclose(fp);
    ASSERT_NOT_NULL(k);
    return k;
}

TEST(certgen_ec_and_rsa_keys)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/varsel-tls-XXXXXX");
    ASSERT_NOT_NULL(mkdtemp(tmpdir));
    atexit(cleanup_tmpdir);
    char err[256];
    ASSERT_EQ_INT(0, certgen_ec_key(path_in("k.p8"), path_in("k.pub"), err, sizeof err));
    ASSERT_EQ_INT(0, certgen_rsa_key(path_in("r.key"), path_in("r.pub"), err, sizeof err));
    const char *p8 = read_file(path_in("k.p8"));
    ASSERT(strncmp(p8, "-----BEGIN PRIVATE KEY-----", 27) == 0);
    ASSERT(strncmp(read_file(path_in("k.pub")), "-----BEGIN PUBLIC KEY-----", 26) == 0);
    ASSERT(strncmp(read_file(path_in("r.key")), "-----BEGIN PRIVATE KEY-----", 27) == 0);
    ASSERT(strncmp(read_file(path_in("r.pub")), "-----BEGIN PUBLIC KEY-----", 26) == 0);

    EVP_PKEY *ec = load_key(path_in("k.p8"), 1), *ecp = load_key(path_in("k.pub"), 0);
    ASSERT(EVP_PKEY_is_a(ec, "EC"));
    ASSERT_EQ_INT(256, EVP_PKEY_get_bits(ec));
    ASSERT_EQ_INT(1, EVP_PKEY_eq(ec, ecp));
    EVP_PKEY *rsa = load_key(path_in("r.key"), 1), *rsap = load_key(path_in("r.pub"), 0);
    ASSERT(EVP_PKEY_is_a(rsa, "RSA"));
    ASSERT_EQ_INT(2048, EVP_PKEY_get_bits(rsa));
    ASSERT_EQ_INT(1, EVP_PKEY_eq(rsa, rsap));
    ASSERT_EQ_INT(0, EVP_PKEY_eq(rsa, ecp) == 1);
    struct stat st;
    ASSERT_EQ_INT(0, stat(path_in("k.p8"), &st));
    ASSERT_EQ_INT(0600, st.st_mode & 0777);
    /* two calls give two different keys */
    ASSERT_EQ_INT(0, certgen_ec_key(path_in("k2.p8"), path_in("k2.pub"), err, sizeof err));
    EVP_PKEY *ec2 = load_key(path_in("k2.p8"), 1);
    ASSERT(EVP_PKEY_eq(ec, ec2) != 1);
    ASSERT_EQ_INT(-1, certgen_ec_key("/nonexistent-dir/x.p8", NULL, err, sizeof err));
    ASSERT_STR_CONTAINS(err, "/nonexistent-dir/x.p8");
    EVP_PKEY_free(ec);
    EVP_PKEY_free(ecp);
    EVP_PKEY_free(ec2);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(rsap);
}

/* ---- tls --------------------------------------------------------------- */

static const char *const alpn_h2_h1[] = { "h2", "http/1.1", NULL };

TEST(handshake_alpn_echo_ip_literal)
{
    make_certs();
    struct fixture f;
    fixture_init(&f, alpn_h2_h1, path_in("ca.pem"));
    static const uint8_t msg[] = "hello over TLS";
    f.cli.send = msg;
    f.cli.send_len = sizeof msg;
    f.cli.close_after = sizeof msg;
    connect_client(&f, "127.0.0.1", 1);
    run_until_client_closed(&f);
    ASSERT_EQ_INT(1, f.cli.opened);
    ASSERT_EQ_INT(1, f.srv.opened);
    ASSERT_STR_EQ("h2", f.cli.alpn);
    ASSERT_STR_EQ("h2", f.srv.alpn);
    ASSERT_EQ_INT(sizeof msg, f.cli.got_len);
    ASSERT(memcmp(f.cli.got, msg, sizeof msg) == 0);
    ASSERT_EQ_INT(0, f.cli.close_err);
    ASSERT_STR_EQ("test done", f.cli.close_reason);
    /* the server sees the orderly close */
    while (f.srv.closed == 0)
        ASSERT(uv_run(&f.loop, UV_RUN_ONCE) != 0 || f.srv.closed);
    ASSERT_EQ_INT(1, f.srv.closed);
    ASSERT_EQ_INT(0, f.srv.close_err);
    fixture_done(&f);
    ASSERT_EQ_INT(1, f.cli.closed);
    ASSERT_EQ_INT(1, f.srv.closed);
}

TEST(handshake_dns_name_and_large_echo)
{
    make_certs();
    struct fixture f;
    fixture_init(&f, alpn_h2_h1, path_in("ca.pem"));
    size_t n = 3 * 1024 * 1024 + 17;
    uint8_t *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (uint8_t)(i * 31 + (i >> 9));
    f.cli.send = big;
    f.cli.send_len = n;
    f.cli.close_after = n;
    connect_client(&f, "localhost", 1);
    run_until_client_closed(&f);
    ASSERT_EQ_INT(1, f.cli.opened);
    ASSERT_EQ_INT(n, f.cli.got_len);
    ASSERT(memcmp(f.cli.got, big, n) == 0);
    ASSERT_EQ_INT(n, f.srv.got_len);
    fixture_done(&f);
    free(big);
}

TEST(wrong_host_name_fails_verification)
{
    make_certs();
    struct fixture f;
    fixture_init(&f, alpn_h2_h1, path_in("ca.pem"));
    connect_client(&f, "api.push.apple.com", 1);
    run_until_client_closed(&f);
    ASSERT_EQ_INT(0, f.cli.opened);
    ASSERT_EQ_INT(1, f.cli.closed);
    ASSERT_EQ_INT(TLS_ERR_HANDSHAKE, f.cli.close_err);
    ASSERT_STR_CONTAINS(f.cli.close_reason, "certificate verify failed");
    ASSERT_STR_CONTAINS(f.cli.close_reason, "ostname mismatch");
    while (f.srv.closed == 0)
        ASSERT(uv_run(&f.loop, UV_RUN_ONCE) != 0 || f.srv.closed);
    fixture_done(&f);
    ASSERT_EQ_INT(0, f.srv.opened);
    ASSERT_EQ_INT(1, f.srv.closed);
    ASSERT_NE_INT(0, f.srv.close_err);
}

TEST(wrong_ip_fails_verification)
{
    make_certs();
    struct fixture f;
    fixture_init(&f, alpn_h2_h1, path_in("ca.pem"));
    connect_client(&f, "10.1.2.3", 1);
    run_until_client_closed(&f);
    ASSERT_EQ_INT(0, f.cli.opened);
    ASSERT_EQ_INT(TLS_ERR_HANDSHAKE, f.cli.close_err);
    ASSERT_STR_CONTAINS(f.cli.close_reason, "IP address mismatch");
    fixture_done(&f);
}

TEST(untrusted_ca_fails_verification)
{
    make_certs();
    struct fixture f;
    fixture_init(&f, alpn_h2_h1, NULL);
    connect_client(&f, "localhost", 1);
    run_until_client_closed(&f);
    ASSERT_EQ_INT(0, f.cli.opened);
    ASSERT_EQ_INT(TLS_ERR_HANDSHAKE, f.cli.close_err);
    ASSERT_STR_CONTAINS(f.cli.close_reason, "certificate verify failed");
    fixture_done(&f);
}

/* The client's system store (no ca_file) from SSL_CERT_DIR / SSL_CERT_FILE:
 * each test runs in its own process, so the environment is its own. */
static void handshake_with_system_store(void)
{
    struct fixture f;
    fixture_init(&f, alpn_h2_h1, NULL);
    connect_client(&f, "localhost", 1);
    f.cli.send = (const uint8_t *)"ping";
    f.cli.send_len = 4;
    f.cli.close_after = 4;
    run_until_client_closed(&f);
    ASSERT_EQ_INT(1, f.cli.opened);
    ASSERT_EQ_INT(0, f.cli.close_err);
    fixture_done(&f);
}

TEST(system_store_read_lazily_from_a_hashed_directory)
{
    make_certs();
    const char *dir = path_in("certs");
    ASSERT_EQ_INT(0, mkdir(dir, 0700));
    X509 *ca = load_cert(path_in("ca.pem"));
    char name[512];
    snprintf(name, sizeof name, "%s/%08lx.0", dir, X509_subject_name_hash(ca));
    FILE *out = fopen(name, "w");
    ASSERT_NOT_NULL(out);
    ASSERT_EQ_INT(1, PEM_write_X509(out, ca));
    fclose(out);
    X509_free(ca);
    setenv("SSL_CERT_DIR", dir, 1);
    unsetenv("SSL_CERT_FILE");
    handshake_with_system_store();
    /* The same directory without the hashed name trusts nothing (and
     * SSL_CERT_FILE is unset, so the default bundle does not know the CA). */
    ASSERT_EQ_INT(0, unlink(name));
    struct fixture f;
    fixture_init(&f, alpn_h2_h1, NULL);
    connect_client(&f, "localhost", 1);
    run_until_client_closed(&f);
    ASSERT_EQ_INT(0, f.cli.opened);
    ASSERT_STR_CONTAINS(f.cli.close_reason, "certificate verify failed");
    fixture_done(&f);
}

TEST(system_store_from_ssl_cert_file)
{
    make_certs();
    const char *dir = path_in("empty");
    ASSERT_EQ_INT(0, mkdir(dir, 0700));
    setenv("SSL_CERT_DIR", dir, 1);
    setenv("SSL_CERT_FILE", path_in("ca.pem"), 1);
    handshake_with_system_store();
}

TEST(alpn_required_but_not_selected)
{
    make_certs();
    static const char *const h1_only[] = { "http/1.1", NULL };
    struct fixture f;
    fixture_init(&f, h1_only, path_in("ca.pem"));
    connect_client(&f, "localhost", 1);
    run_until_client_closed(&f);
    ASSERT_EQ_INT(0, f.cli.opened);
    ASSERT_EQ_INT(TLS_ERR_ALPN, f.cli.close_err);
    fixture_done(&f);
}

TEST(alpn_optional_without_overlap_opens)
{
    make_certs();
    static const char *const h1_only[] = { "http/1.1", NULL };
    struct fixture f;
    fixture_init(&f, h1_only, path_in("ca.pem"));
    static const uint8_t msg[] = "x";
    f.cli.send = msg;
    f.cli.send_len = 1;
    f.cli.close_after = 1;
    connect_client(&f, "localhost", 0);
    run_until_client_closed(&f);
    ASSERT_EQ_INT(1, f.cli.opened);
    ASSERT_STR_EQ("", f.cli.alpn);
    ASSERT_EQ_INT(0, f.cli.close_err);
    fixture_done(&f);
}

TEST(server_reset_closes_client_once)
{
    make_certs();
    struct fixture f;
    fixture_init(&f, alpn_h2_h1, path_in("ca.pem"));
    f.srv.reset_on_data = 1;
    static const uint8_t msg[] = "boom";
    f.cli.send = msg;
    f.cli.send_len = sizeof msg;
    connect_client(&f, "127.0.0.1", 1);
    run_until_client_closed(&f);
    ASSERT_EQ_INT(1, f.cli.opened);
    ASSERT_EQ_INT(1, f.cli.closed);
    /* libuv reports a RST that arrives with the last data as EOF */
    ASSERT(f.cli.close_err == UV_ECONNRESET ||
           (f.cli.close_err == 0 && strstr(f.cli.close_reason, "peer closed") != NULL));
    fixture_done(&f);
    ASSERT_EQ_INT(1, f.srv.closed);
    ASSERT_EQ_INT(UV_ECONNABORTED, f.srv.close_err);
}

TEST(connect_refused_closes_once)
{
    struct fixture f;
    make_certs();
    fixture_init(&f, alpn_h2_h1, path_in("ca.pem"));
    /* a port that was just free */
    uv_tcp_t tmp;
    uv_tcp_init(&f.loop, &tmp);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    ASSERT_EQ_INT(0, uv_tcp_bind(&tmp, (struct sockaddr *)&sa, 0));
    struct sockaddr_storage ss;
    int len = sizeof ss;
    uv_tcp_getsockname(&tmp, (struct sockaddr *)&ss, &len);
    uv_close((uv_handle_t *)&tmp, NULL);
    uv_run(&f.loop, UV_RUN_NOWAIT);
    ASSERT_EQ_INT(0, tls_conn_connect(&f.loop, f.cctx, (struct sockaddr *)&ss, "localhost",
                                      1, &side_cb, &f.cli, &f.cli.conn));
    run_until_client_closed(&f);
    ASSERT_EQ_INT(UV_ECONNREFUSED, f.cli.close_err);
    ASSERT_STR_CONTAINS(f.cli.close_reason, "connect");
    fixture_done(&f);
    ASSERT_EQ_INT(1, f.cli.closed);
}

TEST(close_before_connected_and_bad_args)
{
    make_certs();
    struct fixture f;
    fixture_init(&f, alpn_h2_h1, path_in("ca.pem"));
    connect_client(&f, "localhost", 1);
    ASSERT(tls_conn_write(f.cli.conn, (const uint8_t *)"x", 1) < 0);
    tls_conn_close(f.cli.conn, -1, "abandoned");
    ASSERT_EQ_INT(0, f.cli.closed); /* deferred */
    run_until_client_closed(&f);
    ASSERT_EQ_INT(-1, f.cli.close_err);
    ASSERT_STR_EQ("abandoned", f.cli.close_reason);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", f.port, &sa);
    struct tls_conn *c = NULL;
    ASSERT_EQ_INT(UV_EINVAL, tls_conn_connect(&f.loop, f.cctx, (struct sockaddr *)&sa, NULL,
                                              1, &side_cb, &f.cli, &c));
    ASSERT_NULL(c);
    fixture_done(&f);
    ASSERT_EQ_INT(1, f.cli.closed);
}

TEST(ctx_errors_are_reported)
{
    char err[256] = "";
    static const char *const h2[] = { "h2", NULL };
    ASSERT_NULL(tls_server_ctx_new("/nonexistent.pem", "/nonexistent.key", h2, err, sizeof err));
    ASSERT_STR_CONTAINS(err, "/nonexistent.pem");
    ASSERT_NULL(tls_client_ctx_new("/nonexistent-ca.pem", h2, NULL, NULL, err, sizeof err));
    ASSERT_STR_CONTAINS(err, "/nonexistent-ca.pem");
    static const char *const bad[] = { "", NULL };
    ASSERT_NULL(tls_client_ctx_new(NULL, bad, NULL, NULL, err, sizeof err));
}

TEST_MAIN(T(certgen_server_cert_verifies), T(certgen_ec_and_rsa_keys),
          T(handshake_alpn_echo_ip_literal), T(handshake_dns_name_and_large_echo),
          T(wrong_host_name_fails_verification), T(wrong_ip_fails_verification),
          T(untrusted_ca_fails_verification),
          T(system_store_read_lazily_from_a_hashed_directory),
          T(system_store_from_ssl_cert_file), T(alpn_required_but_not_selected),
          T(alpn_optional_without_overlap_opens), T(server_reset_closes_client_once),
          T(connect_refused_closes_once), T(close_before_connected_and_bad_args),
          T(ctx_errors_are_reported))
