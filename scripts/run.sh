#!/usr/bin/env bash
# Runs the whole system on this machine: installs and builds what is missing, starts a private
# nats-server with JetStream (port 4222) and, unless DATABASE_URL is set, a private PostgreSQL (port 5433), both
# with their files under build/run/, and the runtime on http://127.0.0.1:5000 with the services in
# services/. Ctrl-C stops everything.
#   NATS_PORT=4222 PG_PORT=5433 HTTP=127.0.0.1:5000 scripts/run.sh [extra microservice flags]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

run_dir=build/run
mkdir -p "$run_dir"
nats_port=${NATS_PORT:-4222}
http=${HTTP:-127.0.0.1:5000}

pg_port=${PG_PORT:-5433}

nats_pid=""
pg_started=""
# Ctrl-C reaches the whole process group: nats-server may be gone already, so nothing here may
# fail the script (set -e would end it before PostgreSQL is stopped), and it runs once.
cleanup() {
  set +e
  trap - EXIT INT TERM
  if [ -n "$nats_pid" ]; then kill "$nats_pid" 2>/dev/null; fi
  if [ -n "$pg_started" ]; then scripts/postgres.sh stop "$run_dir/postgres"; fi
  wait 2>/dev/null
  return 0
}
trap cleanup EXIT INT TERM

if [ -z "${NATS_URL:-}" ]; then
  # JetStream on (durable events, KV: docs/api/stream.md), its store under build/run/ too
  nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$run_dir/jetstream" -l "$run_dir/nats-server.log" &
  nats_pid=$!
  for _ in $(seq 1 100); do # wait until it accepts connections (10 s at most)
    (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break
    kill -0 "$nats_pid" 2>/dev/null || { echo "nats-server failed: see $run_dir/nats-server.log"; exit 1; }
    sleep 0.1
  done
  export NATS_URL="nats://127.0.0.1:$nats_port"
fi

if [ -z "${DATABASE_URL:-}" ]; then
  DATABASE_URL=$(scripts/postgres.sh start "$run_dir/postgres" "$pg_port")
  pg_started=1
  export DATABASE_URL
fi

echo "run: PostgreSQL at $DATABASE_URL"
echo "run: NATS at $NATS_URL, HTTP at http://$http (Ctrl-C stops)"
build/microservice --http "$http" --nats "$NATS_URL" --postgres "$DATABASE_URL" --frontend frontend "$@" services
