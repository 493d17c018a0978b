/*
 * libFuzzer target: the OAuth2 token endpoint's answer parser
 * (fcm_oauth_parse_token), which reads whatever the network gives it.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fcm/oauth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *token = NULL;
    int64_t expires = 0;
    if (fcm_oauth_parse_token(data, size, &token, &expires) == 0) {
        /* A parsed token is a non-empty string and a positive lifetime. */
        if (token == NULL || token[0] == '\0' || expires <= 0)
            abort();
        free(token);
    } else if (token != NULL) {
        abort();
    }
    return 0;
}
