/*
 * Fault rules: parsing of the command-line knobs and the per-request draw.
 * Adding a fault kind means one enum value, one row in option_table and one
 * case in the provider that interprets it.
 */
#include "sandbox/faults.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sbx_faults_init(struct sbx_faults *f, uint64_t seed)
{
    memset(f, 0, sizeof *f);
    f->rng = seed ? seed : 0x9e3779b97f4a7c15ULL;
}

uint64_t sbx_faults_rand(struct sbx_faults *f)
{
    /* xorshift64* */
    uint64_t x = f->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    f->rng = x;
    return x * 0x2545f4914f6cdd1dULL;
}

/* Parse a percentage in (0, 100]. */
static int parse_pct(const char *s, size_t len, double *out)
{
    char buf[32];
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    double v = strtod(buf, &end);
    if (errno || *end != '\0' || !(v > 0.0) || v > 100.0)
        return -1;
    *out = v;
    return 0;
}

/* Parse a non-negative decimal integer no larger than |max|. */
static int parse_uint(const char *s, size_t len, long max, long *out)
{
    if (len == 0 || len > 9)
        return -1;
    long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

static int add_rule(struct sbx_faults *f, const struct sbx_fault_rule *r,
                    char *err, size_t errlen)
{
    if (f->n == SBX_FAULTS_MAX) {
        snprintf(err, errlen, "more than %d fault rules", SBX_FAULTS_MAX);
        return -1;
    }
    if (f->total_pct + r->pct > 100.0 + 1e-9) {
        snprintf(err, errlen, "fault rates add up to more than 100%%");
        return -1;
    }
    f->rules[f->n++] = *r;
    f->total_pct += r->pct;
    return 1;
}

/* fault-rate STATUS:PCT[:RETRY_AFTER[:REASON]] */
static int opt_fault_rate(struct sbx_faults *f, const char *arg, char *err, size_t errlen)
{
    const char *part[4] = { 0 };
    size_t plen[4] = { 0 }, np = 0;
    const char *p = arg;
    while (np < 4) {
        const char *c = np < 3 ? strchr(p, ':') : NULL;
        part[np] = p;
        plen[np] = c ? (size_t)(c - p) : strlen(p);
        np++;
        if (c == NULL)
            break;
        p = c + 1;
    }
    struct sbx_fault_rule r = { .kind = SBX_FAULT_STATUS, .retry_after_s = -1 };
    long v;
    if (np < 2 || parse_uint(part[0], plen[0], 599, &v) < 0 || v < 400)
        goto bad;
    r.status = (int)v;
    if (parse_pct(part[1], plen[1], &r.pct) < 0)
        goto bad;
    if (np >= 3 && plen[2] > 0) {
        if (parse_uint(part[2], plen[2], 86400, &v) < 0)
            goto bad;
        r.retry_after_s = (int)v;
    }
    if (np == 4) {
        if (plen[3] == 0 || plen[3] >= sizeof r.reason)
            goto bad;
        memcpy(r.reason, part[3], plen[3]);
        r.reason[plen[3]] = '\0';
    }
    return add_rule(f, &r, err, errlen);
bad:
    snprintf(err, errlen, "--fault-rate wants STATUS:PCT[:RETRY_AFTER[:REASON]] "
             "with STATUS 400-599 and 0<PCT<=100, got \"%s\"", arg);
    return -1;
}

static int opt_kind_rate(struct sbx_faults *f, enum sbx_fault_kind kind, const char *name,
                         const char *arg, char *err, size_t errlen)
{
    struct sbx_fault_rule r = { .kind = kind, .retry_after_s = -1 };
    if (parse_pct(arg, strlen(arg), &r.pct) < 0) {
        snprintf(err, errlen, "--%s wants a percentage 0<PCT<=100, got \"%s\"", name, arg);
        return -1;
    }
    return add_rule(f, &r, err, errlen);
}

static int opt_uint(unsigned *target, const char *name, long max, const char *arg,
                    char *err, size_t errlen)
{
    long v;
    if (parse_uint(arg, strlen(arg), max, &v) < 0) {
        snprintf(err, errlen, "--%s wants an integer 0..%ld, got \"%s\"", name, max, arg);
        return -1;
    }
    *target = (unsigned)v;
    return 1;
}

enum opt_id { OPT_FAULT_RATE, OPT_RESET, OPT_RST_STREAM, OPT_HANG, OPT_GOAWAY, OPT_LATENCY };

static const struct {
    const char *name;
    enum opt_id id;
} option_table[] = {
    { "fault-rate", OPT_FAULT_RATE },
    { "reset-rate", OPT_RESET },
    { "rst-stream-rate", OPT_RST_STREAM },
    { "hang-rate", OPT_HANG },
    { "goaway-every", OPT_GOAWAY },
    { "latency-ms", OPT_LATENCY },
};

const char *const sbx_faults_option_names[] = {
    "fault-rate", "reset-rate", "rst-stream-rate", "hang-rate", "goaway-every",
    "latency-ms", NULL,
};

int sbx_faults_option(struct sbx_faults *f, const char *name, const char *arg,
                      char *err, size_t errlen)
{
    for (size_t i = 0; i < sizeof option_table / sizeof option_table[0]; i++) {
        if (strcmp(name, option_table[i].name) != 0)
            continue;
        switch (option_table[i].id) {
        case OPT_FAULT_RATE: return opt_fault_rate(f, arg, err, errlen);
        case OPT_RESET: return opt_kind_rate(f, SBX_FAULT_TCP_RESET, name, arg, err, errlen);
        case OPT_RST_STREAM: return opt_kind_rate(f, SBX_FAULT_RST_STREAM, name, arg, err, errlen);
        case OPT_HANG: return opt_kind_rate(f, SBX_FAULT_HANG, name, arg, err, errlen);
        case OPT_GOAWAY: return opt_uint(&f->goaway_every, name, 100000000, arg, err, errlen);
        case OPT_LATENCY: return opt_uint(&f->latency_ms, name, 600000, arg, err, errlen);
        }
    }
    return 0;
}

const struct sbx_fault_rule *sbx_faults_pick(struct sbx_faults *f)
{
    if (f->n == 0)
        return NULL;
    /* Uniform in [0, 100) with 1e-6 resolution. */
    double x = (double)(sbx_faults_rand(f) % 100000000ULL) / 1000000.0;
    double acc = 0;
    for (size_t i = 0; i < f->n; i++) {
        acc += f->rules[i].pct;
        if (x < acc) {
            f->rules[i].fired++;
            return &f->rules[i];
        }
    }
    return NULL;
}

const char *sbx_fault_name(const struct sbx_fault_rule *r, char *buf, size_t len)
{
    switch (r->kind) {
    case SBX_FAULT_STATUS: snprintf(buf, len, "%d", r->status); break;
    case SBX_FAULT_TCP_RESET: snprintf(buf, len, "tcp-reset"); break;
    case SBX_FAULT_RST_STREAM: snprintf(buf, len, "rst-stream"); break;
    case SBX_FAULT_HANG: snprintf(buf, len, "hang"); break;
    default: snprintf(buf, len, "?"); break;
    }
    return buf;
}
