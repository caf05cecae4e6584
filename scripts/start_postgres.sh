#!/usr/bin/env bash
# Start a throw-away PostgreSQL server on 127.0.0.1 for the tests and benchmarks of
# `dnas tune` on an RDB storage, and print its URL on stdout (nothing else goes there):
#
#   export DNAS_TEST_POSTGRES_URL="$(scripts/start_postgres.sh)"
#   ...
#   "$(dirname "$(echo ...)")"  # see the stop command printed on stderr
#
# Installs Debian's `postgresql` package when no initdb is found, and the Python driver
# (psycopg2-binary) into the current Python when it is missing. The cluster lives in a
# temporary folder (or $DNAS_PG_DIR), trusts local connections only, listens on
# 127.0.0.1 at an unused port, and is owned by the `postgres` user when run as root
# (PostgreSQL refuses to run as root). Stop it with: scripts/start_postgres.sh --stop DIR
set -euo pipefail

PY="${PYTHON:-python}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

find_bin() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [[ -n "$d" && -x "$d/initdb" ]]; then echo "$d"; return; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; fi
}

as_owner() {  # run a command as the cluster owner
  if [[ "$(id -u)" == 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

if [[ "${1:-}" == "--stop" ]]; then
  dir="${2:?usage: start_postgres.sh --stop DIR}"
  BIN="$(find_bin)"
  as_owner "$BIN/pg_ctl" -D "$dir/data" -m fast -w stop >&2
  exit 0
fi

BIN="$(find_bin)"
if [[ -z "$BIN" ]]; then
  echo "start_postgres: installing Debian's postgresql package" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  BIN="$(find_bin)"
fi
[[ -n "$BIN" ]] || { echo "start_postgres: no initdb found after installing postgresql" >&2; exit 1; }

if ! "$PY" -c "import psycopg2" >/dev/null 2>&1; then
  echo "start_postgres: installing psycopg2-binary into $("$PY" -c 'import sys; print(sys.prefix)')" >&2
  "$PY" -m pip install -q psycopg2-binary >&2
fi

DIR="${DNAS_PG_DIR:-$(mktemp -d /tmp/dnas-pg.XXXXXX)}"
mkdir -p "$DIR"
if [[ "$(id -u)" == 0 ]]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir "$DIR" --shell /usr/sbin/nologin postgres
  chown postgres "$DIR"
  chmod 700 "$DIR"
fi
PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

as_owner "$BIN/initdb" -D "$DIR/data" -U dnas -A trust --no-sync -E UTF8 >"$DIR/initdb.log" 2>&1 \
  || { cat "$DIR/initdb.log" >&2; exit 1; }
# fsync off: a test database that may lose data on a power cut, and is much faster.
as_owner "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
  -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=200" \
  start >&2 || { cat "$DIR/server.log" >&2; exit 1; }
as_owner "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U dnas dnas_test

echo "start_postgres: server on 127.0.0.1:$PORT, data in $DIR; stop with: $0 --stop $DIR" >&2
# psycopg2 named explicitly: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3.
echo "postgresql+psycopg2://dnas@127.0.0.1:$PORT/dnas_test"
