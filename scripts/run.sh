#!/usr/bin/env bash
# Runs the whole system on this machine: installs and builds what is missing, starts a private
# nats-server (port 4222, files under build/run/) and the runtime on http://127.0.0.1:5000 with
# the services in services/. Ctrl-C stops both.
#   NATS_PORT=4222 HTTP=127.0.0.1:5000 scripts/run.sh [extra microservice flags]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

run_dir=build/run
mkdir -p "$run_dir"
nats_port=${NATS_PORT:-4222}
http=${HTTP:-127.0.0.1:5000}

nats_pid=""
cleanup() { [ -n "$nats_pid" ] && kill "$nats_pid" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

if [ -z "${NATS_URL:-}" ]; then
  nats-server -a 127.0.0.1 -p "$nats_port" -l "$run_dir/nats-server.log" &
  nats_pid=$!
  for _ in $(seq 1 100); do # wait until it accepts connections (10 s at most)
    (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break
    kill -0 "$nats_pid" 2>/dev/null || { echo "nats-server failed: see $run_dir/nats-server.log"; exit 1; }
    sleep 0.1
  done
  export NATS_URL="nats://127.0.0.1:$nats_port"
fi

echo "run: NATS at $NATS_URL, HTTP at http://$http (Ctrl-C stops)"
build/microservice --http "$http" --nats "$NATS_URL" --frontend frontend "$@" services
