/*
 * varseld: the push delivery daemon.
 *
 *   varseld --config FILE                 run in the foreground
 *   varseld --config FILE --check-config  validate the configuration, exit 0/1
 *   varseld --config-keys                 print the table of config keys
 *
 * Lifecycle: load config and templates, create one APNs client per app and
 * the pipeline, run the libuv loop. SIGTERM/SIGINT: stop reading, let
 * deliveries in flight settle (shutdown_timeout_ms), close the provider
 * clients, exit 0; nothing unsettled is acknowledged. SIGHUP: re-read the
 * config file; reload-safe keys (log_level, log_format) and the templates
 * take effect, any other change is refused with a log line naming the key.
 *
 * Under systemd (Type=notify, dist/systemd/varseld.service) varseld speaks
 * the sd_notify datagram protocol itself, over $NOTIFY_SOCKET (no
 * libsystemd): READY=1 once both Redis connections are up, RELOADING=1 and
 * READY=1 around a SIGHUP reload, STOPPING=1 on SIGTERM/SIGINT, STATUS=
 * lines with a few figures, and WATCHDOG=1 when WatchdogSec= is set. A
 * housekeeping timer (every 250 ms) does that and writes the summaries of
 * rate-limited log lines (common/log.h).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "apns/client.h"
#include "common/log.h"
#include "common/util.h"
#include "config/config.h"
#include "daemon/admin.h"
#include "daemon/pipeline.h"
#include "daemon/stats.h"
#include "daemon/templates.h"
#include "fcm/client.h"
#include "http2/client.h"
#include "http2/tls.h"

#ifndef VARSEL_VERSION
#define VARSEL_VERSION "dev"
#endif

struct daemon {
    uv_loop_t *loop;
    struct config *cfg;
    struct templates *templates;
    SSL_CTX *ssl_ctx;
    struct pipeline_app *apps;
    struct pipeline *pl;
    struct admin *admin;         /* admin HTTP server, NULL when [admin] listen = off */
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t housekeeping;     /* log summaries, sd_notify READY/STATUS/WATCHDOG */
    int clients_open;
    bool stopping;
    bool notified_ready;         /* READY=1 sent since start */
    uint64_t watchdog_ms;        /* WATCHDOG=1 interval, 0 = no watchdog */
    uint64_t last_watchdog_ms, last_status_ms;
    int exit_code;
    struct retiring *retiring;   /* replaced provider clients, draining */
    char (*apns_key_sha)[65];    /* per app: content hash of the key in use */
    char (*fcm_sa_sha)[65];      /* per app: of the service account in use */
    int retired_closing;         /* retired clients still closing */
    bool shutting_down;          /* on_pipeline_stopped ran */
    uv_timer_t retire_timer;
};

/*
 * A provider client replaced by a credential reload (SIGHUP). It keeps
 * answering the requests it already has; it is closed once none is left
 * (or after RETIRE_MAX_MS), so no push is lost and no live connection ever
 * sees a new key id (APNs refuses that: UnrelatedKeyIdInToken).
 */
struct retiring {
    struct apns_client *apns;
    struct fcm_client *fcm;
    uint64_t since_ms;
    struct retiring *next;
};
#define RETIRE_MAX_MS 120000

/* ---- sd_notify ----------------------------------------------------------- */

/*
 * Send |msg| ("READY=1\nSTATUS=...") to the service manager: one datagram
 * to the AF_UNIX socket named by $NOTIFY_SOCKET ("/path", or "@name" for
 * the abstract namespace). Without that variable (not under systemd, or
 * not Type=notify) it does nothing. Failures are logged at debug level
 * only: the service manager may simply not listen.
 */
static void sd_notify_send(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (path == NULL || path[0] == '\0')
        return;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    size_t plen = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || plen >= sizeof sa.sun_path) {
        log_debug("daemon", "NOTIFY_SOCKET is not a usable socket path");
        return;
    }
    memcpy(sa.sun_path, path, plen);
    if (path[0] == '@')
        sa.sun_path[0] = '\0'; /* abstract namespace */
    socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_debug("daemon", "sd_notify: socket: %s", strerror(errno));
        return;
    }
    if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa, salen) < 0)
        log_debug("daemon", "sd_notify: %s", strerror(errno));
    close(fd);
}

/* WatchdogSec= of the unit, from $WATCHDOG_USEC (and $WATCHDOG_PID when
 * set, which must be us); 0 when there is no watchdog. */
static uint64_t watchdog_interval_ms(void)
{
    const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
    if (usec == NULL || usec[0] == '\0')
        return 0;
    if (pid && pid[0] && strtol(pid, NULL, 10) != (long)getpid())
        return 0;
    unsigned long long us = strtoull(usec, NULL, 10);
    return us / 1000;
}

static uint64_t monotonic_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void pool_figures(const char *provider, const char *app, const char *env,
                         const struct h2_pool *p)
{
    if (p == NULL)
        return;
    const char *v[] = { provider, app, env };
    struct h2_pool_stats st;
    h2_pool_get_stats(p, &st);
    stats_set(STATS_H2_CONNECTIONS, v, (double)h2_pool_connections(p));
    stats_set(STATS_H2_STREAMS, v, (double)h2_pool_inflight(p));
    stats_set(STATS_H2_QUEUED, v, (double)h2_pool_queued(p));
    stats_set(STATS_H2_MAX_STREAMS, v, (double)st.max_streams_seen);
    stats_set(STATS_H2_CONNECTS, v, (double)st.connects);
    stats_set(STATS_H2_CONNECT_FAILURES, v, (double)st.connect_failures);
    stats_set(STATS_H2_GOAWAYS, v, (double)st.goaways);
    stats_set(STATS_H2_CONN_LOST, v, (double)st.conn_lost);
}

/* Collector for stats.h: the provider pools and OAuth figures of each app. */
static void collect_clients(void *arg)
{
    struct daemon *d = arg;
    for (size_t i = 0; d->apps && i < d->cfg->n_apps; i++) {
        struct pipeline_app *a = &d->apps[i];
        if (a->apns) {
            pool_figures("apns", a->name, "production", apns_client_pool(a->apns, false));
            pool_figures("apns", a->name, "sandbox", apns_client_pool(a->apns, true));
        }
        if (a->fcm) {
            pool_figures("fcm", a->name, "production", fcm_client_pool(a->fcm));
            struct fcm_client_stats fs;
            fcm_client_get_stats(a->fcm, &fs);
            const char *ok[] = { a->name, "ok" }, *bad[] = { a->name, "failed" };
            stats_set(STATS_TOKEN_REFRESHES, ok, (double)fs.token_refreshes);
            stats_set(STATS_TOKEN_REFRESHES, bad, (double)fs.token_failures);
        }
    }
}

static void usage(FILE *fp)
{
    fprintf(fp,
            "usage: varseld --config FILE [--check-config]\n"
            "       varseld --config-keys\n"
            "\n"
            "  -c, --config FILE    configuration file (INI; see config/varsel.ini.example)\n"
            "      --check-config   validate the configuration and exit 0 (valid) or 1\n"
            "      --config-keys    print every configuration key with its default\n"
            "  -h, --help           this text\n");
}

static void close_signals(struct daemon *d)
{
    uv_close((uv_handle_t *)&d->sigterm, NULL);
    uv_close((uv_handle_t *)&d->sigint, NULL);
    uv_close((uv_handle_t *)&d->sighup, NULL);
    uv_close((uv_handle_t *)&d->housekeeping, NULL);
    uv_close((uv_handle_t *)&d->retire_timer, NULL);
}

/* Every HOUSEKEEPING_MS: log summaries, watchdog, READY=1 once, STATUS=. */
#define HOUSEKEEPING_MS 250
#define STATUS_EVERY_MS 10000

static void on_housekeeping(uv_timer_t *t)
{
    struct daemon *d = t->data;
    uint64_t now = uv_now(d->loop);
    log_flush_suppressed(false);
    if (d->watchdog_ms && now - d->last_watchdog_ms >= d->watchdog_ms / 2) {
        sd_notify_send("WATCHDOG=1");
        d->last_watchdog_ms = now;
    }
    if (d->stopping || d->pl == NULL)
        return;
    if (!d->notified_ready) {
        if (!pipeline_ready(d->pl))
            return;
        d->notified_ready = true;
        d->last_status_ms = now;
        log_info_kv("daemon", LOG_KV("stream", d->cfg->redis.stream, "group",
                                     d->cfg->redis.group, "consumer", d->cfg->redis.consumer),
                    "ready: connected to Redis, consuming %s as %s/%s", d->cfg->redis.stream,
                    d->cfg->redis.group, d->cfg->redis.consumer);
        sd_notify_send("READY=1\nSTATUS=delivering");
        return;
    }
    if (now - d->last_status_ms < STATUS_EVERY_MS)
        return;
    d->last_status_ms = now;
    char m[256];
    if (!pipeline_ready(d->pl)) {
        snprintf(m, sizeof m, "STATUS=Redis unavailable; reconnecting");
    } else {
        struct pipeline_stats st;
        pipeline_get_stats(d->pl, &st);
        snprintf(m, sizeof m,
                 "STATUS=delivering: %llu events, %llu sent, %llu invalid tokens, "
                 "%llu failed, %llu dead letters, %zu in flight",
                 (unsigned long long)st.events, (unsigned long long)st.sent,
                 (unsigned long long)st.invalid_token, (unsigned long long)st.failed,
                 (unsigned long long)st.dead, st.inflight);
    }
    sd_notify_send(m);
}

static void on_client_closed(void *arg)
{
    struct daemon *d = arg;
    if (--d->clients_open > 0)
        return;
    admin_close(d->admin);
    d->admin = NULL;
    pipeline_free(d->pl);
    d->pl = NULL;
    close_signals(d);
}

static void retire_sweep(struct daemon *d, bool all);

static void on_pipeline_stopped(void *arg)
{
    struct daemon *d = arg;
    d->clients_open = 1; /* guard while closing */
    d->shutting_down = true;
    /* Retired clients: those already closing count now, the rest close. */
    d->clients_open += d->retired_closing;
    d->retired_closing = 0;
    retire_sweep(d, true);
    d->clients_open += d->retired_closing;
    d->retired_closing = 0;
    uv_timer_stop(&d->retire_timer);
    for (size_t i = 0; i < d->cfg->n_apps; i++) {
        if (d->apps[i].apns) {
            d->clients_open++;
            apns_client_close(d->apps[i].apns, on_client_closed, d);
            d->apps[i].apns = NULL;
        }
        if (d->apps[i].fcm) {
            d->clients_open++;
            fcm_client_close(d->apps[i].fcm, on_client_closed, d);
            d->apps[i].fcm = NULL;
        }
    }
    on_client_closed(d);
}

static void on_stop_signal(uv_signal_t *s, int signum)
{
    struct daemon *d = s->data;
    if (d->stopping) {
        log_warn("daemon", "second signal %d: stopping now", signum);
        pipeline_stop(d->pl, 0, on_pipeline_stopped, d);
        return;
    }
    d->stopping = true;
    admin_set_stopping(d->admin);
    char m[128];
    snprintf(m, sizeof m, "STOPPING=1\nSTATUS=draining deliveries in flight (up to %lld ms)",
             (long long)d->cfg->daemon.shutdown_timeout_ms);
    sd_notify_send(m);
    log_info("daemon", "signal %d: draining (up to %lld ms)", signum,
             (long long)d->cfg->daemon.shutdown_timeout_ms);
    pipeline_stop(d->pl, (uint32_t)d->cfg->daemon.shutdown_timeout_ms,
                  on_pipeline_stopped, d);
}

/* SIGHUP: load the file again and apply the reload-safe keys. Returns
 * false when the new file was refused (logged). */
static int make_fcm(struct daemon *d, const struct config_app *a, struct fcm_client **out,
                    char *err, size_t errlen);
static int make_apns(struct daemon *d, const struct config_app *a, struct apns_client **out,
                     char *err, size_t errlen);
static void on_client_closed(void *arg);

/* A retired (or never used) client finished closing. During shutdown it
 * counts like any other client; before, only the retiring count drops. */
static void on_retired_closed(void *arg)
{
    struct daemon *d = arg;
    if (d->shutting_down) {
        on_client_closed(d);
        return;
    }
    d->retired_closing--;
}

static void close_retired(struct daemon *d, struct apns_client *a, struct fcm_client *f)
{
    if (a) {
        d->retired_closing++;
        apns_client_close(a, on_retired_closed, d);
    }
    if (f) {
        d->retired_closing++;
        fcm_client_close(f, on_retired_closed, d);
    }
}

/* SHA-256 of a file's content into out[65] ("" when unreadable). */
static void file_sha256(const char *path, char out[65])
{
    out[0] = '\0';
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (f == NULL)
        return;
    char buf[65536];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    sha256_hex(buf, n, out);
}

static bool str_differs(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0);
}

static void replace_str(char **dst, const char *src)
{
    free(*dst);
    *dst = src ? xstrdup(src) : NULL;
}

/* Close retired clients that have nothing in flight (all: every one). */
static void retire_sweep(struct daemon *d, bool all)
{
    uint64_t now = uv_now(d->loop);
    struct retiring **pp = &d->retiring;
    while (*pp) {
        struct retiring *r = *pp;
        size_t busy = (r->apns ? apns_client_inflight(r->apns) : 0) +
                      (r->fcm ? fcm_client_inflight(r->fcm) : 0);
        if (!all && busy > 0 && now - r->since_ms < RETIRE_MAX_MS) {
            pp = &r->next;
            continue;
        }
        if (busy > 0)
            log_warn("daemon", "closing a replaced provider client with %zu requests still "
                     "in flight (they are retried)", busy);
        close_retired(d, r->apns, r->fcm);
        *pp = r->next;
        free(r);
    }
}

static void on_retire_timer(uv_timer_t *t)
{
    retire_sweep(t->data, false);
}

static void retire(struct daemon *d, struct apns_client *a, struct fcm_client *f)
{
    struct retiring *r = xcalloc(1, sizeof *r);
    r->apns = a;
    r->fcm = f;
    r->since_ms = uv_now(d->loop);
    r->next = d->retiring;
    d->retiring = r;
}

/*
 * New provider clients for apps whose credentials changed (key id, team,
 * key file or its content, service-account file or its content). All are
 * created before any is swapped in, so a bad new key refuses the reload
 * and leaves everything as it was. Returns 0, or -1 with |err|.
 */
static int rotate_credentials(struct daemon *d, const struct config *nc, char *err,
                              size_t errlen)
{
    size_t n = d->cfg->n_apps;
    struct apns_client **na = xcalloc(n, sizeof *na);
    struct fcm_client **nf = xcalloc(n, sizeof *nf);
    char (*asha)[65] = xcalloc(n, sizeof *asha), (*fsha)[65] = xcalloc(n, sizeof *fsha);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct config_app *oa = &d->cfg->apps[i];
        const struct config_app *a = config_find_app(nc, oa->name);
        if (a->apns_enabled != oa->apns_enabled || a->fcm_enabled != oa->fcm_enabled) {
            snprintf(err, errlen, "[app %s] adding or removing a provider needs a restart",
                     a->name);
            rc = -1;
            break;
        }
        if (a->apns_enabled) {
            file_sha256(a->apns_key_file, asha[i]);
            if (str_differs(a->apns_team_id, oa->apns_team_id) ||
                str_differs(a->apns_key_id, oa->apns_key_id) ||
                str_differs(a->apns_key_file, oa->apns_key_file) ||
                strcmp(asha[i], d->apns_key_sha[i]) != 0)
                rc = make_apns(d, a, &na[i], err, errlen);
        }
        if (rc == 0 && a->fcm_enabled) {
            file_sha256(a->fcm_service_account_file, fsha[i]);
            if (str_differs(a->fcm_service_account_file, oa->fcm_service_account_file) ||
                strcmp(fsha[i], d->fcm_sa_sha[i]) != 0)
                rc = make_fcm(d, a, &nf[i], err, errlen);
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (rc != 0) {
            close_retired(d, na[i], nf[i]);
            continue;
        }
        struct config_app *oa = &d->cfg->apps[i];
        const struct config_app *a = config_find_app(nc, oa->name);
        if (na[i]) {
            retire(d, d->apps[i].apns, NULL);
            d->apps[i].apns = na[i];
            replace_str(&oa->apns_team_id, a->apns_team_id);
            replace_str(&oa->apns_key_id, a->apns_key_id);
            replace_str(&oa->apns_key_file, a->apns_key_file);
            memcpy(d->apns_key_sha[i], asha[i], 65);
            log_info("daemon", "app %s: new APNs credentials (key %s): new connections use "
                     "them, the old ones drain", oa->name, oa->apns_key_id);
        }
        if (nf[i]) {
            retire(d, NULL, d->apps[i].fcm);
            d->apps[i].fcm = nf[i];
            replace_str(&oa->fcm_service_account_file, a->fcm_service_account_file);
            memcpy(d->fcm_sa_sha[i], fsha[i], 65);
            log_info("daemon", "app %s: new FCM service account", oa->name);
        }
    }
    free(na);
    free(nf);
    free(asha);
    free(fsha);
    return rc;
}

static bool reload_config(struct daemon *d)
{
    char err[512];
    struct config *nc = NULL;
    if (config_load(d->cfg->path, &nc, err, sizeof err) != 0) {
        log_error("daemon", "reload refused: %s", err);
        return false;
    }
    if (config_reload_check(d->cfg, nc, err, sizeof err) != 0) {
        log_error("daemon", "reload refused: %s", err);
        config_free(nc);
        return false;
    }
    struct templates *t = NULL;
    if (templates_load(nc->daemon.templates_dir, &t, err, sizeof err) != 0) {
        log_error("daemon", "reload refused: templates: %s", err);
        config_free(nc);
        return false;
    }
    if (rotate_credentials(d, nc, err, sizeof err) != 0) {
        log_error("daemon", "reload refused: %s", err);
        templates_free(t);
        config_free(nc);
        return false;
    }
    log_set_level((enum log_level)nc->daemon.log_level);
    log_set_format((enum log_format)nc->daemon.log_format);
    pipeline_set_templates(d->pl, t);
    templates_free(d->templates);
    d->templates = t;
    d->cfg->daemon.log_level = nc->daemon.log_level;
    d->cfg->daemon.log_format = nc->daemon.log_format;
    /* Tenant settings apply from the next delivery on: swap them in (the
     * pipeline looks tenants up per event and keeps no pointer). */
    struct config_tenant *tt = d->cfg->tenants, td = d->cfg->tenant_default;
    size_t tn = d->cfg->n_tenants;
    d->cfg->tenants = nc->tenants;
    d->cfg->n_tenants = nc->n_tenants;
    d->cfg->tenant_default = nc->tenant_default;
    nc->tenants = tt;
    nc->n_tenants = tn;
    nc->tenant_default = td;
    config_free(nc);
    log_info("daemon", "configuration reloaded");
    return true;
}

static void on_hup(uv_signal_t *s, int signum)
{
    struct daemon *d = s->data;
    if (d->stopping)
        return;
    /* Before READY=1 systemd has no reload to track: only say what happened. */
    if (d->notified_ready) {
        char m[80];
        snprintf(m, sizeof m, "RELOADING=1\nMONOTONIC_USEC=%llu",
                 (unsigned long long)monotonic_us());
        sd_notify_send(m);
    }
    bool ok = reload_config(d);
    const char *status = ok ? "STATUS=configuration reloaded"
                            : "STATUS=reload refused (see the log); running on the "
                              "previous configuration";
    if (d->notified_ready) {
        char m[160];
        snprintf(m, sizeof m, "READY=1\n%s", status);
        sd_notify_send(m);
    } else {
        sd_notify_send(status);
    }
}

/* Provider clients of one app, from its config section. */
static int make_fcm(struct daemon *d, const struct config_app *a, struct fcm_client **out,
                    char *err, size_t errlen)
{
    char e2[256];
    struct fcm_client_config fc = {
        .app = a->name,
        .service_account_file = a->fcm_service_account_file,
        .project_id = a->fcm_project_id,
        .fcm_url = a->fcm_url,
        .token_url = a->fcm_token_url,
        .max_connections = (int)a->fcm_max_connections,
        .request_timeout_ms = (uint32_t)d->cfg->delivery.request_timeout_ms,
        .ssl_ctx = d->ssl_ctx,
    };
    if (fcm_client_new(d->loop, &fc, out, e2, sizeof e2) != 0) {
        snprintf(err, errlen, "%s:%d: [app %s] %s", d->cfg->path, a->line, a->name, e2);
        return -1;
    }
    return 0;
}

static int make_apns(struct daemon *d, const struct config_app *a, struct apns_client **out,
                     char *err, size_t errlen)
{
    char e2[256];
    struct apns_client_config ac = {
        .app = a->name,
        .topic = a->apns_topic,
        .team_id = a->apns_team_id,
        .key_id = a->apns_key_id,
        .key_file = a->apns_key_file,
        .url = a->apns_url,
        .sandbox_url = a->apns_sandbox_url,
        .max_connections = (int)a->apns_max_connections,
        .request_timeout_ms = (uint32_t)d->cfg->delivery.request_timeout_ms,
        .ssl_ctx = d->ssl_ctx,
    };
    if (apns_client_new(d->loop, &ac, out, e2, sizeof e2) != 0) {
        snprintf(err, errlen, "%s:%d: [app %s] %s", d->cfg->path, a->line, a->name, e2);
        return -1;
    }
    return 0;
}

/* Validate what config_load does not: keys load, URLs parse, templates. */
static int check_runtime(struct daemon *d, char *err, size_t errlen)
{
    if (templates_load(d->cfg->daemon.templates_dir, &d->templates, err, errlen) != 0)
        return -1;
    char e2[256];
    const char *alpn[] = { "h2", NULL };
    d->ssl_ctx = tls_client_ctx_new(d->cfg->tls.ca_file, alpn, NULL, NULL, e2, sizeof e2);
    if (d->ssl_ctx == NULL) {
        snprintf(err, errlen, "%s: [tls] ca_file: %s", d->cfg->path, e2);
        return -1;
    }
    d->apps = xcalloc(d->cfg->n_apps, sizeof *d->apps);
    for (size_t i = 0; i < d->cfg->n_apps; i++) {
        const struct config_app *a = &d->cfg->apps[i];
        d->apps[i].name = a->name;
        d->apps[i].retry_max_attempts = (int)a->retry_max_attempts;
        if (a->fcm_enabled && make_fcm(d, a, &d->apps[i].fcm, err, errlen) != 0)
            return -1;
        if (a->apns_enabled && make_apns(d, a, &d->apps[i].apns, err, errlen) != 0)
            return -1;
    }
    return 0;
}

static void free_clients_now(struct daemon *d)
{
    /* Only used when start-up fails: close clients and run the loop dry. */
    int open = 0;
    for (size_t i = 0; d->apps && i < d->cfg->n_apps; i++) {
        if (d->apps[i].apns) {
            open++;
            apns_client_close(d->apps[i].apns, NULL, NULL);
        }
        if (d->apps[i].fcm) {
            open++;
            fcm_client_close(d->apps[i].fcm, NULL, NULL);
        }
    }
    if (open)
        uv_run(d->loop, UV_RUN_DEFAULT);
}

/* The admin HTTP server (docs/admin.md), when [admin] listen is not off. */
static void start_admin(struct daemon *d, const struct pipeline_config *pc)
{
    const struct config_admin *ac = &d->cfg->admin;
    if (!ac->enabled)
        return;
    struct admin_config c = {
        .host = ac->host,
        .port = ac->port,
        .token = ac->token,
        .redis = pc->redis,
        .stream = pc->streams[0],
        .group = pc->group,
        .prefix = pc->prefix,
        .apps = d->apps,
        .n_apps = d->cfg->n_apps,
        .pipeline = d->pl,
        .version = VARSEL_VERSION,
    };
    char err[256];
    if (admin_new(d->loop, &c, &d->admin, err, sizeof err) != 0)
        log_error("daemon", "admin server not started: %s", err);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "check-config", no_argument, NULL, 'k' },
        { "config-keys", no_argument, NULL, 'K' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *path = NULL;
    bool check = false;
    int o;
    while ((o = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (o) {
        case 'c': path = optarg; break;
        case 'k': check = true; break;
        case 'K': config_dump_keys(stdout); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (path == NULL || optind != argc) {
        usage(stderr);
        return 2;
    }
    log_set_program("varseld");
    signal(SIGPIPE, SIG_IGN);

    struct daemon d;
    memset(&d, 0, sizeof d);
    d.loop = uv_default_loop();
    char err[1024];
    if (config_load(path, &d.cfg, err, sizeof err) != 0) {
        fprintf(stderr, "varseld: %s\n", err);
        return 1;
    }
    log_set_level((enum log_level)d.cfg->daemon.log_level);
    log_set_format((enum log_format)d.cfg->daemon.log_format);
    int rc = check_runtime(&d, err, sizeof err);
    if (rc != 0 || check) {
        if (rc != 0)
            fprintf(stderr, "varseld: %s\n", err);
        else
            printf("%s: configuration OK (%zu app%s)\n", path, d.cfg->n_apps,
                   d.cfg->n_apps == 1 ? "" : "s");
        free_clients_now(&d);
        templates_free(d.templates);
        free(d.apps);
        if (d.ssl_ctx)
            SSL_CTX_free(d.ssl_ctx);
        config_free(d.cfg);
        uv_loop_close(d.loop);
        return rc != 0 ? 1 : 0;
    }

    struct config_redis *r = &d.cfg->redis;
    struct pipeline_config pc = {
        .redis = { .name = "redis", .host = r->host, .port = r->port, .user = r->user,
                   .password = r->password, .db = r->db,
                   .sentinel_hosts = (const char *const *)r->sentinel_hosts,
                   .sentinel_ports = r->sentinel_ports, .n_sentinels = r->n_sentinels,
                   .master_name = r->master_name, .sentinel_password = r->sentinel_password },
        .streams = (const char *const *)r->stream_list,
        .n_streams = r->n_streams,
        .urgent_stream = r->urgent_stream,
        .group = r->group,
        .consumer = r->consumer,
        .prefix = r->prefix,
        .batch_size = (int)r->batch_size,
        .block_ms = (int)r->block_ms,
        .claim_idle_ms = (long)r->claim_idle_ms,
        .status_ttl_s = (int)r->status_ttl_s,
        .receipts_maxlen = (long)r->receipts_maxlen,
        .dead_maxlen = (long)r->dead_maxlen,
        .escalations_maxlen = (long)r->escalations_maxlen,
        .dead_payload_ttl_s = r->dead_payload_ttl_s,
        .token_max_age_ms = d.cfg->daemon.token_max_age_days * 86400000LL,
        .trim_interval_ms = r->trim_interval_ms,
        .inflight_window = (size_t)d.cfg->delivery.inflight_window,
        .retry_base_ms = d.cfg->delivery.retry_base_ms,
        .retry_cap_ms = d.cfg->delivery.retry_max_delay_ms,
        .retry_lease_ms = d.cfg->delivery.retry_lease_ms,
        .wait_replicas = (int)r->wait_replicas,
        .wait_timeout_ms = (int)r->wait_timeout_ms,
        .consumer_gone_ms = r->consumer_gone_ms,
        .apps = d.apps,
        .n_apps = d.cfg->n_apps,
        .templates = d.templates,
        .config = d.cfg,
    };
    stats_init(VARSEL_VERSION);
    stats_add_collector(collect_clients, &d);
    d.pl = pipeline_new(d.loop, &pc);
    start_admin(&d, &pc);
    uv_signal_init(d.loop, &d.sigterm);
    uv_signal_init(d.loop, &d.sigint);
    uv_signal_init(d.loop, &d.sighup);
    d.sigterm.data = d.sigint.data = d.sighup.data = &d;
    uv_signal_start(&d.sigterm, on_stop_signal, SIGTERM);
    uv_signal_start(&d.sigint, on_stop_signal, SIGINT);
    uv_signal_start(&d.sighup, on_hup, SIGHUP);
    d.watchdog_ms = watchdog_interval_ms();
    uv_timer_init(d.loop, &d.housekeeping);
    d.housekeeping.data = &d;
    uv_timer_start(&d.housekeeping, on_housekeeping, HOUSEKEEPING_MS, HOUSEKEEPING_MS);
    d.apns_key_sha = xcalloc(d.cfg->n_apps, sizeof *d.apns_key_sha);
    d.fcm_sa_sha = xcalloc(d.cfg->n_apps, sizeof *d.fcm_sa_sha);
    for (size_t i = 0; i < d.cfg->n_apps; i++) {
        file_sha256(d.cfg->apps[i].apns_key_file, d.apns_key_sha[i]);
        file_sha256(d.cfg->apps[i].fcm_service_account_file, d.fcm_sa_sha[i]);
    }
    uv_timer_init(d.loop, &d.retire_timer);
    d.retire_timer.data = &d;
    uv_timer_start(&d.retire_timer, on_retire_timer, 1000, 1000);
    {
        char m[400];
        if (r->n_sentinels > 0)
            snprintf(m, sizeof m, "STATUS=connecting to Redis master %s through Sentinel",
                     r->master_name);
        else
            snprintf(m, sizeof m, "STATUS=connecting to Redis at %s:%d", r->host, r->port);
        sd_notify_send(m);
    }
    log_info("daemon", "varseld started: stream %s, group %s, consumer %s, %zu app%s",
             r->stream, r->group, r->consumer, d.cfg->n_apps, d.cfg->n_apps == 1 ? "" : "s");

    uv_run(d.loop, UV_RUN_DEFAULT);

    log_flush_suppressed(true);
    log_info("daemon", "stopped");
    stats_free();
    templates_free(d.templates);
    free(d.apps);
    free(d.apns_key_sha);
    free(d.fcm_sa_sha);
    SSL_CTX_free(d.ssl_ctx);
    config_free(d.cfg);
    if (uv_loop_close(d.loop) != 0)
        log_warn("daemon", "event loop closed with handles still open");
    return d.exit_code;
}
