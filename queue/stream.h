/*
 * The events stream and its consumer group: group creation, batched reads
 * (XREADGROUP), take-over of idle entries (XAUTOCLAIM), keeping our own
 * entries fresh (XCLAIM JUSTID), acknowledgement and dead letters.
 *
 * Reads use a connection of their own (a blocking XREADGROUP holds its
 * connection); everything else goes over the command connection.
 */
#ifndef VARSEL_STREAM_H
#define VARSEL_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "queue/redis.h"

struct stream_field {
    char *name;
    char *value;
    size_t len;
};

/* One stream entry, copied out of the reply and owned by the caller. */
struct stream_entry {
    char *id;                  /* "1732780800000-0" */
    int64_t ms;                /* publish time from the id */
    struct stream_field *fields;
    size_t n_fields;
};

void stream_entry_free(struct stream_entry *e);
/* The value of field |name|, or NULL. */
const struct stream_field *stream_entry_field(const struct stream_entry *e, const char *name);

/*
 * Parse an array of entries as XREADGROUP / XRANGE / XAUTOCLAIM return them
 * ([[id, [f, v, ...]], ...]). Entries whose fields are nil (deleted from
 * the stream while pending) come back with n_fields 0 and fields NULL.
 * Returns the number of entries stored in a new array in |*out|.
 */
size_t stream_parse_entries(const redisReply *arr, struct stream_entry **out);

/* Register this module's scripts with |c| (once per connection object). */
void stream_init(struct redis_conn *c);

/*
 * XTRIM the stream MINID ~ below the oldest entry any consumer group still
 * needs (pending, or not yet delivered). Reply: entries removed.
 */
int stream_trim(struct redis_conn *c, const char *stream, redisCallbackFn *fn, void *priv);

/* XGROUP CREATE stream group 0 MKSTREAM; BUSYGROUP counts as success. */
int stream_create_group(struct redis_conn *c, const char *stream, const char *group,
                        redisCallbackFn *fn, void *priv);

/*
 * XREADGROUP GROUP group consumer COUNT count [BLOCK block_ms] STREAMS stream id.
 * |id| is ">" for new entries, or an id for this consumer's own pending ones.
 * |block_ms| < 0 means no BLOCK.
 */
int stream_read(struct redis_conn *c, const char *stream, const char *group,
                const char *consumer, int count, int block_ms, const char *id,
                redisCallbackFn *fn, void *priv);

/* XAUTOCLAIM stream group consumer min_idle_ms start COUNT count. */
int stream_autoclaim(struct redis_conn *c, const char *stream, const char *group,
                     const char *consumer, long min_idle_ms, const char *start,
                     int count, redisCallbackFn *fn, void *priv);

/* XCLAIM stream group consumer 0 id... JUSTID: reset the idle time of
 * entries this process still works on, so no one takes them over. */
int stream_touch(struct redis_conn *c, const char *stream, const char *group,
                 const char *consumer, const char *const *ids, size_t n,
                 redisCallbackFn *fn, void *priv);

/* XACK stream group id. */
int stream_ack(struct redis_conn *c, const char *stream, const char *group,
               const char *id, redisCallbackFn *fn, void *priv);

/*
 * XADD <dead> MAXLEN ~ maxlen * reason R code C source_stream S source_id ID
 * consumer N at MS, then the entry's own fields.
 */
int stream_dead_letter(struct redis_conn *c, const char *dead_stream, long maxlen,
                       const char *source_stream, const char *consumer,
                       const struct stream_entry *e, const char *code,
                       const char *reason, redisCallbackFn *fn, void *priv);

#endif
