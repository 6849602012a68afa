#!/usr/bin/env bash
# A private PostgreSQL server for runs and tests: its own data folder and port, TCP on 127.0.0.1
# only, no unix socket. PostgreSQL refuses to run as root, so as root it runs as the postgres user
# (the data folder is given to that user, and the folders above it made traversable).
#   scripts/postgres.sh start DIR PORT   # initializes DIR/data if needed, starts, waits until it
#                                        # accepts connections, prints the connection URL
#   scripts/postgres.sh stop DIR [MODE]  # pg_ctl stop -m MODE: fast (default), smart or immediate
set -euo pipefail
cmd=${1:?usage: postgres.sh start DIR PORT | stop DIR [MODE]}
dir=$(realpath -m "${2:?DIR missing}")
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$bin/pg_ctl" ] || { echo "postgres.sh: PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
start)
  port=${3:?PORT missing}
  mkdir -p "$dir"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$dir"
    d=$(dirname "$dir")
    while [ "$d" != "/" ]; do
      [ "$(stat -c %A "$d" | cut -c10)" = "x" ] || [ "$(stat -c %A "$d" | cut -c10)" = "t" ] || chmod o+x "$d"
      d=$(dirname "$d")
    done
  fi
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 ||
      { cat "$dir/initdb.log" >&2; exit 1; }
  fi
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
    -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off -c max_connections=200" \
    start >/dev/null || { tail -n 20 "$dir/postgres.log" >&2; exit 1; }
  as_pg "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = 'microservice'" | grep -q 1 ||
    as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres microservice
  echo "postgresql://postgres@127.0.0.1:$port/microservice"
  ;;
stop)
  [ -f "$dir/data/postmaster.pid" ] || exit 0
  mode=${3:-fast}
  case "$mode" in smart|fast|immediate) ;; *) echo "postgres.sh: stop mode must be smart, fast or immediate, not $mode" >&2; exit 2 ;; esac
  as_pg "$bin/pg_ctl" -D "$dir/data" -m "$mode" -w -t 60 stop >/dev/null
  ;;
*)
  echo "usage: postgres.sh start DIR PORT | stop DIR [MODE]" >&2
  exit 2
  ;;
esac
