/*
 * The status page served at GET / by the admin server (daemon/admin.c): one
 * self-contained HTML document with inline CSS, JavaScript and SVG charts,
 * no external requests. It polls /v1/stats every 2 s (sending the bearer
 * token it was opened with, /?token=...), keeps the last 5 minutes in
 * memory and shows the delivery rate per outcome, the outcome totals, the
 * publish-to-accept latency (p50/p90 from the histogram buckets) and the
 * backlog. Every number has a stable id and its raw value in data-value
 * (docs/admin.md lists them) for tests and scripts.
 */
#ifndef VARSEL_STATUS_PAGE_H
#define VARSEL_STATUS_PAGE_H

#include <stddef.h>

extern const char status_page_html[];
extern const size_t status_page_html_len;

#endif
