/*
 * Redis Sentinel client for one monitored master: where is the master now,
 * and tell me when it moves.
 *
 *   lookup  asks the Sentinels in turn (starting with the one that answered
 *           last) SENTINEL get-master-addr-by-name; the first address given
 *           is the answer. Each Sentinel gets a bounded time to connect and
 *           answer; when none answers the answer is "none".
 *   watch   keeps one subscription to +switch-master on one Sentinel (the
 *           next one after a failure) and reports the new address of our
 *           master; after every (re)subscription it also reports the
 *           master's current address, so a switch missed while the
 *           subscription was down is seen too.
 *
 * The caller (queue/redis.c) still checks with ROLE that the address it
 * was given is a master: a Sentinel can lag behind a failover.
 *
 * Sentinel addresses are IP literals (hiredis would resolve a name with a
 * blocking getaddrinfo). The Sentinel password is sent with AUTH and never
 * logged.
 */
#ifndef VARSEL_SENTINEL_H
#define VARSEL_SENTINEL_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

struct sentinel;

struct sentinel_config {
    const char *const *hosts;   /* IPv4 or IPv6 literals, |n| of them */
    const int *ports;
    size_t n;                   /* >= 1 */
    const char *master_name;    /* as in "sentinel monitor NAME ..." */
    const char *password;       /* Sentinel requirepass; NULL for none */
};

/* An address of the master (|host| borrowed for the call), or host NULL
 * when no Sentinel answered. */
typedef void (*sentinel_addr_cb)(void *priv, const char *host, int port);

/*
 * Start watching (|on_moved| is called with the master's address whenever
 * a Sentinel announces it or a subscription starts). |name| prefixes log
 * lines. Copies |cfg|. Never fails.
 */
struct sentinel *sentinel_new(uv_loop_t *loop, const struct sentinel_config *cfg,
                              const char *name, sentinel_addr_cb on_moved, void *priv);

/*
 * Ask for the master's address. |cb| is called exactly once (from the loop,
 * never from inside this call) unless sentinel_free comes first. Returns 0, or -1 when a lookup is already running.
 */
int sentinel_lookup(struct sentinel *s, sentinel_addr_cb cb, void *priv);

/* Stop everything; no callback fires afterwards. |s| is freed once libuv
 * has closed its handles. */
void sentinel_free(struct sentinel *s);

#endif
