/*
 * Fault injection for varsel-sandbox, shared by every fake provider.
 *
 * Faults are a small table of rules, each "with probability PCT do KIND".
 * A request draws one number in [0,100) and walks the rules, so the rates
 * are exclusive and add up to at most 100. Connection-level knobs (GOAWAY
 * after N streams, fixed latency) sit beside the table. A provider calls
 * sbx_faults_pick() once per request that it would otherwise answer with
 * success and turns the rule into its own wire format (APNs reason strings,
 * FCM error bodies).
 *
 * The random source is a seeded xorshift generator (--seed), so a failing
 * chaos run can be replayed.
 */
#ifndef VARSEL_SANDBOX_FAULTS_H
#define VARSEL_SANDBOX_FAULTS_H

#include <stddef.h>
#include <stdint.h>

enum sbx_fault_kind {
    SBX_FAULT_STATUS = 1, /* answer |status| (+ Retry-After) instead of success */
    SBX_FAULT_TCP_RESET,  /* drop the TCP connection with RST, no answer */
    SBX_FAULT_RST_STREAM, /* RST_STREAM INTERNAL_ERROR on this stream only */
    SBX_FAULT_HANG,       /* never answer (the client's timeout must fire) */
};

#define SBX_FAULTS_MAX 16

struct sbx_fault_rule {
    enum sbx_fault_kind kind;
    int status;          /* SBX_FAULT_STATUS: HTTP status (400..599) */
    double pct;          /* probability in percent, 0 < pct <= 100 */
    int retry_after_s;   /* Retry-After seconds, or -1 for none */
    char reason[48];     /* explicit reason ("" = the provider's default) */
    uint64_t fired;      /* how many times this rule was picked */
};

struct sbx_faults {
    struct sbx_fault_rule rules[SBX_FAULTS_MAX];
    size_t n;
    double total_pct;        /* sum of rules[].pct, <= 100 */
    unsigned goaway_every;   /* GOAWAY {"reason":"Shutdown"} after N requests per connection; 0 = off */
    unsigned latency_ms;     /* delay before every answer */
    uint64_t rng;            /* xorshift64 state, never 0 */
};

/* Reset |f| to "no faults" with random seed |seed| (0 picks a fixed one). */
void sbx_faults_init(struct sbx_faults *f, uint64_t seed);

/*
 * Apply one command-line option |name| (without the leading "--") with
 * argument |arg|. Known names:
 *   fault-rate STATUS:PCT[:RETRY_AFTER[:REASON]]   e.g. 503:5, 429:1:30
 *   reset-rate PCT        TCP reset instead of an answer
 *   rst-stream-rate PCT   RST_STREAM INTERNAL_ERROR instead of an answer
 *   hang-rate PCT         never answer
 *   goaway-every N        GOAWAY after the Nth request of each connection
 *   latency-ms N          delay every answer by N ms
 * Returns 1 if applied, 0 if |name| is not a fault option, -1 with |err|
 * filled when the argument is invalid or the rates exceed 100 in total.
 */
int sbx_faults_option(struct sbx_faults *f, const char *name, const char *arg,
                      char *err, size_t errlen);

/* Names accepted by sbx_faults_option, NULL-terminated (for --help). */
extern const char *const sbx_faults_option_names[];

/*
 * Draw once: returns the rule to apply (its |fired| counter incremented) or
 * NULL for "answer normally".
 */
const struct sbx_fault_rule *sbx_faults_pick(struct sbx_faults *f);

/* Next raw random number (shared generator; for tests and jitter). */
uint64_t sbx_faults_rand(struct sbx_faults *f);

/* Short name of a rule for logs and the record, e.g. "503", "tcp-reset". */
const char *sbx_fault_name(const struct sbx_fault_rule *r, char *buf, size_t len);

#endif
