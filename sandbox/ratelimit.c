/*
 * Per-key rate limits (see ratelimit.h).
 *
 * Layout. A table is a fixed array of chain heads (a power of two >= the
 * key capacity, so chains stay short without ever rehashing) and one
 * doubly linked list of its keys in order of last use, newest first. Each
 * key is one allocation: links, hash, one GCRA state per limit and the key
 * bytes.
 *
 * GCRA. For a limit with interval T and burst B, a key's state is its
 * theoretical arrival time TAT: the time at which its bucket would be full
 * again. A request at t passes when max(TAT, t) - t <= T * (B - 1); it then
 * sets TAT = max(TAT, t) + T. Otherwise it must wait
 * max(TAT, t) - T * (B - 1) - t. TAT <= t means a full bucket, which is
 * also what a key the table has never seen has, so forgetting such a key
 * changes nothing.
 *
 * Bounded work. Every request looks at the two least recently used keys
 * and forgets them if they are idle (all buckets full), then does one
 * lookup. When the table is full, the least recently used key makes room.
 */
#include "sandbox/ratelimit.h"

#include "common/util.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct rate_key {
    struct rate_key *chain;             /* next in the hash chain */
    struct rate_key *newer, *older;     /* use order */
    uint64_t hash;
    int64_t tat_us[SBX_RATE_MAX_LIMITS]; /* bucket full again at; <= now: full */
    size_t len;
    char key[];                         /* |len| bytes, not NUL-terminated */
};

struct sbx_rate {
    struct sbx_rate_limit limits[SBX_RATE_MAX_LIMITS];
    size_t nlimits;
    struct rate_key **heads;
    size_t mask;                        /* heads - 1 */
    struct rate_key *newest, *oldest;
    uint64_t seed;
    struct sbx_rate_stats st;
};

#define SWEEP_PER_REQUEST 2             /* idle keys looked at per request */

static uint64_t hash_bytes(uint64_t seed, const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL ^ seed;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h ^ (h >> 29);
}

struct sbx_rate *sbx_rate_new(const struct sbx_rate_limit *limits, size_t n, size_t max_keys)
{
    if (n == 0)
        return NULL;
    if (n > SBX_RATE_MAX_LIMITS)
        n = SBX_RATE_MAX_LIMITS;
    struct sbx_rate *r = xcalloc(1, sizeof *r);
    memcpy(r->limits, limits, n * sizeof *limits);
    r->nlimits = n;
    r->st.max_keys = max_keys ? max_keys : SBX_RATE_DEFAULT_KEYS;
    size_t heads = 16;
    while (heads < r->st.max_keys)
        heads *= 2;
    r->heads = xcalloc(heads, sizeof *r->heads);
    r->mask = heads - 1;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    r->seed = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)r;
    return r;
}

void sbx_rate_free(struct sbx_rate *r)
{
    if (r == NULL)
        return;
    struct rate_key *k = r->newest;
    while (k) {
        struct rate_key *older = k->older;
        free(k);
        k = older;
    }
    free(r->heads);
    free(r);
}

static void list_unlink(struct sbx_rate *r, struct rate_key *k)
{
    if (k->newer)
        k->newer->older = k->older;
    else
        r->newest = k->older;
    if (k->older)
        k->older->newer = k->newer;
    else
        r->oldest = k->newer;
    k->newer = k->older = NULL;
}

static void list_push_newest(struct sbx_rate *r, struct rate_key *k)
{
    k->newer = NULL;
    k->older = r->newest;
    if (r->newest)
        r->newest->newer = k;
    r->newest = k;
    if (r->oldest == NULL)
        r->oldest = k;
}

/* Forget |k|: out of its chain and the use list, freed. */
static void drop(struct sbx_rate *r, struct rate_key *k)
{
    struct rate_key **pp = &r->heads[k->hash & r->mask];
    while (*pp != k)
        pp = &(*pp)->chain;
    *pp = k->chain;
    list_unlink(r, k);
    free(k);
    r->st.keys--;
}

static bool idle(const struct sbx_rate *r, const struct rate_key *k, int64_t now_us)
{
    for (size_t i = 0; i < r->nlimits; i++)
        if (k->tat_us[i] > now_us)
            return false;
    return true;
}

/* sbx_rate_take and sbx_rate_peek: the lookup and the check; |commit|
 * takes the message when every bucket has room. */
static int take_or_peek(struct sbx_rate *r, const char *key, size_t len, unsigned mask,
                        int64_t now_ms, int64_t *wait_ms, bool commit)
{
    int64_t now = now_ms * 1000;
    for (int i = 0; i < SWEEP_PER_REQUEST && r->oldest && idle(r, r->oldest, now); i++) {
        drop(r, r->oldest);
        r->st.evicted_idle++;
    }

    uint64_t h = hash_bytes(r->seed, key, len);
    struct rate_key *k = r->heads[h & r->mask];
    while (k && !(k->hash == h && k->len == len && memcmp(k->key, key, len) == 0))
        k = k->chain;
    if (k == NULL) {
        if (r->st.keys >= r->st.max_keys && r->oldest) {
            if (idle(r, r->oldest, now))
                r->st.evicted_idle++;
            else
                r->st.evicted_active++;
            drop(r, r->oldest);
        }
        k = xcalloc(1, sizeof *k + len);
        k->hash = h;
        k->len = len;
        memcpy(k->key, key, len);
        k->chain = r->heads[h & r->mask];
        r->heads[h & r->mask] = k;
        list_push_newest(r, k);
        if (++r->st.keys > r->st.peak_keys)
            r->st.peak_keys = r->st.keys;
    } else if (k != r->newest) {
        list_unlink(r, k);
        list_push_newest(r, k);
    }

    int refused = -1;
    int64_t longest = 0;
    for (size_t i = 0; i < r->nlimits; i++) {
        if (!(mask & (1u << i)))
            continue;
        const struct sbx_rate_limit *l = &r->limits[i];
        int64_t tolerance = l->interval_us * (int64_t)(l->burst - 1);
        int64_t tat = k->tat_us[i] > now ? k->tat_us[i] : now;
        if (tat - now > tolerance && tat - tolerance - now > longest) {
            longest = tat - tolerance - now;
            refused = (int)i;
        }
    }
    if (refused >= 0) {
        r->st.limited[refused]++;
        int64_t ms = (longest + 999) / 1000;
        *wait_ms = ms < 1 ? 1 : ms;
        return refused;
    }
    if (!commit)
        return -1;
    for (size_t i = 0; i < r->nlimits; i++) {
        if (!(mask & (1u << i)))
            continue;
        int64_t tat = k->tat_us[i] > now ? k->tat_us[i] : now;
        k->tat_us[i] = tat + r->limits[i].interval_us;
    }
    r->st.allowed++;
    return -1;
}

int sbx_rate_take(struct sbx_rate *r, const char *key, size_t len, unsigned mask,
                  int64_t now_ms, int64_t *wait_ms)
{
    return take_or_peek(r, key, len, mask, now_ms, wait_ms, true);
}

int sbx_rate_peek(struct sbx_rate *r, const char *key, size_t len, unsigned mask,
                  int64_t now_ms, int64_t *wait_ms)
{
    return take_or_peek(r, key, len, mask, now_ms, wait_ms, false);
}

const struct sbx_rate_limit *sbx_rate_limit_at(const struct sbx_rate *r, int index)
{
    return index >= 0 && (size_t)index < r->nlimits ? &r->limits[index] : NULL;
}

const struct sbx_rate_stats *sbx_rate_stats(const struct sbx_rate *r)
{
    return &r->st;
}

cJSON *sbx_rate_summary(const struct sbx_rate *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "allowed", (double)r->st.allowed);
    cJSON *lim = cJSON_AddObjectToObject(o, "limited");
    for (size_t i = 0; i < r->nlimits; i++)
        cJSON_AddNumberToObject(lim, r->limits[i].name, (double)r->st.limited[i]);
    cJSON_AddNumberToObject(o, "keys", (double)r->st.keys);
    cJSON_AddNumberToObject(o, "peak_keys", (double)r->st.peak_keys);
    cJSON_AddNumberToObject(o, "max_keys", (double)r->st.max_keys);
    cJSON_AddNumberToObject(o, "evicted_idle", (double)r->st.evicted_idle);
    cJSON_AddNumberToObject(o, "evicted_active", (double)r->st.evicted_active);
    return o;
}

/* ---- parsing ------------------------------------------------------------------- */

int sbx_rate_parse(const char *spec, const char *prefix, struct sbx_rate_limit *out,
                   char *err, size_t errlen)
{
    const char *p = spec;
    char *end;
    if (!isdigit((unsigned char)*p))
        goto bad;
    errno = 0;
    unsigned long long n = strtoull(p, &end, 10);
    if (errno || *end != '/' || n < 1 || n > 100000000ULL)
        goto bad;
    p = end + 1;
    unsigned long long count = 1;
    if (isdigit((unsigned char)*p)) {
        count = strtoull(p, &end, 10);
        if (errno || count < 1 || count > 86400)
            goto bad;
        p = end;
    }
    unsigned long long unit;
    const char *unit_word;
    if (strcmp(p, "s") == 0) {
        unit = 1;
        unit_word = count == 1 ? "second" : "seconds";
    } else if (strcmp(p, "min") == 0) {
        unit = 60;
        unit_word = count == 1 ? "minute" : "minutes";
    } else if (strcmp(p, "h") == 0) {
        unit = 3600;
        unit_word = count == 1 ? "hour" : "hours";
    } else {
        goto bad;
    }
    unsigned long long period_s = count * unit;
    if (period_s > 86400)
        goto bad;
    int64_t interval = (int64_t)((period_s * 1000000ULL) / n);
    if (interval < 1) {
        snprintf(err, errlen, "rate \"%s\" is over 1,000,000 per second", spec);
        return -1;
    }
    memset(out, 0, sizeof *out);
    out->burst = (uint32_t)n;
    out->interval_us = interval;
    char per[24];
    if (count == 1)
        snprintf(per, sizeof per, "%s", p);
    else
        snprintf(per, sizeof per, "%llu%s", count, p);
    snprintf(out->name, sizeof out->name, "%s%s%llu/%s", prefix ? prefix : "",
             prefix && prefix[0] ? " " : "", n, per);
    if (count == 1)
        snprintf(out->text, sizeof out->text, "%llu per %s", n, unit_word);
    else
        snprintf(out->text, sizeof out->text, "%llu per %llu %s", n, count, unit_word);
    return 0;
bad:
    snprintf(err, errlen, "a rate is N/s, N/min, N/h or N/COUNTs|min|h (e.g. 240/min, "
                          "10/30s; N 1..100000000, at most 24 h), got \"%s\"", spec);
    return -1;
}

int sbx_rate_parse_list(const char *arg, const char *prefix, struct sbx_rate_limit *out,
                        size_t *n, char *err, size_t errlen)
{
    if (strcmp(arg, "off") == 0 || strcmp(arg, "0") == 0) {
        *n = 0;
        return 0;
    }
    struct sbx_rate_limit tmp[SBX_RATE_MAX_LIST];
    size_t k = 0;
    char *copy = xstrdup(arg), *save = NULL;
    int rc = 0;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (k == SBX_RATE_MAX_LIST) {
            snprintf(err, errlen, "at most %d rates, got \"%s\"", SBX_RATE_MAX_LIST, arg);
            rc = -1;
            break;
        }
        if ((rc = sbx_rate_parse(t, prefix, &tmp[k], err, errlen)) < 0)
            break;
        k++;
    }
    free(copy);
    if (rc == 0 && k == 0) {
        snprintf(err, errlen, "want off or RATE[,RATE...], got \"%s\"", arg);
        rc = -1;
    }
    if (rc < 0)
        return -1;
    memcpy(out, tmp, k * sizeof *tmp);
    *n = k;
    return 0;
}

void sbx_rate_collapsible(struct sbx_rate_limit *out, uint32_t burst, uint32_t refill_s)
{
    memset(out, 0, sizeof *out);
    out->burst = burst;
    out->interval_us = (int64_t)refill_s * 1000000;
    snprintf(out->name, sizeof out->name, "collapsible %" PRIu32 "+1/%" PRIu32 "s", burst,
             refill_s);
    snprintf(out->text, sizeof out->text,
             "%" PRIu32 " collapsible messages in a burst, then 1 per %" PRIu32 " seconds",
             burst, refill_s);
}

/* ---- command-line options ---------------------------------------------------------- */

const char *const sbx_device_limits_option_names[] = {
    "fcm-device-rate", "fcm-device-rate-limit", "fcm-collapsible-burst",
    "fcm-collapsible-refill", "apns-device-rate", NULL,
};

void sbx_device_limits_init(struct sbx_device_limits *l)
{
    char err[160];
    memset(l, 0, sizeof *l);
    if (sbx_rate_parse_list(SBX_FCM_DEVICE_RATE_DEFAULT, "device", l->fcm, &l->nfcm, err,
                            sizeof err) < 0 ||
        sbx_rate_parse_list(SBX_APNS_DEVICE_RATE_DEFAULT, "device", l->apns, &l->napns, err,
                            sizeof err) < 0)
        abort(); /* the defaults are constants */
    l->collapsible_burst = SBX_FCM_COLLAPSIBLE_BURST_DEFAULT;
    l->collapsible_refill_s = SBX_FCM_COLLAPSIBLE_REFILL_DEFAULT;
    sbx_rate_collapsible(&l->collapsible, l->collapsible_burst, l->collapsible_refill_s);
    l->has_collapsible = true;
}

static long long int_arg(const char *name, const char *arg, long long max, char *err,
                         size_t errlen)
{
    char *end;
    errno = 0;
    long long v = strtoll(arg, &end, 10);
    if (errno || end == arg || *end || v < 1 || v > max) {
        snprintf(err, errlen, "--%s wants an integer 1..%lld%s, got \"%s\"", name, max,
                 strcmp(name, "fcm-collapsible-burst") == 0 ? " or off" : "", arg);
        return -1;
    }
    return v;
}

int sbx_device_limits_option(struct sbx_device_limits *l, const char *name, const char *arg,
                             char *err, size_t errlen)
{
    char e[200];
    if (strcmp(name, "fcm-device-rate") == 0 || strcmp(name, "apns-device-rate") == 0) {
        bool fcm = name[0] == 'f';
        if (sbx_rate_parse_list(arg, "device", fcm ? l->fcm : l->apns,
                                fcm ? &l->nfcm : &l->napns, e, sizeof e) < 0) {
            snprintf(err, errlen, "--%s: %s", name, e);
            return -1;
        }
        if (fcm)
            l->fcm_given = true;
        else
            l->apns_given = true;
        return 1;
    }
    if (strcmp(name, "fcm-device-rate-limit") == 0) {
        long long v = int_arg(name, arg, 100000000, err, errlen);
        if (v < 0)
            return -1;
        char spec[32];
        snprintf(spec, sizeof spec, "%lld/min", v);
        if (sbx_rate_parse(spec, "device", &l->fcm[0], err, errlen) < 0)
            return -1;
        l->nfcm = 1;
        l->fcm_given = true;
        return 1;
    }
    if (strcmp(name, "fcm-collapsible-burst") == 0) {
        if (strcmp(arg, "off") == 0 || strcmp(arg, "0") == 0) {
            l->has_collapsible = false;
        } else {
            long long v = int_arg(name, arg, 1000000, err, errlen);
            if (v < 0)
                return -1;
            l->collapsible_burst = (uint32_t)v;
            l->has_collapsible = true;
        }
        sbx_rate_collapsible(&l->collapsible, l->collapsible_burst, l->collapsible_refill_s);
        l->collapsible_given = true;
        return 1;
    }
    if (strcmp(name, "fcm-collapsible-refill") == 0) {
        long long v = int_arg(name, arg, 86400, err, errlen);
        if (v < 0)
            return -1;
        l->collapsible_refill_s = (uint32_t)v;
        sbx_rate_collapsible(&l->collapsible, l->collapsible_burst, l->collapsible_refill_s);
        l->collapsible_given = true;
        return 1;
    }
    return 0;
}

void sbx_device_limits_bench(struct sbx_device_limits *l)
{
    if (!l->fcm_given)
        l->nfcm = 0;
    if (!l->collapsible_given)
        l->has_collapsible = false;
    if (!l->apns_given)
        l->napns = 0;
}

/* "240/min,5000/h": the names of |n| limits without their prefix. */
static void join_rates(const struct sbx_rate_limit *v, size_t n, char *buf, size_t len)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && o < len; i++) {
        const char *s = strchr(v[i].name, ' ');
        int w = snprintf(buf + o, len - o, "%s%s", i ? "," : "", s ? s + 1 : v[i].name);
        if (w < 0)
            break;
        o += (size_t)w;
    }
}

void sbx_device_limits_describe(const struct sbx_device_limits *l, char *buf, size_t len)
{
    char fcm[120], apns[120];
    join_rates(l->fcm, l->nfcm, fcm, sizeof fcm);
    join_rates(l->apns, l->napns, apns, sizeof apns);
    snprintf(buf, len, "FCM %s, %s; APNs %s", l->nfcm ? fcm : "off",
             l->has_collapsible ? l->collapsible.name : "collapsible off",
             l->napns ? apns : "off");
}
