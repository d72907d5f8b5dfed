#!/usr/bin/env bash
# Starts and stops a throwaway PostgreSQL server for the PostgreSQL store's
# tests (Debian's `postgresql` package; nothing else is touched).
#
#   scripts/pg-test-server.sh start DIR   prints the server's URI (also
#                                         written to DIR/uri)
#   scripts/pg-test-server.sh stop DIR    stops it and removes its data
#
# The cluster lives in a fresh temporary directory (its path kept in
# DIR/datadir): trust authentication, listening on 127.0.0.1 on a free port
# and on a socket in that directory. initdb refuses to run as root, so as
# root the server runs as the unprivileged system user `qmtest` (created when
# missing); otherwise as the current user. ctest runs `start` and `stop` as
# the `pg` fixture of the tests (tests/CMakeLists.txt). Set PG_BINDIR to use
# another installation than the newest /usr/lib/postgresql/*/bin.
set -euo pipefail

usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}
[ $# -eq 2 ] || usage
action=$1
dir=$2

bindir=${PG_BINDIR:-}
if [ -z "$bindir" ]; then
  bindir=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
have_server() { [ -n "$bindir" ] && [ -x "$bindir/pg_ctl" ]; }

run_as=()
if [ "$(id -u)" -eq 0 ]; then
  if ! id -u qmtest >/dev/null 2>&1; then
    # Two fixtures may race to create the user; the loser finds it made.
    useradd --system --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin qmtest 2>/dev/null || id -u qmtest >/dev/null
  fi
  run_as=(runuser -u qmtest --)
fi

stop_server() {
  [ -f "$dir/datadir" ] || return 0
  local data
  data=$(cat "$dir/datadir")
  if [ -f "$data/pgdata/postmaster.pid" ] && have_server; then
    "${run_as[@]}" "$bindir/pg_ctl" -D "$data/pgdata" -m immediate -w \
      stop >/dev/null 2>&1 || true
  fi
  rm -rf "$data"
  rm -f "$dir/datadir" "$dir/uri"
}

case "$action" in
  start)
    if ! have_server; then
      echo "pg-test-server: no PostgreSQL server found" \
        "(/usr/lib/postgresql/*/bin); install Debian's postgresql package" \
        "(scripts/install-deps.sh)" >&2
      exit 1
    fi
    mkdir -p "$dir"
    stop_server  # a server a killed run left behind
    # Short path: the socket's full name must fit in 107 bytes.
    data=$(mktemp -d "${TMPDIR:-/tmp}/qm-pg.XXXXXX")
    echo "$data" >"$dir/datadir"
    mkdir "$data/sock"
    if [ ${#run_as[@]} -gt 0 ]; then chown -R qmtest: "$data"; fi
    "${run_as[@]}" "$bindir/initdb" -D "$data/pgdata" --username=postgres \
      --auth=trust --encoding=UTF8 --locale=C --no-sync \
      >"$data/initdb.log" 2>&1 || {
      cat "$data/initdb.log" >&2
      exit 1
    }
    # A random port; another process may hold it, so retry on failure.
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
      port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
      if "${run_as[@]}" "$bindir/pg_ctl" -D "$data/pgdata" -l "$data/server.log" \
        -w -t 60 -o "-p $port -h 127.0.0.1 -k $data/sock" \
        start >/dev/null 2>&1; then
        uri="postgresql://postgres@127.0.0.1:$port/postgres"
        echo "$uri" >"$dir/uri"
        echo "$uri"
        exit 0
      fi
      echo "pg-test-server: start on port $port failed (attempt $attempt)" >&2
    done
    cat "$data/server.log" >&2 || true
    exit 1
    ;;
  stop)
    stop_server
    ;;
  *)
    usage
    ;;
esac
