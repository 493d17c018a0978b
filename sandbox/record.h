/*
 * The sandbox's request record: one JSON object per line, appended to a
 * file that tests and the demo read while the sandbox runs. Each line is
 * written with a single write(2) on an O_APPEND descriptor, so a reader sees
 * whole lines only (a reader may still see the file end before a newline
 * while a write is in flight: ignore a last line without '\n').
 */
#ifndef VARSEL_SANDBOX_RECORD_H
#define VARSEL_SANDBOX_RECORD_H

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sbx_record;

/*
 * Open (create, append) |path|. Returns NULL with |err| filled on failure.
 * The caller owns the result and closes it with sbx_record_close.
 */
struct sbx_record *sbx_record_open(const char *path, char *err, size_t errlen);

/*
 * Append |obj| as one line. Does not take ownership of |obj|. NULL |rec|
 * is a no-op (recording off). Returns 0 or -1 (the error is logged once).
 */
int sbx_record_write(struct sbx_record *rec, const cJSON *obj);

/* Lines written so far. */
uint64_t sbx_record_lines(const struct sbx_record *rec);

/* Close the file; NULL is allowed. */
void sbx_record_close(struct sbx_record *rec);

/*
 * A request body as a record value: the parsed JSON when it is JSON, else
 * a string when it is valid UTF-8 without NUL bytes, else an object
 * {"base64":"..."}. Sets |*is_json|. Returns a new cJSON item (caller owns).
 */
cJSON *sbx_record_payload(const uint8_t *body, size_t len, bool *is_json);

#endif
