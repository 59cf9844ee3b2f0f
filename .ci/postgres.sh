#!/usr/bin/env bash
# A throwaway PostgreSQL on 127.0.0.1 for the test suite (the dead-letter store's shared backend).
#
#   eval "$(.ci/postgres.sh start)"   # prints export QUICKBOT_TEST_POSTGRES_URL=... and QUICKBOT_TEST_POSTGRES_DIR=...
#   .ci/postgres.sh stop "$QUICKBOT_TEST_POSTGRES_DIR"
#
# Uses the machine's PostgreSQL 15 (/usr/lib/postgresql/15/bin), installing Debian's `postgresql`
# package when it is missing. The cluster lives in a new temporary directory owned by an
# unprivileged user (initdb and the server refuse to run as root), listens on a free loopback port
# and on a unix socket inside that directory, and requires a password (scram-sha-256) over TCP so
# the tests exercise a URL with a secret in it. Everything it prints besides the exports goes to stderr.
set -euo pipefail

find_bin() {
    local dir
    for dir in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

run_as() {
    # Run a command as the unprivileged owner of the cluster when we are root.
    local user=$1
    shift
    if [ "$(id -u)" = 0 ]; then
        runuser -u "$user" -- "$@"
    else
        "$@"
    fi
}

start() {
    local bin
    if ! bin=$(find_bin); then
        if [ "$(id -u)" != 0 ]; then
            echo "postgres.sh: PostgreSQL is not installed and installing it needs root (apt-get install postgresql)" >&2
            exit 1
        fi
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
        bin=$(find_bin)
    fi
    local user
    user=$(id -un)
    if [ "$(id -u)" = 0 ]; then
        if getent passwd postgres >/dev/null; then user=postgres; else user=nobody; fi
    fi
    local dir
    dir=$(mktemp -d "${TMPDIR:-/tmp}/quickbot-pg.XXXXXX")
    chmod 0700 "$dir"
    [ "$(id -u)" = 0 ] && chown "$user" "$dir"
    local password
    password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
    printf '%s\n' "$password" >"$dir/pwfile"
    chmod 0600 "$dir/pwfile"
    [ "$(id -u)" = 0 ] && chown "$user" "$dir/pwfile"
    run_as "$user" "$bin/initdb" -D "$dir/data" -U quickbot --pwfile="$dir/pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; exit 1; }
    rm -f "$dir/pwfile"
    local port
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
    run_as "$user" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200 -c fsync=off" start >&2 ||
        { cat "$dir/server.log" >&2; exit 1; }
    run_as "$user" "$bin/createdb" -h "$dir" -p "$port" -U quickbot quickbot_test >&2
    echo "export QUICKBOT_TEST_POSTGRES_URL='postgresql://quickbot:$password@127.0.0.1:$port/quickbot_test'"
    echo "export QUICKBOT_TEST_POSTGRES_DIR='$dir'"
}

stop() {
    local dir=${1:-}
    if [ -z "$dir" ] || [ ! -d "$dir/data" ]; then
        return 0
    fi
    local bin user
    bin=$(find_bin)
    user=$(stat -c %U "$dir")
    run_as "$user" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}

case "${1:-}" in
start) start ;;
stop) stop "${2:-}" ;;
*)
    echo "usage: $0 start | stop DIR" >&2
    exit 2
    ;;
esac
