/*
 * varsel-sandbox: a fake APNs (and later FCM/OAuth) server for varseld's
 * tests, demo and benchmarks, faithful to docs PROTOCOLS.md §1 and §6.
 *
 * Architecture. main() parses the command line into struct app, loads keys,
 * token files and faults, then binds one sbx_apns_service per APNs listener
 * (production, sandbox environment) to a shared sbx_server (sandbox/server.c:
 * listeners, TLS, nghttp2) and runs the libuv loop. Signals: SIGTERM/SIGINT
 * shut down cleanly (listeners and connections closed, a summary line
 * appended to the record, exit 0); SIGHUP re-reads the token files.
 * Subcommands generate the throwaway certificates and keys the tests need.
 */
#include "common/certgen.h"
#include "common/jws.h"
#include "common/log.h"
#include "common/util.h"
#include "http2/tls.h"
#include "sandbox/apns.h"
#include "sandbox/apns_service.h"
#include "sandbox/faults.h"
#include "sandbox/record.h"
#include "sandbox/server.h"
#include "sandbox/tokens.h"

#include <cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#define MAX_KEYS 32

static const char usage_text[] =
"usage:\n"
"  varsel-sandbox gen-certs DIR\n"
"      write DIR/ca.pem, ca.key, server.pem (localhost, 127.0.0.1, ::1), server.key\n"
"  varsel-sandbox gen-apns-key --out-dir DIR --key-id KID\n"
"      write DIR/KID.p8 (private, for varseld) and DIR/KID.pub.pem (for the sandbox)\n"
"  varsel-sandbox sign-apns-jwt --key P8 --key-id KID --team TEAM [--iat SECONDS]\n"
"      print an ES256 provider token (for nghttp/curl by hand)\n"
"  varsel-sandbox [serve options]\n"
"\n"
"serve options:\n"
"  --cert FILE                 server certificate chain (PEM)\n"
"  --key FILE                  server private key (PEM)\n"
"  --apns-listen HOST:PORT     APNs production listener (port 0 = any free port)\n"
"  --apns-sandbox-listen HOST:PORT\n"
"                              APNs sandbox-environment listener (adds apns-unique-id)\n"
"  --apns-key KID:TEAM:PUBFILE[:TOPIC,TOPIC...]\n"
"                              provider-token key (repeatable); topics limit the\n"
"                              bundle ids the key may push to (suffixes implied)\n"
"  --record FILE               append one JSON line per answered request, and a\n"
"                              summary line at shutdown (required unless --bench)\n"
"  --port-file FILE            write {\"apns\":PORT,\"apns_sandbox\":PORT} once listening\n"
"  --apns-unregistered FILE    TOKEN [TIMESTAMP_MS] lines -> 410 Unregistered\n"
"  --apns-bad-tokens FILE      TOKEN lines -> 400 BadDeviceToken\n"
"  --apns-env-tokens FILE      TOKEN production|sandbox lines; the other listener\n"
"                              answers 400 BadDeviceToken (unlisted: valid on both)\n"
"                              (token files are re-read on SIGHUP and when changed)\n"
"  --apns-token-lengths N[,N]  accepted device-token hex lengths (default 64)\n"
"  --apns-token-update-min S   minimum seconds between provider tokens on one\n"
"                              connection (default 1200 = 20 min)\n"
"  --accept-der                accept DER-encoded ECDSA JWT signatures too\n"
"  --bench                     no provider-token checks, 1000 streams from the\n"
"                              start, recording off unless --record is given\n"
"  --fault-rate STATUS:PCT[:RETRY_AFTER[:REASON]]\n"
"                              answer STATUS instead of 200 for PCT% of valid pushes\n"
"                              (repeatable; e.g. 503:5, 429:1:30)\n"
"  --reset-rate PCT            reset the TCP connection instead of answering\n"
"  --rst-stream-rate PCT       RST_STREAM INTERNAL_ERROR instead of answering\n"
"  --hang-rate PCT             never answer\n"
"  --goaway-every N            GOAWAY {\"reason\":\"Shutdown\"} after the Nth request\n"
"                              of each connection (later streams are dropped)\n"
"  --latency-ms N              delay every answer by N ms\n"
"  --seed N                    random seed for faults (default: time)\n"
"  --log-level L               error, warn, info (default), debug\n"
"  --help                      this text\n";

struct app {
    uv_loop_t *loop;
    const char *cert, *key;
    const char *apns_listen, *apns_sandbox_listen;
    const char *record_path, *port_file;
    const char *unregistered_path, *bad_tokens_path, *env_tokens_path;
    struct sbx_apns_key keys[MAX_KEYS];
    size_t nkeys;
    struct sbx_apns_config cfg;
    struct sbx_faults faults;
    bool bench;
    SSL_CTX *ssl_ctx;
    struct sbx_server *srv;
    struct sbx_record *record;
    struct sbx_tokens_file unregistered, bad_tokens, env_tokens;
    struct sbx_apns_service apns_prod, apns_sbx;
    bool have_prod, have_sbx;
    uv_signal_t sig_term, sig_int, sig_hup;
    bool stopping;
};

/* ---- subcommands --------------------------------------------------------- */

static int cmd_gen_certs(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: varsel-sandbox gen-certs DIR\n");
        return 2;
    }
    char err[256];
    if (certgen_ca_and_server(argv[2], err, sizeof err) != 0) {
        fprintf(stderr, "gen-certs: %s\n", err);
        return 1;
    }
    return 0;
}

static int cmd_gen_apns_key(int argc, char **argv)
{
    const char *dir = NULL, *kid = NULL;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--out-dir") == 0)
            dir = argv[i + 1];
        else if (strcmp(argv[i], "--key-id") == 0)
            kid = argv[i + 1];
        else
            dir = kid = NULL, i = argc;
    }
    if (dir == NULL || kid == NULL || argc != 6 || strchr(kid, '/') || kid[0] == '\0') {
        fprintf(stderr, "usage: varsel-sandbox gen-apns-key --out-dir DIR --key-id KID\n");
        return 2;
    }
    char p8[4096], pub[4096], err[256];
    snprintf(p8, sizeof p8, "%s/%s.p8", dir, kid);
    snprintf(pub, sizeof pub, "%s/%s.pub.pem", dir, kid);
    if (certgen_ec_key(p8, pub, err, sizeof err) != 0) {
        fprintf(stderr, "gen-apns-key: %s\n", err);
        return 1;
    }
    printf("%s\n%s\n", p8, pub);
    return 0;
}

static int cmd_sign_apns_jwt(int argc, char **argv)
{
    const char *keyfile = NULL, *kid = NULL, *team = NULL;
    long long iat = (long long)now_s();
    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--key") == 0)
            keyfile = argv[i + 1];
        else if (strcmp(argv[i], "--key-id") == 0)
            kid = argv[i + 1];
        else if (strcmp(argv[i], "--team") == 0)
            team = argv[i + 1];
        else if (strcmp(argv[i], "--iat") == 0)
            iat = atoll(argv[i + 1]);
        else
            keyfile = NULL, i = argc;
    }
    if (keyfile == NULL || kid == NULL || team == NULL || argc % 2 != 0) {
        fprintf(stderr, "usage: varsel-sandbox sign-apns-jwt --key P8 --key-id KID --team TEAM "
                        "[--iat SECONDS]\n");
        return 2;
    }
    char err[256];
    EVP_PKEY *key = jws_load_private_key_file(keyfile, err, sizeof err);
    if (key == NULL) {
        fprintf(stderr, "sign-apns-jwt: %s\n", err);
        return 1;
    }
    cJSON *h = cJSON_CreateObject(), *c = cJSON_CreateObject();
    cJSON_AddStringToObject(h, "alg", "ES256");
    cJSON_AddStringToObject(h, "kid", kid);
    cJSON_AddStringToObject(c, "iss", team);
    cJSON_AddNumberToObject(c, "iat", (double)iat);
    char *hs = cJSON_PrintUnformatted(h), *cs = cJSON_PrintUnformatted(c);
    char *jwt = jws_compact_sign("ES256", key, hs, cs);
    int rc = 1;
    if (jwt != NULL) {
        printf("%s\n", jwt);
        rc = 0;
    } else {
        fprintf(stderr, "sign-apns-jwt: signing failed (is it a P-256 key?)\n");
    }
    free(jwt);
    cJSON_free(hs);
    cJSON_free(cs);
    cJSON_Delete(h);
    cJSON_Delete(c);
    EVP_PKEY_free(key);
    return rc;
}

/* ---- option parsing --------------------------------------------------------- */

/* KID:TEAM:PUBFILE[:TOPIC,TOPIC...] */
static int parse_key_spec(struct app *a, const char *spec)
{
    if (a->nkeys == MAX_KEYS) {
        fprintf(stderr, "too many --apns-key options (max %d)\n", MAX_KEYS);
        return -1;
    }
    char *copy = xstrdup(spec);
    char *kid = copy, *team = NULL, *path = NULL, *topics = NULL;
    char *p = strchr(kid, ':');
    if (p) {
        *p = '\0';
        team = p + 1;
        p = strchr(team, ':');
    }
    if (p) {
        *p = '\0';
        path = p + 1;
        p = strchr(path, ':');
        if (p) {
            *p = '\0';
            topics = p + 1;
        }
    }
    int rc = -1;
    struct sbx_apns_key *k = &a->keys[a->nkeys];
    if (!kid[0] || !team || !team[0] || !path || !path[0] || strlen(kid) >= sizeof k->kid ||
        strlen(team) >= sizeof k->team) {
        fprintf(stderr, "--apns-key wants KID:TEAM:PUBFILE[:TOPIC,...], got \"%s\"\n", spec);
        goto out;
    }
    char err[256];
    memset(k, 0, sizeof *k);
    k->pub = jws_load_public_key_file(path, err, sizeof err);
    if (k->pub == NULL) {
        fprintf(stderr, "--apns-key %s: %s\n", kid, err);
        goto out;
    }
    snprintf(k->kid, sizeof k->kid, "%s", kid);
    snprintf(k->team, sizeof k->team, "%s", team);
    if (topics && topics[0]) {
        for (char *save = NULL, *t = strtok_r(topics, ",", &save); t;
             t = strtok_r(NULL, ",", &save)) {
            k->topics = xrealloc(k->topics, (k->ntopics + 1) * sizeof *k->topics);
            k->topics[k->ntopics++] = xstrdup(t);
        }
    }
    a->nkeys++;
    rc = 0;
out:
    free(copy);
    return rc;
}

static int parse_lengths(struct sbx_apns_config *cfg, const char *arg)
{
    cfg->ntoken_lengths = 0;
    const char *p = arg;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 200 || cfg->ntoken_lengths == SBX_APNS_MAX_TOKEN_LENGTHS ||
            (*end != ',' && *end != '\0'))
            goto bad;
        cfg->token_lengths[cfg->ntoken_lengths++] = (size_t)v;
        p = *end ? end + 1 : end;
    }
    if (cfg->ntoken_lengths > 0)
        return 0;
bad:
    fprintf(stderr, "--apns-token-lengths wants N[,N...] (1..200), got \"%s\"\n", arg);
    return -1;
}

enum {
    O_CERT = 1000, O_KEY, O_APNS_LISTEN, O_APNS_SBX_LISTEN, O_APNS_KEY, O_RECORD, O_PORT_FILE,
    O_UNREG, O_BAD, O_ENV, O_LENGTHS, O_UPDATE_MIN, O_DER, O_BENCH, O_SEED, O_LOG, O_HELP,
    O_FAULT_BASE = 2000,
};

static int parse_args(struct app *a, int argc, char **argv)
{
    struct option opts[64];
    size_t n = 0;
    static const struct { const char *name; int has_arg; int val; } base[] = {
        { "cert", 1, O_CERT }, { "key", 1, O_KEY }, { "apns-listen", 1, O_APNS_LISTEN },
        { "apns-sandbox-listen", 1, O_APNS_SBX_LISTEN }, { "apns-key", 1, O_APNS_KEY },
        { "record", 1, O_RECORD }, { "port-file", 1, O_PORT_FILE },
        { "apns-unregistered", 1, O_UNREG }, { "apns-bad-tokens", 1, O_BAD },
        { "apns-env-tokens", 1, O_ENV }, { "apns-token-lengths", 1, O_LENGTHS },
        { "apns-token-update-min", 1, O_UPDATE_MIN }, { "accept-der", 0, O_DER },
        { "bench", 0, O_BENCH }, { "seed", 1, O_SEED }, { "log-level", 1, O_LOG },
        { "help", 0, O_HELP },
    };
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++)
        opts[n++] = (struct option){ base[i].name, base[i].has_arg, NULL, base[i].val };
    for (int i = 0; sbx_faults_option_names[i]; i++)
        opts[n++] = (struct option){ sbx_faults_option_names[i], 1, NULL, O_FAULT_BASE + i };
    opts[n] = (struct option){ 0 };

    uint64_t seed = (uint64_t)now_ms() ^ ((uint64_t)getpid() << 32);
    bool seed_given = false;
    char err[256];
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_CERT: a->cert = optarg; break;
        case O_KEY: a->key = optarg; break;
        case O_APNS_LISTEN: a->apns_listen = optarg; break;
        case O_APNS_SBX_LISTEN: a->apns_sandbox_listen = optarg; break;
        case O_APNS_KEY:
            if (parse_key_spec(a, optarg) < 0)
                return -1;
            break;
        case O_RECORD: a->record_path = optarg; break;
        case O_PORT_FILE: a->port_file = optarg; break;
        case O_UNREG: a->unregistered_path = optarg; break;
        case O_BAD: a->bad_tokens_path = optarg; break;
        case O_ENV: a->env_tokens_path = optarg; break;
        case O_LENGTHS:
            if (parse_lengths(&a->cfg, optarg) < 0)
                return -1;
            break;
        case O_UPDATE_MIN: {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 86400) {
                fprintf(stderr, "--apns-token-update-min wants 1..86400 seconds\n");
                return -1;
            }
            a->cfg.token_update_min_s = v;
            break;
        }
        case O_DER: a->cfg.accept_der = true; break;
        case O_BENCH: a->bench = true; break;
        case O_SEED: {
            char *end;
            seed = strtoull(optarg, &end, 10);
            if (*end || optarg[0] == '\0') {
                fprintf(stderr, "--seed wants an integer\n");
                return -1;
            }
            seed_given = true;
            break;
        }
        case O_LOG: {
            enum log_level lvl;
            if (log_parse_level(optarg, &lvl) != 0) {
                fprintf(stderr, "--log-level wants error, warn, info or debug\n");
                return -1;
            }
            log_set_level(lvl);
            break;
        }
        case O_HELP:
            fputs(usage_text, stdout);
            exit(0);
        default:
            if (c >= O_FAULT_BASE && c < O_FAULT_BASE + 32) {
                /* the option table is rebuilt at each call; keep the rules */
                if (sbx_faults_option(&a->faults, sbx_faults_option_names[c - O_FAULT_BASE],
                                      optarg, err, sizeof err) < 0) {
                    fprintf(stderr, "%s\n", err);
                    return -1;
                }
                break;
            }
            fputs(usage_text, stderr);
            return -1;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "unexpected argument \"%s\"\n%s", argv[optind], usage_text);
        return -1;
    }
    a->faults.rng = seed ? seed : 1;
    if (seed_given)
        log_info("sandbox", "fault seed %llu", (unsigned long long)seed);
    if (!a->cert || !a->key) {
        fprintf(stderr, "--cert and --key are required\n%s", usage_text);
        return -1;
    }
    if (!a->apns_listen && !a->apns_sandbox_listen) {
        fprintf(stderr, "give --apns-listen and/or --apns-sandbox-listen\n");
        return -1;
    }
    if (!a->bench && !a->record_path) {
        fprintf(stderr, "--record is required (unless --bench)\n");
        return -1;
    }
    if (!a->bench && a->nkeys == 0)
        log_warn("sandbox", "no --apns-key: every provider token will be InvalidProviderToken");
    return 0;
}

/* ---- lifecycle ---------------------------------------------------------------- */

static int write_port_file(struct app *a)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", a->port_file, (int)getpid());
    char *json = sbx_server_ports_json(a->srv);
    FILE *f = fopen(tmp, "w");
    int rc = -1;
    if (f == NULL)
        goto out;
    fprintf(f, "%s\n", json);
    if (fclose(f) != 0 || rename(tmp, a->port_file) != 0) {
        unlink(tmp);
        goto out;
    }
    rc = 0;
out:
    if (rc != 0)
        log_error("sandbox", "cannot write port file %s: %s", a->port_file, strerror(errno));
    free(json);
    return rc;
}

static void reload_tokens(struct app *a)
{
    if (a->unregistered_path)
        sbx_tokens_file_refresh(&a->unregistered, true);
    if (a->bad_tokens_path)
        sbx_tokens_file_refresh(&a->bad_tokens, true);
    if (a->env_tokens_path)
        sbx_tokens_file_refresh(&a->env_tokens, true);
}

static void write_summary(struct app *a)
{
    cJSON *sum = sbx_server_summary(a->srv);
    cJSON *apns = cJSON_AddObjectToObject(sum, "apns");
    if (a->have_prod)
        cJSON_AddItemToObject(apns, "production", sbx_apns_service_counts(&a->apns_prod));
    if (a->have_sbx)
        cJSON_AddItemToObject(apns, "sandbox", sbx_apns_service_counts(&a->apns_sbx));
    cJSON *faults = cJSON_AddObjectToObject(sum, "faults");
    for (size_t i = 0; i < a->faults.n; i++) {
        char name[32];
        sbx_fault_name(&a->faults.rules[i], name, sizeof name);
        cJSON *prev = cJSON_GetObjectItemCaseSensitive(faults, name);
        if (prev)
            cJSON_SetNumberValue(prev, prev->valuedouble + (double)a->faults.rules[i].fired);
        else
            cJSON_AddNumberToObject(faults, name, (double)a->faults.rules[i].fired);
    }
    cJSON_AddNumberToObject(sum, "record_lines", (double)sbx_record_lines(a->record));
    const struct sbx_server_stats *st = sbx_server_stats(a->srv);
    log_info("sandbox", "summary: connections=%llu tls_handshakes=%llu requests=%llu "
             "responses=%llu max_concurrent_streams=%u goaways=%llu resets=%llu",
             (unsigned long long)st->connections, (unsigned long long)st->tls_handshakes,
             (unsigned long long)st->requests, (unsigned long long)st->responses,
             st->max_streams_seen, (unsigned long long)st->goaways,
             (unsigned long long)st->tcp_resets);
    cJSON *line = cJSON_CreateObject();
    cJSON_AddItemToObject(line, "summary", sum);
    sbx_record_write(a->record, line);
    cJSON_Delete(line);
}

static void on_server_closed(void *arg)
{
    struct app *a = arg;
    write_summary(a);
    uv_close((uv_handle_t *)&a->sig_term, NULL);
    uv_close((uv_handle_t *)&a->sig_int, NULL);
    uv_close((uv_handle_t *)&a->sig_hup, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct app *a = h->data;
    if (signum == SIGHUP) {
        log_info("sandbox", "SIGHUP: re-reading token files");
        reload_tokens(a);
        return;
    }
    if (a->stopping) {
        log_warn("sandbox", "second signal: exiting now");
        exit(1);
    }
    a->stopping = true;
    log_info("sandbox", "%s: shutting down", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    sbx_server_shutdown(a->srv, on_server_closed, a);
}

static int open_token_file(struct sbx_tokens_file *f, const char *path, enum sbx_tokens_kind kind)
{
    char err[512];
    if (sbx_tokens_file_open(f, path, kind, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    return 0;
}

static int serve(struct app *a)
{
    char err[512];
    int rc = 1;
    static const char *const alpn[] = { "h2", NULL };

    a->ssl_ctx = tls_server_ctx_new(a->cert, a->key, alpn, err, sizeof err);
    if (a->ssl_ctx == NULL) {
        fprintf(stderr, "TLS setup: %s\n", err);
        return 1;
    }
    if ((a->unregistered_path &&
         open_token_file(&a->unregistered, a->unregistered_path, SBX_TOKENS_TIMESTAMP) < 0) ||
        (a->bad_tokens_path && open_token_file(&a->bad_tokens, a->bad_tokens_path, SBX_TOKENS_PLAIN) < 0) ||
        (a->env_tokens_path && open_token_file(&a->env_tokens, a->env_tokens_path, SBX_TOKENS_ENV) < 0))
        goto out;
    if (a->record_path && (a->record = sbx_record_open(a->record_path, err, sizeof err)) == NULL) {
        fprintf(stderr, "%s\n", err);
        goto out;
    }

    struct sbx_apns_service_options opt = {
        .cfg = a->cfg,
        .faults = &a->faults,
        .record = a->record,
        .unregistered = a->unregistered_path ? &a->unregistered : NULL,
        .bad_tokens = a->bad_tokens_path ? &a->bad_tokens : NULL,
        .env_tokens = a->env_tokens_path ? &a->env_tokens : NULL,
        .bench = a->bench,
    };
    opt.cfg.keys = a->keys;
    opt.cfg.nkeys = a->nkeys;
    a->srv = sbx_server_new(a->loop, a->ssl_ctx);
    if (a->apns_listen) {
        sbx_apns_service_init(&a->apns_prod, &opt, SBX_ENV_PRODUCTION);
        a->have_prod = true;
        if (sbx_server_listen(a->srv, "apns", a->apns_listen, &a->apns_prod.svc, err, sizeof err) < 0) {
            fprintf(stderr, "%s\n", err);
            goto out_server;
        }
    }
    if (a->apns_sandbox_listen) {
        sbx_apns_service_init(&a->apns_sbx, &opt, SBX_ENV_SANDBOX);
        a->have_sbx = true;
        if (sbx_server_listen(a->srv, "apns_sandbox", a->apns_sandbox_listen, &a->apns_sbx.svc,
                              err, sizeof err) < 0) {
            fprintf(stderr, "%s\n", err);
            goto out_server;
        }
    }

    uv_signal_init(a->loop, &a->sig_term);
    uv_signal_init(a->loop, &a->sig_int);
    uv_signal_init(a->loop, &a->sig_hup);
    a->sig_term.data = a->sig_int.data = a->sig_hup.data = a;
    uv_signal_start(&a->sig_term, on_signal, SIGTERM);
    uv_signal_start(&a->sig_int, on_signal, SIGINT);
    uv_signal_start(&a->sig_hup, on_signal, SIGHUP);
    if (a->port_file && write_port_file(a) < 0) {
        a->stopping = true;
        sbx_server_shutdown(a->srv, on_server_closed, a);
        uv_run(a->loop, UV_RUN_DEFAULT);
        goto out_server;
    }
    log_info("sandbox", "ready%s", a->bench ? " (bench mode)" : "");
    uv_run(a->loop, UV_RUN_DEFAULT);
    rc = 0;
    goto out;

out_server:
    if (!a->stopping) {
        /* listen failed: close what was opened without a summary */
        a->stopping = true;
        sbx_server_shutdown(a->srv, NULL, NULL);
        uv_run(a->loop, UV_RUN_DEFAULT);
    }
out:
    sbx_server_free(a->srv);
    sbx_record_close(a->record);
    if (a->unregistered_path)
        sbx_tokens_file_close(&a->unregistered);
    if (a->bad_tokens_path)
        sbx_tokens_file_close(&a->bad_tokens);
    if (a->env_tokens_path)
        sbx_tokens_file_close(&a->env_tokens);
    SSL_CTX_free(a->ssl_ctx);
    return rc;
}

int main(int argc, char **argv)
{
    log_set_program("sandbox");
    if (argc >= 2 && strcmp(argv[1], "gen-certs") == 0)
        return cmd_gen_certs(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "gen-apns-key") == 0)
        return cmd_gen_apns_key(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "sign-apns-jwt") == 0)
        return cmd_sign_apns_jwt(argc, argv);

    signal(SIGPIPE, SIG_IGN);
    static struct app a;
    a.loop = uv_default_loop();
    sbx_faults_init(&a.faults, 1);
    if (parse_args(&a, argc, argv) < 0)
        return 2;
    int rc = serve(&a);
    for (size_t i = 0; i < a.nkeys; i++) {
        EVP_PKEY_free(a.keys[i].pub);
        for (size_t j = 0; j < a.keys[i].ntopics; j++)
            free(a.keys[i].topics[j]);
        free(a.keys[i].topics);
    }
    uv_loop_close(a.loop);
    return rc;
}
