/*
 * Statistics registry: the families of stats.h, their labeled series in an
 * open-addressing hash table keyed by (family, label values), and the two
 * renderings (Prometheus text, JSON) generated from the same table.
 *
 * Series are allocated on first use and live until stats_free. Label
 * values are copied (truncated to 127 bytes). When STATS_MAX_SERIES is
 * reached, a new series' "tenant" label (or, without one, every label) is
 * replaced by "_other" so the table stays bounded.
 */
#include "daemon/stats.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

enum ftype { COUNTER, GAUGE, HISTOGRAM };

struct family {
    const char *name, *labels, *help;
    enum ftype type;
    int n_labels;
    char label_names[STATS_MAX_LABELS][32];
};

static struct family families[STATS_FAMILY_COUNT] = {
#define STATS_INIT_(id, nm, ty, lb, hp) { nm, lb, hp, ty, 0, { { 0 } } },
    STATS_FAMILIES(STATS_INIT_)
#undef STATS_INIT_
};

static const double buckets[] = { STATS_BUCKETS };
#define N_BUCKETS (sizeof buckets / sizeof buckets[0])

struct series {
    int family;                    /* -1 = empty slot */
    uint32_t hash;
    char *labels[STATS_MAX_LABELS];
    double value;                  /* counter / gauge; histogram sum */
    uint64_t count;                /* histogram */
    uint64_t bucket[N_BUCKETS];    /* histogram, not cumulative */
};

#define TABLE_SIZE (STATS_MAX_SERIES * 2)

static struct series *table;
static size_t n_series;
/* Per family, the series found last: the hot paths (one delivery after
 * another of the same app, tenant and outcome) compare its labels and skip
 * hashing and probing. */
static struct series *recent[STATS_FAMILY_COUNT];
static char version_str[64];

struct collector {
    stats_collector_fn fn;
    void *arg;
};
static struct collector collectors[16];
static int n_collectors;

static uint32_t fnv(uint32_t h, const char *s)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return (h ^ 0xff) * 16777619u;
}

void stats_init(const char *version)
{
    if (table)
        return;
    table = xcalloc(TABLE_SIZE, sizeof *table);
    for (size_t i = 0; i < TABLE_SIZE; i++)
        table[i].family = -1;
    for (int f = 0; f < STATS_FAMILY_COUNT; f++) {
        struct family *fm = &families[f];
        const char *p = fm->labels;
        while (*p && fm->n_labels < STATS_MAX_LABELS) {
            const char *e = strchr(p, ',');
            size_t n = e ? (size_t)(e - p) : strlen(p);
            snprintf(fm->label_names[fm->n_labels++], sizeof fm->label_names[0], "%.*s",
                     (int)n, p);
            p = e ? e + 1 : p + n;
        }
    }
    snprintf(version_str, sizeof version_str, "%s", version ? version : "unknown");
    const char *v[] = { version_str };
    stats_set(STATS_BUILD_INFO, v, 1);
}

void stats_free(void)
{
    if (!table)
        return;
    for (size_t i = 0; i < TABLE_SIZE; i++)
        for (int k = 0; k < STATS_MAX_LABELS; k++)
            free(table[i].labels[k]);
    free(table);
    table = NULL;
    memset(recent, 0, sizeof recent);
    n_series = 0;
    n_collectors = 0;
}

static const char *val(const char *const *values, int i)
{
    return values && values[i] ? values[i] : "";
}

static bool same(const struct series *s, int f, const char *const *values)
{
    if (s->family != f)
        return false;
    for (int i = 0; i < families[f].n_labels; i++)
        if (strcmp(s->labels[i], val(values, i)) != 0)
            return false;
    return true;
}

static struct series *lookup_slow(int f, const char *const *values);

/* Find or create the series; NULL only before stats_init. */
static struct series *lookup(int f, const char *const *values)
{
    if (!table)
        return NULL;
    struct series *r = recent[f];
    if (r && same(r, f, values))
        return r;
    r = lookup_slow(f, values);
    recent[f] = r;
    return r;
}

static struct series *lookup_slow(int f, const char *const *values)
{
    const char *folded[STATS_MAX_LABELS];
    const struct family *fm = &families[f];
    uint32_t h = 2166136261u ^ (uint32_t)f;
    for (int i = 0; i < fm->n_labels; i++)
        h = fnv(h, val(values, i));
    for (int pass = 0; pass < 2; pass++) {
        size_t i = h % TABLE_SIZE;
        for (;;) {
            struct series *s = &table[i];
            if (s->family < 0)
                break;
            if (s->hash == h && same(s, f, values))
                return s;
            i = (i + 1) % TABLE_SIZE;
        }
        if (n_series < STATS_MAX_SERIES || pass == 1) {
            if (n_series >= TABLE_SIZE - 1)
                return NULL;
            struct series *s = &table[i];
            s->family = f;
            s->hash = h;
            for (int k = 0; k < fm->n_labels; k++)
                s->labels[k] = xstrndup(val(values, k), strnlen(val(values, k), 127));
            n_series++;
            return s;
        }
        /* Table full: fold the tenant (or everything) into "_other". */
        bool has_tenant = false;
        for (int k = 0; k < fm->n_labels; k++)
            has_tenant |= strcmp(fm->label_names[k], "tenant") == 0;
        h = 2166136261u ^ (uint32_t)f;
        for (int k = 0; k < fm->n_labels; k++) {
            bool fold = !has_tenant || strcmp(fm->label_names[k], "tenant") == 0;
            folded[k] = fold ? "_other" : val(values, k);
            h = fnv(h, folded[k]);
        }
        values = folded;
    }
    return NULL;
}

void stats_add(enum stats_family f, const char *const *values, double v)
{
    struct series *s = lookup((int)f, values);
    if (s)
        s->value += v;
}

void stats_set(enum stats_family f, const char *const *values, double v)
{
    struct series *s = lookup((int)f, values);
    if (s)
        s->value = v;
}

void stats_observe(enum stats_family f, const char *const *values, double v)
{
    struct series *s = lookup((int)f, values);
    if (!s)
        return;
    s->value += v;
    s->count++;
    for (size_t b = 0; b < N_BUCKETS; b++) {
        if (v <= buckets[b]) {
            s->bucket[b]++;
            break;
        }
    }
}

void stats_delivery(const char *app, const char *platform, const char *tenant,
                    const char *outcome)
{
    const char *v[] = { app, platform, tenant, outcome };
    stats_add(STATS_DELIVERIES, v, 1);
}

void stats_provider_answer(const char *provider, const char *app, int status,
                           const char *reason)
{
    char st[24];
    fmt_i64(st, status);
    const char *v[] = { provider, app, st, reason };
    stats_add(STATS_PROVIDER_RESPONSES, v, 1);
}

void stats_add_collector(stats_collector_fn fn, void *arg)
{
    if (n_collectors < (int)(sizeof collectors / sizeof collectors[0]))
        collectors[n_collectors++] = (struct collector){ fn, arg };
}

static void collect(void)
{
    for (int i = 0; i < n_collectors; i++)
        collectors[i].fn(collectors[i].arg);
}

/* ---- Prometheus text ---------------------------------------------------- */

struct buf {
    char *p;
    size_t len, cap;
};

static void put(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct buf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        b->cap = b->cap * 2 + (n > 0 ? (size_t)n : 0) + 256;
        b->p = xrealloc(b->p, b->cap);
    }
}

/* Label value escaping per the exposition format: \\, \" and \n. */
static void put_escaped(struct buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            put(b, "\\\\");
        else if (*s == '"')
            put(b, "\\\"");
        else if (*s == '\n')
            put(b, "\\n");
        else
            put(b, "%c", *s);
    }
}

static void put_labels(struct buf *b, const struct family *fm, const struct series *s,
                       const char *extra_name, const char *extra_value)
{
    if (fm->n_labels == 0 && !extra_name)
        return;
    put(b, "{");
    for (int k = 0; k < fm->n_labels; k++) {
        put(b, "%s%s=\"", k ? "," : "", fm->label_names[k]);
        put_escaped(b, s->labels[k]);
        put(b, "\"");
    }
    if (extra_name)
        put(b, "%s%s=\"%s\"", fm->n_labels ? "," : "", extra_name, extra_value);
    put(b, "}");
}

static void put_num(struct buf *b, double v)
{
    if (isinf(v))
        put(b, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15)
        put(b, "%.0f", v);
    else
        put(b, "%.6g", v);
}

char *stats_render_prometheus(size_t *len)
{
    collect();
    struct buf b = { xmalloc(8192), 0, 8192 };
    b.p[0] = '\0';
    static const char *const types[] = { "counter", "gauge", "histogram" };
    for (int f = 0; f < STATS_FAMILY_COUNT; f++) {
        const struct family *fm = &families[f];
        bool any = false;
        for (size_t i = 0; table && i < TABLE_SIZE; i++) {
            const struct series *s = &table[i];
            if (s->family != f)
                continue;
            if (!any) {
                put(&b, "# HELP %s %s\n# TYPE %s %s\n", fm->name, fm->help, fm->name,
                    types[fm->type]);
                any = true;
            }
            if (fm->type != HISTOGRAM) {
                put(&b, "%s", fm->name);
                put_labels(&b, fm, s, NULL, NULL);
                put(&b, " ");
                put_num(&b, s->value);
                put(&b, "\n");
                continue;
            }
            uint64_t cum = 0;
            for (size_t k = 0; k < N_BUCKETS; k++) {
                char le[32];
                cum += s->bucket[k];
                snprintf(le, sizeof le, "%g", buckets[k]);
                put(&b, "%s_bucket", fm->name);
                put_labels(&b, fm, s, "le", le);
                put(&b, " %llu\n", (unsigned long long)cum);
            }
            put(&b, "%s_bucket", fm->name);
            put_labels(&b, fm, s, "le", "+Inf");
            put(&b, " %llu\n", (unsigned long long)s->count);
            put(&b, "%s_sum", fm->name);
            put_labels(&b, fm, s, NULL, NULL);
            put(&b, " ");
            put_num(&b, s->value);
            put(&b, "\n%s_count", fm->name);
            put_labels(&b, fm, s, NULL, NULL);
            put(&b, " %llu\n", (unsigned long long)s->count);
        }
    }
    *len = b.len;
    return b.p;
}

cJSON *stats_render_json(void)
{
    collect();
    static const char *const types[] = { "counter", "gauge", "histogram" };
    cJSON *root = cJSON_CreateObject();
    cJSON *fams = cJSON_AddObjectToObject(root, "families");
    for (int f = 0; f < STATS_FAMILY_COUNT; f++) {
        const struct family *fm = &families[f];
        cJSON *o = cJSON_AddObjectToObject(fams, fm->name);
        cJSON_AddStringToObject(o, "type", types[fm->type]);
        cJSON_AddStringToObject(o, "help", fm->help);
        cJSON *arr = cJSON_AddArrayToObject(o, "series");
        for (size_t i = 0; table && i < TABLE_SIZE; i++) {
            const struct series *s = &table[i];
            if (s->family != f)
                continue;
            cJSON *so = cJSON_CreateObject();
            cJSON *lb = cJSON_AddObjectToObject(so, "labels");
            for (int k = 0; k < fm->n_labels; k++)
                cJSON_AddStringToObject(lb, fm->label_names[k], s->labels[k]);
            if (fm->type == HISTOGRAM) {
                cJSON *bk = cJSON_AddObjectToObject(so, "buckets");
                uint64_t cum = 0;
                for (size_t k = 0; k < N_BUCKETS; k++) {
                    char le[32];
                    cum += s->bucket[k];
                    snprintf(le, sizeof le, "%g", buckets[k]);
                    cJSON_AddNumberToObject(bk, le, (double)cum);
                }
                cJSON_AddNumberToObject(so, "sum", s->value);
                cJSON_AddNumberToObject(so, "count", (double)s->count);
            } else {
                cJSON_AddNumberToObject(so, "value", s->value);
            }
            cJSON_AddItemToArray(arr, so);
        }
    }
    return root;
}
