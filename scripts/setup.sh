#!/usr/bin/env bash
# Install what varsel needs to build and test on Debian 12.
#
#   scripts/setup.sh          build + test dependencies
#   scripts/setup.sh --long   also the long tier's tools (valgrind)
#
# Idempotent: each package is checked with dpkg-query first, so a machine
# that has everything does no network work. As root, missing packages are
# installed with apt-get (one `apt-get update`, then one install). As
# another user it prints the command to run and exits 1. Needs no stdin.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

PACKAGES=(
    build-essential make pkg-config gcc clang libclang-rt-14-dev
    libuv1-dev libnghttp2-dev libssl-dev libhiredis-dev libcjson-dev libxxhash-dev
    libinih-dev libhttp-parser-dev
    redis-server redis-tools redis-sentinel nghttp2-client
    python3 python3-jsonschema openssl ca-certificates procps
    prometheus chromium fonts-dejavu-core
)
# Node.js (firebase-admin cross-check, node-apn benchmark): any node + npm
# on the PATH will do (a machine may carry a non-Debian build that provides
# both); otherwise Debian's packages.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    PACKAGES+=(nodejs npm)
fi

for arg in "$@"; do
    case "$arg" in
    --long) PACKAGES+=(valgrind) ;;
    -h | --help)
        sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "setup.sh: unknown option '$arg'" >&2
        exit 2
        ;;
    esac
done

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "setup.sh: dpkg-query not found; this script is for Debian 12." >&2
    echo "setup.sh: install by hand: ${PACKAGES[*]}" >&2
    exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$p")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "setup: all ${#PACKAGES[@]} packages present"
    exit 0
fi

echo "setup: missing: ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then
    echo "setup: not root; run:" >&2
    echo "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi

apt-get update </dev/null
apt-get install -y --no-install-recommends "${missing[@]}" </dev/null

# Debian's redis-server (and redis-sentinel) packages may start a system
# instance on 6379 (26379); the tests and the demo start their own on free
# ports and never use it.
still=()
for p in "${missing[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || still+=("$p")
done
if [[ ${#still[@]} -ne 0 ]]; then
    echo "setup: still missing after install: ${still[*]}" >&2
    exit 1
fi
echo "setup: installed ${missing[*]}"
