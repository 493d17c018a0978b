/*
 * Answers counted by name ("200", "BadDeviceToken", "invalid_grant" ...)
 * for a service's summary. A fixed table: names past its size are not
 * counted (a service has a few dozen answers at most).
 */
#ifndef VARSEL_SANDBOX_COUNTS_H
#define VARSEL_SANDBOX_COUNTS_H

#include <cJSON.h>
#include <stddef.h>
#include <stdint.h>

#define SBX_COUNTS_MAX 48

struct sbx_counts {
    struct {
        char name[48];
        uint64_t count;
    } v[SBX_COUNTS_MAX];
    size_t n;
};

/* Count one answer named |name| (cut to 47 bytes). */
void sbx_counts_add(struct sbx_counts *c, const char *name);

/* The counts as a JSON object, name -> count. */
cJSON *sbx_counts_json(const struct sbx_counts *c);

#endif
