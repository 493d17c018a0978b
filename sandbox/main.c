/*
 * varsel-sandbox: a fake APNs, FCM HTTP v1 and Google OAuth2 token server
 * for varseld's tests, demo and benchmarks, faithful to PROTOCOLS.md §1-§3
 * and §6.
 *
 * Architecture. main() parses the command line into struct app, loads keys,
 * service accounts, token files and faults, then binds services to a shared
 * sbx_server (sandbox/server.c: listeners, TLS, nghttp2, HTTP/1.1): one
 * sbx_apns_service per APNs listener (production, sandbox environment), one
 * sbx_fcm_service on the FCM listener and one sbx_oauth_service, which
 * answers /token on the FCM listener and on its own listener if asked, and
 * runs the libuv loop. APNs listeners offer ALPN h2 only; the FCM and OAuth
 * listeners use a second TLS context offering h2 and http/1.1. Signals:
 * SIGTERM/SIGINT shut down cleanly (listeners and connections closed, a
 * summary line appended to the record, exit 0); SIGHUP re-reads the token
 * files. Subcommands generate the throwaway certificates, keys and service
 * accounts the tests need.
 */
#include "common/certgen.h"
#include "common/jws.h"
#include "common/log.h"
#include "common/util.h"
#include "http2/tls.h"
#include "sandbox/apns.h"
#include "sandbox/apns_service.h"
#include "sandbox/faults.h"
#include "sandbox/fcm_service.h"
#include "sandbox/oauth_service.h"
#include "sandbox/ratelimit.h"
#include "sandbox/record.h"
#include "sandbox/server.h"
#include "sandbox/tokens.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#define MAX_KEYS 32
#define MAX_ACCOUNTS 16
#define MAX_AUDIENCES 8

static const char usage_text[] =
"usage:\n"
"  varsel-sandbox gen-certs DIR\n"
"      write DIR/ca.pem, ca.key, server.pem (localhost, 127.0.0.1, ::1), server.key\n"
"  varsel-sandbox gen-apns-key --out-dir DIR --key-id KID\n"
"      write DIR/KID.p8 (private, for varseld) and DIR/KID.pub.pem (for the sandbox)\n"
"  varsel-sandbox sign-apns-jwt --key P8 --key-id KID --team TEAM [--iat SECONDS]\n"
"      print an ES256 provider token (for nghttp/curl by hand)\n"
"  varsel-sandbox gen-service-account --out FILE --project PROJECT [--token-uri URL]\n"
"                                     [--client-email EMAIL]\n"
"      write a throwaway Google service-account JSON to FILE (for varseld or\n"
"      firebase-admin) and its public key to FILE.pub.pem (for the sandbox)\n"
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
"  --port-file FILE            write {\"apns\":PORT,\"apns_sandbox\":PORT,\"fcm\":PORT,\n"
"                              \"oauth\":PORT} (the listeners given) once listening\n"
"  --apns-unregistered FILE    TOKEN [TIMESTAMP_MS] lines -> 410 Unregistered\n"
"  --apns-bad-tokens FILE      TOKEN lines -> 400 BadDeviceToken\n"
"  --apns-env-tokens FILE      TOKEN production|sandbox lines; the other listener\n"
"                              answers 400 BadDeviceToken (unlisted: valid on both)\n"
"                              (token files are re-read on SIGHUP and when changed)\n"
"  (SIGUSR1 revokes every OAuth access token issued so far: FCM then answers 401)\n"
"  --apns-token-lengths N[,N]  accepted device-token hex lengths (default 64)\n"
"  --apns-token-update-min S   minimum seconds between provider tokens on one\n"
"                              connection (default 1200 = 20 min)\n"
"  --accept-der                accept DER-encoded ECDSA JWT signatures too\n"
"  --fcm-listen HOST:PORT      FCM HTTP v1 listener (h2 and HTTP/1.1; also serves\n"
"                              the OAuth token endpoint at /token)\n"
"  --oauth-listen HOST:PORT    a separate OAuth token endpoint listener\n"
"  --fcm-service-account SPEC  an account allowed to get tokens (repeatable):\n"
"                              SA.json (public key from SA.json.pub.pem) or\n"
"                              PUBFILE:KID:CLIENT_EMAIL:PROJECT\n"
"  --oauth-expires-in S        access-token lifetime and expires_in (default 3599)\n"
"  --oauth-outage-ms N         answer 503 at the token endpoint for N ms after start\n"
"  --oauth-audience URL        another accepted assertion aud (repeatable)\n"
"  --fcm-unregistered FILE     TOKEN lines -> 404 NOT_FOUND / UNREGISTERED\n"
"  --fcm-sender-mismatch FILE  TOKEN lines -> 403 SENDER_ID_MISMATCH\n"
"  --fcm-invalid-tokens FILE   TOKEN lines -> 400 INVALID_ARGUMENT (not a valid token)\n"
"  --fcm-third-party-auth FILE TOKEN lines -> 401 THIRD_PARTY_AUTH_ERROR\n"
"  --fcm-token-min-length N    shorter tokens are malformed (default 32)\n"
"  --fcm-device-rate RATE[,RATE...]|off\n"
"                              messages per registration token, then 429\n"
"                              QUOTA_EXCEEDED (default 240/min,5000/h, FCM's own;\n"
"                              RATE is N/s, N/min, N/h or e.g. 10/30s)\n"
"  --fcm-collapsible-burst N|off\n"
"                              messages with android.collapse_key per token in a\n"
"                              burst (default 20, FCM's own), then 429\n"
"  --fcm-collapsible-refill S  one collapsible message back every S seconds\n"
"                              (default 180, FCM's own)\n"
"  --fcm-project-rate-limit N  messages per project per minute, then 429 (off)\n"
"  --apns-device-rate RATE[,RATE...]|off\n"
"                              pushes per device token, then 429 TooManyRequests\n"
"                              (default 240/min,5000/h; Apple publishes no number)\n"
"  --fcm-FAULT, --oauth-FAULT  any fault option below with a prefix: a table for\n"
"                              FCM only (then the global one no longer applies to\n"
"                              FCM) or for the token endpoint (e.g.\n"
"                              --oauth-fault-rate 503:50, --fcm-hang-rate 1)\n"
"  --bench                     no provider-token or OAuth checks, 1000 APNs streams\n"
"                              from the start, recording off unless --record is given,\n"
"                              no per-device limits unless given explicitly\n"
"  --fault-rate STATUS:PCT[:RETRY_AFTER[:REASON]]\n"
"                              answer STATUS instead of 200 for PCT% of valid pushes\n"
"                              (repeatable; e.g. 503:5, 429:1:30; APNs and FCM)\n"
"  --reset-rate PCT            reset the TCP connection instead of answering\n"
"  --rst-stream-rate PCT       RST_STREAM INTERNAL_ERROR instead of answering\n"
"  --hang-rate PCT             never answer\n"
"  --goaway-every N            GOAWAY {\"reason\":\"Shutdown\"} (FCM: no debug data;\n"
"                              HTTP/1.1: connection: close) after the Nth request\n"
"                              of each connection (later streams are dropped)\n"
"  --latency-ms N              delay every answer by N ms\n"
"  --seed N                    random seed for faults (default: time)\n"
"  --log-level L               error, warn, info (default), debug\n"
"  --help                      this text\n";

struct app {
    uv_loop_t *loop;
    const char *cert, *key;
    const char *apns_listen, *apns_sandbox_listen;
    const char *fcm_listen, *oauth_listen;
    const char *fcm_unreg_path, *fcm_mismatch_path, *fcm_invalid_path, *fcm_3p_path;
    struct sbx_oauth_account accounts[MAX_ACCOUNTS];
    size_t naccounts;
    const char *audiences[MAX_AUDIENCES];
    size_t naudiences;
    const char *projects[MAX_ACCOUNTS];
    int64_t oauth_expires_in;
    unsigned oauth_outage_ms;
    size_t fcm_token_min_len;
    unsigned fcm_project_rate;
    struct sbx_device_limits limits;
    struct sbx_faults fcm_faults, oauth_faults;
    bool fcm_own_faults;
    SSL_CTX *google_ctx;
    struct sbx_tokens_file fcm_unreg, fcm_mismatch, fcm_invalid, fcm_3p;
    struct sbx_oauth_service oauth;
    struct sbx_fcm_service fcm;
    bool have_oauth, have_fcm;
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
    uv_signal_t sig_term, sig_int, sig_hup, sig_usr1;
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

/* Random lowercase hex / digits / [a-z0-9] of length |n| into |out| (n+1). */
static void random_chars(char *out, size_t n, const char *alphabet)
{
    unsigned char b[64];
    size_t al = strlen(alphabet);
    if (n > sizeof b || RAND_bytes(b, (int)n) != 1)
        abort();
    for (size_t i = 0; i < n; i++)
        out[i] = alphabet[b[i] % al];
    out[n] = '\0';
}

/* A project id or e-mail usable in the files and --fcm-service-account. */
static bool plain_arg(const char *s)
{
    if (s == NULL || s[0] == '\0')
        return false;
    for (; *s; s++)
        if (*s == ':' || *s == '/' || *s == ' ' || *s == '"' || (unsigned char)*s < 0x20)
            return false;
    return true;
}

/*
 * gen-service-account: FILE (Google's service-account JSON layout, PKCS#8
 * RSA-2048 private key) and FILE.pub.pem. The private key is written to a
 * temporary file by certgen, read back into the JSON and removed.
 */
static int cmd_gen_service_account(int argc, char **argv)
{
    const char *out = NULL, *project = NULL, *token_uri = SBX_OAUTH_GOOGLE_TOKEN_URI,
               *email = NULL;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--out") == 0)
            out = argv[i + 1];
        else if (strcmp(argv[i], "--project") == 0)
            project = argv[i + 1];
        else if (strcmp(argv[i], "--token-uri") == 0)
            token_uri = argv[i + 1];
        else if (strcmp(argv[i], "--client-email") == 0)
            email = argv[i + 1];
        else
            out = NULL, i = argc;
    }
    if (out == NULL || argc % 2 != 0 || !plain_arg(project) || (email && !plain_arg(email)) ||
        strchr(out, ':')) {
        fprintf(stderr, "usage: varsel-sandbox gen-service-account --out FILE --project PROJECT "
                        "[--token-uri URL] [--client-email EMAIL]\n"
                        "(PROJECT and EMAIL without ':', '/', spaces; FILE without ':')\n");
        return 2;
    }
    char tmp[4096], pub[4096], err[256], mail[256], kid[41], client_id[22], tag[6];
    snprintf(tmp, sizeof tmp, "%s.key.tmp.%d", out, (int)getpid());
    snprintf(pub, sizeof pub, "%s.pub.pem", out);
    if (certgen_rsa_key(tmp, pub, err, sizeof err) != 0) {
        fprintf(stderr, "gen-service-account: %s\n", err);
        unlink(tmp);
        return 1;
    }
    FILE *f = fopen(tmp, "r");
    char pem[8192];
    size_t pl = f ? fread(pem, 1, sizeof pem - 1, f) : 0;
    if (f)
        fclose(f);
    unlink(tmp);
    pem[pl] = '\0';
    if (pl == 0 || strstr(pem, "-----BEGIN PRIVATE KEY-----") == NULL) {
        fprintf(stderr, "gen-service-account: cannot read back the key\n");
        return 1;
    }
    random_chars(kid, 40, "0123456789abcdef");
    random_chars(client_id, 21, "0123456789");
    if (client_id[0] == '0')
        client_id[0] = '1';
    random_chars(tag, 5, "abcdefghijklmnopqrstuvwxyz0123456789");
    if (email)
        snprintf(mail, sizeof mail, "%s", email);
    else
        snprintf(mail, sizeof mail, "firebase-adminsdk-%s@%s.iam.gserviceaccount.com", tag,
                 project);
    char cert_url[512], enc[300];
    size_t o = 0;
    for (const char *p = mail; *p && o + 4 < sizeof enc; p++) {
        if (*p == '@') {
            memcpy(enc + o, "%40", 3);
            o += 3;
        } else {
            enc[o++] = *p;
        }
    }
    enc[o] = '\0';
    snprintf(cert_url, sizeof cert_url, "https://www.googleapis.com/robot/v1/metadata/x509/%s",
             enc);
    cJSON *o_ = cJSON_CreateObject();
    cJSON_AddStringToObject(o_, "type", "service_account");
    cJSON_AddStringToObject(o_, "project_id", project);
    cJSON_AddStringToObject(o_, "private_key_id", kid);
    cJSON_AddStringToObject(o_, "private_key", pem);
    cJSON_AddStringToObject(o_, "client_email", mail);
    cJSON_AddStringToObject(o_, "client_id", client_id);
    cJSON_AddStringToObject(o_, "auth_uri", "https://accounts.google.com/o/oauth2/auth");
    cJSON_AddStringToObject(o_, "token_uri", token_uri);
    cJSON_AddStringToObject(o_, "auth_provider_x509_cert_url",
                            "https://www.googleapis.com/oauth2/v1/certs");
    cJSON_AddStringToObject(o_, "client_x509_cert_url", cert_url);
    cJSON_AddStringToObject(o_, "universe_domain", "googleapis.com");
    /* Two-space indented like Google's files ("key": value). */
    size_t cap = 8192, jl = 0;
    char *json = xmalloc(cap);
    jl += (size_t)snprintf(json, cap, "{\n");
    for (const cJSON *it = o_->child; it; it = it->next) {
        char *v = cJSON_PrintUnformatted(it);
        if (v == NULL)
            abort();
        size_t need = strlen(it->string) + strlen(v) + 16;
        if (jl + need >= cap) {
            cap = (jl + need) * 2;
            json = xrealloc(json, cap);
        }
        jl += (size_t)snprintf(json + jl, cap - jl, "  \"%s\": %s%s\n", it->string, v,
                               it->next ? "," : "");
        cJSON_free(v);
    }
    snprintf(json + jl, cap - jl, "}");
    cJSON_Delete(o_);
    int rc = 1;
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
        size_t len = strlen(json), off = 0;
        while (off < len) {
            ssize_t n = write(fd, json + off, len - off);
            if (n <= 0)
                break;
            off += (size_t)n;
        }
        if (off == len && write(fd, "\n", 1) == 1)
            rc = 0;
        if (close(fd) != 0)
            rc = 1;
    }
    if (rc != 0)
        fprintf(stderr, "gen-service-account: cannot write %s: %s\n", out, strerror(errno));
    else
        printf("%s\n%s\n", out, pub);
    free(json);
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
    O_FCM_LISTEN, O_OAUTH_LISTEN, O_FCM_SA, O_OAUTH_EXPIRES, O_OAUTH_OUTAGE, O_OAUTH_AUD,
    O_FCM_UNREG, O_FCM_MISMATCH, O_FCM_INVALID, O_FCM_3P, O_FCM_MINLEN, O_FCM_PROJ_RATE,
    O_FAULT_BASE = 2000, O_FCM_FAULT_BASE = 2100, O_OAUTH_FAULT_BASE = 2200,
    O_LIMIT_BASE = 2300,
};

/* A non-negative integer option no larger than |max|; -1 after a message. */
static long long uint_arg(const char *name, const char *arg, long long min, long long max)
{
    char *end;
    errno = 0;
    long long v = strtoll(arg, &end, 10);
    if (errno || end == arg || *end || v < min || v > max) {
        fprintf(stderr, "--%s wants an integer %lld..%lld, got \"%s\"\n", name, min, max, arg);
        return -1;
    }
    return v;
}

static int add_account(struct app *a, const char *spec)
{
    char err[512];
    if (a->naccounts == MAX_ACCOUNTS) {
        fprintf(stderr, "too many --fcm-service-account options (max %d)\n", MAX_ACCOUNTS);
        return -1;
    }
    struct sbx_oauth_account *acct = &a->accounts[a->naccounts];
    if (sbx_oauth_account_load(acct, spec, err, sizeof err) != 0) {
        fprintf(stderr, "--fcm-service-account: %s\n", err);
        return -1;
    }
    a->projects[a->naccounts++] = acct->project;
    return 0;
}

static int parse_args(struct app *a, int argc, char **argv)
{
    struct option opts[96];
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
        { "fcm-listen", 1, O_FCM_LISTEN }, { "oauth-listen", 1, O_OAUTH_LISTEN },
        { "fcm-service-account", 1, O_FCM_SA }, { "oauth-expires-in", 1, O_OAUTH_EXPIRES },
        { "oauth-outage-ms", 1, O_OAUTH_OUTAGE }, { "oauth-audience", 1, O_OAUTH_AUD },
        { "fcm-unregistered", 1, O_FCM_UNREG }, { "fcm-sender-mismatch", 1, O_FCM_MISMATCH },
        { "fcm-invalid-tokens", 1, O_FCM_INVALID }, { "fcm-third-party-auth", 1, O_FCM_3P },
        { "fcm-token-min-length", 1, O_FCM_MINLEN },
        { "fcm-project-rate-limit", 1, O_FCM_PROJ_RATE },
    };
    /* Fault options, bare (APNs and FCM) and with the fcm-/oauth- prefixes. */
    static char prefixed[2][32][40];
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++)
        opts[n++] = (struct option){ base[i].name, base[i].has_arg, NULL, base[i].val };
    for (int i = 0; sbx_faults_option_names[i] && i < 32; i++) {
        opts[n++] = (struct option){ sbx_faults_option_names[i], 1, NULL, O_FAULT_BASE + i };
        snprintf(prefixed[0][i], sizeof prefixed[0][i], "fcm-%s", sbx_faults_option_names[i]);
        snprintf(prefixed[1][i], sizeof prefixed[1][i], "oauth-%s", sbx_faults_option_names[i]);
        opts[n++] = (struct option){ prefixed[0][i], 1, NULL, O_FCM_FAULT_BASE + i };
        opts[n++] = (struct option){ prefixed[1][i], 1, NULL, O_OAUTH_FAULT_BASE + i };
    }
    /* Per-device limits (sandbox/ratelimit.h). */
    for (int i = 0; sbx_device_limits_option_names[i] && i < 16; i++)
        opts[n++] = (struct option){ sbx_device_limits_option_names[i], 1, NULL,
                                     O_LIMIT_BASE + i };
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
        case O_FCM_LISTEN: a->fcm_listen = optarg; break;
        case O_OAUTH_LISTEN: a->oauth_listen = optarg; break;
        case O_FCM_SA:
            if (add_account(a, optarg) < 0)
                return -1;
            break;
        case O_OAUTH_EXPIRES:
            if ((a->oauth_expires_in = uint_arg("oauth-expires-in", optarg, 1, 86400)) < 0)
                return -1;
            break;
        case O_OAUTH_OUTAGE: {
            long long v = uint_arg("oauth-outage-ms", optarg, 0, 86400000);
            if (v < 0)
                return -1;
            a->oauth_outage_ms = (unsigned)v;
            break;
        }
        case O_OAUTH_AUD:
            if (a->naudiences == MAX_AUDIENCES) {
                fprintf(stderr, "too many --oauth-audience options (max %d)\n", MAX_AUDIENCES);
                return -1;
            }
            a->audiences[a->naudiences++] = optarg;
            break;
        case O_FCM_UNREG: a->fcm_unreg_path = optarg; break;
        case O_FCM_MISMATCH: a->fcm_mismatch_path = optarg; break;
        case O_FCM_INVALID: a->fcm_invalid_path = optarg; break;
        case O_FCM_3P: a->fcm_3p_path = optarg; break;
        case O_FCM_MINLEN: {
            long long v = uint_arg("fcm-token-min-length", optarg, 1, SBX_FCM_TOKEN_MAX_LEN);
            if (v < 0)
                return -1;
            a->fcm_token_min_len = (size_t)v;
            break;
        }
        case O_FCM_PROJ_RATE: {
            long long v = uint_arg("fcm-project-rate-limit", optarg, 1, 60000000);
            if (v < 0)
                return -1;
            a->fcm_project_rate = (unsigned)v;
            break;
        }
        default:
            if ((c >= O_FCM_FAULT_BASE && c < O_FCM_FAULT_BASE + 32) ||
                (c >= O_OAUTH_FAULT_BASE && c < O_OAUTH_FAULT_BASE + 32)) {
                bool fcm = c < O_OAUTH_FAULT_BASE;
                int i = c - (fcm ? O_FCM_FAULT_BASE : O_OAUTH_FAULT_BASE);
                if (sbx_faults_option(fcm ? &a->fcm_faults : &a->oauth_faults,
                                      sbx_faults_option_names[i], optarg, err, sizeof err) < 0) {
                    fprintf(stderr, "%s (--%s-%s)\n", err, fcm ? "fcm" : "oauth",
                            sbx_faults_option_names[i]);
                    return -1;
                }
                if (fcm)
                    a->fcm_own_faults = true;
                break;
            }
            if (c >= O_LIMIT_BASE && c < O_LIMIT_BASE + 16) {
                if (sbx_device_limits_option(&a->limits,
                                             sbx_device_limits_option_names[c - O_LIMIT_BASE],
                                             optarg, err, sizeof err) < 0) {
                    fprintf(stderr, "%s\n", err);
                    return -1;
                }
                break;
            }
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
    if (a->bench)
        sbx_device_limits_bench(&a->limits);
    a->faults.rng = seed ? seed : 1;
    /* The FCM and OAuth tables draw from their own generators, derived from
     * the same seed, so a run replays whatever mix of providers it used. */
    a->fcm_faults.rng = (seed ^ 0x9e3779b97f4a7c15ULL) | 1;
    a->oauth_faults.rng = (seed ^ 0x5851f42d4c957f2dULL) | 1;
    if (seed_given)
        log_info("sandbox", "fault seed %llu", (unsigned long long)seed);
    if (!a->cert || !a->key) {
        fprintf(stderr, "--cert and --key are required\n%s", usage_text);
        return -1;
    }
    if (!a->apns_listen && !a->apns_sandbox_listen && !a->fcm_listen && !a->oauth_listen) {
        fprintf(stderr, "give at least one of --apns-listen, --apns-sandbox-listen, "
                        "--fcm-listen, --oauth-listen\n");
        return -1;
    }
    if (!a->bench && !a->record_path) {
        fprintf(stderr, "--record is required (unless --bench)\n");
        return -1;
    }
    if (!a->bench && a->nkeys == 0 && (a->apns_listen || a->apns_sandbox_listen))
        log_warn("sandbox", "no --apns-key: every provider token will be InvalidProviderToken");
    if (!a->bench && a->naccounts == 0 && (a->fcm_listen || a->oauth_listen))
        log_warn("sandbox", "no --fcm-service-account: every token request will be "
                            "invalid_grant");
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
    if (a->fcm_unreg_path)
        sbx_tokens_file_refresh(&a->fcm_unreg, true);
    if (a->fcm_mismatch_path)
        sbx_tokens_file_refresh(&a->fcm_mismatch, true);
    if (a->fcm_invalid_path)
        sbx_tokens_file_refresh(&a->fcm_invalid, true);
    if (a->fcm_3p_path)
        sbx_tokens_file_refresh(&a->fcm_3p, true);
}

/* {"503":n,"tcp-reset":n,...}: times each rule of |f| fired. */
static cJSON *faults_json(const struct sbx_faults *f)
{
    cJSON *o = cJSON_CreateObject();
    for (size_t i = 0; i < f->n; i++) {
        char name[32];
        sbx_fault_name(&f->rules[i], name, sizeof name);
        cJSON *prev = cJSON_GetObjectItemCaseSensitive(o, name);
        if (prev)
            cJSON_SetNumberValue(prev, prev->valuedouble + (double)f->rules[i].fired);
        else
            cJSON_AddNumberToObject(o, name, (double)f->rules[i].fired);
    }
    return o;
}

static void write_summary(struct app *a)
{
    cJSON *sum = sbx_server_summary(a->srv);
    cJSON *apns = cJSON_AddObjectToObject(sum, "apns");
    if (a->have_prod)
        cJSON_AddItemToObject(apns, "production", sbx_apns_service_counts(&a->apns_prod));
    if (a->have_sbx)
        cJSON_AddItemToObject(apns, "sandbox", sbx_apns_service_counts(&a->apns_sbx));
    cJSON_AddItemToObject(sum, "faults", faults_json(&a->faults));
    if (a->have_fcm) {
        cJSON_AddItemToObject(sum, "fcm", sbx_fcm_service_counts(&a->fcm));
        if (a->fcm_own_faults)
            cJSON_AddItemToObject(sum, "fcm_faults", faults_json(&a->fcm_faults));
    }
    if (a->have_oauth) {
        cJSON_AddItemToObject(sum, "oauth", sbx_oauth_service_summary(&a->oauth));
        cJSON_AddItemToObject(sum, "oauth_faults", faults_json(&a->oauth_faults));
    }
    /* Per-device (and project) limits: requests allowed and refused, tokens
     * tracked. Empty when every limit is off (--bench). */
    cJSON *rl = cJSON_AddObjectToObject(sum, "rate_limits");
    if (a->have_prod && a->apns_prod.device_rate)
        cJSON_AddItemToObject(rl, "apns_production", sbx_rate_summary(a->apns_prod.device_rate));
    if (a->have_sbx && a->apns_sbx.device_rate)
        cJSON_AddItemToObject(rl, "apns_sandbox", sbx_rate_summary(a->apns_sbx.device_rate));
    if (a->have_fcm && a->fcm.device_rate)
        cJSON_AddItemToObject(rl, "fcm_device", sbx_rate_summary(a->fcm.device_rate));
    if (a->have_fcm && a->fcm.project_rate)
        cJSON_AddItemToObject(rl, "fcm_project", sbx_rate_summary(a->fcm.project_rate));
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
    uv_close((uv_handle_t *)&a->sig_usr1, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct app *a = h->data;
    if (signum == SIGUSR1) {
        /* Revoke every access token issued so far (as Google may, e.g. on
         * a key rotation): the next FCM request with one gets 401. */
        if (a->oauth.tokens) {
            sbx_oauth_tokens_free(a->oauth.tokens);
            a->oauth.tokens = sbx_oauth_tokens_new();
        }
        log_info("sandbox", "SIGUSR1: all access tokens revoked");
        return;
    }
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
    bool google = a->fcm_listen || a->oauth_listen;
    if (google) {
        static const char *const alpn2[] = { "h2", "http/1.1", NULL };
        a->google_ctx = tls_server_ctx_new(a->cert, a->key, alpn2, err, sizeof err);
        if (a->google_ctx == NULL) {
            fprintf(stderr, "TLS setup: %s\n", err);
            goto out;
        }
    }
    if ((a->unregistered_path &&
         open_token_file(&a->unregistered, a->unregistered_path, SBX_TOKENS_TIMESTAMP) < 0) ||
        (a->bad_tokens_path && open_token_file(&a->bad_tokens, a->bad_tokens_path, SBX_TOKENS_PLAIN) < 0) ||
        (a->env_tokens_path && open_token_file(&a->env_tokens, a->env_tokens_path, SBX_TOKENS_ENV) < 0) ||
        (a->fcm_unreg_path && open_token_file(&a->fcm_unreg, a->fcm_unreg_path, SBX_TOKENS_PLAIN) < 0) ||
        (a->fcm_mismatch_path &&
         open_token_file(&a->fcm_mismatch, a->fcm_mismatch_path, SBX_TOKENS_PLAIN) < 0) ||
        (a->fcm_invalid_path &&
         open_token_file(&a->fcm_invalid, a->fcm_invalid_path, SBX_TOKENS_PLAIN) < 0) ||
        (a->fcm_3p_path && open_token_file(&a->fcm_3p, a->fcm_3p_path, SBX_TOKENS_PLAIN) < 0))
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
        .ndevice_limits = a->limits.napns,
    };
    memcpy(opt.device_limits, a->limits.apns, sizeof opt.device_limits);
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
    if (google) {
        struct sbx_oauth_service_options oopt = {
            .accounts = a->accounts, .naccounts = a->naccounts,
            .audiences = a->audiences, .naudiences = a->naudiences,
            .expires_in_s = a->oauth_expires_in, .outage_ms = a->oauth_outage_ms,
            .faults = &a->oauth_faults, .record = a->record,
        };
        sbx_oauth_service_init(&a->oauth, &oopt);
        a->have_oauth = true;
    }
    if (a->fcm_listen) {
        struct sbx_fcm_service_options fopt = {
            .oauth = &a->oauth,
            .faults = a->fcm_own_faults ? &a->fcm_faults : &a->faults,
            .record = a->record,
            .unregistered = a->fcm_unreg_path ? &a->fcm_unreg : NULL,
            .sender_mismatch = a->fcm_mismatch_path ? &a->fcm_mismatch : NULL,
            .invalid_tokens = a->fcm_invalid_path ? &a->fcm_invalid : NULL,
            .third_party_auth = a->fcm_3p_path ? &a->fcm_3p : NULL,
            .ndevice_limits = a->limits.nfcm,
            .project_rate_per_min = a->fcm_project_rate,
            .bench = a->bench,
        };
        memcpy(fopt.device_limits, a->limits.fcm, sizeof fopt.device_limits);
        if (a->limits.has_collapsible)
            fopt.collapsible = a->limits.collapsible;
        fopt.cfg.token_min_len = a->fcm_token_min_len;
        fopt.cfg.projects = a->projects;
        fopt.cfg.nprojects = a->naccounts;
        sbx_fcm_service_init(&a->fcm, &fopt);
        a->have_fcm = true;
        if (sbx_server_listen_tls(a->srv, "fcm", a->fcm_listen, &a->fcm.svc, a->google_ctx, err,
                                  sizeof err) < 0) {
            fprintf(stderr, "%s\n", err);
            goto out_server;
        }
    }
    if (a->oauth_listen && sbx_server_listen_tls(a->srv, "oauth", a->oauth_listen, &a->oauth.svc,
                                                 a->google_ctx, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        goto out_server;
    }

    uv_signal_init(a->loop, &a->sig_term);
    uv_signal_init(a->loop, &a->sig_int);
    uv_signal_init(a->loop, &a->sig_hup);
    a->sig_term.data = a->sig_int.data = a->sig_hup.data = a;
    uv_signal_start(&a->sig_term, on_signal, SIGTERM);
    uv_signal_start(&a->sig_int, on_signal, SIGINT);
    uv_signal_start(&a->sig_hup, on_signal, SIGHUP);
    uv_signal_init(a->loop, &a->sig_usr1);
    a->sig_usr1.data = a;
    uv_signal_start(&a->sig_usr1, on_signal, SIGUSR1);
    if (a->port_file && write_port_file(a) < 0) {
        a->stopping = true;
        sbx_server_shutdown(a->srv, on_server_closed, a);
        uv_run(a->loop, UV_RUN_DEFAULT);
        goto out_server;
    }
    char limits[256];
    sbx_device_limits_describe(&a->limits, limits, sizeof limits);
    log_info("sandbox", "per-device rate limits: %s", limits);
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
    if (a->fcm_unreg_path)
        sbx_tokens_file_close(&a->fcm_unreg);
    if (a->fcm_mismatch_path)
        sbx_tokens_file_close(&a->fcm_mismatch);
    if (a->fcm_invalid_path)
        sbx_tokens_file_close(&a->fcm_invalid);
    if (a->fcm_3p_path)
        sbx_tokens_file_close(&a->fcm_3p);
    if (a->have_prod)
        sbx_apns_service_clear(&a->apns_prod);
    if (a->have_sbx)
        sbx_apns_service_clear(&a->apns_sbx);
    if (a->have_fcm)
        sbx_fcm_service_clear(&a->fcm);
    if (a->have_oauth)
        sbx_oauth_service_clear(&a->oauth);
    SSL_CTX_free(a->ssl_ctx);
    SSL_CTX_free(a->google_ctx);
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
    if (argc >= 2 && strcmp(argv[1], "gen-service-account") == 0)
        return cmd_gen_service_account(argc, argv);

    signal(SIGPIPE, SIG_IGN);
    static struct app a;
    a.loop = uv_default_loop();
    sbx_faults_init(&a.faults, 1);
    sbx_faults_init(&a.fcm_faults, 2);
    sbx_faults_init(&a.oauth_faults, 3);
    sbx_device_limits_init(&a.limits);
    if (parse_args(&a, argc, argv) < 0)
        return 2;
    int rc = serve(&a);
    for (size_t i = 0; i < a.nkeys; i++) {
        EVP_PKEY_free(a.keys[i].pub);
        for (size_t j = 0; j < a.keys[i].ntopics; j++)
            free(a.keys[i].topics[j]);
        free(a.keys[i].topics);
    }
    for (size_t i = 0; i < a.naccounts; i++)
        sbx_oauth_account_clear(&a.accounts[i]);
    uv_loop_close(a.loop);
    return rc;
}
