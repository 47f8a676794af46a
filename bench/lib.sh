# shellcheck shell=bash
# bench/lib.sh: helpers shared by bench/run.sh and bench/warm.sh (sourced, not run).
# The caller sets BENCH_NAME (for messages), PY (a python3), and the arrays FAILS and PIDS.

note_fail() {
    FAILS+=("$*")
    echo "$BENCH_NAME: FAILED: $*" >&2
}

is_live() { # pid: running and not a zombie
    [ -r "/proc/$1/stat" ] || return 1
    local st
    st=$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [ "$st" != Z ] && [ "$st" != X ]
}

# stop_pid PID SIGNAL WHAT: send SIGNAL, wait up to 5 s, then SIGKILL; reap. Sets STOP_RC.
# shellcheck disable=SC2034 # STOP_RC is read by the callers
stop_pid() {
    local pid=$1 sig=$2 what=$3 i
    kill "-$sig" "$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do
        is_live "$pid" || break
        sleep 0.05
    done
    if is_live "$pid"; then
        echo "$BENCH_NAME: $what $pid still alive 5 s after SIG$sig: SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    STOP_RC=$?
}

# stop_wd PID: a watchdog, with SIGTERM; forget it in PIDS. Sets STOP_RC.
stop_wd() {
    local pid=$1 i keep=()
    stop_pid "$pid" TERM watchdog
    for i in "${PIDS[@]}"; do [ "$i" != "$pid" ] && keep+=("$i"); done
    PIDS=("${keep[@]+"${keep[@]}"}")
}

# wrk latency field (e.g. 812.00us, 1.20ms, 1.01s) -> ms
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        else if (u != "ms") { print "?"; exit }
        printf "%.2f", n }'
}

free_port() { # a loopback port that was free a moment ago
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
