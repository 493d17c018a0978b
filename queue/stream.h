/*
 * The events stream and its consumer group: group creation, batched reads
 * (XREADGROUP), take-over of idle entries (XAUTOCLAIM), keeping our own
 * entries fresh (XCLAIM JUSTID), acknowledgement (with WAIT for replicas
 * when asked), dead letters, and the group's membership (a lease on the
 * consumer name; removing consumers gone for good).
 *
 * Reads use a connection of their own (a blocking XREADGROUP holds its
 * connection); everything else goes over the command connection.
 */
#ifndef VARSEL_STREAM_H
#define VARSEL_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

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

/* ---- acknowledgement, with WAIT when replicas must have the writes ---------
 *
 * With wait_replicas > 0 an entry is acknowledged only after
 * WAIT wait_replicas wait_timeout_ms, sent on the connection that carried
 * all of the entry's writes, says that many replicas have them: a write
 * that only the master had is gone after a failover, and an acknowledged
 * entry is never replayed. Entries ready at the same moment share one WAIT
 * (it holds the connection until the replicas answer). When WAIT counts
 * fewer replicas, the entries stay queued and WAIT is tried again after a
 * pause; when the connection changed since an entry's first write (a
 * reconnect, a failover), no WAIT can cover that write any more and the
 * entry fails: it stays pending and is replayed (settled deliveries are
 * skipped, lost ones sent again).
 *
 * With wait_replicas == 0 this is a plain XACK per entry.
 */
struct stream_acker;

struct stream_acker_config {
    const char *stream, *group;  /* copied */
    int wait_replicas;           /* 0 = no WAIT */
    int wait_timeout_ms;         /* WAIT's timeout (it blocks the connection) */
};

/* |ok|: acknowledged (or found already acknowledged); otherwise the entry
 * is still pending and |why| says why. */
typedef void (*stream_ack_cb)(void *priv, bool ok, const char *why);

struct stream_acker *stream_acker_new(uv_loop_t *loop, struct redis_conn *c,
                                      const struct stream_acker_config *cfg);

/*
 * Acknowledge |id| (copied) whose writes were all sent on |c| under
 * connection epoch |epoch| (redis_conn_epoch when the first was sent).
 * Returns 0 and calls |cb| once later, or -1 when it cannot be done (not
 * connected, or the epoch is over); |cb| is then never called.
 */
int stream_acker_ack(struct stream_acker *a, const char *id, uint64_t epoch,
                     stream_ack_cb cb, void *priv);

/* Figures for /metrics (monotonic). */
struct stream_acker_counts {
    uint64_t waits_ok;           /* WAIT reached wait_replicas */
    uint64_t waits_short;        /* WAIT counted fewer: not acknowledged yet */
    uint64_t waits_failed;       /* WAIT got an error or no answer */
    uint64_t already_acked;      /* XACK found the entry no longer pending */
};
void stream_acker_counts(const struct stream_acker *a, struct stream_acker_counts *out);

/* Drop queued entries without calling their callbacks (the owner is going
 * away; close the connection first so nothing is outstanding) and free
 * |a| once its timer is closed. */
void stream_acker_free(struct stream_acker *a);

/* ---- membership: a unique consumer name, and removing consumers gone ---------
 *
 * A process reads only while it holds the lease on its consumer name
 * (<prefix>consumer:<group>:<name>, value "HOST PID RANDOM", expiring after
 * lease_ms, renewed every third of it). A second process configured with the
 * same name waits, and says so, until the first stops (a clean stop drops
 * the lease) or dies (the lease runs out): two processes under one name
 * would take each other's pending entries for their own.
 *
 * Every sweep interval, consumers of the group other than this one that
 * have no pending entry, have been idle at least gone_ms and hold no name
 * lease are removed (XGROUP DELCONSUMER), in one script so no entry can be
 * handed to one of them in between: a removed consumer with pending
 * entries would lose them.
 */
struct stream_member;

struct stream_member_config {
    const char *stream, *group, *consumer, *prefix; /* copied */
    int64_t lease_ms;            /* name lease lifetime; tick at most a third of it */
    int64_t gone_ms;             /* 0 = never remove other consumers */
};

/* |on_change| is called when the name is won or lost. A timer of its own
 * renews the lease (a third of lease_ms) or, without the name, tries again
 * every second. */
struct stream_member *stream_member_new(uv_loop_t *loop, struct redis_conn *c,
                                        const struct stream_member_config *cfg,
                                        void (*on_change)(void *arg), void *arg);

/* Renew (or try to win) the name lease when due; now and then sweep. Also
 * call it on every (re)connect of |c|: reading waits for the answer. */
void stream_member_tick(struct stream_member *m);

/* true while this process holds its consumer name. */
bool stream_member_holds_name(const struct stream_member *m);

/* Clean stop: drop the lease so a restart under the same name reads at
 * once; no more renewals. */
void stream_member_leave(struct stream_member *m);

/* true while the lease's removal is on its way (do not close the
 * connection yet: the command would be lost with it). */
bool stream_member_leaving(const struct stream_member *m);

/* Free (once its timer is closed); close the connection first:
 * outstanding replies reference |m|. */
void stream_member_free(struct stream_member *m);

#endif
