/*
 * Redis Streams commands for the consumer group, and the parser that copies
 * entries out of hiredis replies (replies die when their callback returns).
 */
#include "queue/stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

/*
 * Trim the events stream below what every consumer group still needs: the
 * smallest of each group's oldest pending id and last-delivered id. Other
 * groups on the same stream are respected. KEYS: stream. Reply: the number
 * of entries removed (approximate trimming: whole macro nodes only).
 */
static const char trim_lua[] =
    "local function parse(id)\n"
    "  local ms, seq = string.match(id, '^(%d+)-(%d+)$')\n"
    "  return tonumber(ms), tonumber(seq)\n"
    "end\n"
    "local function less(a, b)\n"
    "  local am, as = parse(a)\n"
    "  local bm, bs = parse(b)\n"
    "  return am < bm or (am == bm and as < bs)\n"
    "end\n"
    "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end\n"
    "local groups = redis.call('XINFO', 'GROUPS', KEYS[1])\n"
    "if #groups == 0 then return 0 end\n"
    "local min = nil\n"
    "for _, g in ipairs(groups) do\n"
    "  local name, last\n"
    "  for i = 1, #g, 2 do\n"
    "    if g[i] == 'name' then name = g[i + 1] end\n"
    "    if g[i] == 'last-delivered-id' then last = g[i + 1] end\n"
    "  end\n"
    "  if last and (min == nil or less(last, min)) then min = last end\n"
    "  local p = redis.call('XPENDING', KEYS[1], name)\n"
    "  if p[1] > 0 and (min == nil or less(p[2], min)) then min = p[2] end\n"
    "end\n"
    "if min == nil or min == '0-0' then return 0 end\n"
    "return redis.call('XTRIM', KEYS[1], 'MINID', '~', min)\n";

static struct redis_script trim_script;
static int trim_ready;

void stream_init(struct redis_conn *c)
{
    if (!trim_ready) {
        redis_script_init(&trim_script, trim_lua);
        trim_ready = 1;
    }
    redis_conn_add_script(c, &trim_script);
}

int stream_trim(struct redis_conn *c, const char *stream, redisCallbackFn *fn, void *priv)
{
    const char *argv[] = { stream };
    return redis_conn_eval(c, &trim_script, fn, priv, 1, 1, argv, NULL);
}

void stream_entry_free(struct stream_entry *e)
{
    if (e == NULL)
        return;
    for (size_t i = 0; i < e->n_fields; i++) {
        free(e->fields[i].name);
        free(e->fields[i].value);
    }
    free(e->fields);
    free(e->id);
    memset(e, 0, sizeof *e);
}

const struct stream_field *stream_entry_field(const struct stream_entry *e, const char *name)
{
    for (size_t i = 0; i < e->n_fields; i++)
        if (strcmp(e->fields[i].name, name) == 0)
            return &e->fields[i];
    return NULL;
}

static int64_t id_ms(const char *id)
{
    return (int64_t)strtoll(id, NULL, 10);
}

size_t stream_parse_entries(const redisReply *arr, struct stream_entry **out)
{
    *out = NULL;
    if (arr == NULL || arr->type != REDIS_REPLY_ARRAY || arr->elements == 0)
        return 0;
    struct stream_entry *v = xcalloc(arr->elements, sizeof *v);
    size_t n = 0;
    for (size_t i = 0; i < arr->elements; i++) {
        const redisReply *ent = arr->element[i];
        if (ent->type != REDIS_REPLY_ARRAY || ent->elements < 1 ||
            ent->element[0]->type != REDIS_REPLY_STRING)
            continue;
        struct stream_entry *e = &v[n++];
        e->id = xstrndup(ent->element[0]->str, ent->element[0]->len);
        e->ms = id_ms(e->id);
        if (ent->elements < 2 || ent->element[1]->type != REDIS_REPLY_ARRAY)
            continue;
        const redisReply *kv = ent->element[1];
        size_t nf = kv->elements / 2;
        e->fields = xcalloc(nf ? nf : 1, sizeof *e->fields);
        for (size_t f = 0; f < nf; f++) {
            const redisReply *k = kv->element[2 * f], *val = kv->element[2 * f + 1];
            if (k->type != REDIS_REPLY_STRING || val->type != REDIS_REPLY_STRING)
                continue;
            struct stream_field *sf = &e->fields[e->n_fields++];
            sf->name = xstrndup(k->str, k->len);
            sf->value = xstrndup(val->str, val->len);
            sf->len = val->len;
        }
    }
    *out = v;
    return n;
}

int stream_create_group(struct redis_conn *c, const char *stream, const char *group,
                        redisCallbackFn *fn, void *priv)
{
    const char *argv[] = { "XGROUP", "CREATE", stream, group, "0", "MKSTREAM" };
    return redis_conn_cmd_argv(c, fn, priv, 6, argv, NULL);
}

int stream_read(struct redis_conn *c, const char *stream, const char *group,
                const char *consumer, int count, int block_ms, const char *id,
                redisCallbackFn *fn, void *priv)
{
    char scount[16], sblock[16];
    snprintf(scount, sizeof scount, "%d", count);
    snprintf(sblock, sizeof sblock, "%d", block_ms);
    const char *argv[12];
    int n = 0;
    argv[n++] = "XREADGROUP";
    argv[n++] = "GROUP";
    argv[n++] = group;
    argv[n++] = consumer;
    argv[n++] = "COUNT";
    argv[n++] = scount;
    if (block_ms >= 0) {
        argv[n++] = "BLOCK";
        argv[n++] = sblock;
    }
    argv[n++] = "STREAMS";
    argv[n++] = stream;
    argv[n++] = id;
    return redis_conn_cmd_argv(c, fn, priv, n, argv, NULL);
}

int stream_autoclaim(struct redis_conn *c, const char *stream, const char *group,
                     const char *consumer, long min_idle_ms, const char *start,
                     int count, redisCallbackFn *fn, void *priv)
{
    char sidle[24], scount[16];
    snprintf(sidle, sizeof sidle, "%ld", min_idle_ms);
    snprintf(scount, sizeof scount, "%d", count);
    const char *argv[] = { "XAUTOCLAIM", stream, group, consumer, sidle, start,
                           "COUNT", scount };
    return redis_conn_cmd_argv(c, fn, priv, 8, argv, NULL);
}

int stream_touch(struct redis_conn *c, const char *stream, const char *group,
                 const char *consumer, const char *const *ids, size_t n,
                 redisCallbackFn *fn, void *priv)
{
    const char **argv = xmalloc((n + 6) * sizeof *argv);
    int k = 0;
    argv[k++] = "XCLAIM";
    argv[k++] = stream;
    argv[k++] = group;
    argv[k++] = consumer;
    argv[k++] = "0";
    for (size_t i = 0; i < n; i++)
        argv[k++] = ids[i];
    argv[k++] = "JUSTID";
    int rc = redis_conn_cmd_argv(c, fn, priv, k, argv, NULL);
    free(argv);
    return rc;
}

int stream_ack(struct redis_conn *c, const char *stream, const char *group,
               const char *id, redisCallbackFn *fn, void *priv)
{
    const char *argv[] = { "XACK", stream, group, id };
    return redis_conn_cmd_argv(c, fn, priv, 4, argv, NULL);
}

int stream_dead_letter(struct redis_conn *c, const char *dead_stream, long maxlen,
                       const char *source_stream, const char *consumer,
                       const struct stream_entry *e, const char *code,
                       const char *reason, redisCallbackFn *fn, void *priv)
{
    char smax[24], sat[24];
    snprintf(smax, sizeof smax, "%ld", maxlen);
    snprintf(sat, sizeof sat, "%lld", (long long)now_ms());
    size_t n = 18 + 2 * e->n_fields;
    const char **argv = xmalloc(n * sizeof *argv);
    size_t *lens = xmalloc(n * sizeof *lens);
    size_t k = 0;
#define ARG(s) do { argv[k] = (s); lens[k] = strlen(s); k++; } while (0)
    ARG("XADD"); ARG(dead_stream); ARG("MAXLEN"); ARG("~"); ARG(smax); ARG("*");
    ARG("reason"); ARG(reason); ARG("code"); ARG(code);
    ARG("source_stream"); ARG(source_stream); ARG("source_id"); ARG(e->id);
    ARG("consumer"); ARG(consumer); ARG("at"); ARG(sat);
#undef ARG
    for (size_t i = 0; i < e->n_fields; i++) {
        argv[k] = e->fields[i].name;
        lens[k++] = strlen(e->fields[i].name);
        argv[k] = e->fields[i].value;
        lens[k++] = e->fields[i].len;
    }
    int rc = redis_conn_cmd_argv(c, fn, priv, (int)k, argv, lens);
    free(argv);
    free(lens);
    return rc;
}
