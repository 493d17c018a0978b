/*
 * libFuzzer target for the event parser (queue/event.c).
 *
 * Build: clang -fsanitize=fuzzer,address,undefined -I. -D_GNU_SOURCE \
 *          tests/fuzz/fuzz_event.c queue/event.c common/util.c common/log.c \
 *          $(pkg-config --cflags --libs libcjson openssl) -lm -o fuzz_event
 * Run:   ./fuzz_event tests/fuzz/corpus/event
 *
 * Beyond "no crash, no leak" it checks the parser's promises: a result is 0
 * or one of enum event_error with a non-empty reason, and an accepted event
 * has the fields its type requires.
 */
#include "queue/event.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct event *ev = NULL;
    char reason[EVENT_REASON_MAX];
    int rc = event_parse((const char *)data, size, &ev, reason, sizeof reason);
    if (rc != 0) {
        if (ev != NULL || rc < EVENT_ERR_INVALID || rc > EVENT_ERR_JSON || reason[0] == '\0' ||
            strcmp(event_error_code(rc), "unknown") == 0)
            abort();
        return 0;
    }
    if (ev == NULL || ev->v != 1 || ev->id == NULL || ev->tenant == NULL ||
        event_type_name(ev->type) == NULL)
        abort();
    if (event_is_notification(ev->type)) {
        if (ev->n_recipients == 0 || ev->n_recipients > EVENT_MAX_RECIPIENTS)
            abort();
        for (size_t i = 0; i < ev->n_recipients; i++)
            if (ev->recipients[i].user == NULL || strchr(ev->recipients[i].user, ':') != NULL ||
                ev->recipients[i].badge < -1)
                abort();
    } else if (ev->user == NULL) {
        abort();
    }
    if (ev->type == EVENT_DEVICE_REGISTER &&
        (ev->token == NULL || ev->app == NULL || ev->platform == NULL || ev->environment == NULL))
        abort();
    (void)event_field(ev, "sender_name");
    (void)event_field(ev, "date");
    event_free(ev);
    return 0;
}
