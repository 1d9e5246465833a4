#!/usr/bin/env bash
# Refresh grants on N tokengate nodes sharing one PostgreSQL database (the cluster issue's
# "two nodes" figure). Usage, from the project root:
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres NODES=2 bench/cluster.sh
# It creates a throw-away database on that server, starts NODES release servers on free ports
# (each its own home, the same users/clients), runs tgload's refresh scenario against every
# node at once (CONC connections each, DURATION seconds), prints per-node and total req/s,
# stops everything and drops the database. Everything runs on this machine: nodes, database
# and load generator share its cores. Users and clients live in the database ("sql" stores).
# RATE_LIMIT=shared|local|off (default off) turns on [rate_limit] with limits far above the
# load (nothing is refused), to measure what checking them costs: "shared" keeps the buckets in
# PostgreSQL (one upsert per check), "local" in each node's memory. All load comes from one IP
# and one client, so "shared" measures the worst case: every check updates the same two rows.
# It also prints the CPU used during the load, in % of one core (2 cores = 200 %): the nodes, this
# database's PostgreSQL backends, the load generator, and "other" (the rest of the machine: other
# builds or benchmarks, PostgreSQL's own background processes, the kernel). Above 10 % other,
# the figures are disturbed: run again on a quiet machine. Last, the statements PostgreSQL
# ran per refresh grant (each costs it ~90 µs of CPU here, whatever its batch size).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
NODES="${NODES:-2}"
RATE_LIMIT="${RATE_LIMIT:-off}"
CONC="${CONC:-16}"
DURATION="${DURATION:-15}"
die() { echo "cluster.sh: $*" >&2; exit 1; }
[[ "$DATABASE_URL" == postgres://*@127.0.0.1:* || "$DATABASE_URL" == postgres://*@localhost:* ]] \
  || die "DATABASE_URL must be a loopback PostgreSQL"
command -v psql >/dev/null || die "psql is needed to create the throw-away database"

(cd "$ROOT" && cargo build --release -q)
cargo build --release -q --manifest-path "$ROOT/bench/loadgen/Cargo.toml"
SERVER="$ROOT/target/release/tokengate"
TGLOAD="$ROOT/bench/loadgen/target/release/tgload"
WORK="$(mktemp -d)"
DB="tokengate_cluster_$$"
PIDS=()
cleanup() {
  grep -h "ERROR" "$WORK"/node*/log 2>/dev/null | head -n 5 >&2 || true
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
psql "$DATABASE_URL" -qc "CREATE DATABASE $DB" >/dev/null
NODE_URL="${DATABASE_URL%/*}/$DB"

PORTS=()
for n in $(seq 1 "$NODES"); do
  home="$WORK/node$n"
  mkdir -p "$home"
  cp -R "$ROOT/config" "$home/config"
  sed -i -e "s|^tokens = .*|tokens = \"$NODE_URL\"|" -e 's|^users = [^#]*|users = "sql" |' \
    -e 's|^clients = [^#]*|clients = "sql" |' \
    -e 's|^max_connections_per_ip = [0-9]*|max_connections_per_ip = 0|' -e 's|^port = [0-9]*|port = 0|' "$home/config/identity.toml"
  case "$RATE_LIMIT" in
    off) ;;
    shared | local)
      shared=true; [[ "$RATE_LIMIT" == local ]] && shared=false
      sed -i -e 's|^enabled = false|enabled = true|' -e "s|^shared = true|shared = $shared|" \
        -e 's|^per_ip_rate = [0-9]*|per_ip_rate = 1000000|' -e 's|^per_ip_burst = [0-9]*|per_ip_burst = 1000000|' \
        -e 's|^per_client_rate = [0-9]*|per_client_rate = 1000000|' \
        -e 's|^per_client_burst = [0-9]*|per_client_burst = 1000000|' "$home/config/identity.toml"
      ;;
    *) die "RATE_LIMIT must be shared, local or off" ;;
  esac
  if ((n == 1)); then
    TOKENGATE_HOME="$home" "$SERVER" migrate >/dev/null 2>&1
    printf '%s' bench-secret | TOKENGATE_HOME="$home" "$SERVER" client add bench-client --secret-stdin \
      --scopes default --grant-types "password refresh_token" >/dev/null 2>&1
    printf '%s' alice-password | TOKENGATE_HOME="$home" "$SERVER" user add alice --password-stdin >/dev/null 2>&1
  fi
  port=$((20000 + RANDOM % 20000))
  TOKENGATE_HOME="$home" TOKENGATE_LOG=warn "$SERVER" serve --port-offset $((port - 8243)) >"$home/log" 2>&1 &
  PIDS+=($!)
  PORTS+=("$port")
done
for port in "${PORTS[@]}"; do
  for _ in $(seq 1 120); do
    [[ "$(curl -ks -o /dev/null -w '%{http_code}' --max-time 2 "https://127.0.0.1:$port/health" || true)" == 200 ]] && break
    sleep 0.5
  done
done

echo "refresh grants on $NODES node(s), $CONC connections each, ${DURATION}s, rate limits: $RATE_LIMIT, PostgreSQL on the same machine"
CLK_TCK="$(getconf CLK_TCK)"
# utime + stime (clock ticks) of the given processes; those gone count 0
ticks() { local t=0 v p; for p in "$@"; do v="$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}')"; t=$((t + ${v:-0})); done; echo "$t"; }
machine_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
# user + system seconds of reaped children, from the output of `times`
child_cpu_s() { awk 'NR == 2 { for (i = 1; i <= 2; i++) { split($i, p, /[ms]/); n += p[1] * 60 + p[2] } print n + 0 }' "$1"; }
# The backends serving this database: the nodes' pools connect as the load needs them, so
# those there at the start count from then, those that come later from their start.
pg_pids() { psql "$DATABASE_URL" -XAtc "SELECT pid FROM pg_stat_activity WHERE datname = '$DB' AND pid <> pg_backend_pid()"; }
declare -A PG0=()
for pid in $(pg_pids); do PG0[$pid]="$(ticks "$pid")"; done
LOADS=()
times >"$WORK/times0"
# Transactions committed in this database (a side figure: a failed read leaves it out).
commits() { psql "$DATABASE_URL" -XAtc "SELECT xact_commit FROM pg_stat_database WHERE datname = '$DB'" || true; }
x0="$(commits)"
n0="$(ticks "${PIDS[@]}")"; m0="$(machine_ticks)"; t0="$(date +%s%N)"
for port in "${PORTS[@]}"; do
  "$TGLOAD" --url "https://127.0.0.1:$port/token" --scenario refresh --duration "$DURATION" --warmup 2 \
    --concurrency "$CONC" --insecure >"$WORK/out-$port.json" 2>"$WORK/err-$port" &
  LOADS+=($!)
done
for pid in "${LOADS[@]}"; do wait "$pid"; done
t1="$(date +%s%N)"; n1="$(ticks "${PIDS[@]}")"; m1="$(machine_ticks)"
pg=0
for pid in $(pg_pids); do pg=$((pg + $(ticks "$pid") - ${PG0[$pid]:-0})); done
times >"$WORK/times1"
# A backend publishes its counts when it goes idle, at most once a second, or when it exits:
# the nodes go (their backends with them) before the count is read.
for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
PIDS=()
sleep 1
x1="$(commits)"
total=0
for port in "${PORTS[@]}"; do
  line="$(tail -n 1 "$WORK/err-$port")"
  echo "node :$port  $line"
  rps="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok_per_s"])' "$WORK/out-$port.json")"
  total="$(python3 -c "print(round($total + $rps, 1))")"
done
echo "total: $total refresh grants/s (ok)"
# Every statement the nodes send is a transaction of its own (lookups and group commits alike),
# so this is statements per refresh: what the batching saves. The window includes the 2 s
# warm-up, counted at the measured rate, so it is approximate.
if [[ "$x0" =~ ^[0-9]+$ && "$x1" =~ ^[0-9]+$ ]]; then
  awk -v x=$((x1 - x0)) -v r="$total" -v s=$((DURATION + 2)) \
    'BEGIN { if (r > 0) printf "PostgreSQL statements per refresh grant: %.2f (%d in the run)\n", x / (r * s), x }'
fi
# The load generators' CPU includes their untimed setup (connections, one password grant each).
awk -v n=$((n1 - n0)) -v p="$pg" -v m=$((m1 - m0)) -v hz="$CLK_TCK" -v ns=$((t1 - t0)) \
  -v l0="$(child_cpu_s "$WORK/times0")" -v l1="$(child_cpu_s "$WORK/times1")" 'BEGIN {
    s = ns / 1e9; nodes = n / hz / s * 100; pg = p / hz / s * 100; load = (l1 - l0) / s * 100
    other = m / hz / s * 100 - nodes - pg - load; if (other < 0) other = 0
    printf "CPU during the load (%% of one core): nodes %.0f, PostgreSQL backends of this database %.0f, load generator %.0f, other %.0f\n", nodes, pg, load, other
  }'
