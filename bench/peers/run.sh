#!/usr/bin/env bash
# Switchyard's OpenAI-compatible HTTP door in the peer-gateway harness.
#
# Usage:
#   bench/peers/run.sh                      # build, set up, run the harness (PEERS=direct + switchyard)
#   PEERS="direct litellm portkey" bench/peers/run.sh   # also measure peers in the same run
#   BUILD=0 CARGO_TARGET_DIR=/work/target-h bench/peers/run.sh   # use binaries already built there
#   DURATION=5 LAT_DURATION=3 bench/peers/run.sh         # any harness knob passes through
#
# What it does:
#   1. builds the release binaries (switchyard-control-plane, switchyard-data-plane,
#      switchyard) into $CARGO_TARGET_DIR (default <repo>/target); BUILD=0 skips the build;
#   2. creates a fresh Postgres database and a fresh Redis key prefix, starts the
#      control plane (admin token, master key, Redis bus; NOT pinned, NOT measured),
#      validates and applies bench/peers/pools.yaml with the `switchyard` CLI;
#   3. runs the peer harness ($PEERS_DIR/run.sh) with Switchyard as its EXTRA target:
#      EXTRA_CMD starts only the data-plane worker (HTTP door on $SY_HTTP), so the
#      harness pins it to its gateway core and measures its CPU and RSS alone;
#   4. stops the control plane by PID, drops the database and deletes the Redis keys
#      under the prefix (also on failure or Ctrl-C).
#   The report is written to bench/peers/results-<date>-<HHMM>-switchyard.md (OUT_MD overrides).
#
# Knobs (env):           default
#   PEERS_DIR            /work/peers-run   the harness copy to run; copied from PEERS_SRC when missing
#   PEERS_SRC            <repo>/../shared/peers
#   PEERS                direct            harness targets besides switchyard (direct is the baseline)
#   CARGO_TARGET_DIR     <repo>/target
#   BUILD                1                 0: take the binaries from $CARGO_TARGET_DIR/release as they are
#   PG                   postgres://postgres@127.0.0.1:5432   server for the throwaway database
#   REDIS_URL            redis://127.0.0.1:6379
#   SY_CP                127.0.0.1:18150   control-plane gRPC address
#   SY_GRPC              127.0.0.1:18101   worker gRPC address
#   SY_HTTP              127.0.0.1:18100   worker HTTP door (the harness's EXTRA_TARGET)
#   SY_LOG               warn              the worker's RUST_LOG. The peers run without per-request
#                                          logs (nginx access_log off, LiteLLM LITELLM_LOG=ERROR); at
#                                          `info` the worker logs one line per request.
#   SY_WORKER_ARGS       ""                more flags for the worker
#   OUT_MD               bench/peers/results-<date>-<HHMM>-switchyard.md
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PEERS_DIR=${PEERS_DIR:-/work/peers-run}
PEERS_SRC=${PEERS_SRC:-$REPO/../shared/peers}
export PEERS=${PEERS:-direct}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
BUILD=${BUILD:-1}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
SY_CP=${SY_CP:-127.0.0.1:18150}
SY_GRPC=${SY_GRPC:-127.0.0.1:18101}
SY_HTTP=${SY_HTTP:-127.0.0.1:18100}
SY_LOG=${SY_LOG:-warn}
SY_WORKER_ARGS=${SY_WORKER_ARGS:-}
export OUT_MD=${OUT_MD:-$HERE/results-$(date +%Y-%m-%d-%H%M)-switchyard.md}
BIN=$CARGO_TARGET_DIR/release

log() { printf '[sy-peers] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# ---------------------------------------------------------------- 1. binaries
if [ "$BUILD" = 1 ]; then
  log "building release binaries into $CARGO_TARGET_DIR"
  (cd "$REPO" && cargo build --release -p switchyard-control-plane -p switchyard-data-plane -p switchyard)
fi
for b in switchyard-control-plane switchyard-data-plane switchyard; do
  [ -x "$BIN/$b" ] || die "$BIN/$b is missing: build it, or set CARGO_TARGET_DIR / BUILD=1"
done
SY=$BIN/switchyard

if [ ! -x "$PEERS_DIR/run.sh" ]; then
  [ -d "$PEERS_SRC" ] || die "no harness at $PEERS_DIR and nothing to copy at $PEERS_SRC"
  log "copying the harness $PEERS_SRC -> $PEERS_DIR"
  cp -r "$PEERS_SRC" "$PEERS_DIR"
  chmod -R u+w "$PEERS_DIR"
fi

port_open() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
for a in "$SY_CP" "$SY_GRPC" "$SY_HTTP"; do
  port_open "$a" && die "$a is already in use: stop whatever holds it, or pick another SY_* address"
done

# ---------------------------------------------------------------- 2. database, Redis prefix, control plane
ID=$(date +%Y%m%d%H%M%S)_$$
DB=sy_peers_$ID
PREFIX=sy-peers-$ID
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sy-peers-$ID.XXXX")
CP_PID=""
DB_MADE=0

cleanup() {
  local rc=$? i
  if [ -n "$CP_PID" ] && kill -0 "$CP_PID" 2>/dev/null; then
    kill -TERM "$CP_PID" 2>/dev/null || true
    for i in $(seq 1 50); do kill -0 "$CP_PID" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$CP_PID" 2>/dev/null && kill -KILL "$CP_PID" 2>/dev/null
    wait "$CP_PID" 2>/dev/null || true
  fi
  if [ "$DB_MADE" = 1 ]; then
    psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 \
      || log "could not drop database $DB"
  fi
  # Every key and channel lives under the prefix ("P:..." or "{P:...}...").
  local pat
  for pat in "$PREFIX:*" "{$PREFIX:*"; do
    redis-cli -u "$REDIS_URL" --scan --pattern "$pat" 2>/dev/null \
      | while IFS= read -r k; do redis-cli -u "$REDIS_URL" DEL "$k" >/dev/null; done
  done
  log "cleaned up (control plane stopped, database $DB dropped, Redis prefix $PREFIX deleted); logs in $WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "database $DB, Redis prefix $PREFIX"
psql -q -v ON_ERROR_STOP=1 "$PG/postgres" -c "CREATE DATABASE $DB" >/dev/null
DB_MADE=1

MASTER_KEY=$("$SY" keygen | tail -1)
ADMIN_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export SWITCHYARD_TOKEN=$ADMIN_TOKEN      # for the CLI

log "starting the control plane on $SY_CP (log: $WORK/control-plane.log)"
env DATABASE_URL="$PG/$DB" REDIS_URL="$REDIS_URL" SWITCHYARD_REDIS_PREFIX="$PREFIX" \
  SWITCHYARD_MASTER_KEY="$MASTER_KEY" SWITCHYARD_ADMIN_TOKENS="$ADMIN_TOKEN" RUST_LOG=info \
  "$BIN/switchyard-control-plane" --listen "$SY_CP" --metrics-listen off \
  > "$WORK/control-plane.log" 2>&1 < /dev/null &
CP_PID=$!

ok=0
for _ in $(seq 1 150); do
  kill -0 "$CP_PID" 2>/dev/null || { tail -20 "$WORK/control-plane.log" >&2; die "control plane exited"; }
  if "$SY" get pools --server "http://$SY_CP" >/dev/null 2>&1; then ok=1; break; fi
  sleep 0.2
done
[ "$ok" = 1 ] || { tail -20 "$WORK/control-plane.log" >&2; die "control plane did not answer within 30 s"; }

"$SY" validate -f "$HERE/pools.yaml"
"$SY" apply -f "$HERE/pools.yaml" --server "http://$SY_CP"
"$SY" get pools --server "http://$SY_CP"

# ---------------------------------------------------------------- 3. the harness, with the worker as EXTRA
WORKER="exec env REDIS_URL='$REDIS_URL' SWITCHYARD_REDIS_PREFIX='$PREFIX' RUST_LOG='$SY_LOG' \
'$BIN/switchyard-data-plane' --no-auth --listen '$SY_GRPC' --http-listen '$SY_HTTP' --metrics-listen off $SY_WORKER_ARGS"
log "worker command (started by the harness): $WORKER"

set +e
env EXTRA_NAME=switchyard \
  EXTRA_TARGET="http://$SY_HTTP/v1/chat/completions" \
  EXTRA_MODEL=rr EXTRA_FB_MODEL=fb-503 EXTRA_FB429_MODEL=fb-429 \
  EXTRA_FBREF_MODEL=fb-refused EXTRA_SLOW_MODEL=slow \
  EXTRA_CMD="$WORKER" \
  bash "$PEERS_DIR/run.sh"
rc=$?
set -e
log "harness exited $rc; report: $OUT_MD"
exit "$rc"
