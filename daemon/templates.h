/*
 * Localized notification text: one INI file per locale (nb.ini, nn.ini,
 * en.ini) with a section per notification type and keys `title`, `body`
 * and the optional `body_preview`. docs/templates.md describes the format,
 * the fields each type may use and the privacy rule (no absence reasons).
 *
 * A loaded set is immutable; render it from any number of call sites. To
 * reload (SIGHUP), load a new set and free the old one when nothing uses it.
 */
#ifndef VARSEL_TEMPLATES_H
#define VARSEL_TEMPLATES_H

#include <stdbool.h>
#include <stddef.h>

#include "queue/event.h"

struct templates;

/* Longest rendered title or body in bytes; longer text is cut with "…". */
#define TEMPLATES_TEXT_MAX 2048

/*
 * Load and validate nb.ini, nn.ini and en.ini from |dir|. Every locale must
 * define all five notification types, every placeholder must name a field
 * its type allows, and every line must fit the INI parser's line limit.
 * Returns 0 and a new set in |*out| (free with templates_free), or -1 with
 * a message naming the file, section and key (or line) in |err|.
 */
int templates_load(const char *dir, struct templates **out, char *err,
                   size_t errlen);

/* Free a set from templates_load; NULL is allowed. */
void templates_free(struct templates *t);

/*
 * Render the title and body of notification event |ev| in |locale|
 * ("nb", "nn", "en" or a tag such as "nb-NO"; NULL or unsupported → "nb").
 * On success returns 0 and malloc'd NUL-terminated UTF-8 strings in |*title|
 * and |*body| (the caller frees both). Returns -1, leaving both NULL, when
 * |ev| is not a notification type or the text renders empty.
 */
int templates_render(const struct templates *t, const struct event *ev,
                     const char *locale, char **title, char **body);

/*
 * Like templates_render, but when |preview| is true and the type defines
 * `body_preview`, that key is used for the body instead of `body` (for
 * tenants that allow message previews; off by default).
 */
int templates_render_opts(const struct templates *t, const struct event *ev,
                          const char *locale, bool preview, char **title,
                          char **body);

/*
 * Rendered texts of one event, per locale: every device of an event in the
 * same locale shows the same title and body, so a large event renders each
 * locale once instead of once per device. The cache holds one event (the
 * last one asked for); asking for another replaces it.
 */
struct templates_cache;
struct templates_cache *templates_cache_new(void);
void templates_cache_free(struct templates_cache *c);

/*
 * templates_render_opts for |ev| in |locale| (with |preview|), from |c|
 * when this event and locale were rendered already with the same set |t|. |*title| and
 * |*body| are borrowed from the cache: valid until the next call or
 * templates_cache_forget. Returns 0 or -1 as templates_render.
 */
int templates_render_cached(struct templates_cache *c, const struct templates *t,
                            const struct event *ev, const char *locale, bool preview,
                            const char **title, const char **body);

/*
 * |ev| is about to be freed: drop its texts, so that another event
 * allocated at the same address is never taken for it.
 */
void templates_cache_forget(struct templates_cache *c, const struct event *ev);

/*
 * The locale to render for: |device_locale| when supported, else
 * |tenant_default| when supported, else "nb". Accepts "nb", "nn", "en" and
 * tags like "nb-NO", "nn_NO" or "en-GB" (case-insensitive); "no" means nb.
 * Returns a static string ("nb", "nn" or "en"); either argument may be NULL.
 */
const char *templates_resolve_locale(const char *device_locale,
                                     const char *tenant_default);

#endif
