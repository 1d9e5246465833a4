#!/usr/bin/env bash
# bench/run.sh - tokengate's own benchmark (run from the project root: bench/run.sh).
#
# Builds the release server and bench/loadgen, starts `tokengate serve` from a throw-away
# TOKENGATE_HOME on a free port, runs the password / refresh / invalid scenarios with tgload
# (closed loop over HTTPS/1.1 on 127.0.0.1), samples the server's peak RSS and CPU, measures
# the argon2id limit with argon2cost, stops the server and adds a dated section to
# BENCHMARKS.md with a PASS/FAIL line per target.
#
# Env knobs (defaults):
#   CONCS="32"            concurrency levels (connections), e.g. CONCS="8 32"
#   DURATION=20           measured seconds per cell (DURATION + WARMUP <= 60)
#   WARMUP=2              unrecorded load before each cell
#   TOKEN_STORE=postgres://…  measure a PostgreSQL token store (default: SQLite in the temp home)
#   SCENARIOS="password refresh invalid flood"
#                         flood = the refresh scenario measured while 64 more connections
#                         send wrong passwords as fast as they can (argon2 saturated)
#   ARGON2_ITERS=40       argon2cost verifies per thread
#   OHA=auto              auto|1|0: also run oha (if installed) for password/invalid as a cross-check
#   BENCHMARKS_FILE=BENCHMARKS.md (project root)   where the results section goes
#   SKIP_BUILD=0          1: use the binaries already built
#   TLS_VERIFY=0          1: tgload trusts the server's generated certificate instead of --insecure
#   HEALTH_WAIT=60        seconds to wait for GET /health after start
#   KEEP_HOME=0           1: keep the throw-away TOKENGATE_HOME (and server.log) under bench/.run/
#   STRICT=0              1: exit 1 when a target fails
# Targets: refresh >= 5000 req/s with 0 errors; password >= 80 % of (cores / argon2 verify time).
# They are judged at the highest concurrency in CONCS.
set -euo pipefail
export LC_ALL=C # '.' as decimal point in awk/printf/times, whatever the user's locale

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"

CONCS="${CONCS:-32}"
DURATION="${DURATION:-20}"
WARMUP="${WARMUP:-2}"
SCENARIOS="${SCENARIOS:-password refresh invalid flood}"
ARGON2_ITERS="${ARGON2_ITERS:-40}"
OHA="${OHA:-auto}"
BENCHMARKS_FILE="${BENCHMARKS_FILE:-$ROOT/BENCHMARKS.md}"
SKIP_BUILD="${SKIP_BUILD:-0}"
TLS_VERIFY="${TLS_VERIFY:-0}"
HEALTH_WAIT="${HEALTH_WAIT:-60}"
KEEP_HOME="${KEEP_HOME:-0}"
STRICT="${STRICT:-0}"

# The fixture the server is given through its own CLI, and that the load uses.
CLIENT_ID=bench-client
CLIENT_SECRET=bench-secret
USER_NAME=alice
USER_PASSWORD=alice-password
# Wrong-password load goes to its own user, so a lockout it may trigger cannot turn the
# password cells of a later concurrency into errors.
INVALID_USER=mallory
INVALID_PASSWORD=mallory-password
REFRESH_TARGET=5000
PASSWORD_TARGET_PCT=80

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

# ---------------------------------------------------------------- checks
if ! { is_uint "$DURATION" && is_uint "$WARMUP" && ((DURATION >= 1 && DURATION + WARMUP <= 60)); }; then
  die "need DURATION >= 1 and DURATION + WARMUP <= 60 (got $DURATION + $WARMUP)"
fi
for c in $CONCS; do
  if ! { is_uint "$c" && ((c >= 1 && c <= 1024)); }; then die "bad concurrency '$c' in CONCS"; fi
done
[[ -n "${CONCS// /}" ]] || die "CONCS is empty"
for s in $SCENARIOS; do
  case "$s" in password | refresh | invalid | flood) ;; *) die "unknown scenario '$s' in SCENARIOS" ;; esac
done
for tool in cargo curl awk; do command -v "$tool" >/dev/null || die "$tool is required"; done
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
for b in "$SERVER_BIN" "$TGLOAD" "$ARGON2COST"; do [[ -x "$b" ]] || die "missing $b (build it, or unset SKIP_BUILD)"; done

# ---------------------------------------------------------------- throw-away home
mkdir -p "$BENCH/.run"
# Under bench/.run (real disk, gitignored) rather than /tmp, which may be tmpfs: the SQLite
# store should see the same kind of disk as in use.
WORK="$(mktemp -d "$BENCH/.run/run.XXXXXX")"
HOME_DIR="$WORK/home"
SERVER_LOG="$WORK/server.log"
SERVER_PID=""
LOAD_PID=""

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
  stop_server
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

mkdir -p "$HOME_DIR/data" "$HOME_DIR/certs"
cp -R "$ROOT/config" "$HOME_DIR/config"
# Account lockout would answer repeated wrong passwords for one user without any argon2 work;
# the invalid and flood scenarios are about the argon2 cost, so the bench turns it off.
sed -i 's/^max_failed_login_attempts = .*/max_failed_login_attempts = 0/' "$HOME_DIR/config/identity.toml"
# The load generator opens up to 1024 connections from one address.
sed -i 's/^max_connections_per_ip = [0-9]*/max_connections_per_ip = 0   /' "$HOME_DIR/config/identity.toml"
# TOKEN_STORE=postgres://… measures the PostgreSQL token store instead of the default SQLite.
if [[ -n "${TOKEN_STORE:-}" ]]; then
  sed -i "s|^tokens = .*|tokens = \"$TOKEN_STORE\"|" "$HOME_DIR/config/identity.toml"
fi
export TOKENGATE_HOME="$HOME_DIR"
log "TOKENGATE_HOME=$HOME_DIR"
printf '%s' "$CLIENT_SECRET" | "$SERVER_BIN" client add "$CLIENT_ID" --secret-stdin \
  --scopes "default" --grant-types "password refresh_token" >>"$SERVER_LOG" 2>&1 \
  || die "'tokengate client add $CLIENT_ID' failed: $(tail -n 5 "$SERVER_LOG")"
for pair in "$USER_NAME:$USER_PASSWORD" "$INVALID_USER:$INVALID_PASSWORD"; do
  printf '%s' "${pair#*:}" | "$SERVER_BIN" user add "${pair%%:*}" --password-stdin >>"$SERVER_LOG" 2>&1 \
    || die "'tokengate user add ${pair%%:*}' failed: $(tail -n 5 "$SERVER_LOG")"
done

# ---------------------------------------------------------------- start the server
port_free() { # nothing listens on PORT (any address)
  if command -v ss >/dev/null; then
    if ss -Htln "sport = :$1" | grep -q .; then return 1; fi
  elif (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    return 1
  fi
  return 0
}
OFFSET=""
for _ in $(seq 1 50); do
  # 9243..29242: clear of the default port and below the kernel's ephemeral range (32768+)
  candidate=$((1000 + RANDOM % 20000))
  if port_free $((8243 + candidate)); then OFFSET="$candidate"; break; fi
done
[[ -n "$OFFSET" ]] || die "no free port found"
PORT=$((8243 + OFFSET))
BASE="https://127.0.0.1:$PORT"

log "starting tokengate serve --port-offset $OFFSET ($BASE)"
"$SERVER_BIN" serve --port-offset "$OFFSET" >>"$SERVER_LOG" 2>&1 &
SERVER_PID=$!

deadline=$((SECONDS + HEALTH_WAIT))
until [[ "$(curl -ks -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/health" || true)" == 200 ]]; do
  kill -0 "$SERVER_PID" 2>/dev/null || die "the server exited during startup"
  ((SECONDS < deadline)) || die "GET $BASE/health did not answer 200 within ${HEALTH_WAIT}s"
  sleep 0.2
done
log "server ready (pid $SERVER_PID)"

TLS_ARGS=(--insecure)
if [[ "$TLS_VERIFY" == 1 ]]; then TLS_ARGS=(--cacert "$HOME_DIR/certs/server.crt"); fi

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
# jnum KEY FILE: a top-level number from tgload's one-line JSON ("null" if absent)
jnum() { grep -o "\"$1\":[^,}]*" "$2" | head -n 1 | cut -d: -f2 || echo null; }
# child_cpu_s FILE: user + system seconds of reaped children, from the output of `times`
child_cpu_s() { awk 'NR == 2 { for (i = 1; i <= 2; i++) { split($i, p, /[ms]/); n += p[1] * 60 + p[2] } print n + 0 }' "$1"; }
pct() { awk -v t="$1" -v hz="$CLK_TCK" -v ns="$2" 'BEGIN{printf "%.0f", t / hz / (ns / 1e9) * 100}'; }

ROWS="$WORK/rows.tsv" # scenario conc tool req/s ok/s p50 p99 errors rss server% loadgen% other%
: >"$ROWS"

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

run_tgload() {
  local scenario="$1" conc="$2" user="$USER_NAME" password="$USER_PASSWORD"
  if [[ "$scenario" == flood ]]; then
    run_flood "$conc"
    return
  fi
  if [[ "$scenario" == invalid ]]; then user="$INVALID_USER" password="$INVALID_PASSWORD"; fi
  # belt and braces: tgload stops by itself; timeout only guards against a hang in setup
  measure tgload "$scenario" "$conc" timeout --kill-after=5 $((DURATION + WARMUP + 45)) \
    "$TGLOAD" --url "$BASE/token" --scenario "$scenario" --duration "$DURATION" --warmup "$WARMUP" \
    --concurrency "$conc" --client-id "$CLIENT_ID" --client-secret "$CLIENT_SECRET" \
    --username "$user" --password "$password" "${TLS_ARGS[@]}"
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
  # no warm-up flag in oha: the tgload cell just before warmed the server up
  measure oha "$scenario" "$conc" timeout --kill-after=5 $((DURATION + 30)) \
    oha -z "${DURATION}s" -c "$conc" --no-tui --output-format json -m POST \
    -a "$CLIENT_ID:$CLIENT_SECRET" -T application/x-www-form-urlencoded -d "$body" --insecure "$BASE/token"
}

# ---------------------------------------------------------------- scenarios
START_UTC="$(date -u '+%Y-%m-%d %H:%M UTC')"
for conc in $CONCS; do
  for scenario in $SCENARIOS; do
    log "scenario $scenario, concurrency $conc: ${WARMUP}s warm-up + ${DURATION}s"
    run_tgload "$scenario" "$conc"
    if ((use_oha)) && [[ "$scenario" != refresh && "$scenario" != flood ]]; then
      log "cross-check with oha: $scenario, concurrency $conc"
      run_oha "$scenario" "$conc"
    fi
  done
done
stop_server
log "server stopped"

# ---------------------------------------------------------------- argon2 limit
# Measured with the server stopped, so the two cores are free.
log "measuring argon2id verify cost (argon2cost --iters $ARGON2_ITERS)"
m0="$(machine_ticks)"
t0="$(now_ns)"
times >"$WORK/times0"
"$ARGON2COST" --iters "$ARGON2_ITERS" >"$WORK/argon2.json"
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
# row_at SCENARIO: the tgload row at the target concurrency
row_at() { awk -F'\t' -v s="$1" -v c="$TARGET_CONC" '$1 == s && $2 == c && $3 == "tgload"' "$ROWS" | head -n 1; }
FAILED=0
verdict_refresh="not run"
if row="$(row_at refresh)" && [[ -n "$row" ]]; then
  IFS=$'\t' read -r _ _ _ rps okps _ _ errs _ <<<"$row"
  if awk -v v="$okps" -v t="$REFRESH_TARGET" 'BEGIN{exit !(v >= t)}' && [[ "$errs" == 0 ]]; then
    verdict_refresh="**PASS** ($rps req/s, $errs errors)"
  else
    verdict_refresh="**FAIL** ($rps req/s, $okps ok/s, $errs errors)"; FAILED=1
  fi
fi
verdict_password="not run"
if row="$(row_at password)" && [[ -n "$row" ]]; then
  IFS=$'\t' read -r _ _ _ rps okps _ _ errs _ <<<"$row"
  if awk -v v="$okps" -v t="$PASSWORD_TARGET" 'BEGIN{exit !(v >= t)}'; then
    verdict_password="**PASS** ($okps ok/s, $errs errors)"
  else
    verdict_password="**FAIL** ($okps ok/s, $errs errors)"; FAILED=1
  fi
fi

# ---------------------------------------------------------------- BENCHMARKS.md
COMMIT="$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo "none (no commit yet)")"
if [[ "$COMMIT" != none* ]] && [[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
  COMMIT="$COMMIT + uncommitted changes"
fi
CPU_MODEL="$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)"
MEM="$(awk '/^MemTotal:/{printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
SECTION="$WORK/section.md"
fmt() { awk -v v="$1" -v d="$2" 'BEGIN{ if (v == "null" || v == "") print "n/a"; else printf "%.*f", d, v }'; }
{
  echo "## $START_UTC"
  echo
  echo "- Machine: $(nproc) cores, ${CPU_MODEL:-unknown CPU}, $MEM RAM, $(uname -sr), $(rustc --version 2>/dev/null || echo 'rustc ?')"
  echo "- Commit: \`$COMMIT\`"
  echo "- Token store: $(if [[ -n "${TOKEN_STORE:-}" ]]; then echo "PostgreSQL 15 on the same machine (127.0.0.1)"; else echo "SQLite (WAL, synchronous=normal)"; fi)"
  echo "- Method: \`bench/run.sh\` with CONCS=\"$CONCS\" DURATION=$DURATION WARMUP=$WARMUP; one server for all cells;" \
    "tgload closed loop (C keep-alive HTTPS/1.1 connections, one request in flight each) on 127.0.0.1;" \
    "load generator and server share the cores. Peak RSS is VmHWM $( ((HWM_PER_CELL)) && echo "per cell" || echo "since server start")."
  echo
  echo "| scenario | conc | tool | req/s | p50 ms | p99 ms | errors | peak RSS MiB | server CPU % | loadgen CPU % | other CPU % |"
  echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  while IFS=$'\t' read -r scenario conc tool rps _ p50 p99 errs rss scpu lcpu other; do
    echo "| $scenario | $conc | $tool | $(fmt "$rps" 1) | $(fmt "$p50" 2) | $(fmt "$p99" 2) | $errs | $rss | $scpu | $lcpu | $other |"
  done <"$ROWS"
  echo
  echo "Argon2 limit: one argon2id verify (m=19456 KiB, t=2, p=1, argon2 0.5) takes $VERIFY_MS ms on 1 thread," \
    "so $CORES cores / verify time = **$LIMIT password grants/s** ($PARALLEL verifies/s measured on $CORES threads at once);" \
    "password target = ${PASSWORD_TARGET_PCT} % = $PASSWORD_TARGET/s.$ARGON2_NOTE"
  echo
  echo "Targets at concurrency $TARGET_CONC:"
  echo "- refresh >= $REFRESH_TARGET req/s with 0 errors: $verdict_refresh"
  echo "- password >= $PASSWORD_TARGET ok/s (${PASSWORD_TARGET_PCT} % of the argon2 limit): $verdict_password"
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
