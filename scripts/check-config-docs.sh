#!/bin/sh
# Check that every key in the config table (config/config.c, printed by
# config_dump_keys) appears in config/varsel.ini.example and in
# docs/configuration.md under the right section, and that neither file names
# a key the table does not have. Builds a tiny dumper from the sources, so it
# works before (or without) a full `make`.
#
# Usage: scripts/check-config-docs.sh      (from anywhere; exits 1 on a mismatch)
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
example=config/varsel.ini.example
doc=docs/configuration.md
CC=${CC:-cc}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/varsel-cfgdoc.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

cat >"$tmp/dump.c" <<'C'
#include "config/config.h"
int main(void) { config_dump_keys(stdout); return 0; }
C
# shellcheck disable=SC2046
$CC -std=gnu11 -D_GNU_SOURCE -I. $(pkg-config --cflags libcjson inih openssl libxxhash) \
    -o "$tmp/dump" "$tmp/dump.c" config/config.c common/util.c common/log.c \
    $(pkg-config --libs libcjson inih openssl libxxhash) -lm
"$tmp/dump" | cut -f1,2 >"$tmp/table"          # "section<TAB>key"
[ -s "$tmp/table" ] || { echo "check-config-docs: empty key table" >&2; exit 1; }

# Keys in the example, as "section<TAB>key": "[app X]" counts as "app NAME" (and "[tenant X]" as "tenant NAME");
# commented-out keys count when written ";key = value" (no blank after the
# ';', so prose comments such as "; redis://..." are not mistaken for keys).
awk '
    /^[ \t]*\[/ {
        s = $0; sub(/^[ \t]*\[[ \t]*/, "", s); sub(/[ \t]*\].*$/, "", s)
        if (s ~ /^app[ \t]/) s = "app NAME"
        if (s ~ /^tenant[ \t]/) s = "tenant NAME"
        sect = s; next
    }
    /^[ \t]*[a-z_0-9]+[ \t]*[=:]/ || /^[ \t]*[;#][a-z_0-9]+[ \t]*=/ {
        k = $0; sub(/^[ \t]*[;#]?/, "", k); sub(/[ \t]*[=:].*$/, "", k)
        if (sect != "") print sect "\t" k
    }' "$example" | sort -u >"$tmp/example"

# Keys in the doc tables: rows "| section | `key` | ...".
awk -F'|' '
    /^\|[^|]*\|[ \t]*`[a-z_0-9]+`[ \t]*\|/ {
        s = $2; gsub(/^[ \t]+|[ \t]+$/, "", s)
        k = $3; gsub(/^[ \t]+|[ \t]+$/, "", k); gsub(/`/, "", k)
        print s "\t" k
    }' "$doc" | sort -u >"$tmp/doc"

sort -u "$tmp/table" >"$tmp/table.sorted"
status=0
report() { # file label
    missing=$(comm -23 "$tmp/table.sorted" "$1" | sed 's/^\(.*\)\t/  [\1] /')
    extra=$(comm -13 "$tmp/table.sorted" "$1" | sed 's/^\(.*\)\t/  [\1] /')
    if [ -n "$missing" ]; then
        echo "check-config-docs: keys missing from $2:" >&2
        echo "$missing" >&2
        status=1
    fi
    if [ -n "$extra" ]; then
        echo "check-config-docs: $2 names keys the table does not have:" >&2
        echo "$extra" >&2
        status=1
    fi
}
report "$tmp/example" "$example"
report "$tmp/doc" "$doc"
[ $status -eq 0 ] && echo "check-config-docs: $(wc -l <"$tmp/table.sorted") keys documented in $example and $doc"
exit $status
