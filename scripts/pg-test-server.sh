#!/usr/bin/env bash
# A throw-away PostgreSQL server for the test suite (PostgreSQL job queue tests).
#
#   pg-test-server.sh start DIR [PID]   initdb into DIR/data and start postgres on a unix socket in
#                                       DIR/socket and on 127.0.0.1:<free port>, trust auth; prints
#                                       the server URL (postgres://postgres@127.0.0.1:PORT/postgres).
#                                       Idempotent: a running server in DIR is reused. With PID, the
#                                       server is stopped and DIR removed once that process is gone.
#   pg-test-server.sh createdb DIR      creates a fresh database t_<random>; prints its URL.
#   pg-test-server.sh stop DIR          stops the server and removes DIR.
#
# PostgreSQL refuses to run as root: as root, initdb/pg_ctl run as the `postgres` system user
# (created by the Debian package) with DIR owned by it. The binaries are taken from $PG_BIN,
# else the newest /usr/lib/postgresql/*/bin, else PATH.
set -euo pipefail
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
command=${1:?usage: pg-test-server.sh start|createdb|stop DIR [PID]}
dir=${2:?usage: pg-test-server.sh start|createdb|stop DIR [PID]}

bin=${PG_BIN:-}
if [ -z "$bin" ]; then
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
fi
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  bin=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")
fi
if [ ! -x "$bin/initdb" ] || [ ! -x "$bin/pg_ctl" ]; then
  echo "pg-test-server: PostgreSQL server binaries not found (apt-get install postgresql)" >&2
  exit 2
fi

as_server() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

psql_admin() {
  local port
  port=$(cat "$dir/port")
  as_server "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir/socket" -p "$port" -U postgres -d postgres "$@"
}

running() {
  [ -f "$dir/port" ] && as_server "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

case "$command" in
  start)
    mkdir -p "$dir"
    # Serialise concurrent starts (the lock is not passed on to the server or the watchdog).
    exec 9>"$dir.lock"
    flock 9
    if ! running; then
      rm -rf "${dir:?}/data" "$dir/socket" "$dir/port"
      mkdir -p "$dir/data" "$dir/socket"
      if [ "$(id -u)" -eq 0 ]; then chown -R postgres: "$dir"; fi
      as_server "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
      started=""
      for _ in $(seq 1 20); do
        port=$((20000 + RANDOM % 40000))
        # Durability is not under test here (the server is thrown away): no fsync, for speed.
        if as_server "$bin/pg_ctl" -D "$dir/data" -l "$dir/data/server.log" -w -t 30 -o \
          "-p $port -k $dir/socket -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
          start >/dev/null 2>&1 9>&-; then
          started=$port
          break
        fi
      done
      if [ -z "$started" ]; then
        echo "pg-test-server: postgres did not start; log:" >&2
        tail -n 20 "$dir/data/server.log" >&2 || true
        exit 1
      fi
      echo "$started" >"$dir/port"
      if [ -n "${3:-}" ]; then
        watched=$3
        # Stop the server once the test process is gone, however it ended.
        setsid nohup bash -c "while kill -0 $watched 2>/dev/null; do sleep 1; done; '$self' stop '$dir'" \
          </dev/null >/dev/null 2>&1 9>&- &
      fi
    fi
    echo "postgres://postgres@127.0.0.1:$(cat "$dir/port")/postgres"
    ;;
  createdb)
    running || { echo "pg-test-server: no server running in $dir" >&2; exit 1; }
    name="t_$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
    psql_admin -c "CREATE DATABASE $name" >/dev/null
    echo "postgres://postgres@127.0.0.1:$(cat "$dir/port")/$name"
    ;;
  stop)
    if [ -d "$dir/data" ]; then
      as_server "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "${dir:?}" "$dir.lock"
    ;;
  *)
    echo "usage: pg-test-server.sh start|createdb|stop DIR [PID]" >&2
    exit 64
    ;;
esac
