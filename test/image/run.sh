#!/usr/bin/env bash
# make image-test: build a FROM scratch image holding the static watchdog and a static handler,
# run it (host network, loopback only), send a real request with curl, check the healthcheck,
# stop it with SIGTERM and check that it exited 0 after a clean drain.
#
# usage: test/image/run.sh /abs/fwatchdog-static /abs/static-handler handler-source.c
# With test/image/handler.c the answer must be exactly "hello from scratch: <body>"; another
# handler (templates/c-classic's) must answer 200 with a body that echoes the request body.
# ENGINE=podman|docker picks the engine; by default podman, else docker when its daemon answers.
# No engine, or one that cannot run a container on this machine: a "skipped" line and exit 0.
set -euo pipefail

BIN=$1
HANDLER=$2
HANDLER_SRC=${3:-}
HERE=$(cd "$(dirname "$0")" && pwd)
TAG=localhost/fwatchdog-image-test:$$
NAME=fwatchdog-image-test-$$
BODY="ping from image-test $$"

skip() {
    echo "image-test skipped: $*"
    exit 0
}

# The engines raise RLIMIT_NOFILE/NPROC to their own defaults (podman as root: 1048576), which
# fails where the host denies CAP_SYS_RESOURCE (sandboxes, some CI runners). Modest explicit
# limits work everywhere; RLIMIT_NPROC counts the container user's processes on the host.
RUN_OPTS=(--network host --tmpfs "/tmp:rw,mode=1777" --ulimit nofile=1024:1024
          --ulimit nproc=512:512)

pick_engine() {
    local want=${ENGINE:-}
    if [ -z "$want" ] || [ "$want" = podman ]; then
        if command -v podman >/dev/null; then
            ENGINE_CMD=(podman)
            return 0
        fi
        [ -z "$want" ] || skip "ENGINE=podman but podman is not installed"
    fi
    if command -v docker >/dev/null; then
        if docker info >/dev/null 2>&1; then
            ENGINE_CMD=(docker)
            return 0
        fi
        skip "docker is installed but its daemon does not answer (podman needs none:" \
            "apt-get install podman)"
    fi
    skip "no container engine (apt-get install podman)"
}

cleanup() {
    "${ENGINE_CMD[@]}" rm -f "$NAME" >/dev/null 2>&1 || true
    "${ENGINE_CMD[@]}" rmi -f "$TAG" >/dev/null 2>&1 || true
    [ -z "${CTX:-}" ] || rm -rf "$CTX"
}

fail() {
    echo "image-test FAILED: $*"
    echo "--- container log:"
    "${ENGINE_CMD[@]}" logs "$NAME" 2>&1 | tail -n 30 || true
    exit 1
}

pick_engine
trap cleanup EXIT

CTX=$(mktemp -d)
cp "$BIN" "$CTX/fwatchdog"
cp "$HANDLER" "$CTX/handler"
if ! out=$("${ENGINE_CMD[@]}" build -q -f "$HERE/Containerfile" -t "$TAG" "$CTX" 2>&1); then
    skip "${ENGINE_CMD[*]} cannot build an image here: $(tail -n 1 <<<"$out")"
fi

# Can this engine run a container here at all (cgroup layout, user namespaces, rlimits)? The
# handler alone is the probe. podman's default runtime crun refuses hybrid cgroup v1/v2 hosts,
# where runc works: retry with runc when it is installed.
probe() {
    echo probe | "${ENGINE_CMD[@]}" run --rm -i "${RUN_OPTS[@]}" --entrypoint /handler "$TAG" 2>&1
}
if ! out=$(probe); then
    if [ "${ENGINE_CMD[0]}" = podman ] && command -v runc >/dev/null; then
        ENGINE_CMD=(podman --runtime runc)
        out=$(probe) || skip "podman cannot run a container here: $(tail -n 1 <<<"$out")"
    else
        skip "${ENGINE_CMD[*]} cannot run a container here: $(tail -n 1 <<<"$out")"
    fi
fi
echo "image-test: engine ${ENGINE_CMD[*]}, image $TAG ($(du -k "$BIN" | cut -f1) KiB watchdog)"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${ENGINE_CMD[@]}" run -d --name "$NAME" "${RUN_OPTS[@]}" \
    -e port="$PORT" -e bind_address=127.0.0.1 -e metrics_port=0 -e mode=streaming \
    -e healthcheck_interval=1s "$TAG" >/dev/null
URL=http://127.0.0.1:$PORT

for _ in $(seq 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL/_/health" || true)
    [ "$code" = 200 ] && break
    sleep 0.1
done
[ "$code" = 200 ] || fail "/_/health never answered 200 (last: $code)"

"${ENGINE_CMD[@]}" exec "$NAME" /fwatchdog -run-healthcheck || fail "-run-healthcheck failed"

resp=$(curl -sS --max-time 10 -w '\n%{http_code}' --data-binary "$BODY" "$URL/fn?x=1") ||
    fail "curl failed"
code=${resp##*$'\n'}
got=${resp%$'\n'*}
[ "$code" = 200 ] || fail "POST answered $code: $got"
case $HANDLER_SRC in
*test/image/handler.c) [ "$got" = "hello from scratch: $BODY" ] || fail "unexpected body: $got" ;;
*) [[ $got == *"$BODY"* ]] || fail "the body does not echo the request: $got" ;;
esac
echo "image-test: POST / -> $code $(head -c 80 <<<"$got")"

"${ENGINE_CMD[@]}" kill --signal TERM "$NAME" >/dev/null
status=$(timeout 30 "${ENGINE_CMD[@]}" wait "$NAME") || fail "did not exit within 30 s of SIGTERM"
logs=$("${ENGINE_CMD[@]}" logs "$NAME" 2>&1)
[ "$status" = 0 ] || fail "exit status $status after SIGTERM"
grep -q 'SIGTERM' <<<"$logs" || fail "no SIGTERM line in the log"
grep -q 'Exiting. Active connections: 0' <<<"$logs" || fail "no clean drain in the log"
echo "image-test: SIGTERM -> exit 0 after a clean drain"
echo "image-test passed"
