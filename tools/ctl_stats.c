/*
 * `varselctl stats`: GET /v1/stats from the admin API and a readable
 * summary of it. The JSON is daemon/stats.h's rendering
 *   {"families":{NAME:{"type","help","series":[{"labels":{..},"value"}]}},
 *    "version","uptime_s","pipeline":{..},"admin":{..}}
 * Series are summed over the labels not shown.
 */
#include "tools/ctl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

static const cJSON *family(const cJSON *root, const char *name)
{
    const cJSON *fams = cJSON_GetObjectItemCaseSensitive(root, "families");
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(fams, name);
    return cJSON_GetObjectItemCaseSensitive(f, "series");
}

static const char *label(const cJSON *series, const char *name)
{
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(series, "labels"), name);
    return cJSON_IsString(l) ? l->valuestring : "";
}

static double value(const cJSON *series)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(series, "value");
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* Sum of a family, optionally only the series whose |lname| is |lval|. */
static double sum(const cJSON *root, const char *fam, const char *lname, const char *lval,
                  bool *present)
{
    double s = 0;
    const cJSON *x;
    bool any = false;
    cJSON_ArrayForEach(x, family(root, fam)) {
        if (lname && strcmp(label(x, lname), lval) != 0)
            continue;
        s += value(x);
        any = true;
    }
    if (present)
        *present = any;
    return s;
}

/* Totals of |fam| grouped by the label values |lnames| joined with ' '. */
struct group {
    char *key;
    double v;
};

static size_t group_by(const cJSON *root, const char *fam, const char *const *lnames,
                       size_t nl, struct group **out)
{
    struct group *g = NULL;
    size_t n = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, family(root, fam)) {
        char key[512] = "";
        for (size_t i = 0; i < nl; i++) {
            const char *l = label(x, lnames[i]);
            if (l[0] == '\0')
                continue;
            size_t kl = strlen(key);
            snprintf(key + kl, sizeof key - kl, "%s%s", kl ? " " : "", l);
        }
        size_t k = 0;
        while (k < n && strcmp(g[k].key, key) != 0)
            k++;
        if (k == n) {
            g = xrealloc(g, (n + 1) * sizeof *g);
            g[n].key = xstrdup(key);
            g[n].v = 0;
            n++;
        }
        g[k].v += value(x);
    }
    *out = g;
    return n;
}

static void free_groups(struct group *g, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(g[i].key);
    free(g);
}

static int cmp_group(const void *a, const void *b)
{
    const struct group *x = a, *y = b;
    if (x->v != y->v)
        return x->v < y->v ? 1 : -1;
    return strcmp(x->key, y->key);
}

static const char *num(double v, char *buf, size_t len)
{
    if (v == floor(v) && fabs(v) < 1e15)
        snprintf(buf, len, "%.0f", v);
    else
        snprintf(buf, len, "%.3f", v);
    return buf;
}

static void row(struct ctl_table *t, const char *what, double v, const char *note)
{
    char b[48];
    const char *cells[] = { what, num(v, b, sizeof b), note ? note : "" };
    ctl_table_add(t, cells);
}

/* One table of |fam| summed by its labels |lnames| (rows sorted when |sort|);
 * nothing when the family has no series. */
static void group_table(const cJSON *root, const char *fam, const char *const *lnames,
                        size_t nl, const char *title, const char *vhead, bool sort)
{
    struct group *g;
    size_t n = group_by(root, fam, lnames, nl, &g);
    if (n) {
        if (sort)
            qsort(g, n, sizeof *g, cmp_group);
        struct ctl_table *t = ctl_table_new(2, (const char *const[]){ title, vhead });
        for (size_t i = 0; i < n; i++) {
            char b[48];
            ctl_table_add(t, (const char *const[]){ g[i].key, num(g[i].v, b, sizeof b) });
        }
        ctl_table_print(t, stdout, 0);
        printf("\n");
    }
    free_groups(g, n);
}

int ctl_cmd_stats(struct ctl *c, int argc, char **argv)
{
    if (argc != 0) {
        ctl_err("stats takes no arguments (see varselctl stats --help)");
        return CTL_USAGE;
    }
    char *body = NULL;
    size_t len = 0;
    int status = ctl_http_get(c, "/v1/stats", &body, &len);
    if (status < 0)
        return CTL_FAIL;
    if (status != 200) {
        char *p = ctl_printable(body, len, 200);
        ctl_err("admin API: GET /v1/stats answered %d%s%s%s", status, p[0] ? ": " : "", p,
                status == 401 || status == 403 ? " (wrong or missing --token?)" : "");
        free(p);
        free(body);
        return CTL_FAIL;
    }
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (!cJSON_IsObject(root) || !cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(root, "families"))) {
        ctl_err("admin API: /v1/stats is not the expected JSON");
        cJSON_Delete(root);
        free(body);
        return CTL_FAIL;
    }
    if (c->o.json) {
        fwrite(body, 1, len, stdout);
        if (len == 0 || body[len - 1] != '\n')
            fputc('\n', stdout);
        cJSON_Delete(root);
        free(body);
        return CTL_OK;
    }
    free(body);

    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "version");
    const cJSON *up = cJSON_GetObjectItemCaseSensitive(root, "uptime_s");
    printf("varseld %s at %s:%d", cJSON_IsString(ver) ? ver->valuestring : "?", c->admin_host,
           c->admin_port);
    if (cJSON_IsNumber(up)) {
        long s = (long)up->valuedouble;
        printf(", up %ldd %02ldh %02ldm %02lds", s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    }
    printf("\n\n");

    struct ctl_table *t = ctl_table_new(3, (const char *const[]){ "DELIVERIES", "TOTAL", "" });
    static const char *const outcomes[] = { "sent", "retrying", "invalid_token", "failed",
                                            "expired" };
    double all = 0;
    for (size_t i = 0; i < sizeof outcomes / sizeof outcomes[0]; i++) {
        double v = sum(root, "varsel_deliveries_total", "outcome", outcomes[i], NULL);
        all += v;
        row(t, outcomes[i], v, NULL);
    }
    row(t, "all outcomes", all, "(retrying counts each scheduled retry)");
    ctl_table_print(t, stdout, 0);
    printf("\n");

    t = ctl_table_new(3, (const char *const[]){ "NOW", "VALUE", "" });
    char note[300];
    row(t, "in flight", sum(root, "varsel_deliveries_inflight", NULL, NULL, NULL),
        "sent to a provider, no answer yet");
    row(t, "events in progress", sum(root, "varsel_events_in_progress", NULL, NULL, NULL), NULL);
    /* Measured from Redis every few seconds: absent right after a start. */
    bool have;
    double lag = sum(root, "varsel_stream_lag", NULL, NULL, &have);
    snprintf(note, sizeof note, "entries of the events stream not yet read by the group");
    if (have)
        row(t, "stream lag", lag, note);
    else
        ctl_table_add(t, (const char *const[]){ "stream lag", "-", "not measured yet" });
    double pend = sum(root, "varsel_stream_pending", NULL, NULL, &have);
    if (have)
        row(t, "stream pending", pend, "read, not yet acknowledged");
    else
        ctl_table_add(t, (const char *const[]){ "stream pending", "-", "not measured yet" });
    row(t, "retry schedule", sum(root, "varsel_retry_scheduled", NULL, NULL, NULL),
        "deliveries waiting for their next attempt");
    row(t, "dead-letter stream", sum(root, "varsel_dead_letter_stream_length", NULL, NULL, NULL),
        "entries now (varselctl dead list)");
    ctl_table_print(t, stdout, 0);
    printf("\n");

    group_table(root, "varsel_dead_letters_total", (const char *const[]){ "code" }, 1,
                "DEAD LETTERS WRITTEN", "TOTAL", true);
    group_table(root, "varsel_provider_responses_total",
                (const char *const[]){ "provider", "status", "reason" }, 3, "PROVIDER ANSWERS",
                "TOTAL", true);
    group_table(root, "varsel_provider_connections",
                (const char *const[]){ "provider", "app", "environment" }, 3,
                "PROVIDER CONNECTIONS", "OPEN", false);

    const cJSON *x;
    printf("Redis:");
    bool any = false;
    cJSON_ArrayForEach(x, family(root, "varsel_redis_connected")) {
        printf(" %s %s", label(x, "connection"), value(x) >= 1 ? "up" : "DOWN");
        any = true;
    }
    printf("%s\n", any ? "" : " (unknown)");
    cJSON_Delete(root);
    return CTL_OK;
}
