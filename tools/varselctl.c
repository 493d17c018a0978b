/*
 * varselctl: the operator's tool for varsel (docs/operations.md).
 *
 *   varselctl [OPTIONS] COMMAND [ARGS]
 *     stats                              figures from the admin API (/v1/stats)
 *     status TENANT EVENT_ID             per-device status and receipts of one event
 *     devices TENANT USER                a user's registered devices
 *     send-test TENANT USER              publish a test message, follow its receipts
 *     dead list | dead replay ID...      dead letters: show, replay
 *     tokens purge TENANT USER           erase a user's devices
 *
 * Redis is reached with the synchronous hiredis API (one connection, made
 * when a command first needs it); the admin API with one plain HTTP/1.1
 * GET. Where they are comes from the options, else from varseld's own
 * configuration file (--config), else from the environment
 * (VARSEL_REDIS_URL, VARSEL_ADMIN, VARSEL_ADMIN_TOKEN), else the defaults.
 *
 * Exit codes: 0 done, 1 the command failed or found nothing, 2 usage.
 * Options may come before or after the command. This file holds main, the
 * option table, the help texts and the resolution of addresses; the
 * commands live in the ctl_*.c files (tools/ctl.h).
 */
#include "tools/ctl.h"

#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "config/config.h"

/* Which command takes which option. */
enum {
    O_TEXT = 1 << 0, O_TIMEOUT = 1 << 1, O_SINCE = 1 << 2, O_COUNT = 1 << 3,
    O_SCAN = 1 << 4, O_TTL = 1 << 5,
};

struct command {
    const char *name;
    int (*run)(struct ctl *c, int argc, char **argv);
    int options;                 /* O_* it accepts */
    const char *help;
};

static const char usage_text[] =
    "usage: varselctl [OPTIONS] COMMAND [ARGS]\n"
    "\n"
    "Commands:\n"
    "  stats                         delivery figures from varseld's admin API\n"
    "  status TENANT EVENT_ID        per-device status and receipts of one event\n"
    "  devices TENANT USER           a user's registered devices (tokens cut)\n"
    "  send-test TENANT USER         send a test message and follow its receipts\n"
    "  dead list                     list dead letters (bad events, given-up deliveries)\n"
    "  dead replay ID...|--since ID  replay dead letters\n"
    "  tokens purge TENANT USER      erase all of a user's devices and tokens\n"
    "  help [COMMAND]                this text, or a command's own\n"
    "\n"
    "Options:\n"
    "  --config FILE      read Redis URL (or Sentinels), prefix, stream and the admin\n"
    "                     address and token from varseld's configuration file\n"
    "  --redis URL        redis://[user:password@]host[:port][/db]\n"
    "                     (default: $VARSEL_REDIS_URL, else " CTL_DEFAULT_REDIS ")\n"
    "  --prefix P         key prefix, as [redis] prefix (default " CTL_DEFAULT_PREFIX ")\n"
    "  --stream S         events stream, as [redis] stream (default " CTL_DEFAULT_STREAM ")\n"
    "  --admin HOST:PORT  admin API (default: $VARSEL_ADMIN, else " CTL_DEFAULT_ADMIN ")\n"
    "  --token T          admin API bearer token (better: $VARSEL_ADMIN_TOKEN or --config)\n"
    "  --json             print JSON instead of tables\n"
    "  -h, --help         help (after a command: that command's help)\n"
    "\n"
    "Exit status: 0 done, 1 failed or not found, 2 usage error.\n";

static const struct command commands[] = {
    { "stats", ctl_cmd_stats, 0,
      "usage: varselctl stats [--admin HOST:PORT] [--token T] [--json]\n"
      "\n"
      "Reads GET /v1/stats from varseld's admin API and shows deliveries by outcome,\n"
      "provider answers, deliveries in flight, the events stream's lag and pending\n"
      "entries, the retry schedule, dead letters and the Redis connections. With\n"
      "several varseld processes, each has its own admin API: ask each one.\n"
      "--json prints the admin API's JSON as it came.\n" },
    { "status", ctl_cmd_status, O_SCAN,
      "usage: varselctl status TENANT EVENT_ID [--scan N] [--json]\n"
      "\n"
      "Shows the event's status hash (one line per user and device: sent,\n"
      "retrying, invalid_token, failed, expired, opened) and its receipts from the\n"
      "receipts stream, newest first. Only the newest N receipts of the stream are\n"
      "searched (--scan, default 10000). Exit 1 when nothing is known about the\n"
      "event (never published, not processed yet, or its status expired).\n" },
    { "devices", ctl_cmd_devices, 0,
      "usage: varselctl devices TENANT USER [--json]\n"
      "\n"
      "Lists the user's registered devices (platform, app, environment, locale,\n"
      "token cut to 8 characters, last update) and the tombstones of devices that\n"
      "logged out or were removed in the last 30 days. Exit 1 when the user has no\n"
      "registered device.\n" },
    { "send-test", ctl_cmd_send_test, O_TEXT | O_TIMEOUT,
      "usage: varselctl send-test TENANT USER [--text TEXT] [--timeout S] [--json]\n"
      "\n"
      "Publishes a message.new event to the events stream, for USER only, with a\n"
      "new id \"varselctl-test-<uuid>\", sender \"varsel\", school \"test\" and TEXT\n"
      "as the subject (the notification's body). Then follows the receipts stream\n"
      "and prints each receipt of that event as it arrives, until every device the\n"
      "user had when it was sent has a final status, or S seconds passed (default\n"
      "30; the event's ttl_s is S too, so it is not delivered long after).\n"
      "Exit 0 when every device got it (sent), 1 otherwise.\n" },
    { "dead", ctl_cmd_dead, O_SINCE | O_COUNT | O_TTL,
      "usage: varselctl dead list [--since ID | --count N] [--json]\n"
      "       varselctl dead replay ID... | --since ID [--ttl S] [--json]\n"
      "\n"
      "A dead letter is either a whole event varseld could not take (kind \"event\":\n"
      "invalid_json, too_large, unsupported_version, unknown_type, missing_field,\n"
      "invalid_field, registry_error; the original entry's fields are kept) or one\n"
      "delivery that gave up (kind \"delivery\": delivery_failed after the last\n"
      "attempt, delivery_expired at the notification's deadline).\n"
      "\n"
      "list: the newest N (default 20), or up to N (default 1000) after --since ID,\n"
      "oldest first.\n"
      "\n"
      "replay: an event is published again to the events stream (a copy of its\n"
      "`event` field). If it is still malformed varseld dead-letters it again; this\n"
      "is said. Deliveries of the event that already have a final status are not\n"
      "sent again. A delivery is put back into the durable retry schedule with a\n"
      "fresh set of attempts, for the device as registered now (a new token is\n"
      "used; a device that logged out is skipped) unless it was sent meanwhile or is\n"
      "scheduled already. This needs the request varseld stored in the dead letter\n"
      "(field retry_data). A delivery whose deadline has passed is skipped unless\n"
      "--ttl S gives it a new one, S seconds from now. --since ID replays every\n"
      "dead letter after ID (up to the newest at the start). Exit 1 when any of\n"
      "them could not be replayed.\n" },
    { "tokens", ctl_cmd_tokens, 0,
      "usage: varselctl tokens purge TENANT USER [--json]\n"
      "\n"
      "Erases all of a user's devices, in one Lua script: each device's token\n"
      "index (" CTL_DEFAULT_PREFIX "token:APP:TOKEN) is removed when it still points at this\n"
      "user, the devices hash is deleted, and each device gets a tombstone with\n"
      "the current time (for 30 days), so a device.register that happened\n"
      "before the purge cannot bring it back; a newer login can. Deliveries\n"
      "already waiting in the retry schedule still go out (until their deadline).\n"
      "Exit 1 when the user had no device.\n" },
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

bool ctl_help(const char *cmd, FILE *fp)
{
    if (cmd == NULL) {
        fputs(usage_text, fp);
        return true;
    }
    const struct command *c = find_command(cmd);
    if (c == NULL)
        return false;
    fputs(c->help, fp);
    return true;
}

/* ---- where things are -------------------------------------------------------------- */

/* "host:port", "[v6]:port" or ":port" into host/port; 0 or -1. */
static int parse_hostport(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL || rb[1] != ':')
            return -1;
        snprintf(host, hostlen, "%.*s", (int)(rb - s - 1), s + 1);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || memchr(s, ':', (size_t)(colon - s)))
            return -1;
        snprintf(host, hostlen, "%.*s", (int)(colon - s), s);
    }
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end != '\0' || p < 1 || p > 65535)
        return -1;
    *port = (int)p;
    /* a wildcard listen address is reached on loopback */
    if (host[0] == '\0' || strcmp(host, "0.0.0.0") == 0)
        snprintf(host, hostlen, "127.0.0.1");
    else if (strcmp(host, "::") == 0)
        snprintf(host, hostlen, "::1");
    return 0;
}

static int resolve(struct ctl *c)
{
    struct config *cfg = NULL;
    char err[1024];
    if (c->o.config_path) {
        log_set_level(LOG_ERROR);
        if (config_load(c->o.config_path, &cfg, err, sizeof err) != 0) {
            ctl_err("%s", err);
            return CTL_FAIL;
        }
    }
    /* Redis */
    const char *url = c->o.redis_url;
    if (url == NULL && cfg == NULL)
        url = getenv("VARSEL_REDIS_URL");
    if (url) {
        if (ctl_redis_url_parse(url, &c->r, err, sizeof err) != 0) {
            ctl_err("--redis: %s", err);
            config_free(cfg);
            return CTL_USAGE;
        }
    } else if (cfg) {
        c->r.host = xstrdup(cfg->redis.host);
        c->r.port = cfg->redis.port;
        c->r.user = cfg->redis.user ? xstrdup(cfg->redis.user) : NULL;
        c->r.password = cfg->redis.password ? xstrdup(cfg->redis.password) : NULL;
        c->r.db = cfg->redis.db;
        if (cfg->redis.n_sentinels > 0) {
            size_t n = cfg->redis.n_sentinels;
            c->r.sentinel_hosts = xcalloc(n, sizeof *c->r.sentinel_hosts);
            c->r.sentinel_ports = xcalloc(n, sizeof *c->r.sentinel_ports);
            for (size_t i = 0; i < n; i++) {
                c->r.sentinel_hosts[i] = xstrdup(cfg->redis.sentinel_hosts[i]);
                c->r.sentinel_ports[i] = cfg->redis.sentinel_ports[i];
            }
            c->r.n_sentinels = n;
            c->r.master_name = xstrdup(cfg->redis.master_name);
            c->r.sentinel_password = cfg->redis.sentinel_password
                ? xstrdup(cfg->redis.sentinel_password) : NULL;
        }
    } else if (ctl_redis_url_parse(CTL_DEFAULT_REDIS, &c->r, err, sizeof err) != 0) {
        ctl_err("%s", err);
        return CTL_FAIL;
    }
    c->prefix = xstrdup(c->o.prefix ? c->o.prefix : cfg ? cfg->redis.prefix : CTL_DEFAULT_PREFIX);
    c->stream = xstrdup(c->o.stream ? c->o.stream : cfg ? cfg->redis.stream : CTL_DEFAULT_STREAM);
    c->status_ttl_s = cfg ? cfg->redis.status_ttl_s : CTL_DEFAULT_STATUS_TTL_S;
    /* admin API */
    /* [admin] listen (an IP literal, maybe a wildcard) and token */
    char cfg_listen[96] = "";
    const char *cfg_token = NULL;
    if (cfg && cfg->admin.enabled) {
        bool v6 = strchr(cfg->admin.host, ':') != NULL;
        snprintf(cfg_listen, sizeof cfg_listen, v6 ? "[%s]:%d" : "%s:%d", cfg->admin.host,
                 cfg->admin.port);
        cfg_token = cfg->admin.token;
    }
    const char *admin = c->o.admin ? c->o.admin : cfg_listen[0] ? cfg_listen
                      : getenv("VARSEL_ADMIN") ? getenv("VARSEL_ADMIN") : CTL_DEFAULT_ADMIN;
    if (parse_hostport(admin, c->admin_host, sizeof c->admin_host, &c->admin_port) != 0) {
        ctl_err("admin address \"%s\": expected HOST:PORT", admin);
        config_free(cfg);
        return CTL_USAGE;
    }
    const char *token = c->o.token ? c->o.token : cfg_token ? cfg_token
                      : getenv("VARSEL_ADMIN_TOKEN");
    c->token = token && token[0] ? xstrdup(token) : NULL;
    config_free(cfg);
    return CTL_OK;
}

/* ---- main ------------------------------------------------------------------------ */

static bool parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    enum { OPT_REDIS = 256, OPT_PREFIX, OPT_STREAM, OPT_ADMIN, OPT_TOKEN, OPT_CONFIG,
           OPT_JSON, OPT_TEXT, OPT_TIMEOUT, OPT_SINCE, OPT_COUNT, OPT_SCAN, OPT_TTL };
    static const struct option opts[] = {
        { "redis", required_argument, NULL, OPT_REDIS },
        { "prefix", required_argument, NULL, OPT_PREFIX },
        { "stream", required_argument, NULL, OPT_STREAM },
        { "admin", required_argument, NULL, OPT_ADMIN },
        { "token", required_argument, NULL, OPT_TOKEN },
        { "config", required_argument, NULL, OPT_CONFIG },
        { "json", no_argument, NULL, OPT_JSON },
        { "text", required_argument, NULL, OPT_TEXT },
        { "timeout", required_argument, NULL, OPT_TIMEOUT },
        { "since", required_argument, NULL, OPT_SINCE },
        { "count", required_argument, NULL, OPT_COUNT },
        { "scan", required_argument, NULL, OPT_SCAN },
        { "ttl", required_argument, NULL, OPT_TTL },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct ctl c;
    memset(&c, 0, sizeof c);
    c.o.timeout_s = -1;
    c.o.count = -1;
    c.o.scan = -1;
    c.o.ttl_s = -1;
    int used = 0; /* O_* given */
    signal(SIGPIPE, SIG_IGN);
    log_set_program("varselctl");

    int o;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        long v;
        switch (o) {
        case OPT_REDIS: c.o.redis_url = optarg; break;
        case OPT_PREFIX: c.o.prefix = optarg; break;
        case OPT_STREAM: c.o.stream = optarg; break;
        case OPT_ADMIN: c.o.admin = optarg; break;
        case OPT_TOKEN: c.o.token = optarg; break;
        case OPT_CONFIG: c.o.config_path = optarg; break;
        case OPT_JSON: c.o.json = true; break;
        case OPT_TEXT: c.o.text = optarg; used |= O_TEXT; break;
        case OPT_TIMEOUT: {
            char *end;
            double t = strtod(optarg, &end);
            if (end == optarg || *end != '\0' || !(t > 0 && t <= 86400)) {
                ctl_err("--timeout: expected seconds (0 < S <= 86400), got \"%s\"", optarg);
                return CTL_USAGE;
            }
            c.o.timeout_s = t;
            used |= O_TIMEOUT;
            break;
        }
        case OPT_SINCE: c.o.since = optarg; used |= O_SINCE; break;
        case OPT_COUNT:
            if (!parse_long(optarg, 1, 1000000, &v)) {
                ctl_err("--count: expected a number 1..1000000, got \"%s\"", optarg);
                return CTL_USAGE;
            }
            c.o.count = v;
            used |= O_COUNT;
            break;
        case OPT_SCAN:
            if (!parse_long(optarg, 1, 100000000, &v)) {
                ctl_err("--scan: expected a number 1..100000000, got \"%s\"", optarg);
                return CTL_USAGE;
            }
            c.o.scan = v;
            used |= O_SCAN;
            break;
        case OPT_TTL:
            if (!parse_long(optarg, 1, 2419200, &v)) {
                ctl_err("--ttl: expected seconds 1..2419200, got \"%s\"", optarg);
                return CTL_USAGE;
            }
            c.o.ttl_s = v;
            used |= O_TTL;
            break;
        case 'h': c.o.help = true; break;
        case ':':
            ctl_err("%s needs a value (see varselctl --help)", argv[optind - 1]);
            return CTL_USAGE;
        default:
            ctl_err("unknown option %s (see varselctl --help)", argv[optind - 1]);
            return CTL_USAGE;
        }
    }
    int nargs = argc - optind;
    char **args = argv + optind;
    if (nargs == 0) {
        if (c.o.help) {
            ctl_help(NULL, stdout);
            return CTL_OK;
        }
        fputs(usage_text, stderr);
        return CTL_USAGE;
    }
    if (strcmp(args[0], "help") == 0) {
        if (nargs > 2) {
            ctl_err("usage: varselctl help [COMMAND]");
            return CTL_USAGE;
        }
        if (!ctl_help(nargs == 2 ? args[1] : NULL, stdout)) {
            ctl_err("no command \"%s\" (see varselctl --help)", args[1]);
            return CTL_USAGE;
        }
        return CTL_OK;
    }
    const struct command *cmd = find_command(args[0]);
    if (cmd == NULL) {
        ctl_err("no command \"%s\" (see varselctl --help)", args[0]);
        return CTL_USAGE;
    }
    if (c.o.help) {
        fputs(cmd->help, stdout);
        return CTL_OK;
    }
    static const struct { int bit; const char *name; } names[] = {
        { O_TEXT, "--text" }, { O_TIMEOUT, "--timeout" }, { O_SINCE, "--since" },
        { O_COUNT, "--count" }, { O_SCAN, "--scan" }, { O_TTL, "--ttl" },
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if ((used & names[i].bit) && !(cmd->options & names[i].bit)) {
            ctl_err("%s does not apply to %s (see varselctl %s --help)", names[i].name,
                    cmd->name, cmd->name);
            return CTL_USAGE;
        }
    }
    int rc = resolve(&c);
    if (rc == CTL_OK)
        rc = cmd->run(&c, nargs - 1, args + 1);
    if (c.rc)
        redisFree(c.rc);
    ctl_redis_addr_free(&c.r);
    free(c.prefix);
    free(c.stream);
    if (c.token) {
        memset(c.token, 0, strlen(c.token));
        free(c.token);
    }
    fflush(stdout);
    return rc;
}
