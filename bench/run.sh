#!/usr/bin/env bash
# bench/run.sh: fwatchdog benchmark (see bench/README.md). Run through `make bench`, which sets
# FWATCHDOG and RAWSPAWN to absolute paths. Everything runs on 127.0.0.1; every watchdog started
# here gets SIGTERM (then SIGKILL after 5 s) on exit, including on errors and Ctrl-C.
# Knobs: BENCH_DURATION (wrk and rawspawn seconds, 5), BENCH_STARTS (exec-to-ready starts, 20),
# BENCH_ECHO_MIB (streaming echo size, 256), BENCH_OVH_DURATION (each overhead wrk run, BENCH_DURATION),
# BENCH_NGINX_DURATION (each wrk run of the mode http / mode static comparison with nginx, 4).
# The nginx baseline is a test instance of its own (bench/nginx.conf.in, in a temp dir, as nobody
# when run as root), stopped with SIGQUIT (SIGKILL 5 s later) on exit like the watchdogs.
# Every watchdog's stderr (one line per request) goes to a file, so it can never block on a full
# pipe; exec-to-ready reads its pipe until the port line and drains it at exit.
set -u -o pipefail

FWATCHDOG=${FWATCHDOG:?FWATCHDOG must be the absolute path of build/fwatchdog}
RAWSPAWN=${RAWSPAWN:?RAWSPAWN must be the absolute path of build/rawspawn}
DURATION=${BENCH_DURATION:-5}
STARTS=${BENCH_STARTS:-20}
ECHO_MIB=${BENCH_ECHO_MIB:-256}
OVH_DURATION=${BENCH_OVH_DURATION:-$DURATION}
NGX_DURATION=${BENCH_NGINX_DURATION:-4}
CONNS=8
THREADS=2
PAYLOAD=64
MODES=(classic serializing streaming)
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=python3; fi

WORK=$(mktemp -d /tmp/fwatchdog-bench.XXXXXX) || exit 1
PIDS=()     # every watchdog started and not yet reaped
FAILS=()    # one line per failure, printed at the end
WD_PID=0
WD_PORT=0
WD_LOG=
WRK_PID=    # a wrk running in the background, if any
START_QUIET=0 # 1: start_wd leaves its failure in START_ERR instead of reporting it
START_ERR=
NGX_DIR=    # the nginx test instance's temp dir, once made
NGX_PID=    # the nginx test instance, while it runs
NGX_PORT=
NGX_RC=0

BENCH_NAME=bench
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# SIGQUIT (graceful) to the nginx test instance, wait up to 5 s, then SIGKILL; reap. Sets NGX_RC.
stop_nginx() {
    NGX_RC=0
    [ -n "$NGX_PID" ] || return 0
    stop_pid "$NGX_PID" QUIT nginx
    NGX_RC=$STOP_RC
    NGX_PID=
}

# shellcheck disable=SC2317 # called through trap
cleanup() {
    local pid
    [ -n "$WRK_PID" ] && kill -TERM "$WRK_PID" 2>/dev/null && wait "$WRK_PID" 2>/dev/null
    for pid in "${PIDS[@]+"${PIDS[@]}"}"; do stop_wd "$pid"; done
    stop_nginx
    rm -rf "$WORK"
    if [ -n "$NGX_DIR" ]; then rm -rf "$NGX_DIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now_ms() { date +%s%3N; }

start_fail() {
    if [ "$START_QUIET" = 1 ]; then START_ERR="$*"; else note_fail "$@"; fi
}

# start_wd NAME MODE [VAR=VALUE...]: start a watchdog (fprocess=cat except in mode static,
# metrics_port=0 unless a VAR=VALUE overrides it) and wait for "Listening on port: N" on its
# stderr and a 200 from /_/health. Sets WD_PID, WD_PORT, WD_LOG, WD_T0 (ms). Returns 1 on failure.
start_wd() {
    local name=$1 mode=$2 i port=
    local -a fp=(fprocess=cat)
    shift 2
    [ "$mode" = static ] && fp=()
    WD_LOG=$WORK/$name.stderr
    : >"$WD_LOG" # exists before the first grep below, even if the shell has not opened it yet
    mkdir -p "$WORK/tmp.$name"
    WD_T0=$(now_ms)
    env -i PATH="$PATH" mode="$mode" "${fp[@]+"${fp[@]}"}" port=0 metrics_port=0 bind_address=127.0.0.1 \
        TMPDIR="$WORK/tmp.$name" healthcheck_interval=0 "$@" \
        "$FWATCHDOG" </dev/null >"$WORK/$name.stdout" 2>"$WD_LOG" &
    WD_PID=$!
    PIDS+=("$WD_PID")
    for ((i = 0; i < 200; i++)); do
        port=$(grep -m1 -aoE 'Listening on port: [0-9]+' "$WD_LOG" | grep -oE '[0-9]+$')
        [ -n "$port" ] && break
        if ! is_live "$WD_PID"; then
            stop_wd "$WD_PID"
            start_fail "$name: watchdog exited with status $STOP_RC before listening; stderr: $(tail -n 3 "$WD_LOG" | tr '\n' ' ')"
            return 1
        fi
        sleep 0.025
    done
    if [ -z "$port" ] || [ "$port" = 0 ]; then
        start_fail "$name: no 'Listening on port: N' (N > 0) on stderr within 5 s; stderr: $(tail -n 3 "$WD_LOG" | tr '\n' ' ')"
        stop_wd "$WD_PID"
        return 1
    fi
    WD_PORT=$port
    local code=
    for ((i = 0; i < 200; i++)); do
        code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$WD_PORT/_/health")
        [ "$code" = 200 ] && return 0
        sleep 0.025
    done
    start_fail "$name: GET /_/health did not answer 200 within 5 s (last: $code)"
    stop_wd "$WD_PID"
    return 1
}

status_kib() { # pid field -> kB
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null
}
kib_to_mib() { [ -n "$1" ] && awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }' || echo FAILED; }

# wrk latency field -> µs, rounded
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "ms") n *= 1000; else if (u == "s") n *= 1000000; else if (u == "m") n *= 60000000
        else if (u != "us") { print "?"; exit }
        printf "%.0f", n }'
}

# parse_wrk FILE: wrk --latency output -> W_RPS (rounded) W_P50 W_P99 (ms) W_P50_US W_P99_US W_REQS
# W_NON2XX W_SOCKERR W_ERRS (their sum). Returns 1 (W_RPS=FAILED) when there is no Requests/sec.
parse_wrk() {
    local f=$1 rps
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$f")
    [ -n "$rps" ] || { W_RPS=FAILED; return 1; }
    W_RPS=$(awk -v r="$rps" 'BEGIN { printf "%.0f", r }')
    W_P50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$f")")
    W_P99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$f")")
    W_P50_US=$(to_us "$(awk '$1 == "50%" { print $2 }' "$f")")
    W_P99_US=$(to_us "$(awk '$1 == "99%" { print $2 }' "$f")")
    W_REQS=$(awk '$2 == "requests" && $3 == "in" { print $1 }' "$f")
    W_NON2XX=$(awk -F': *' '/Non-2xx or 3xx responses/ { print $2 }' "$f")
    W_SOCKERR=$(awk '/Socket errors/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$f")
    W_NON2XX=${W_NON2XX:-0} W_SOCKERR=${W_SOCKERR:-0}
    W_ERRS=$((W_NON2XX + W_SOCKERR))
}

# ---------------------------------------------------------------------------------------------
command -v wrk >/dev/null || {
    if [ "$(id -u)" = 0 ]; then
        echo "bench: installing wrk" >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk) >/dev/null
    fi
    command -v wrk >/dev/null || { echo "bench: wrk missing: apt-get install wrk" >&2; exit 1; }
}
command -v curl >/dev/null || { echo "bench: curl missing: apt-get install curl" >&2; exit 1; }
# nginx: the baseline of the mode http / mode static rows; without it those rows are FAILED.
NGINX=$(command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; })
if [ -z "$NGINX" ] && [ "$(id -u)" = 0 ]; then
    echo "bench: installing nginx-light" >&2
    (apt-get update -qq && { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx; }) >/dev/null 2>&1
    NGINX=$(command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; })
fi
[ -x "$FWATCHDOG" ] || { echo "bench: $FWATCHDOG is not executable (run make first)" >&2; exit 1; }
[ -x "$RAWSPAWN" ] || { echo "bench: $RAWSPAWN is not executable" >&2; exit 1; }

# The echo client (bench/echoclient.c) is built here, beside the watchdog, when missing or stale.
ECHOCLIENT=$(dirname "$FWATCHDOG")/echoclient
ECHO_SRC=$(dirname "${BASH_SOURCE[0]}")/echoclient.c
if [ "$ECHO_SRC" -nt "$ECHOCLIENT" ]; then
    echo "bench: CC $ECHO_SRC -> $ECHOCLIENT" >&2
    if ! ${CC:-cc} -O2 -Wall -Wextra -Werror -o "$ECHOCLIENT" "$ECHO_SRC" 2>"$WORK/echoclient.cc"; then
        note_fail "echoclient: ${CC:-cc} failed: $(head -n 5 "$WORK/echoclient.cc" | tr '\n' ' ')"
        ECHOCLIENT=
    fi
fi

head -c "$PAYLOAD" /dev/zero | tr '\0' x >"$WORK/payload"
cat >"$WORK/post.lua" <<EOF
wrk.method = "POST"
wrk.body = string.rep("x", $PAYLOAD)
wrk.headers["Content-Type"] = "text/plain"
EOF

# 1. raw spawn rate: no HTTP, same handler, same concurrency, and the same small environment as
# the watchdog's children (a UTF-8 LANG alone makes every `cat` load locale files).
echo "bench: rawspawn ${DURATION}s x $CONNS children" >&2
RAW_OUT=$(env -i PATH="$PATH" "$RAWSPAWN" "$DURATION" "$CONNS" "$PAYLOAD" cat 2>"$WORK/rawspawn.err")
RAW_RC=$?
RAW_RATE=$(sed -nE 's/.* spawns\/s=([0-9.]+).*/\1/p' <<<"$RAW_OUT")
RAW_P50=$(sed -nE 's/.* p50_us=([0-9]+).*/\1/p' <<<"$RAW_OUT")
RAW_P99=$(sed -nE 's/.* p99_us=([0-9]+).*/\1/p' <<<"$RAW_OUT")
RAW_ERR=$(sed -nE 's/.* errors=([0-9]+).*/\1/p' <<<"$RAW_OUT")
if [ "$RAW_RC" != 0 ] || [ -z "$RAW_RATE" ]; then
    note_fail "rawspawn: exit $RAW_RC: $RAW_OUT $(cat "$WORK/rawspawn.err")"
fi

# run_load NAME SECONDS [METRICS_PORT]: on the watchdog WD_PID/WD_PORT just started, one checked
# POST, then wrk for SECONDS; with METRICS_PORT, GET /metrics once halfway through the run. Stops
# the watchdog. Sets W_RPS W_P50 W_P99 W_ERRS W_REQS W_HWM W_SCRAPE_MS; returns 1 when there is no
# wrk result. Every failure is reported here.
run_load() {
    local name=$1 secs=$2 mport=${3:-} code wrc
    W_RPS=FAILED W_P50=- W_P99=- W_ERRS=- W_REQS='' W_HWM=- W_SCRAPE_MS=-
    # One checked request first, so a broken watchdog is reported with what it answered.
    code=$(curl -sS -m 5 -o "$WORK/$name.body" -w '%{http_code}' -H 'Content-Type: text/plain' \
        --data-binary @"$WORK/payload" "http://127.0.0.1:$WD_PORT/" 2>"$WORK/$name.curl")
    if [ "$code" != 200 ] || ! cmp -s "$WORK/payload" "$WORK/$name.body"; then
        note_fail "$name: POST of $PAYLOAD bytes to cat: HTTP $code, body $(head -c 120 "$WORK/$name.body" | tr -c '[:print:]' '.') $(cat "$WORK/$name.curl")"
        stop_wd "$WD_PID"
        return 1
    fi
    wrk -t"$THREADS" -c"$CONNS" -d"${secs}s" --latency -s "$WORK/post.lua" \
        "http://127.0.0.1:$WD_PORT/" >"$WORK/$name.wrk" 2>&1 &
    WRK_PID=$!
    if [ -n "$mport" ]; then
        sleep "$(awk -v s="$secs" 'BEGIN { printf "%.3f", s / 2 }')"
        local out
        out=$(curl -sS -m 5 -o "$WORK/$name.metrics" -w '%{http_code} %{time_total}' \
            "http://127.0.0.1:$mport/metrics" 2>&1)
        # The POSTs served so far: at least the checked one, and wrk's after half the run.
        local served
        served=$(awk '/^http_requests_total\{.*code="200".*method="post"/ { n += $2 } END { print n + 0 }' \
            "$WORK/$name.metrics" 2>/dev/null)
        if [ "${out%% *}" = 200 ] && [ "${served:-0}" -gt 1 ]; then
            W_SCRAPE_MS=$(awk -v t="${out#* }" 'BEGIN { printf "%.1f", t * 1000 }')
        else
            note_fail "$name: GET /metrics on 127.0.0.1:$mport during wrk: $out; http_requests_total{code=200,method=post} = ${served:-none} (want > 1)"
        fi
    fi
    wait "$WRK_PID"
    wrc=$?
    WRK_PID=
    W_HWM=$(kib_to_mib "$(status_kib "$WD_PID" VmHWM)")
    is_live "$WD_PID" || note_fail "$name: watchdog died during wrk; stderr: $(tail -n 3 "$WD_LOG" | tr '\n' ' ')"
    stop_wd "$WD_PID"
    [ "$STOP_RC" = 0 ] || note_fail "$name: watchdog exit status $STOP_RC after SIGTERM (expected 0)"
    if ! parse_wrk "$WORK/$name.wrk" || [ "$wrc" != 0 ]; then
        W_RPS=FAILED W_P50=- W_P99=- W_ERRS=-
        note_fail "$name: wrk exit $wrc: $(tail -n 3 "$WORK/$name.wrk" | tr '\n' ' ')"
        return 1
    fi
    if [ "$W_ERRS" != 0 ]; then
        note_fail "$name: wrk saw $W_NON2XX non-2xx responses and $W_SOCKERR socket errors; watchdog stderr: $(grep -m3 -vE 'Listening|Version|Watchdog mode|Timeouts|lock-file| - 200 - |"status":200' "$WD_LOG" | tr '\n' ' ')"
    fi
    return 0
}

# 2. each fork mode under wrk; streaming also gives the idle RSS.
declare -A RPS P50 P99 ERRS HWM
IDLE_RSS=
for mode in "${MODES[@]}"; do
    RPS[$mode]=FAILED P50[$mode]=- P99[$mode]=- ERRS[$mode]=- HWM[$mode]=-
    echo "bench: $mode: wrk -t$THREADS -c$CONNS -d${DURATION}s" >&2
    start_wd "$mode" "$mode" || continue
    if [ "$mode" = streaming ]; then
        left=$((1000 - ($(now_ms) - WD_T0)))
        [ "$left" -gt 0 ] && sleep "$(awk -v l="$left" 'BEGIN { printf "%.3f", l / 1000 }')"
        IDLE_RSS=$(status_kib "$WD_PID" VmRSS)
    fi
    run_load "$mode" "$DURATION"
    RPS[$mode]=$W_RPS P50[$mode]=$W_P50 P99[$mode]=$W_P99 ERRS[$mode]=$W_ERRS HWM[$mode]=$W_HWM
done

# 2b. metrics and JSON log overhead, streaming: (a) metrics_port=0 and text logs, (b) a metrics
# listener (scraped once per run) and text logs, (c) a metrics listener and log_format=json.
# Interleaved a b c a b c; the run with more req/s of each pair is kept, with its own p50/p99.
OVH_CONFIGS=(a b c)
declare -A OVH_NAME=([a]="metrics off, text logs" [b]="metrics on, text logs" [c]="metrics on, JSON logs")
declare -A O_RPS O_P50 O_P99 O_ERRS O_ALL O_SCRAPE
for c in "${OVH_CONFIGS[@]}"; do
    O_RPS[$c]=FAILED O_P50[$c]=- O_P99[$c]=- O_ERRS[$c]=- O_ALL[$c]='' O_SCRAPE[$c]=''
done
echo "bench: overhead: streaming, wrk -t$THREADS -c$CONNS -d${OVH_DURATION}s x 6 (a b c a b c)" >&2
for round in 1 2; do
    for c in "${OVH_CONFIGS[@]}"; do
        name=ovh-$c$round
        mport=
        fmt=text
        [ "$c" = c ] && fmt=json
        ok=0
        if [ "$c" = a ]; then
            start_wd "$name" streaming metrics_port=0 log_format=$fmt && ok=1
        else
            # A free loopback port, found by binding port 0; another one if it was taken meanwhile.
            START_QUIET=1 START_ERR=''
            for _ in 1 2 3; do
                mport=$(free_port) || break
                start_wd "$name" streaming metrics_port="$mport" log_format=$fmt && { ok=1; break; }
            done
            START_QUIET=0
            [ "$ok" = 1 ] || note_fail "${START_ERR:-$name: no free loopback port for metrics_port}"
            if [ "$ok" = 1 ] && ! grep -aq "Metrics listening on port: $mport\b" "$WD_LOG"; then
                note_fail "$name: no 'Metrics listening on port: $mport' on stderr"
            fi
        fi
        [ "$ok" = 1 ] || { O_ALL[$c]+="${O_ALL[$c]:+ / }FAILED"; continue; }
        if run_load "$name" "$OVH_DURATION" "$mport"; then
            # Every request must have been logged, in the configured format (checked after SIGTERM,
            # which drains; wrk counts only whole responses, the watchdog also the checked POST).
            if [ "$c" = c ]; then
                nlog=$(grep -c '^{.*"msg":"request","method":"POST","path":"/","status":200' "$WD_LOG")
                nbad=$(grep -vc '^{' "$WD_LOG")
                [ "$nbad" = 0 ] || note_fail "$name: $nbad stderr lines that are not JSON objects: $(grep -m2 -v '^{' "$WD_LOG" | tr '\n' ' ')"
            else
                nlog=$(grep -c ' POST / - 200 - ContentLength: ' "$WD_LOG")
            fi
            [ "$nlog" -gt "${W_REQS:-0}" ] || note_fail "$name: $nlog request lines on stderr for $((${W_REQS:-0} + 1)) requests"
            O_ALL[$c]+="${O_ALL[$c]:+ / }$W_RPS"
            [ -n "$mport" ] && O_SCRAPE[$c]+="${O_SCRAPE[$c]:+ / }$W_SCRAPE_MS"
            if [ "${O_RPS[$c]}" = FAILED ] || [ "$W_RPS" -gt "${O_RPS[$c]}" ]; then
                O_RPS[$c]=$W_RPS O_P50[$c]=$W_P50 O_P99[$c]=$W_P99 O_ERRS[$c]=$W_ERRS
            fi
        else
            O_ALL[$c]+="${O_ALL[$c]:+ / }FAILED"
        fi
    done
done

# 3. exec-to-ready, median of $STARTS starts (streaming, fprocess=cat).
echo "bench: exec-to-ready x $STARTS" >&2
mkdir -p "$WORK/tmp.ready"
# ready_figures BINARY: "listen_ms=.. health_ms=.. rss_kb=.." (medians; RSS of the first start).
ready_figures() {
    "$PY" - "$1" "$STARTS" "$WORK/tmp.ready" 2>&1 <<'PYEOF'
import os, re, select, signal, socket, statistics, subprocess, sys, time

fw, n, tmp = sys.argv[1], int(sys.argv[2]), sys.argv[3]
env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "mode": "streaming", "fprocess": "cat",
       "port": "0", "metrics_port": "0", "bind_address": "127.0.0.1", "TMPDIR": tmp,
       "healthcheck_interval": "0"}
rx = re.compile(rb"Listening on port: (\d+)")
listen_ms, health_ms = [], []

def health_ok(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /_/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False

for i in range(n):
    t0 = time.perf_counter()
    p = subprocess.Popen([fw], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    try:
        fd, buf, port = p.stderr.fileno(), b"", None
        while port is None:
            left = t0 + 5 - time.perf_counter()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                sys.exit("start %d: no 'Listening on port' within 5 s: %r" % (i, buf[-200:]))
            chunk = os.read(fd, 65536)
            if not chunk:
                sys.exit("start %d: exited (%s) before listening: %r" % (i, p.wait(), buf[-200:]))
            buf += chunk
            m = rx.search(buf)
            if m and int(m.group(1)) > 0:
                port = int(m.group(1))
        t1 = time.perf_counter()
        while not health_ok(port):
            if time.perf_counter() - t0 > 5:
                sys.exit("start %d: /_/health not 200 within 5 s" % i)
            time.sleep(0.0002)
        t2 = time.perf_counter()
        if i == 0:
            time.sleep(1)
            with open("/proc/%d/status" % p.pid) as f:
                rss_kb = [l.split()[1] for l in f if l.startswith("VmRSS:")][0]
        listen_ms.append((t1 - t0) * 1000)
        health_ms.append((t2 - t0) * 1000)
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.communicate(timeout=5)  # drains stderr, so the watchdog never blocks writing it
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
print("listen_ms=%.2f health_ms=%.2f rss_kb=%s" % (statistics.median(listen_ms),
                                                  statistics.median(health_ms), rss_kb))
PYEOF
}
READY_OUT=$(ready_figures "$FWATCHDOG")
READY_RC=$?
READY_LISTEN=$(sed -nE 's/.*listen_ms=([0-9.]+).*/\1/p' <<<"$READY_OUT")
READY_HEALTH=$(sed -nE 's/.*health_ms=([0-9.]+).*/\1/p' <<<"$READY_OUT")
if [ "$READY_RC" != 0 ] || [ -z "$READY_HEALTH" ]; then
    note_fail "exec-to-ready: $READY_OUT"
fi

# 3b. the same figures for the static release binary, when it was built (make static).
STATIC_READY=
if [ -n "${FWATCHDOG_STATIC:-}" ] && [ -x "$FWATCHDOG_STATIC" ]; then
    echo "bench: exec-to-ready x $STARTS (static)" >&2
    STATIC_OUT=$(ready_figures "$FWATCHDOG_STATIC")
    STATIC_READY=$(sed -nE 's/.*health_ms=([0-9.]+) rss_kb=([0-9]+).*/\1 ms, idle RSS \2 KiB/p' <<<"$STATIC_OUT")
    [ -n "$STATIC_READY" ] || note_fail "exec-to-ready (static): $STATIC_OUT"
fi

# 4. streaming echo of $ECHO_MIB MiB through cat: send and receive at once, on a fresh watchdog.
echo "bench: streaming echo of $ECHO_MIB MiB" >&2
ECHO_RATE=FAILED ECHO_HWM=-
if [ -z "$ECHOCLIENT" ]; then
    : # build failure already reported
elif start_wd echo streaming; then
    ECHO_OUT=$("$ECHOCLIENT" "$WD_PORT" "$((ECHO_MIB << 20))" 2>&1)
    echo_rc=$?
    ECHO_HWM=$(kib_to_mib "$(status_kib "$WD_PID" VmHWM)")
    stop_wd "$WD_PID"
    [ "$STOP_RC" = 0 ] || note_fail "echo: watchdog exit status $STOP_RC after SIGTERM (expected 0)"
    ECHO_RATE=$(sed -nE 's/.*MiBps=([0-9.]+).*/\1/p' <<<"$ECHO_OUT")
    if [ "$echo_rc" != 0 ] || [ -z "$ECHO_RATE" ]; then
        ECHO_RATE=FAILED
        note_fail "echo $ECHO_MIB MiB: $(tail -n 2 <<<"$ECHO_OUT" | tr '\n' ' ') watchdog stderr: $(tail -n 3 "$WD_LOG" | tr '\n' ' ')"
    fi
fi

# 5. mode http and mode static against nginx (bench/nginx.conf.in). GET only, wrk -d$NGX_DURATION;
# each pair of targets runs interleaved (baseline, watchdog, baseline, watchdog), best run kept.
NGX_TEMPLATE=$(dirname "${BASH_SOURCE[0]}")/nginx.conf.in
NGX_KEYS=(http-direct http-wd static-nginx static-wd)
declare -A G_RPS G_P99 G_P50US G_ERRS G_ALL G_HWM
for k in "${NGX_KEYS[@]}"; do
    G_RPS[$k]=FAILED G_P99[$k]='' G_P50US[$k]='' G_ERRS[$k]=- G_ALL[$k]='' G_HWM[$k]=-
done

# start_nginx: the test instance in $NGX_DIR on a free loopback port (another one, up to 3 tries,
# if it was taken meanwhile), as nobody when run as root; ready once GET / answers 200 "ok\n".
# Sets NGX_PID and NGX_PORT; returns 1 on failure (reported).
start_nginx() {
    local try i code as=() why=
    if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
        as=(setpriv --reuid=65534 --regid=65534 --clear-groups)
        chown 65534:65534 "$NGX_DIR"
    fi
    for try in 1 2 3; do
        NGX_PORT=$(free_port) || { why="no free loopback port"; break; }
        sed -e "s|@DIR@|$NGX_DIR|g" -e "s|@PORT@|$NGX_PORT|g" "$NGX_TEMPLATE" >"$NGX_DIR/nginx.conf"
        "${as[@]+"${as[@]}"}" "$NGINX" -p "$NGX_DIR/" -c "$NGX_DIR/nginx.conf" -e "$NGX_DIR/error.log" \
            </dev/null >"$NGX_DIR/nginx.out" 2>&1 &
        NGX_PID=$!
        for ((i = 0; i < 200; i++)); do
            code=$(curl -s -o "$NGX_DIR/probe" -m 1 -w '%{http_code}' "http://127.0.0.1:$NGX_PORT/")
            if [ "$code" = 200 ] && cmp -s "$WORK/ok.txt" "$NGX_DIR/probe"; then return 0; fi
            is_live "$NGX_PID" || break
            sleep 0.025
        done
        why="try $try: GET / answered $code; $(tail -n 2 "$NGX_DIR/error.log" "$NGX_DIR/nginx.out" 2>/dev/null | tr '\n' ' ')"
        stop_nginx
    done
    note_fail "nginx: not ready on 127.0.0.1: $why"
    return 1
}

# check_get NAME URL FILE: one GET must answer 200 with FILE's bytes as body (reported if not).
check_get() {
    local code
    code=$(curl -sS -m 5 -o "$WORK/$1.body" -w '%{http_code}' "$2" 2>"$WORK/$1.curl")
    [ "$code" = 200 ] && cmp -s "$3" "$WORK/$1.body" && return 0
    note_fail "$1: GET $2: HTTP $code, body $(head -c 120 "$WORK/$1.body" | tr -c '[:print:]' '.') (want 200 and the $(wc -c <"$3") bytes of $(basename "$3")) $(cat "$WORK/$1.curl")"
    return 1
}

# get_run KEY URL: one wrk GET run; keeps the better run (more req/s) of KEY in G_*.
get_run() {
    local key=$1 url=$2 name=$1-$((${#G_ALL[$1]} > 0 ? 2 : 1)) wrc
    wrk -t"$THREADS" -c"$CONNS" -d"${NGX_DURATION}s" --latency "$url" >"$WORK/$name.wrk" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID"
    wrc=$?
    WRK_PID=
    if ! parse_wrk "$WORK/$name.wrk" || [ "$wrc" != 0 ]; then
        note_fail "$name: wrk GET $url: exit $wrc: $(tail -n 3 "$WORK/$name.wrk" | tr '\n' ' ')"
        G_ALL[$key]+="${G_ALL[$key]:+ / }FAILED"
        return 1
    fi
    [ "$W_ERRS" = 0 ] || note_fail "$name: wrk GET $url saw $W_NON2XX non-2xx responses and $W_SOCKERR socket errors"
    G_ALL[$key]+="${G_ALL[$key]:+ / }$W_RPS"
    if [ "${G_RPS[$key]}" = FAILED ] || [ "$W_RPS" -gt "${G_RPS[$key]}" ]; then
        G_RPS[$key]=$W_RPS G_P99[$key]=$W_P99_US G_P50US[$key]=$W_P50_US G_ERRS[$key]=$W_ERRS
    fi
}

# compare BASE_KEY BASE_URL WD_KEY WD_URL: on the watchdog WD_PID just started, check both
# targets, run them interleaved twice, record the watchdog's VmHWM and stop it.
compare() {
    local bkey=$1 burl=$2 wkey=$3 wurl=$4 expect=$5 round
    if check_get "$bkey" "$burl" "$expect" && check_get "$wkey" "$wurl" "$expect"; then
        for round in 1 2; do
            get_run "$bkey" "$burl"
            get_run "$wkey" "$wurl"
        done
        G_HWM[$wkey]=$(kib_to_mib "$(status_kib "$WD_PID" VmHWM)")
    fi
    is_live "$WD_PID" || note_fail "$wkey: watchdog died; stderr: $(tail -n 3 "$WD_LOG" | tr '\n' ' ')"
    stop_wd "$WD_PID"
    [ "$STOP_RC" = 0 ] || note_fail "$wkey: watchdog exit status $STOP_RC after SIGTERM (expected 0)"
}

echo "bench: mode http and mode static vs nginx: wrk -t$THREADS -c$CONNS -d${NGX_DURATION}s GET x 8" >&2
printf 'ok\n' >"$WORK/ok.txt"
if [ -z "$NGINX" ]; then
    note_fail "nginx missing (apt-get install nginx-light): no mode http / mode static rows"
elif [ ! -r "$NGX_TEMPLATE" ]; then
    note_fail "nginx: $NGX_TEMPLATE missing"
elif ! NGX_DIR=$(mktemp -d /tmp/fwatchdog-bench-nginx.XXXXXX); then
    note_fail "nginx: mktemp failed"
else
    # The static file: 64 lines of 64 bytes, in a directory that nobody (nginx) can read too.
    chmod 755 "$NGX_DIR"
    mkdir -m 755 "$NGX_DIR/www"
    awk 'BEGIN { for (i = 0; i < 64; i++) printf "%063d\n", i }' >"$NGX_DIR/www/4k.txt"
    chmod 644 "$NGX_DIR/www/4k.txt"
    if start_nginx; then
        if start_wd http-wd http "fprocess=sleep 1000000" "upstream_url=http://127.0.0.1:$NGX_PORT" \
            shutdown_grace=1s; then
            compare http-direct "http://127.0.0.1:$NGX_PORT/" http-wd "http://127.0.0.1:$WD_PORT/" "$WORK/ok.txt"
        fi
        if start_wd static-wd static static_path="$NGX_DIR/www"; then
            compare static-nginx "http://127.0.0.1:$NGX_PORT/4k.txt" static-wd \
                "http://127.0.0.1:$WD_PORT/4k.txt" "$NGX_DIR/www/4k.txt"
        fi
        is_live "$NGX_PID" || note_fail "nginx died during the runs: $(tail -n 2 "$NGX_DIR/error.log" | tr '\n' ' ')"
        stop_nginx
        [ "$NGX_RC" = 0 ] || note_fail "nginx: exit status $NGX_RC after SIGQUIT (expected 0)"
    fi
fi

# ---------------------------------------------------------------------------------------------
ratio() { # watchdog rate / raw rate
    awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "-" }'
}
us_to_ms() { [ -n "$1" ] && awk -v u="$1" 'BEGIN { printf "%.2f", u / 1000 }' || echo -; }
# --version prints one log line ("2026/01/02 03:04:05 Version: 0.1.0<TAB>SHA: abc1234") on stderr.
VERSION=$(env -i timeout 2 "$FWATCHDOG" --version 2>&1 </dev/null | grep -m1 -aoE 'Version: .*' | tr '\t' ' ')
overhead() { # req/s of (a), req/s of x -> throughput lost against (a), in percent
    awk -v a="$1" -v x="$2" 'BEGIN { if (a + 0 > 0 && x + 0 > 0) printf "%+.1f %%", (a - x) * 100 / a; else print "-" }'
}

echo
echo "## fwatchdog benchmark"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "- machine: $(uname -m), nproc $(nproc), CPU: $(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
echo "- kernel: $(uname -r); binary: $FWATCHDOG${VERSION:+ ($VERSION)}"
echo "- load: wrk -t$THREADS -c$CONNS -d${DURATION}s --latency, POST $PAYLOAD bytes, fprocess=cat, 127.0.0.1"
echo
echo "| mode | req/s | p50 ms | p99 ms | errors | peak RSS after wrk (MiB) | watchdog/raw |"
echo "|---|---:|---:|---:|---:|---:|---:|"
printf '| raw spawn (rawspawn, no HTTP) | %s | %s | %s | %s | - | 1.00 |\n' \
    "$(awk -v r="${RAW_RATE:-0}" 'BEGIN { if (r > 0) printf "%.0f", r; else print "FAILED" }')" \
    "$(us_to_ms "$RAW_P50")" "$(us_to_ms "$RAW_P99")" "${RAW_ERR:--}"
for mode in "${MODES[@]}"; do
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$mode" "${RPS[$mode]}" "${P50[$mode]}" \
        "${P99[$mode]}" "${ERRS[$mode]}" "${HWM[$mode]}" "$(ratio "${RPS[$mode]}" "${RAW_RATE:-0}")"
done
echo
echo "| figure | value |"
echo "|---|---:|"
echo "| idle RSS, streaming (VmRSS 1 s after start) | $(kib_to_mib "$IDLE_RSS") MiB |"
echo "| exec → \`Listening on port\` (median of $STARTS) | ${READY_LISTEN:-FAILED} ms |"
echo "| exec → first 200 from \`GET /_/health\` (median of $STARTS) | ${READY_HEALTH:-FAILED} ms |"
if [ -n "${FWATCHDOG_STATIC:-}" ]; then
    echo "| static build (make static): exec → first 200, idle RSS | ${STATIC_READY:-FAILED} |"
fi
echo "| $ECHO_MIB MiB echo through cat, streaming | $ECHO_RATE MiB/s |"
echo "| peak RSS after the echo (VmHWM) | $ECHO_HWM MiB |"
echo
echo "### metrics and log overhead: streaming, cat, wrk -t$THREADS -c$CONNS -d${OVH_DURATION}s, best of 2 interleaved runs"
echo
echo "| config | req/s | p50 ms | p99 ms | errors | cost vs (a) | req/s of both runs | /metrics scrape ms |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for c in "${OVH_CONFIGS[@]}"; do
    printf '| (%s) %s | %s | %s | %s | %s | %s | %s | %s |\n' "$c" "${OVH_NAME[$c]}" "${O_RPS[$c]}" \
        "${O_P50[$c]}" "${O_P99[$c]}" "${O_ERRS[$c]}" \
        "$(if [ "$c" = a ]; then echo -; else overhead "${O_RPS[a]}" "${O_RPS[$c]}"; fi)" "${O_ALL[$c]:--}" \
        "${O_SCRAPE[$c]:--}"
done
echo
echo "Target: (b) and (c) cost no more than 3 % of (a)'s req/s; measured (b) $(overhead "${O_RPS[a]}" "${O_RPS[b]}"), (c) $(overhead "${O_RPS[a]}" "${O_RPS[c]}") (not asserted)."

us3() { [ -n "$1" ] && [ "$1" != "?" ] && awk -v u="$1" 'BEGIN { printf "%.3f", u / 1000 }' || echo -; }
added_us() { # p50 µs of the watchdog - p50 µs of the baseline
    if [ -n "$1" ] && [ -n "$2" ] && [ "$1" != "?" ] && [ "$2" != "?" ]; then echo "$(($1 - $2))"; else echo -; fi
}
# nginx_table BASE_KEY BASE_LABEL WD_KEY WD_LABEL AIM_P50_ADDED AIM_RATIO: the two rows, then the
# issue's aims (printed, not asserted).
nginx_table() {
    echo
    echo "| target | req/s | p50 ms | p99 ms | p50 added µs | errors | req/s of both runs | watchdog/nginx | peak RSS after wrk (MiB) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '| %s | %s | %s | %s | - | %s | %s | 1.00 | - |\n' "$2" "${G_RPS[$1]}" "$(us3 "${G_P50US[$1]}")" \
        "$(us3 "${G_P99[$1]}")" "${G_ERRS[$1]}" "${G_ALL[$1]:--}"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$4" "${G_RPS[$3]}" "$(us3 "${G_P50US[$3]}")" \
        "$(us3 "${G_P99[$3]}")" "$(added_us "${G_P50US[$3]}" "${G_P50US[$1]}")" "${G_ERRS[$3]}" \
        "${G_ALL[$3]:--}" "$(ratio "${G_RPS[$3]}" "${G_RPS[$1]}")" "${G_HWM[$3]}"
    printf '| *aim (not asserted)* | | | | %s | 0 | | ≥ %s | ≤ 4.0 |\n' "$5" "$6"
}
echo
# shellcheck disable=SC2016 # backquotes are Markdown
printf '### mode http: GET / of nginx (`return 200 "ok\\n"`), direct and through the watchdog; wrk -t%s -c%s -d%ss, best of 2 interleaved runs\n' \
    "$THREADS" "$CONNS" "$NGX_DURATION"
nginx_table http-direct "nginx direct" http-wd "watchdog → nginx" "< 100" 0.50
echo
echo "### mode static: GET /4k.txt (4096 bytes), nginx \`root\` vs watchdog \`static_path\`; wrk -t$THREADS -c$CONNS -d${NGX_DURATION}s, best of 2 interleaved runs"
nginx_table static-nginx "nginx" static-wd "watchdog" "-" 0.80
echo
echo "### mode warm vs streaming vs http (bench/warm.sh)"
if ! FWATCHDOG="$FWATCHDOG" bash "$(dirname "${BASH_SOURCE[0]}")/warm.sh"; then
    FAILS+=("bench/warm.sh failed (its table above lists why)")
fi
if [ "${#FAILS[@]}" -gt 0 ]; then
    echo
    echo "Failures:"
    for f in "${FAILS[@]}"; do echo "- $f"; done
    exit 1
fi
exit 0
