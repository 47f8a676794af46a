#!/usr/bin/env bash
# bench/warm.sh: mode warm against the fork-per-request and proxy modes, for the same Python and
# Node.js hello world (bench/warm/). Called by bench/run.sh; runs alone too:
#   FWATCHDOG=$PWD/build/fwatchdog bench/warm.sh
# For each language, three watchdogs on 127.0.0.1 (port=0, a private TMPDIR, metrics_port=0):
#   warm       mode=warm, workers=WARM_WORKERS, the shim of templates/<lang>-warm
#   streaming  mode=streaming, one interpreter per request (bench/warm/oneshot.*)
#   http       mode=http, a standard-library HTTP server (bench/warm/http_hello.*)
# Each gets one checked POST, then `wrk -t2 -c4 -d<BENCH_WARM_DURATION>s --latency`. Prints a
# Markdown table and the issue's aims (Python warm >= 20x streaming and >= http; printed, not
# asserted); exits 1 if a step failed. Every watchdog gets SIGTERM, then SIGKILL 5 s later,
# on exit (errors and Ctrl-C included); each one's stderr goes to a file.
# Knobs: BENCH_WARM_DURATION (5), BENCH_WARM_CONNS (4), WARM_WORKERS (2).
set -u -o pipefail

FWATCHDOG=${FWATCHDOG:?FWATCHDOG must be the absolute path of the watchdog binary}
DURATION=${BENCH_WARM_DURATION:-5}
CONNS=${BENCH_WARM_CONNS:-4}
WORKERS=${WARM_WORKERS:-2}
THREADS=2
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
FIX=$HERE/warm
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=$(command -v python3); fi
NODE=$(command -v node || true)
EXPECT='Hello, world!'

WORK=$(mktemp -d /tmp/fwatchdog-bench-warm.XXXXXX) || exit 1
PIDS=()  # watchdogs started and not yet reaped
FAILS=()
WRK_PID=

BENCH_NAME=bench/warm
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

# shellcheck disable=SC2317 # called through trap
cleanup() {
    local pid
    [ -n "$WRK_PID" ] && kill -TERM "$WRK_PID" 2>/dev/null && wait "$WRK_PID" 2>/dev/null
    for pid in "${PIDS[@]+"${PIDS[@]}"}"; do stop_wd "$pid"; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_wd NAME VAR=VALUE...: start a watchdog, wait for "Listening on port: N" and a 200 from
# /_/health (15 s: interpreters start slowly on a busy machine). Sets WD_PID WD_PORT WD_LOG.
start_wd() {
    local name=$1 i port='' code=''
    shift
    WD_LOG=$WORK/$name.stderr
    : >"$WD_LOG"
    mkdir -p "$WORK/tmp.$name"
    env -i PATH="$PATH" port=0 metrics_port=0 bind_address=127.0.0.1 TMPDIR="$WORK/tmp.$name" \
        healthcheck_interval=0 "$@" "$FWATCHDOG" </dev/null >"$WORK/$name.stdout" 2>"$WD_LOG" &
    WD_PID=$!
    PIDS+=("$WD_PID")
    for ((i = 0; i < 600; i++)); do
        port=$(grep -m1 -aoE 'Listening on port: [0-9]+' "$WD_LOG" | grep -oE '[0-9]+$')
        if [ -n "$port" ] && [ "$port" != 0 ]; then
            code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$port/_/health")
            if [ "$code" = 200 ]; then
                WD_PORT=$port
                return 0
            fi
        fi
        if ! is_live "$WD_PID"; then
            stop_wd "$WD_PID"
            note_fail "$name: watchdog exited with status $STOP_RC before it was ready; stderr: $(tail -n 3 "$WD_LOG" | tr '\n' ' ')"
            return 1
        fi
        sleep 0.025
    done
    note_fail "$name: not ready within 15 s (port ${port:-none}, health ${code:-none}); stderr: $(tail -n 3 "$WD_LOG" | tr '\n' ' ')"
    stop_wd "$WD_PID"
    return 1
}

# run_load NAME: one checked POST to the watchdog WD_PID/WD_PORT just started, then wrk. Stops
# the watchdog. Sets W_RPS (FAILED when there is no result) W_P50 W_P99 W_ERRS.
run_load() {
    local name=$1 code wrc rps non2xx sockerr
    W_RPS=FAILED W_P50=- W_P99=- W_ERRS=-
    code=$(curl -sS -m 10 -o "$WORK/$name.body" -w '%{http_code}' -H 'Content-Type: text/plain' \
        --data-binary world "http://127.0.0.1:$WD_PORT/" 2>"$WORK/$name.curl")
    if [ "$code" != 200 ] || [ "$(cat "$WORK/$name.body")" != "$EXPECT" ]; then
        note_fail "$name: checked POST: HTTP $code, body $(head -c 120 "$WORK/$name.body" | tr -c '[:print:]' '.') $(cat "$WORK/$name.curl"); stderr: $(tail -n 3 "$WD_LOG" | tr '\n' ' ')"
        stop_wd "$WD_PID"
        return 1
    fi
    wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -s "$WORK/post.lua" \
        "http://127.0.0.1:$WD_PORT/" >"$WORK/$name.wrk" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID"
    wrc=$?
    WRK_PID=
    is_live "$WD_PID" || note_fail "$name: watchdog died during wrk; stderr: $(tail -n 3 "$WD_LOG" | tr '\n' ' ')"
    stop_wd "$WD_PID"
    [ "$STOP_RC" = 0 ] || note_fail "$name: watchdog exit status $STOP_RC after SIGTERM (expected 0)"
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$WORK/$name.wrk")
    if [ "$wrc" != 0 ] || [ -z "$rps" ]; then
        note_fail "$name: wrk exit $wrc: $(tail -n 3 "$WORK/$name.wrk" | tr '\n' ' ')"
        return 1
    fi
    W_RPS=$(awk -v r="$rps" 'BEGIN { printf "%.0f", r }')
    W_P50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$WORK/$name.wrk")")
    W_P99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$WORK/$name.wrk")")
    non2xx=$(awk -F': *' '/Non-2xx or 3xx responses/ { print $2 }' "$WORK/$name.wrk")
    sockerr=$(awk '/Socket errors/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$WORK/$name.wrk")
    W_ERRS=$((${non2xx:-0} + ${sockerr:-0}))
    if [ "$W_ERRS" != 0 ]; then
        note_fail "$name: wrk saw ${non2xx:-0} non-2xx responses and ${sockerr:-0} socket errors; stderr: $(grep -m3 -vE 'Listening|Version|Watchdog mode|Timeouts|lock-file|Forking|ready| - 200 - ' "$WD_LOG" | tr '\n' ' ')"
    fi
    return 0
}

ratio() { # a b -> a/b with 1 decimal, or -
    case "$1$2" in *FAILED* | *-*) echo - ;; *) awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "-" }' ;; esac
}

# ---------------------------------------------------------------------------------------------
command -v wrk >/dev/null || { echo "bench/warm: wrk missing: apt-get install wrk" >&2; exit 1; }
command -v curl >/dev/null || { echo "bench/warm: curl missing: apt-get install curl" >&2; exit 1; }
[ -x "$FWATCHDOG" ] || { echo "bench/warm: $FWATCHDOG is not executable" >&2; exit 1; }

cat >"$WORK/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = "world"
wrk.headers["Content-Type"] = "text/plain"
EOF

declare -A RPS P50 P99 ERRS
LANGS=(python node)
MODES=(warm http streaming)
declare -A RUNNER=([python]="$PY" [node]="$NODE")
declare -A SHIM=([python]="$ROOT/templates/python3-warm/index.py" [node]="$ROOT/templates/node-warm/index.js")
declare -A EXT=([python]=py [node]=js)

for lang in "${LANGS[@]}"; do
    for mode in "${MODES[@]}"; do
        name=$lang-$mode
        RPS[$name]=FAILED P50[$name]=- P99[$name]=- ERRS[$name]=-
        if [ -z "${RUNNER[$lang]}" ]; then
            note_fail "$name: $lang is not installed"
            continue
        fi
        run=${RUNNER[$lang]} ext=${EXT[$lang]}
        echo "bench/warm: $name: wrk -t$THREADS -c$CONNS -d${DURATION}s" >&2
        case $mode in
        warm)
            start_wd "$name" mode=warm workers="$WORKERS" fprocess="$run ${SHIM[$lang]}" \
                WARM_HANDLER_FILE="$FIX/hello.$ext" || continue ;;
        streaming)
            start_wd "$name" mode=streaming fprocess="$run $FIX/oneshot.$ext" || continue ;;
        http)
            port=$(free_port)
            start_wd "$name" mode=http fprocess="$run $FIX/http_hello.$ext" BENCH_PORT="$port" \
                upstream_url="http://127.0.0.1:$port" || continue ;;
        esac
        run_load "$name"
        RPS[$name]=$W_RPS P50[$name]=$W_P50 P99[$name]=$W_P99 ERRS[$name]=$W_ERRS
    done
done

echo "### mode warm: hello world, wrk -t$THREADS -c$CONNS -d${DURATION}s, POST of 5 bytes"
echo
echo "| function | mode | req/s | p50 ms | p99 ms | errors | req/s vs streaming |"
echo "|---|---|---:|---:|---:|---:|---:|"
for lang in "${LANGS[@]}"; do
    for mode in "${MODES[@]}"; do
        name=$lang-$mode
        case $mode in
        warm) what="warm ($WORKERS workers, templates/${EXT[$lang]/py/python3}-warm shim)" ;;
        http) what="http (standard-library server)" ;;
        streaming) what="streaming (a process per request)" ;;
        esac
        what=${what/js-warm/node-warm}
        printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$lang" "$what" "${RPS[$name]}" \
            "${P50[$name]}" "${P99[$name]}" "${ERRS[$name]}" \
            "$(ratio "${RPS[$name]}" "${RPS[$lang-streaming]}")"
    done
done
echo
echo "Aims (printed, not asserted): Python warm ≥ 20× streaming: $(ratio "${RPS[python-warm]}" "${RPS[python-streaming]}")×;" \
    "Python warm ≥ http: $(ratio "${RPS[python-warm]}" "${RPS[python-http]}")×." \
    "Node warm vs streaming $(ratio "${RPS[node-warm]}" "${RPS[node-streaming]}")×, vs http $(ratio "${RPS[node-warm]}" "${RPS[node-http]}")×."
if [ "${#FAILS[@]}" -gt 0 ]; then
    echo
    echo "Failures:"
    for f in "${FAILS[@]}"; do echo "- $f"; done
    exit 1
fi
exit 0
