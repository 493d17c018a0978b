/* Answers counted by name; see counts.h. */
#include "sandbox/counts.h"

#include <stdio.h>
#include <string.h>

void sbx_counts_add(struct sbx_counts *c, const char *name)
{
    for (size_t i = 0; i < c->n; i++) {
        if (strncmp(c->v[i].name, name, sizeof c->v[i].name - 1) == 0) {
            c->v[i].count++;
            return;
        }
    }
    if (c->n < SBX_COUNTS_MAX) {
        snprintf(c->v[c->n].name, sizeof c->v[c->n].name, "%s", name);
        c->v[c->n++].count = 1;
    }
}

cJSON *sbx_counts_json(const struct sbx_counts *c)
{
    cJSON *o = cJSON_CreateObject();
    for (size_t i = 0; i < c->n; i++)
        cJSON_AddNumberToObject(o, c->v[i].name, (double)c->v[i].count);
    return o;
}
