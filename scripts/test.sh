#!/usr/bin/env sh
# Runs the test suite, installing redis-server first if it is missing
# (the integration tests start real servers; see tests/support/).
set -eu
if ! command -v "${REDIS_SERVER_BIN:-redis-server}" >/dev/null 2>&1; then
    echo "redis-server not found; installing it with apt-get" >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update
    $SUDO apt-get install -y redis-server
fi
exec cargo test "$@"
