#!/usr/bin/env bash
# bench/run.sh - tokengate's own benchmark (run from the project root: bench/run.sh).
#
# Builds the release server and bench/loadgen, makes a throw-away TOKENGATE_HOME, starts
# `tokengate serve` on a free port, runs the scenarios with tgload (closed loop over HTTPS/1.1
# on 127.0.0.1), samples the server's peak RSS and CPU, times the start to the first token with
# firsttoken, measures the argon2id limit with argon2cost, stops the server and adds a dated
# section to BENCHMARKS.md with a PASS/FAIL line per target (issue 10's table).
#
# Scenarios (SCENARIOS, see bench/README.md for what each request is and what counts as ok):
#   ceiling       GET $CEILING_PATH, no credentials: what TLS + HTTP/1.1 + the load generator
#                 allow on this machine now. Always run, first at every concurrency; every row
#                 gets "% of ceiling" = its req/s / the ceiling's at the same concurrency
#   password refresh invalid cc introspect
#   flood         refresh while 64 more connections send wrong passwords (argon2 saturated)
#   prefilled     refresh on a store holding PREFILL_ROWS unexpired tokens (server restarted)
#   purging       refresh right after a start on a store holding PURGE_ROWS expired tokens,
#                 while the janitor purges them (server restarted per concurrency)
#   refresh_full  refresh with sqlite_synchronous = "full" (server restarted; SQLite only)
#   firsttoken    time from spawning `tokengate serve` to its first client_credentials token
# One server serves the plain scenarios; prefilled, purging and refresh_full restart it on a
# store reset to the state after the first start (SQLite), after them, in that order.
#
# Env knobs (defaults):
#   CONCS="32"            concurrency levels (connections), e.g. CONCS="8 32"
#   DURATION=20           measured seconds per cell (DURATION + WARMUP <= 60)
#   WARMUP=2              unrecorded load before each cell (purging: none, see README)
#   SCENARIOS="ceiling password refresh cc introspect invalid flood prefilled purging refresh_full firsttoken"
#   CEILING_PATH=/health  the ceiling's GET (measured cheaper than the discovery document)
#   PREFILL_ROWS=1000000  unexpired tokens for prefilled: half access, half refresh tokens
#   PURGE_ROWS=1000000    expired tokens for purging: half access, half refresh tokens
#   FIRST_TOKEN_RUNS=5    starts timed by firsttoken (the median is judged)
#   TOKEN_STORE=postgres://…  measure a PostgreSQL token store (default: SQLite in the temp home)
#   ARGON2_ITERS=40       argon2cost verifies per thread
#   OHA=auto              auto|1|0: also run oha (if installed) for password/invalid as a cross-check
#   BENCHMARKS_FILE=BENCHMARKS.md (project root)   where the results section goes
#   SKIP_BUILD=0          1: use the binaries already built
#   TLS_VERIFY=0          1: the tools trust the server's generated certificate instead of --insecure
#   HEALTH_WAIT=60        seconds to wait for GET /health after start
#   KEEP_HOME=0           1: keep the throw-away TOKENGATE_HOME (and server.log) under bench/.run/
#   STRICT=0              1: exit 1 when a target fails
# Targets (issue 10), judged at the highest concurrency in CONCS: refresh >= 30000 req/s with
# p99 <= 10 ms; refresh_full >= 15000; cc >= 20000; introspect >= 40000 (each with 0 errors);
# password >= 90 % of (cores / argon2 verify time); prefilled at most 20 % slower than refresh;
# purging p99 <= 20 ms; peak RSS <= 64 MiB in every row; start to first token <= 100 ms.
set -euo pipefail
export LC_ALL=C # '.' as decimal point in awk/printf/times, whatever the user's locale

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"

CONCS="${CONCS:-32}"
DURATION="${DURATION:-20}"
WARMUP="${WARMUP:-2}"
SCENARIOS="${SCENARIOS:-ceiling password refresh cc introspect invalid flood prefilled purging refresh_full firsttoken}"
CEILING_PATH="${CEILING_PATH:-/health}"
PREFILL_ROWS="${PREFILL_ROWS:-1000000}"
PURGE_ROWS="${PURGE_ROWS:-1000000}"
FIRST_TOKEN_RUNS="${FIRST_TOKEN_RUNS:-5}"
ARGON2_ITERS="${ARGON2_ITERS:-40}"
OHA="${OHA:-auto}"
BENCHMARKS_FILE="${BENCHMARKS_FILE:-$ROOT/BENCHMARKS.md}"
SKIP_BUILD="${SKIP_BUILD:-0}"
TLS_VERIFY="${TLS_VERIFY:-0}"
HEALTH_WAIT="${HEALTH_WAIT:-60}"
KEEP_HOME="${KEEP_HOME:-0}"
STRICT="${STRICT:-0}"
TOKEN_STORE="${TOKEN_STORE:-}"

# The fixture the server is given through its own CLI, and that the load uses.
CLIENT_ID=bench-client # password, refresh_token and client_credentials grants
CLIENT_SECRET=bench-secret
RS_ID=bench-rs # a resource server: introspect = true, no grant type
RS_SECRET=bench-rs-secret
USER_NAME=alice
USER_PASSWORD=alice-password
# Wrong-password load goes to its own user, so a lockout it may trigger cannot turn the
# password cells of a later concurrency into errors.
INVALID_USER=mallory
INVALID_PASSWORD=mallory-password
# What config/ ships with a published secret (see config/clients.toml, users.toml); removed
# from the bench home after the first start-to-first-token measurement.
DEMO_CLIENT=wU62DjlyDBnq87GlBwplfqvmAbAa
DEMO_USER="admin"

# Targets (issue 10, "Fast, measured").
REFRESH_TARGET=30000
REFRESH_P99_MS=10
REFRESH_FULL_TARGET=15000
CC_TARGET=20000
INTROSPECT_TARGET=40000
PASSWORD_TARGET_PCT=90
PREFILLED_MAX_SLOWDOWN_PCT=20
PURGING_P99_MS=20
RSS_MAX_MIB=64
FIRST_TOKEN_MAX_MS=100

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }
has_scenario() { [[ " $SCENARIOS " == *" $1 "* ]]; }

# ---------------------------------------------------------------- checks
if ! { is_uint "$DURATION" && is_uint "$WARMUP" && ((DURATION >= 1 && DURATION + WARMUP <= 60)); }; then
  die "need DURATION >= 1 and DURATION + WARMUP <= 60 (got $DURATION + $WARMUP)"
fi
for c in $CONCS; do
  if ! { is_uint "$c" && ((c >= 1 && c <= 1024)); }; then die "bad concurrency '$c' in CONCS"; fi
done
[[ -n "${CONCS// /}" ]] || die "CONCS is empty"
if ! { is_uint "$PREFILL_ROWS" && is_uint "$PURGE_ROWS" && ((PREFILL_ROWS >= 2 && PURGE_ROWS >= 2)); }; then
  die "PREFILL_ROWS and PURGE_ROWS must be whole numbers >= 2"
fi
if ! { is_uint "$FIRST_TOKEN_RUNS" && ((FIRST_TOKEN_RUNS >= 1 && FIRST_TOKEN_RUNS <= 50)); }; then
  die "FIRST_TOKEN_RUNS must be 1..50"
fi
[[ "$CEILING_PATH" == /* ]] || die "CEILING_PATH must start with /"
# The ceiling runs first whatever SCENARIOS says: every row is shown as a fraction of it.
MAIN_SCENARIOS="ceiling"
RESTART_SCENARIOS=""
for s in $SCENARIOS; do
  case "$s" in
    ceiling | firsttoken) ;;
    password | refresh | invalid | flood | cc | introspect) MAIN_SCENARIOS="$MAIN_SCENARIOS $s" ;;
    prefilled | purging | refresh_full) ;;
    *) die "unknown scenario '$s' in SCENARIOS" ;;
  esac
done
for s in prefilled purging refresh_full; do # in this order, after the plain ones
  if has_scenario "$s"; then RESTART_SCENARIOS="$RESTART_SCENARIOS $s"; fi
done
if [[ -n "$TOKEN_STORE" ]] && has_scenario refresh_full; then
  log "refresh_full is about SQLite's fsync; skipped on PostgreSQL"
  RESTART_SCENARIOS="${RESTART_SCENARIOS/ refresh_full/}"
fi
for tool in cargo curl awk; do command -v "$tool" >/dev/null || die "$tool is required"; done
if [[ " $RESTART_SCENARIOS " == *" prefilled "* || " $RESTART_SCENARIOS " == *" purging "* ]]; then
  if [[ -n "$TOKEN_STORE" ]]; then
    command -v psql >/dev/null || die "prefilled/purging on PostgreSQL need psql"
  else
    command -v python3 >/dev/null || die "prefilled/purging need python3 (its sqlite3 module fills the store)"
  fi
fi
[[ -f "$ROOT/config/identity.toml" ]] || die "no config/identity.toml in $ROOT"
TARGET_CONC="$(tr ' ' '\n' <<<"$CONCS" | grep . | sort -n | tail -1)"

# ---------------------------------------------------------------- build
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
LOADGEN_DIR="${CARGO_TARGET_DIR:-$BENCH/loadgen/target}"
if [[ "$SKIP_BUILD" != 1 ]]; then
  log "building the release server (cargo build --release)"
  (cd "$ROOT" && cargo build --release)
  log "building bench/loadgen"
  cargo build --release --locked --manifest-path "$BENCH/loadgen/Cargo.toml"
fi
SERVER_BIN="$TARGET_DIR/release/tokengate"
TGLOAD="$LOADGEN_DIR/release/tgload"
ARGON2COST="$LOADGEN_DIR/release/argon2cost"
FIRSTTOKEN="$LOADGEN_DIR/release/firsttoken"
for b in "$SERVER_BIN" "$TGLOAD" "$ARGON2COST" "$FIRSTTOKEN"; do
  [[ -x "$b" ]] || die "missing $b (build it, or unset SKIP_BUILD)"
done

# ---------------------------------------------------------------- throw-away home
mkdir -p "$BENCH/.run"
# Under bench/.run (real disk, gitignored) rather than /tmp, which may be tmpfs: the SQLite
# store should see the same kind of disk as in use.
WORK="$(mktemp -d "$BENCH/.run/run.XXXXXX")"
HOME_DIR="$WORK/home"
CONF="$HOME_DIR/config/identity.toml"
SERVER_LOG="$WORK/server.log"
SERVER_PID=""
LOAD_PID=""
FT_PID_FILE="$WORK/firsttoken.pid" # the server firsttoken started last
PG_PREFILL_DIRTY=0

# pg_sql SQL...: runs statements on the PostgreSQL token store (quiet, stop at the first error)
pg_sql() { psql "$TOKEN_STORE" -X -q -v ON_ERROR_STOP=1 -At "$@"; }
# Rows the bench inserted into a PostgreSQL store (SQLite homes are thrown away).
pg_delete_prefill() {
  pg_sql -c "DELETE FROM access_tokens WHERE client_id = 'bench-prefill'" \
    -c "DELETE FROM refresh_tokens WHERE client_id = 'bench-prefill'"
}

stop_server() {
  [[ -n "$SERVER_PID" ]] || return 0
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 50; i++)); do # graceful shutdown drains; give it 10 s
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
# shellcheck disable=SC2317  # invoked through the EXIT trap
cleanup() {
  local rc=$?
  if [[ -n "$LOAD_PID" ]]; then
    kill -TERM "$LOAD_PID" 2>/dev/null || true
    wait "$LOAD_PID" 2>/dev/null || true
  fi
  # A server firsttoken started and could not stop (firsttoken killed meanwhile).
  if [[ -s "$FT_PID_FILE" ]]; then
    local ft_pid
    ft_pid="$(cat "$FT_PID_FILE")"
    if is_uint "$ft_pid" && [[ "$(readlink "/proc/$ft_pid/exe" 2>/dev/null)" == "$(readlink -f "$SERVER_BIN")" ]]; then
      kill -TERM "$ft_pid" 2>/dev/null || true
    fi
  fi
  stop_server
  if ((PG_PREFILL_DIRTY)); then
    log "deleting the bench's prefilled rows from the PostgreSQL store"
    pg_delete_prefill || log "could not: delete the rows with client_id 'bench-prefill' by hand"
  fi
  if ((rc != 0)) && [[ -s "$SERVER_LOG" ]]; then
    log "last lines of the server log:"
    tail -n 20 "$SERVER_LOG" >&2 || true
  fi
  if [[ "$KEEP_HOME" == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
  return "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT # both run cleanup through the EXIT trap
trap 'exit 143' TERM
# Every start uses this copy: a `cargo build` elsewhere during the run cannot swap the binary
# between phases.
cp "$SERVER_BIN" "$WORK/tokengate"
SERVER_BIN="$WORK/tokengate"

# set_config KEY VALUE: replaces the line `KEY = …` of the home's identity.toml (awk with the
# value from the environment: no sed metacharacters or escapes to worry about)
set_config() {
  grep -q "^$1 = " "$CONF" || die "no '$1 = …' line in config/identity.toml (renamed?)"
  K="$1" V="$2" awk 'index($0, ENVIRON["K"] " = ") == 1 { print ENVIRON["K"] " = " ENVIRON["V"]; next } { print }' \
    "$CONF" >"$CONF.new"
  cat "$CONF.new" >"$CONF" # keeps the file's mode
  rm -f "$CONF.new"
}
# restore_config KEY: the line as config/identity.toml has it
restore_config() { set_config "$1" "$(sed -n "s/^$1 = //p" "$ROOT/config/identity.toml")"; }

mkdir -p "$HOME_DIR/data" "$HOME_DIR/certs"
cp -R "$ROOT/config" "$HOME_DIR/config"
# Account lockout would answer repeated wrong passwords for one user without any argon2 work;
# the invalid and flood scenarios are about the argon2 cost, so the bench turns it off.
set_config max_failed_login_attempts 0
# argon2cost measures the bound with the parameters the bench's users get: the config's.
# hashing_param KEY: sets PARAM to the key's whole-number value in the home's identity.toml.
hashing_param() {
  PARAM="$(sed -n "s/^$1 = \([0-9][0-9]*\)\( .*\)\{0,1\}$/\1/p" "$CONF")"
  is_uint "$PARAM" || die "no '$1 = <whole number>' line in $CONF"
}
hashing_param argon2_memory_kib
ARGON2_PARAMS=(--m-kib "$PARAM")
hashing_param argon2_iterations
ARGON2_PARAMS+=(--t "$PARAM")
hashing_param argon2_parallelism
ARGON2_PARAMS+=(--p "$PARAM")
# The load generator opens up to 1024 connections from one address.
set_config max_connections_per_ip 0
# The management listener (/metrics) stays on, as in production, on a port the OS picks:
# pick_port only checks the HTTPS port, and 9000 + offset may be taken.
set_config port 0
# TOKEN_STORE=postgres://… measures the PostgreSQL token store instead of the default SQLite.
if [[ -n "$TOKEN_STORE" ]]; then
  set_config tokens "\"$TOKEN_STORE\""
  SQLITE_DB=""
else
  SQLITE_DB="$(sed -n 's|^tokens = "sqlite://\([^"]*\)".*|\1|p' "$CONF")"
  [[ -n "$SQLITE_DB" ]] || die "cannot find the SQLite path in the tokens line of config/identity.toml"
  [[ "$SQLITE_DB" == /* ]] || SQLITE_DB="$HOME_DIR/$SQLITE_DB"
fi
export TOKENGATE_HOME="$HOME_DIR"
log "TOKENGATE_HOME=$HOME_DIR"
printf '%s' "$CLIENT_SECRET" | "$SERVER_BIN" client add "$CLIENT_ID" --secret-stdin \
  --scopes "default" --grant-types "password refresh_token client_credentials" >>"$SERVER_LOG" 2>&1 \
  || die "'tokengate client add $CLIENT_ID' failed: $(tail -n 5 "$SERVER_LOG")"
printf '%s' "$RS_SECRET" | "$SERVER_BIN" client add "$RS_ID" --secret-stdin --grant-types "" \
  --introspect >>"$SERVER_LOG" 2>&1 \
  || die "'tokengate client add $RS_ID --introspect' failed: $(tail -n 5 "$SERVER_LOG")"
for pair in "$USER_NAME:$USER_PASSWORD" "$INVALID_USER:$INVALID_PASSWORD"; do
  printf '%s' "${pair#*:}" | "$SERVER_BIN" user add "${pair%%:*}" --password-stdin >>"$SERVER_LOG" 2>&1 \
    || die "'tokengate user add ${pair%%:*}' failed: $(tail -n 5 "$SERVER_LOG")"
done

# ---------------------------------------------------------------- starting and stopping
port_free() { # nothing listens on PORT (any address)
  if command -v ss >/dev/null; then
    if ss -Htln "sport = :$1" | grep -q .; then return 1; fi
  elif (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    return 1
  fi
  return 0
}
# pick_port: sets OFFSET, PORT and BASE to a free port (a new one for every start)
pick_port() {
  OFFSET=""
  local candidate
  for _ in $(seq 1 50); do
    # 9243..29242: clear of the default port and below the kernel's ephemeral range (32768+)
    candidate=$((1000 + RANDOM % 20000))
    if port_free $((8243 + candidate)); then OFFSET="$candidate"; break; fi
  done
  [[ -n "$OFFSET" ]] || die "no free port found"
  PORT=$((8243 + OFFSET))
  BASE="https://127.0.0.1:$PORT"
}
start_server() {
  pick_port
  log "starting tokengate serve --port-offset $OFFSET ($BASE)"
  "$SERVER_BIN" serve --port-offset "$OFFSET" >>"$SERVER_LOG" 2>&1 &
  SERVER_PID=$!
  local deadline=$((SECONDS + HEALTH_WAIT))
  until [[ "$(curl -ks -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/health" || true)" == 200 ]]; do
    kill -0 "$SERVER_PID" 2>/dev/null || die "the server exited during startup"
    ((SECONDS < deadline)) || die "GET $BASE/health did not answer 200 within ${HEALTH_WAIT}s"
    sleep 0.2
  done
  log "server ready (pid $SERVER_PID)"
}

# The first start ever makes the certificate, the JWT signing key and the SQLite store; no
# scenario measures it. A copy of the store as it is then lets later phases start from the
# same (empty) store.
start_server
stop_server
TLS_ARGS=(--insecure)
if [[ "$TLS_VERIFY" == 1 ]]; then TLS_ARGS=(--cacert "$HOME_DIR/certs/server.crt"); fi

# ---------------------------------------------------------------- start to first token
# firsttoken_run LABEL: FIRST_TOKEN_RUNS starts of the stopped server, timed from the spawn to
# the first client_credentials token (JSON in $WORK/firsttoken-LABEL.json).
firsttoken_run() {
  pick_port
  log "start to first token ($1): $FIRST_TOKEN_RUNS starts on port $PORT"
  local rc=0
  "$FIRSTTOKEN" --url "$BASE/token" --runs "$FIRST_TOKEN_RUNS" --client-id "$CLIENT_ID" \
    --client-secret "$CLIENT_SECRET" --server-log "$SERVER_LOG" --pid-file "$FT_PID_FILE" "${TLS_ARGS[@]}" \
    -- "$SERVER_BIN" serve --port-offset "$OFFSET" >"$WORK/firsttoken-$1.json" 2>"$WORK/firsttoken.err" &
  LOAD_PID=$!
  wait "$LOAD_PID" || rc=$?
  LOAD_PID=""
  cat "$WORK/firsttoken.err" >&2
  if ((rc != 0)); then
    log "firsttoken ($1) failed (exit $rc)"
    : >"$WORK/firsttoken-$1.json"
  fi
}
if has_scenario firsttoken; then firsttoken_run shipped; fi
# The bench home is set up as an operator would: without config/'s demo credentials, whose
# published secrets the server checks for at every start (one argon2 verify each).
"$SERVER_BIN" client remove "$DEMO_CLIENT" >>"$SERVER_LOG" 2>&1 || log "could not remove the demo client $DEMO_CLIENT"
"$SERVER_BIN" user remove "$DEMO_USER" >>"$SERVER_LOG" 2>&1 || log "could not remove the demo user $DEMO_USER"
if has_scenario firsttoken; then firsttoken_run operator; fi

if [[ -n "$SQLITE_DB" ]]; then
  mkdir -p "$WORK/pristine"
  cp -p "$SQLITE_DB"* "$WORK/pristine/"
fi
# reset_store: the SQLite store back to its state after the first start (no-op on PostgreSQL)
reset_store() {
  [[ -n "$SQLITE_DB" ]] || return 0
  rm -f "$SQLITE_DB" "$SQLITE_DB-wal" "$SQLITE_DB-shm"
  cp -p "$WORK/pristine/"* "$(dirname "$SQLITE_DB")/"
}

# ---------------------------------------------------------------- measuring helpers
CLK_TCK="$(getconf CLK_TCK)"
# utime + stime of a process (all its threads), in clock ticks; fields after "(comm)".
proc_ticks() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}'; }
# busy ticks of the whole machine (user nice system irq softirq steal)
machine_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
now_ns() { date +%s%N; }
# VmHWM is the lifetime peak; writing 5 to clear_refs resets it to the current RSS, so each
# cell reports its own peak. If the kernel refuses, the column is the peak since start.
HWM_PER_CELL=1
reset_hwm() { echo 5 >"/proc/$SERVER_PID/clear_refs" 2>/dev/null || HWM_PER_CELL=0; }
hwm_mib() { awk '/^VmHWM:/{printf "%.1f", $2 / 1024}' "/proc/$SERVER_PID/status"; }
# jnum KEY FILE: a top-level number from a tool's one-line JSON ("null" if absent)
jnum() { grep -o "\"$1\":[^,}]*" "$2" | head -n 1 | cut -d: -f2 || echo null; }
# child_cpu_s FILE: user + system seconds of reaped children, from the output of `times`
child_cpu_s() { awk 'NR == 2 { for (i = 1; i <= 2; i++) { split($i, p, /[ms]/); n += p[1] * 60 + p[2] } print n + 0 }' "$1"; }
pct() { awk -v t="$1" -v hz="$CLK_TCK" -v ns="$2" 'BEGIN{printf "%.0f", t / hz / (ns / 1e9) * 100}'; }

ROWS="$WORK/rows.tsv" # scenario conc tool req/s ok/s p50 p99 errors rss server% loadgen% other%
: >"$ROWS"
CELL_END_NS=0 # when the last measured cell ended

# measure TOOL SCENARIO CONC CMD...: runs CMD (which writes JSON to $WORK/out.json) and
# records one row with the server's peak RSS and the CPU used meanwhile.
measure() {
  local tool="$1" scenario="$2" conc="$3"
  shift 3
  kill -0 "$SERVER_PID" 2>/dev/null || die "the server is gone before $scenario c=$conc"
  reset_hwm
  local s0 m0 t0 s1 m1 t1 elapsed lg_cpu rc=0
  s0="$(proc_ticks "$SERVER_PID")"
  m0="$(machine_ticks)"
  t0="$(now_ns)"
  # In the background + wait, so INT/TERM reach the trap at once (a foreground child would
  # delay it); `times` (a builtin, no fork) gives the CPU of reaped children: the load tool.
  times >"$WORK/times0"
  "$@" >"$WORK/out.json" 2>"$WORK/out.err" &
  LOAD_PID=$!
  wait "$LOAD_PID" || rc=$?
  LOAD_PID=""
  times >"$WORK/times1"
  if ((rc != 0)); then
    cat "$WORK/out.err" >&2
    kill -0 "$SERVER_PID" 2>/dev/null || die "the server died during $scenario c=$conc"
    log "$tool $scenario c=$conc failed (exit $rc); row left out"
    return 0
  fi
  t1="$(now_ns)"
  CELL_END_NS="$t1"
  kill -0 "$SERVER_PID" 2>/dev/null || die "the server died during $scenario c=$conc"
  s1="$(proc_ticks "$SERVER_PID")"
  m1="$(machine_ticks)"
  cat "$WORK/out.err" >&2
  elapsed=$((t1 - t0))
  lg_cpu="$(awk -v a="$(child_cpu_s "$WORK/times0")" -v b="$(child_cpu_s "$WORK/times1")" -v ns="$elapsed" \
    'BEGIN{printf "%.0f", (b - a) / (ns / 1e9) * 100}')"
  local server_pct machine_pct
  server_pct="$(pct $((s1 - s0)) "$elapsed")"
  machine_pct="$(pct $((m1 - m0)) "$elapsed")"
  # what the rest of the machine used meanwhile (another build, ...); sampling makes this
  # jitter by a few % around 0, so negatives are shown as 0
  local other=$((machine_pct - server_pct - lg_cpu))
  ((other >= 0)) || other=0
  if ((other > 10)); then log "WARNING: other processes used ~${other}% CPU during $scenario c=$conc; numbers are disturbed"; fi
  local rss
  rss="$(hwm_mib)"
  if [[ "$tool" == tgload ]]; then
    local f="$WORK/out.json"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$conc" "$tool" \
      "$(jnum req_per_s "$f")" "$(jnum ok_per_s "$f")" "$(jnum p50_ms "$f")" "$(jnum p99_ms "$f")" \
      "$(jnum errors "$f")" "$rss" "$server_pct" "$lg_cpu" "$other" >>"$ROWS"
  else
    # oha's JSON is nested; python3 is only needed for this optional cross-check.
    python3 - "$WORK/out.json" "$scenario" "$DURATION" <<'PY' |
import json, sys
d = json.load(open(sys.argv[1]))
scenario, secs = sys.argv[2], float(sys.argv[3])
status = {str(k): v for k, v in d.get("statusCodeDistribution", {}).items()}
failed = sum(v for k, v in d.get("errorDistribution", {}).items() if "deadline" not in k)
good = {"200"} if scenario == "password" else {"400", "401"}
ok = sum(v for k, v in status.items() if k in good)
responses = sum(status.values())
lp = d.get("latencyPercentiles", {})
ms = lambda v: "null" if v is None else f"{v * 1000:.3f}"
print(f"{responses / secs:.3f}\t{ok / secs:.3f}\t{ms(lp.get('p50'))}\t{ms(lp.get('p99'))}\t{responses - ok + failed}")
PY
      awk -v s="$scenario" -v c="$conc" -v r="$rss" -v sp="$server_pct" -v lp="$lg_cpu" -v o="$other" \
        'BEGIN{OFS="\t"} {print s, c, "oha", $1, $2, $3, $4, $5, r, sp, lp, o}' >>"$ROWS"
  fi
}

# flood CONC: refresh at CONC measured while 64 other connections flood wrong passwords.
run_flood() {
  local conc="$1" flood_pid
  "$TGLOAD" --url "$BASE/token" --scenario invalid --duration $((DURATION + WARMUP + 3)) \
    --concurrency 64 --client-id "$CLIENT_ID" --client-secret "$CLIENT_SECRET" \
    --username "$INVALID_USER" --password "$INVALID_PASSWORD" "${TLS_ARGS[@]}" \
    >"$WORK/flood.json" 2>"$WORK/flood.err" &
  flood_pid=$!
  sleep 1 # let the flood fill the hashing queue first
  measure tgload flood "$conc" timeout --kill-after=5 $((DURATION + WARMUP + 45)) \
    "$TGLOAD" --url "$BASE/token" --scenario refresh --duration "$DURATION" --warmup "$WARMUP" \
    --concurrency "$conc" --client-id "$CLIENT_ID" --client-secret "$CLIENT_SECRET" \
    --username "$USER_NAME" --password "$USER_PASSWORD" "${TLS_ARGS[@]}"
  wait "$flood_pid" || true
  log "the flood meanwhile: $(tail -n 1 "$WORK/flood.err")"
}

# run_tgload SCENARIO CONC [WARMUP]: one cell; prefilled, purging and refresh_full are the
# refresh scenario on a server the caller prepared.
run_tgload() {
  local label="$1" conc="$2" warmup="${3:-$WARMUP}"
  local scenario="$1" url="$BASE/token" user="$USER_NAME" password="$USER_PASSWORD"
  local extra=()
  case "$label" in
    flood) run_flood "$conc"; return ;;
    ceiling) url="$BASE$CEILING_PATH" ;;
    invalid) user="$INVALID_USER" password="$INVALID_PASSWORD" ;;
    # the resource server introspects a client_credentials token of the bench client
    introspect)
      url="$BASE/introspect"
      extra=(--client-id "$RS_ID" --client-secret "$RS_SECRET"
        --token-client-id "$CLIENT_ID" --token-client-secret "$CLIENT_SECRET")
      ;;
    prefilled | purging | refresh_full) scenario=refresh ;;
  esac
  log "scenario $label, concurrency $conc: ${warmup}s warm-up + ${DURATION}s"
  # belt and braces: tgload stops by itself; timeout only guards against a hang in setup
  measure tgload "$label" "$conc" timeout --kill-after=5 $((DURATION + warmup + 45)) \
    "$TGLOAD" --url "$url" --scenario "$scenario" --duration "$DURATION" --warmup "$warmup" \
    --concurrency "$conc" --client-id "$CLIENT_ID" --client-secret "$CLIENT_SECRET" \
    --username "$user" --password "$password" "${extra[@]}" "${TLS_ARGS[@]}"
}

use_oha=0
if [[ "$OHA" != 0 ]] && command -v oha >/dev/null && command -v python3 >/dev/null; then
  use_oha=1
elif [[ "$OHA" == 1 ]]; then
  die "OHA=1 needs oha and python3 on PATH"
fi
run_oha() {
  local scenario="$1" conc="$2" body
  body="grant_type=password&username=$USER_NAME&password=$USER_PASSWORD"
  if [[ "$scenario" == invalid ]]; then
    body="grant_type=password&username=$INVALID_USER&password=$INVALID_PASSWORD-wrong"
  fi
  log "cross-check with oha: $scenario, concurrency $conc"
  # no warm-up flag in oha: the tgload cell just before warmed the server up
  measure oha "$scenario" "$conc" timeout --kill-after=5 $((DURATION + 30)) \
    oha -z "${DURATION}s" -c "$conc" --no-tui --output-format json -m POST \
    -a "$CLIENT_ID:$CLIENT_SECRET" -T application/x-www-form-urlencoded -d "$body" --insecure "$BASE/token"
}

# ---------------------------------------------------------------- bench-only store filling
# fill_store live|expired ROWS: ROWS tokens (ROWS/2 refresh + ROWS/2 access, one of each per
# grant) into the store of the stopped server. SQLite: bench/fill_store.py; PostgreSQL: one
# INSERT … SELECT generate_series per table, then VACUUM ANALYZE (as autovacuum would do after
# such an insert, so it does not start during the cell).
FILL_NOTE=""
fill_store() {
  local kind="$1" per_table=$(($2 / 2)) t0
  t0="$(now_ns)"
  log "filling the store: $((per_table * 2)) $kind tokens ($per_table access + $per_table refresh)"
  if [[ -n "$SQLITE_DB" ]]; then
    python3 "$BENCH/fill_store.py" "$SQLITE_DB" "$kind" "$per_table" >&2
    # Write the ~170 bytes/row out now: the kernel's writeback would otherwise run (and compete
    # for the disk and the cores) during the cell.
    sync "$SQLITE_DB"
  else
    local now start span access_life refresh_life
    now="$(date +%s)"
    if [[ "$kind" == live ]]; then
      start=$((now - 1800)) span=1800 access_life=3600 refresh_life=86400
    else
      start=$((now - 2 * 86400)) span=3600 access_life=3600 refresh_life=3600
    fi
    PG_PREFILL_DIRTY=1
    # UUIDv7: the 48-bit ms time over a random v4 UUID's first 6 bytes, version nibble 7
    # (the v4 variant bits are already RFC 9562's).
    pg_sql -c "BEGIN" -c "
      INSERT INTO refresh_tokens (id, secret_sha256, client_id, username, scope, family_id, issued_at, expires_at)
      SELECT u.id, sha256(u.id), 'bench-prefill', 'user-' || g.i, 'default', u.id, t.ms / 1000, t.ms / 1000 + $refresh_life
      FROM generate_series(0, $per_table - 1) AS g(i),
        LATERAL (SELECT $start::bigint * 1000 + g.i::bigint * $span * 1000 / $per_table AS ms) AS t,
        LATERAL (SELECT overlay(uuid_send(gen_random_uuid()) PLACING substring(int8send(t.ms) FROM 3 FOR 6) FROM 1 FOR 6) AS raw) AS r,
        LATERAL (SELECT set_byte(r.raw, 6, (get_byte(r.raw, 6) & 15) | 112) AS id) AS u
      ORDER BY g.i" -c "
      INSERT INTO access_tokens (id, secret_sha256, client_id, username, scope, family_id, issued_at, expires_at)
      SELECT set_byte(r.raw, 6, (get_byte(r.raw, 6) & 15) | 112), sha256(r.raw), f.client_id, f.username, f.scope, f.id,
        f.issued_at, f.issued_at + $access_life
      FROM refresh_tokens AS f,
        LATERAL (SELECT overlay(uuid_send(gen_random_uuid()) PLACING substring(f.id FROM 1 FOR 6) FROM 1 FOR 6) AS raw) AS r
      WHERE f.client_id = 'bench-prefill' AND f.issued_at BETWEEN $start AND $((start + span))
      ORDER BY f.id" -c "COMMIT" -c "VACUUM ANALYZE access_tokens" -c "VACUUM ANALYZE refresh_tokens"
  fi
  FILL_NOTE="$(awk -v ns=$(($(now_ns) - t0)) 'BEGIN{printf "%.1f", ns / 1e9}')"
  log "filled in ${FILL_NOTE}s"
}
# expired_left: expired tokens in the store now (what the janitor has still to purge)
expired_left() {
  if [[ -n "$SQLITE_DB" ]]; then
    python3 "$BENCH/fill_store.py" "$SQLITE_DB" count
  else
    local before=$(($(date +%s) - 60))
    pg_sql -c "SELECT (SELECT count(*) FROM access_tokens WHERE expires_at < $before)
      + (SELECT count(*) FROM refresh_tokens WHERE expires_at < $before)"
  fi
}
# th N: a whole number with thousands separators (1000000 -> 1,000,000)
th() { sed -e ':a' -e 's/\([0-9]\)\([0-9]\{3\}\)\($\|,\)/\1,\2\3/' -e 'ta' <<<"$1"; }
# log_epoch_ns TIMESTAMP: a server log timestamp (RFC 3339, UTC) in ns since the epoch
log_epoch_ns() { date -d "$1" +%s%N; }

# ---------------------------------------------------------------- scenarios
START_UTC="$(date -u '+%Y-%m-%d %H:%M UTC')"
start_server
for conc in $CONCS; do
  for scenario in $MAIN_SCENARIOS; do
    run_tgload "$scenario" "$conc"
    if ((use_oha)) && [[ "$scenario" == password || "$scenario" == invalid ]]; then
      run_oha "$scenario" "$conc"
    fi
  done
done
stop_server

PREFILL_INFO=""
PURGE_INFO=""
for phase in $RESTART_SCENARIOS; do
  case "$phase" in
    prefilled)
      reset_store
      fill_store live "$PREFILL_ROWS"
      PREFILL_INFO="$(th "$PREFILL_ROWS") unexpired tokens ($(th $((PREFILL_ROWS / 2))) access + $(th $((PREFILL_ROWS / 2))) refresh, issued over the last 30 min) inserted in ${FILL_NOTE} s with the server stopped, then the server started"
      start_server
      for conc in $CONCS; do run_tgload prefilled "$conc"; done
      stop_server
      if [[ -n "$TOKEN_STORE" ]]; then pg_delete_prefill && PG_PREFILL_DIRTY=0; fi
      ;;
    purging)
      # One fill and start per concurrency: the purge has to be running during each cell.
      # janitor_interval = 1: the janitor passes at start anyway (src/janitor.rs), and with 1 s
      # between passes nothing waits on the interval whatever the janitor does after a pass.
      set_config janitor_interval 1
      for conc in $CONCS; do
        reset_store
        fill_store expired "$PURGE_ROWS"
        log_offset=$(($(stat -c %s "$SERVER_LOG") + 1))
        start_server
        started_ns="$(now_ns)"
        left0="$(expired_left)"
        # No warm-up: the janitor started with the server and the cell should see all of it.
        run_tgload purging "$conc" 0
        left1="$(expired_left)"
        window0=$((CELL_END_NS - DURATION * 1000000000))
        stop_server
        # The janitor logs one line per pass that purged anything, when the pass ends.
        janitor="$(tail -c +"$log_offset" "$SERVER_LOG" | grep 'janitor purged expired rows' || true)"
        passes="$(grep -c . <<<"$janitor" || true)"
        purged="$(grep -o 'purged=[0-9]*' <<<"$janitor" | cut -d= -f2 | awk '{n += $1} END{print n + 0}')"
        last_pass=""
        if [[ -n "$janitor" ]]; then
          last_ts="$(tail -n 1 <<<"$janitor" | awk '{print $1}')"
          last_pass="$(awk -v a="$(log_epoch_ns "$last_ts")" -v w="$window0" -v s="$started_ns" \
            'BEGIN{printf "the last pass ended %.1f s after the measured window began (%.1f s after /health answered)", (a - w) / 1e9, (a - s) / 1e9}')"
        fi
        PURGE_INFO="${PURGE_INFO}- purging c=$conc: $(th "$PURGE_ROWS") expired tokens ($(th $((PURGE_ROWS / 2))) access + $(th $((PURGE_ROWS / 2))) refresh) inserted in ${FILL_NOTE} s with the server stopped; expired tokens left: $(th "$left0") when the cell started (server up), $(th "$left1") when it ended; the janitor purged $(th "$purged") rows in $passes pass(es); ${last_pass:-no janitor pass purged anything}."$'\n'
        log "purging c=$conc: expired left $left0 -> $left1; janitor: $purged rows in $passes pass(es)${last_pass:+; $last_pass}"
      done
      restore_config janitor_interval
      if [[ -n "$TOKEN_STORE" ]]; then pg_delete_prefill && PG_PREFILL_DIRTY=0; fi
      ;;
    refresh_full)
      reset_store
      set_config sqlite_synchronous '"full"'
      start_server
      for conc in $CONCS; do run_tgload refresh_full "$conc"; done
      stop_server
      restore_config sqlite_synchronous
      ;;
  esac
done
log "server stopped"

# ---------------------------------------------------------------- argon2 limit
# Measured with the server stopped, so the two cores are free.
log "measuring argon2id verify cost (argon2cost ${ARGON2_PARAMS[*]} --iters $ARGON2_ITERS)"
m0="$(machine_ticks)"
t0="$(now_ns)"
times >"$WORK/times0"
"$ARGON2COST" "${ARGON2_PARAMS[@]}" --iters "$ARGON2_ITERS" >"$WORK/argon2.json"
times >"$WORK/times1"
t1="$(now_ns)"
m1="$(machine_ticks)"
ARGON2_JSON="$(cat "$WORK/argon2.json")"
# A busy machine makes the limit look lower than it is: say so next to the figure.
ARGON2_OTHER="$(awk -v a="$(child_cpu_s "$WORK/times0")" -v b="$(child_cpu_s "$WORK/times1")" \
  -v m="$(pct $((m1 - m0)) $((t1 - t0)))" -v ns=$((t1 - t0)) \
  'BEGIN{o = m - (b - a) / (ns / 1e9) * 100; printf "%.0f", (o > 0 ? o : 0)}')"
ARGON2_NOTE=""
if ((ARGON2_OTHER > 10)); then
  log "WARNING: other processes used ~${ARGON2_OTHER}% CPU while argon2cost ran; the limit is understated"
  ARGON2_NOTE=" (other processes used ~${ARGON2_OTHER} % CPU meanwhile: understated)"
fi
a2() { grep -o "\"$1\":[^,}]*" <<<"$ARGON2_JSON" | head -n 1 | cut -d: -f2; }
VERIFY_MS="$(a2 single_thread_ms_per_verify)"
LIMIT="$(a2 limit_per_s)"
PARALLEL="$(a2 parallel_verifies_per_s)"
CORES="$(a2 cores)"
PASSWORD_TARGET="$(awk -v l="$LIMIT" -v p="$PASSWORD_TARGET_PCT" 'BEGIN{printf "%.1f", l * p / 100}')"

# ---------------------------------------------------------------- verdicts
VERDICTS="$WORK/verdicts.md"
: >"$VERDICTS"
# verdict TARGET_TEXT PASS|FAIL|"not run" DETAIL
verdict() {
  local result="$2"
  [[ "$result" == "not run" ]] || result="**$result**"
  echo "- $1: $result${3:+ ($3)}" >>"$VERDICTS"
}
# f1 / f2 N: N with 1 / 2 decimals ("n/a" for null)
f1() { awk -v v="$1" 'BEGIN{ if (v == "null" || v == "") print "n/a"; else printf "%.1f", v }'; }
f2() { awk -v v="$1" 'BEGIN{ if (v == "null" || v == "") print "n/a"; else printf "%.2f", v }'; }
# ge A B / le A B: numeric comparisons (A may be "null": false)
ge() { awk -v a="$1" -v b="$2" 'BEGIN{exit !(a != "null" && a != "" && a + 0 >= b + 0)}'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN{exit !(a != "null" && a != "" && a + 0 <= b + 0)}'; }
# row_at SCENARIO: the tgload row at the target concurrency
row_at() { awk -F'\t' -v s="$1" -v c="$TARGET_CONC" '$1 == s && $2 == c && $3 == "tgload"' "$ROWS" | head -n 1; }
# rate_verdict SCENARIO MIN_OK_PER_S [MAX_P99_MS]: ok/s >= MIN with 0 errors (and p99 <= MAX)
rate_verdict() {
  local scenario="$1" min="$2" max_p99="${3:-}" text row okps p99 errs
  text="$scenario >= $min req/s${max_p99:+ with p99 <= $max_p99 ms} and 0 errors"
  row="$(row_at "$scenario")"
  if [[ -z "$row" ]]; then verdict "$text" "not run"; return; fi
  IFS=$'\t' read -r _ _ _ _ okps _ p99 errs _ <<<"$row"
  local detail
  detail="$(f1 "$okps") ok/s, p99 $(f2 "$p99") ms, $errs errors"
  if ge "$okps" "$min" && [[ "$errs" == 0 ]] && { [[ -z "$max_p99" ]] || le "$p99" "$max_p99"; }; then
    verdict "$text" PASS "$detail"
  else
    verdict "$text" FAIL "$detail"
  fi
}
rate_verdict refresh "$REFRESH_TARGET" "$REFRESH_P99_MS"
if [[ -n "$TOKEN_STORE" ]]; then
  verdict "refresh_full >= $REFRESH_FULL_TARGET req/s and 0 errors" "not run" "SQLite only"
else
  rate_verdict refresh_full "$REFRESH_FULL_TARGET"
fi
rate_verdict cc "$CC_TARGET"
rate_verdict introspect "$INTROSPECT_TARGET"

text="password >= $PASSWORD_TARGET ok/s (${PASSWORD_TARGET_PCT} % of the argon2 limit)"
if row="$(row_at password)" && [[ -n "$row" ]]; then
  IFS=$'\t' read -r _ _ _ _ okps _ _ errs _ <<<"$row"
  if ge "$okps" "$PASSWORD_TARGET"; then
    verdict "$text" PASS "$(f1 "$okps") ok/s, $errs errors"
  else
    verdict "$text" FAIL "$(f1 "$okps") ok/s, $errs errors"
  fi
else
  verdict "$text" "not run"
fi

text="prefilled at most ${PREFILLED_MAX_SLOWDOWN_PCT} % slower than refresh (on an empty store), 0 errors"
row="$(row_at prefilled)"
base_row="$(row_at refresh)"
if [[ -n "$row" && -n "$base_row" ]]; then
  IFS=$'\t' read -r _ _ _ _ okps _ _ errs _ <<<"$row"
  IFS=$'\t' read -r _ _ _ _ base_okps _ _ _ _ <<<"$base_row"
  slower="$(awk -v p="$okps" -v r="$base_okps" 'BEGIN{ if (r + 0 > 0) printf "%.1f", (1 - p / r) * 100; else print "null" }')"
  detail="$(f1 "$okps") ok/s vs $(f1 "$base_okps") ok/s: $slower % slower, $errs errors"
  if le "$slower" "$PREFILLED_MAX_SLOWDOWN_PCT" && [[ "$errs" == 0 ]]; then
    verdict "$text" PASS "$detail"
  else
    verdict "$text" FAIL "$detail"
  fi
else
  verdict "$text" "not run" "needs the refresh and prefilled scenarios"
fi

text="purging: p99 <= $PURGING_P99_MS ms and 0 errors while the janitor purges $(th "$PURGE_ROWS") expired tokens"
if row="$(row_at purging)" && [[ -n "$row" ]]; then
  IFS=$'\t' read -r _ _ _ _ okps _ p99 errs _ <<<"$row"
  if le "$p99" "$PURGING_P99_MS" && [[ "$errs" == 0 ]]; then
    verdict "$text" PASS "p99 $(f2 "$p99") ms, $(f1 "$okps") ok/s, $errs errors"
  else
    verdict "$text" FAIL "p99 $(f2 "$p99") ms, $(f1 "$okps") ok/s, $errs errors"
  fi
else
  verdict "$text" "not run"
fi

text="peak RSS <= $RSS_MAX_MIB MiB in every row"
if [[ -s "$ROWS" ]]; then
  over="$(awk -F'\t' -v m="$RSS_MAX_MIB" '$9 + 0 > m {printf "%s%s c=%s %s: %s MiB", (n++ ? "; " : ""), $1, $2, $3, $9}' "$ROWS")"
  peak="$(awk -F'\t' '$9 + 0 > p {p = $9 + 0} END{print p}' "$ROWS")"
  if [[ -z "$over" ]]; then verdict "$text" PASS "highest $peak MiB"; else verdict "$text" FAIL "$over"; fi
else
  verdict "$text" "not run"
fi

FT_JSON="$WORK/firsttoken-operator.json"
text="start to first token <= $FIRST_TOKEN_MAX_MS ms (median of the starts without the demo credentials)"
if [[ -s "$FT_JSON" ]]; then
  ft_median="$(jnum median_ms "$FT_JSON")"
  if le "$ft_median" "$FIRST_TOKEN_MAX_MS"; then
    verdict "$text" PASS "median $ft_median ms"
  else
    verdict "$text" FAIL "median $ft_median ms"
  fi
else
  verdict "$text" "not run"
fi
FAILED=0
if grep -q '\*\*FAIL\*\*' "$VERDICTS"; then FAILED=1; fi

# ---------------------------------------------------------------- BENCHMARKS.md
COMMIT="$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo "none (no commit yet)")"
if [[ "$COMMIT" != none* ]] && [[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
  COMMIT="$COMMIT + uncommitted changes"
fi
CPU_MODEL="$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)"
MEM="$(awk '/^MemTotal:/{printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
SECTION="$WORK/section.md"
# ft_line LABEL TEXT: one line on a firsttoken result, or nothing
ft_line() {
  local f="$WORK/firsttoken-$1.json"
  [[ -s "$f" ]] || return 0
  echo "- $2: median **$(jnum median_ms "$f") ms**, min $(jnum min_ms "$f"), max $(jnum max_ms "$f")" \
    "over $(jnum runs "$f") starts (each: $(grep -o '"first_token_ms":\[[^]]*\]' "$f" | cut -d'[' -f2 | tr -d ']' | sed 's/,/, /g') ms;" \
    "port bound after $(grep -o '"first_connect_ms":\[[^]]*\]' "$f" | cut -d'[' -f2 | tr -d ']' | sed 's/,/, /g') ms)"
}
{
  echo "## $START_UTC"
  echo
  echo "- Machine: $(nproc) cores, ${CPU_MODEL:-unknown CPU}, $MEM RAM, $(uname -sr), $(rustc --version 2>/dev/null || echo 'rustc ?')"
  echo "- Commit: \`$COMMIT\`"
  if [[ -n "$TOKEN_STORE" ]]; then
    echo "- Token store: PostgreSQL on the same machine (127.0.0.1)"
  else
    echo "- Token store: SQLite (WAL, synchronous=normal; refresh_full: synchronous=full)"
  fi
  echo "- Method: \`bench/run.sh\` with CONCS=\"$CONCS\" DURATION=$DURATION WARMUP=$WARMUP;" \
    "tgload closed loop (C keep-alive HTTPS/1.1 connections, one request in flight each) on 127.0.0.1;" \
    "load generator and server share the cores. One server for the plain scenarios; prefilled, purging" \
    "and refresh_full each restart it on the store as the first start left it$([[ -n "$TOKEN_STORE" ]] && echo " (SQLite; a PostgreSQL store keeps its rows)")." \
    "Ceiling: GET $CEILING_PATH; % of ceiling = req/s / the ceiling's req/s at the same concurrency." \
    "Server µs/req = server CPU / req/s. Peak RSS is VmHWM $( ((HWM_PER_CELL)) && echo "per cell" || echo "since server start")."
  echo
  echo "| scenario | conc | tool | req/s | % of ceiling | p50 ms | p99 ms | errors | peak RSS MiB | server CPU % | server µs/req | loadgen CPU % | other CPU % |"
  echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  awk -F'\t' '
    function fmt(v, d) { return (v == "null" || v == "") ? "n/a" : sprintf("%.*f", d, v) }
    NR == FNR { if ($1 == "ceiling" && $3 == "tgload" && !($2 in ceil)) ceil[$2] = $4; next }
    {
      share = ($2 in ceil && ceil[$2] + 0 > 0 && $4 != "null") ? sprintf("%.1f", $4 / ceil[$2] * 100) : "n/a"
      us = ($4 != "null" && $4 + 0 > 0) ? sprintf("%.0f", $10 / 100 / $4 * 1e6) : "n/a"
      printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", \
        $1, $2, $3, fmt($4, 1), share, fmt($6, 2), fmt($7, 2), $8, $9, $10, us, $11, $12
    }' "$ROWS" "$ROWS"
  echo
  if [[ -n "$PREFILL_INFO" ]]; then echo "- prefilled: $PREFILL_INFO."; fi
  if [[ -n "$PURGE_INFO" ]]; then printf '%s' "$PURGE_INFO"; fi
  ft_line operator "Start to first token (\`firsttoken\`: spawn of \`tokengate serve\` to the first client_credentials token, a new connection tried every 1 ms), existing store and certificate, demo credentials removed"
  ft_line shipped "The same with config/'s demo client and user still present (their published secrets are checked at start)"
  echo
  echo "Argon2 limit: one argon2id verify (m=$(a2 m_kib) KiB, t=$(a2 t), p=$(a2 p), argon2 0.5) takes $VERIFY_MS ms on 1 thread," \
    "so $CORES cores / verify time = **$LIMIT password grants/s** ($PARALLEL verifies/s measured on $CORES threads at once);" \
    "password target = ${PASSWORD_TARGET_PCT} % = $PASSWORD_TARGET/s.$ARGON2_NOTE"
  echo
  echo "Targets at concurrency $TARGET_CONC:"
  cat "$VERDICTS"
} >"$SECTION"

if [[ ! -s "$BENCHMARKS_FILE" ]]; then
  {
    echo "# Benchmarks"
    echo
    echo "Written by \`bench/run.sh\` (see [bench/README.md](bench/README.md)); newest run first."
    echo "Server and load generator share the machine's cores; numbers from different machines or"
    echo "runs far apart are not directly comparable."
  } >"$BENCHMARKS_FILE"
fi
# Insert the new section above the previous newest one (or append if there is none).
awk -v sec="$SECTION" '
  function emit(  line) { while ((getline line < sec) > 0) print line; close(sec) }
  /^## / && !done { emit(); print ""; done = 1 }
  { print }
  END { if (!done) { print ""; emit() } }
' "$BENCHMARKS_FILE" >"$WORK/benchmarks.new"
cat "$WORK/benchmarks.new" >"$BENCHMARKS_FILE"

cat "$SECTION"
log "results added to $BENCHMARKS_FILE"
if [[ "$STRICT" == 1 ]] && ((FAILED)); then exit 1; fi
exit 0
