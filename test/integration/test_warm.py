"""mode=warm: a pool of long-running workers speaking the actionloop or nuclio protocol.

Protocol-level tests: the workers are small raw protocol speakers (test/fixtures/warm_*.py,
warm_actionloop.js), not the runtime shims. The request's path picks the fixture's behaviour.
Workers inherit the watchdog's environment, so they (and their grandchildren) carry the
instance marker FWD_TEST_MARKER that the `wd` teardown checks.
"""
import base64
import json
import os
import re
import signal
import subprocess
import threading
import time
from urllib.parse import urlencode

import pytest

from conftest import (BIN, LOG_TS, PATH, Client, free_port, fx, proc_status, request,
                      wait_no_procs, wait_out_or_log)


def start_warm(wd, fixture="warm_actionloop.py", wait_ready=True, **env):
    runner = "node" if fixture.endswith(".js") else "python3"
    fprocess = f"{runner} {fx(fixture)}"
    if "nuclio" in fixture:
        fprocess += " {socket}"
        env.setdefault("warm_protocol", "nuclio")
    cfg = {"mode": "warm", "fprocess": fprocess}
    cfg.update({k: str(v) for k, v in env.items()})
    w = wd(cfg)
    if wait_ready:
        r = w.health_ok(timeout=5)
        assert r.status == 200, w.log_text()
    return w


def ok_json(resp, status=200):
    assert resp.status == status, resp
    assert (resp.header("Content-Type") or "").startswith("application/json"), resp
    return json.loads(resp.body)


def dead(pid, timeout=1.5):
    """True once pid no longer runs (gone, or a zombie waiting for an outside reaper)."""
    deadline = time.monotonic() + timeout
    while True:
        st = proc_status(pid)
        if not st or st.get("State", "").startswith("Z"):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def parallel(port, paths, headers=None, stagger=0.0):
    """Send each path on its own connection at (about) the same time.
    Returns [(response, seconds)] in the order of paths, and the total wall time."""
    out = [None] * len(paths)
    barrier = threading.Barrier(len(paths))

    def one(i, p):
        barrier.wait()
        time.sleep(stagger * i)
        t = time.monotonic()
        r = request(port, "GET", p, headers=headers)
        out[i] = (r, time.monotonic() - t)

    ts = [threading.Thread(target=one, args=(i, p)) for i, p in enumerate(paths)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    return out, time.monotonic() - t0


def wait_count(w, regex, n, timeout=3.0):
    deadline = time.monotonic() + timeout
    while len(w.log_lines(regex)) < n:
        assert time.monotonic() < deadline, (
            f"fewer than {n} lines matching {regex!r}:\n" + w.log_text()[-3000:])
        time.sleep(0.02)



def metric(port, name):
    r = request(port, "GET", "/metrics")
    assert r.status == 200, r
    m = re.search(r"^" + re.escape(name) + r'(?:\{mode="warm"\})? (\d+)$', r.body.decode(), re.M)
    assert m, f"{name} not in /metrics:\n" + r.body.decode()[:3000]
    return int(m.group(1))


# --------------------------------------------------------------------------------------------
# actionloop: request mapping


def test_request_mapping(wd):
    w = start_warm(wd, exec_timeout="7s")
    t0 = time.time()
    r = request(w.port, "PATCH", "/echo/a%20b//c?x=1&y=%20z&x=2", body="héllo wörld",
                headers=[("Content-Type", "text/plain"), ("X-Multi", "a"), ("X-Multi", "b"),
                         ("X-CamelCase", "V"), ("X-Call-Id", "test-call-123")])
    doc = ok_json(r)
    got, v = doc["got"], doc["got"]["value"]
    assert v["__ow_method"] == "patch"
    assert v["__ow_path"] == "/echo/a%20b//c"
    assert v["__ow_query"] == "x=1&y=%20z&x=2"
    h = v["__ow_headers"]
    assert h["content-type"] == "text/plain"
    assert h["x-multi"] == "a, b"
    assert h["x-camelcase"] == "V"
    assert all(k == k.lower() for k in h), h
    assert v["__ow_body"] == "héllo wörld" and v["__ow_isBase64Encoded"] is False
    assert got["activation_id"] == "test-call-123"
    assert r.header("X-Call-Id") == "test-call-123"
    assert isinstance(got["deadline"], str), got["deadline"]
    assert abs(int(got["deadline"]) - (t0 * 1000 + 7000)) < 1000, (got["deadline"], t0)
    assert got["action_name"] == "function" and got["namespace"] == "default"
    # the worker's environment and fds
    assert doc["env"]["__OW_WAIT_FOR_ACK"] == "1"
    assert doc["env"]["FWD_TEST_MARKER"] == w.marker
    assert doc["extra_fds"] == [], "worker inherited fds beyond 0-3"
    pid = doc["pid"]

    # a body that is not UTF-8 arrives base64-encoded
    raw = b"\xff\xfe\x00\x80bin\n"
    r = request(w.port, "POST", "/echo/bin", body=raw,
                headers={"Content-Type": "application/octet-stream"})
    v = ok_json(r)["got"]["value"]
    assert v["__ow_isBase64Encoded"] is True
    assert base64.b64decode(v["__ow_body"]) == raw
    assert v["__ow_method"] == "post"

    # no body, no query, generated call id; X-Timeout lowers the deadline
    t0 = time.time()
    r = request(w.port, "GET", "/echo", headers={"X-Timeout": "2s"})
    got = ok_json(r)["got"]
    v = got["value"]
    assert v["__ow_body"] == "" and v["__ow_isBase64Encoded"] is False
    assert v["__ow_query"] == "" and v["__ow_method"] == "get"
    assert got["activation_id"] and got["activation_id"] == r.header("X-Call-Id")
    assert abs(int(got["deadline"]) - (t0 * 1000 + 2000)) < 700, (got["deadline"], t0)
    # ... and never raises it
    t0 = time.time()
    got = ok_json(request(w.port, "GET", "/echo", headers={"X-Timeout": "60s"}))["got"]
    assert abs(int(got["deadline"]) - (t0 * 1000 + 7000)) < 1000, (got["deadline"], t0)

    # a chunked body reaches the worker whole
    r = request(w.port, "POST", "/echo/chunked", chunks=[b"ab", b"cd", "é".encode()])
    v = ok_json(r)["got"]["value"]
    assert v["__ow_body"] == "abcdé" and v["__ow_isBase64Encoded"] is False

    # one JSON line whatever the body holds: newlines, quotes, backslashes, controls, U+2028,
    # and a body much larger than a pipe buffer
    tricky = 'a"b\\c\n\td\r\x01\u2028é' * 20000
    doc = ok_json(request(w.port, "PUT", "/echo/big", body=tricky,
                          headers={"Content-Type": "text/plain"}, timeout=10))
    assert doc["got"]["value"]["__ow_body"] == tricky
    assert doc["got"]["value"]["__ow_isBase64Encoded"] is False
    # every request went to the same warm worker
    assert doc["pid"] == pid and doc["count"] == 6


# --------------------------------------------------------------------------------------------
# actionloop: response mapping


def test_response_mapping(wd):
    w = start_warm(wd)
    with Client(w.port) as c:
        r = c.request("GET", "/web")
        assert r.status == 201, r
        assert r.body == b"hello web"
        assert r.header("Content-Type") == "text/plain; charset=utf-8"
        assert r.all("Set-Cookie") == ["a=1; Path=/", "b=2"]
        assert r.header("X-One") == "1"
        assert r.header("X-Num") == "5" and r.header("X-Bool") == "true"

        r = c.request("GET", "/texthdr")  # lower-case content-type key, textual: body as is
        assert r.status == 200 and r.body == b"<b>aGk=</b>", r
        assert r.header("Content-Type") == "text/html"

        r = c.request("GET", "/binary")
        assert r.status == 200, r
        assert r.body == bytes(range(256))
        assert r.header("Content-Type") == "application/octet-stream"
        assert r.header("Content-Length") == "256"

        assert ok_json(c.request("GET", "/objbody")) == {"k": [1, 2]}

        # a string body is sent as is for textual types, base64-decoded for the others
        for ctype, body, want in [
                ("text/csv", "a,b", b"a,b"),
                ("application/vnd.api+json", "eyJ9", b"eyJ9"),
                ("application/xml", "<x/>", b"<x/>"),
                ("application/javascript", "aGk=", b"aGk="),
                ("application/x-www-form-urlencoded", "a=1", b"a=1"),
                ("image/png", "iVBORw0KGgo=", b"\x89PNG\r\n\x1a\n")]:
            r = c.request("GET", "/ctype?" + urlencode({"t": ctype, "b": body}))
            assert r.status == 200 and r.body == want, (ctype, r)
            assert r.header("Content-Type") == ctype, r

        r = c.request("GET", "/numbody")
        assert r.status == 200 and r.body == b"42", r

        r = c.request("GET", "/nobody")
        assert r.status == 202 and r.body == b"" and r.header("X-A") == "b", r

        assert ok_json(c.request("GET", "/plain")) == {"hello": "world", "n": 1}
        assert ok_json(c.request("GET", "/array")) == [1, "two", {"three": 3}]

    for path in ("/badjson", "/scalar?v=42", '/scalar?v="str"', "/scalar?v=null",
                 "/status700", "/badb64"):
        r = request(w.port, "GET", path)
        assert r.status == 502, (path, r)
    w.wait_log(r"GET /badjson - 502")
    assert w.log_lines(r"(?i)not JSON"), "no log line saying why the answer was refused"
    # the pool still serves afterwards
    r = request(w.port, "GET", "/count")
    assert r.status == 200 and "count" in json.loads(r.body), r


def test_state_survives_between_calls(wd):
    w = start_warm(wd, max_body_size=10)
    with Client(w.port) as c:
        docs = [ok_json(c.request("GET", "/count")) for _ in range(3)]
    # a body over max_body_size never reaches the worker
    r = request(w.port, "POST", "/count", body=b"x" * 11)
    assert r.status == 413, r
    docs.append(ok_json(request(w.port, "POST", "/count", body=b"x" * 10)))
    assert [d["count"] for d in docs] == [1, 2, 3, 4]
    assert len({d["pid"] for d in docs}) == 1


def test_no_deadline_and_many_headers(wd):
    # exec_timeout=0: no deadline timer at all; a worker's 150 headers all reach the client
    w = start_warm(wd, exec_timeout="0")
    for _ in range(2):
        r = request(w.port, "GET", "/manyhdr?n=150")
        assert r.status == 200, r
        assert r.body == b"many"
        for i in (0, 77, 149):
            assert r.header(f"X-H-{i}") == str(i)
    doc = ok_json(request(w.port, "GET", "/count"))
    assert doc["count"] == 3


@pytest.mark.parametrize("fixture", ["warm_actionloop.py", "warm_nuclio.py"])
def test_many_header_names_and_query_keys_stay_fast(wd, fixture):
    # 30000 distinct header names and query keys (under max_header_size together): grouping them must not be quadratic (a
    # pairwise scan took minutes and blocked every other request)
    w = start_warm(wd, fixture=fixture)
    n = 30000
    query = "&".join(f"k{i}={i}" for i in range(n)) + "&K0=upper&k0=second"
    head = "".join(f"h{i}: {i}\r\n" for i in range(n))
    raw = (f"GET /echo?{query} HTTP/1.1\r\nHost: x\r\n{head}X-Dup: a\r\nx-dup: b\r\n\r\n").encode()
    t = time.monotonic()
    with Client(w.port, timeout=10) as c:
        c.send(raw)
        r = c.read_response()
    assert time.monotonic() - t < 5, "took too long"
    doc = ok_json(r)
    if "nuclio" in fixture:
        ev = doc["event"]
        hdrs, fields = ev["headers"], ev["fields"]
        assert hdrs["h29999"] == "29999" and hdrs["X-Dup"] == "a, b"
        assert fields["k0"] == "0" and fields["K0"] == "upper" and fields["k29999"] == "29999"
        assert len(fields) == n + 1
    else:
        v = doc["got"]["value"]
        hdrs = v["__ow_headers"]
        assert hdrs["h29999"] == "29999" and hdrs["x-dup"] == "a, b"
        assert v["__ow_query"] == query
    assert len([k for k in hdrs if k.lower().startswith("h") and k[1:].isdigit()]) == n


def test_node_worker(wd):
    w = start_warm(wd, fixture="warm_actionloop.js", OPENFAAS_NAME="myfn",
                   OPENFAAS_NAMESPACE="myns")
    r = request(w.port, "POST", "/echo?q=1", body=b"node body",
                headers=[("Content-Type", "text/plain"), ("X-Call-Id", "node-1"),
                         ("X-Multi", "a"), ("X-Multi", "b")])
    doc = ok_json(r)
    got = doc["got"]
    assert doc["runtime"] == "node"
    assert got["action_name"] == "myfn" and got["namespace"] == "myns"
    assert got["activation_id"] == "node-1"
    assert got["value"]["__ow_body"] == "node body"
    assert got["value"]["__ow_query"] == "q=1"
    assert got["value"]["__ow_headers"]["x-multi"] == "a, b"
    r = request(w.port, "GET", "/web")
    assert r.status == 201 and r.body == b"hello web", r
    assert r.all("Set-Cookie") == ["a=1; Path=/", "b=2"]
    r = request(w.port, "GET", "/binary")
    assert r.status == 200 and r.body == bytes(range(256)), r
    d2 = ok_json(request(w.port, "GET", "/count"))
    assert d2 == {"count": 4, "pid": doc["pid"]}
    assert request(w.port, "GET", "/log?tag=n1").status == 200
    w.wait_log(r"^" + LOG_TS + r" stderr: node-err-n1$")
    wait_out_or_log(w, r"stdout: node-out-n1$")


# --------------------------------------------------------------------------------------------
# the pool


def test_four_workers_in_parallel_then_queue(wd):
    w = start_warm(wd, workers=4)
    res, total = parallel(w.port, ["/sleep?ms=500"] * 4)
    assert all(r.status == 200 for r, _ in res), res
    assert total < 1.3, f"4 x 500 ms on 4 workers took {total:.2f}s"
    assert len({json.loads(r.body)["pid"] for r, _ in res}) == 4
    # a 5th request waits for a free worker (FIFO) and is then served
    res, total = parallel(w.port, ["/sleep?ms=500"] * 5)
    assert all(r.status == 200 for r, _ in res), res
    took = sorted(t for _, t in res)
    assert took[3] < 0.9, took  # four ran at once
    assert 0.95 <= took[4] < 1.6, took  # one waited for a worker
    assert 0.95 <= total < 1.8, total


def test_queue_is_fifo(wd):
    w = start_warm(wd)
    # /sleep holds the only worker; three /count requests queue behind it, 60 ms apart
    res, total = parallel(w.port, ["/sleep?ms=400", "/count", "/count", "/count"], stagger=0.06)
    assert all(r.status == 200 for r, _ in res), res
    counts = [json.loads(r.body)["count"] for r, _ in res[1:]]
    assert counts == [2, 3, 4], counts
    assert 0.4 <= total < 1.0, total


def test_client_leaving_does_not_kill_worker(wd):
    w = start_warm(wd)
    first = ok_json(request(w.port, "GET", "/count"))
    c = Client(w.port)
    c.send(b"GET /sleep?ms=600 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.15)
    c.close()
    t = time.monotonic()
    doc = ok_json(request(w.port, "GET", "/count"))
    # the same worker, after it finished the abandoned request, whose answer was discarded
    assert doc == {"count": 3, "pid": first["pid"]}
    assert time.monotonic() - t > 0.2


@pytest.mark.parametrize("how", ["exec_timeout", "X-Timeout"])
def test_deadline_kills_worker_group_and_restarts(wd, how):
    mport = free_port()
    if how == "exec_timeout":
        w = start_warm(wd, exec_timeout="1s", metrics_port=mport)
        headers = None
    else:
        w = start_warm(wd, exec_timeout="10s", metrics_port=mport)
        headers = {"X-Timeout": "1s"}
    before = ok_json(request(w.port, "GET", "/count"))
    t = time.monotonic()
    r = request(w.port, "GET", "/spawn?ms=10000", headers=headers)
    took = time.monotonic() - t
    assert r.status == 504, r
    assert 1.0 <= took < 1.5, took
    m = w.wait_log(r"spawned worker=(\d+) grandchild=(\d+)")
    worker, grandchild = int(m.group(1)), int(m.group(2))
    assert worker == before["pid"]
    assert dead(worker), f"worker {worker} survived its deadline: {proc_status(worker)}"
    assert dead(grandchild), f"grandchild {grandchild} survived: {proc_status(grandchild)}"
    # the next request is served by a fresh worker: new pid, state reset
    after = ok_json(request(w.port, "GET", "/count"))
    assert after["pid"] != before["pid"] and after["count"] == 1, (before, after)
    assert metric(mport, "fwatchdog_warm_restarts_total") >= 1
    assert metric(mport, "fwatchdog_requests_timed_out_total") == 1


def test_crash_gives_502_and_new_worker(wd):
    w = start_warm(wd)
    before = ok_json(request(w.port, "GET", "/count"))
    r = request(w.port, "GET", "/crash")
    assert r.status == 502, r
    assert dead(before["pid"])
    w.wait_log(r"exit status 3")
    # no worker initialised while it restarts (backoff >= 100 ms): unready, no lock file
    deadline = time.monotonic() + 0.5
    while request(w.port, "GET", "/_/health").status != 503:
        assert time.monotonic() < deadline, "still ready while the only worker restarts"
        time.sleep(0.01)
    assert not w.lock_path.exists()
    t = time.monotonic()
    # the next request waits for the restarted worker (backoff 100 ms)
    after = ok_json(request(w.port, "GET", "/count"))
    assert time.monotonic() - t < 2.0
    assert after["pid"] != before["pid"] and after["count"] == 1, (before, after)


def test_pool_stays_ready_while_one_worker_restarts(wd):
    w = start_warm(wd, workers=2)
    r = request(w.port, "GET", "/crash")
    assert r.status == 502, r
    # the other worker is still initialised: ready, lock file kept, requests served
    assert request(w.port, "GET", "/_/health").status == 200
    assert w.lock_path.exists()
    assert ok_json(request(w.port, "GET", "/count"))["count"] >= 1


def test_worker_down_for_good_gives_503(wd):
    w = start_warm(wd, restart_policy="on-failure")
    r = request(w.port, "GET", "/exit?code=0")
    assert r.status == 502, r
    # a clean exit is final with on-failure: unready and 503 (not a wait until the deadline)
    t = time.monotonic()
    r = request(w.port, "GET", "/count")
    assert r.status == 503, r
    assert time.monotonic() - t < 1.0
    assert request(w.port, "GET", "/_/health").status == 503
    assert not w.lock_path.exists()


# --------------------------------------------------------------------------------------------
# readiness


def test_ready_only_after_ack(wd):
    t0 = time.monotonic()
    w = start_warm(wd, wait_ready=False, ACK_DELAY_MS=400)
    r = request(w.port, "GET", "/_/health")
    assert r.status == 503, r
    assert request(w.port, "GET", "/_/ready").status == 503
    assert not w.lock_path.exists()
    # a request arriving before the ack waits for the worker
    doc = ok_json(request(w.port, "GET", "/count"))
    assert doc["count"] == 1
    assert time.monotonic() - t0 >= 0.4
    assert w.health_ok().status == 200
    w.wait_lock()
    assert w.log_lines(r"Writing lock-file to: ")


def test_ready_only_when_every_worker_acked(wd, tmp_path):
    late = tmp_path / "late-ack"
    late.mkdir()
    w = start_warm(wd, wait_ready=False, workers=3, ACK_LATE_DIR=late, ACK_LATE_MS=1000)
    wait_count(w, r"stderr: acked \d+$", 2, timeout=3)
    assert len(w.log_lines(r"stderr: acked \d+$")) == 2
    # two of three acked: still not ready, no lock file
    assert request(w.port, "GET", "/_/health").status == 503
    assert not w.lock_path.exists()
    r = w.health_ok(timeout=3)
    assert r.status == 200 and r.body == b"OK", r
    assert len(w.log_lines(r"stderr: acked \d+$")) == 3
    w.wait_lock(timeout=1)


@pytest.mark.parametrize("bad", ["1", "exit"])
def test_bad_ack_restarts_and_never_ready(wd, tmp_path, bad):
    """A wrong ack line, or exiting before the ack: an init failure, restarted with backoff."""
    starts = tmp_path / "starts"
    w = start_warm(wd, wait_ready=False, BAD_ACK=bad, STARTS_FILE=starts, exec_timeout="5s")
    w.wait_log(r"(?i)restart", timeout=3)
    deadline = time.monotonic() + 3
    while not (starts.exists() and len(starts.read_text().split()) >= 2):
        assert time.monotonic() < deadline, "the worker with a bad ack was not restarted"
        time.sleep(0.05)
    assert len(set(starts.read_text().split())) >= 2
    assert request(w.port, "GET", "/_/health").status == 503
    assert not w.lock_path.exists()
    # a request waits for a worker until its deadline
    t = time.monotonic()
    r = request(w.port, "GET", "/count", headers={"X-Timeout": "500ms"})
    assert r.status == 504, r
    assert 0.45 <= time.monotonic() - t < 1.0
    assert request(w.port, "GET", "/_/health").status == 503
    assert not w.lock_path.exists()


def test_no_ack_mode(wd):
    t0 = time.monotonic()
    w = start_warm(wd, warm_ack="false")
    assert time.monotonic() - t0 < 1.5
    w.wait_lock(timeout=1)
    doc = ok_json(request(w.port, "GET", "/echo"))
    assert doc["env"]["__OW_WAIT_FOR_ACK"] is None
    assert doc["count"] == 1
    assert ok_json(request(w.port, "GET", "/count"))["count"] == 2


# --------------------------------------------------------------------------------------------
# logs and shutdown


def test_worker_output_logged(wd):
    w = start_warm(wd)
    r = request(w.port, "GET", "/log?tag=abc")
    assert r.status == 200 and json.loads(r.body) == {"logged": "abc"}, r
    w.wait_log(r"^" + LOG_TS + r" stderr: err-line-abc$")
    wait_out_or_log(w, r"stdout: out-line-abc$")
    # the worker's own lines never leak into a response
    assert ok_json(request(w.port, "GET", "/count"))["count"] == 2


def test_sigterm_drains_then_stops_workers(wd):
    w = start_warm(wd, workers=2, shutdown_grace="2s")
    pids = {ok_json(r)["pid"] for r, _ in parallel(w.port, ["/sleep?ms=100"] * 2)[0]}
    assert len(pids) == 2
    out = {}

    def slow():
        out["r"] = request(w.port, "GET", "/sleep?ms=800")

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.2)
    w.kill(signal.SIGTERM)
    t.join(5)
    r = out["r"]
    assert r.status == 200 and json.loads(r.body)["slept"] == 800, r
    assert w.wait_exit(5) == 0, w.log_text()
    w.stopped_by_test = True
    for p in pids:
        assert dead(p, timeout=0.5), f"worker {p} survived the watchdog"
    assert not wait_no_procs(w.marker, exclude=(w.proc.pid,))
    assert not w.lock_path.exists()
    text = w.log_text()
    i_req = text.index("GET /sleep?ms=800 - 200")
    for m in re.finditer(r"stdin EOF|got SIGTERM", text):
        assert m.start() > i_req, text  # workers are stopped only after the drain


def test_sigterm_ignored_worker_gets_sigkill(wd):
    w = start_warm(wd, shutdown_grace="300ms", IGNORE_TERM=1)
    pid = ok_json(request(w.port, "GET", "/count"))["pid"]
    t = time.monotonic()
    w.kill(signal.SIGTERM)
    assert w.wait_exit(5) == 0, w.log_text()
    w.stopped_by_test = True
    took = time.monotonic() - t
    assert 0.3 <= took < 2.5, took
    assert dead(pid, timeout=0.5)
    assert not wait_no_procs(w.marker, exclude=(w.proc.pid,))


# --------------------------------------------------------------------------------------------
# nuclio


def test_nuclio_protocol(wd):
    w = start_warm(wd, fixture="warm_nuclio.py", wait_ready=False, START_DELAY_MS=300,
                   exec_timeout="7s")
    assert request(w.port, "GET", "/_/health").status == 503
    assert not w.lock_path.exists()
    assert w.health_ok(timeout=3).status == 200
    w.wait_lock(timeout=1)

    body = b"hello \xff nuclio"
    t0 = time.time()
    r = request(w.port, "POST", "/echo/a?x=1&y=two", body=body,
                headers=[("Content-Type", "text/plain"), ("X-Custom", "Yes"),
                         ("X-Call-Id", "nuc-1")])
    assert r.status == 200, r
    assert r.header("Content-Type") == "application/json"
    assert r.header("X-Nuclio") == "yes"
    doc = json.loads(r.body)
    ev = doc["event"]
    assert ev["method"] == "POST"
    assert ev["path"] == "/echo/a"
    assert ev["url"] == "/echo/a?x=1&y=two"
    assert ev["fields"] == {"x": "1", "y": "two"}
    assert ev["headers"]["Content-Type"] == "text/plain"
    assert ev["headers"]["X-Custom"] == "Yes"
    assert ev["content-type"] == "text/plain" and ev["content_type"] == "text/plain"
    assert base64.b64decode(ev["body"]) == body
    assert ev["size"] == len(body)
    assert ev["id"] == "nuc-1"
    assert abs(ev["deadline"] - (t0 * 1000 + 7000)) < 1000, ev["deadline"]
    assert abs(ev["timestamp"] - t0) < 2, ev["timestamp"]
    assert ev["trigger"] == {"kind": "http", "name": "fwatchdog"}
    sock = doc["argv"][0]
    assert doc["env_socket"] == sock
    assert re.fullmatch(re.escape(str(w.tmpdir)) + rf"/fwatchdog-{w.pid}-\d+\.sock", sock), sock
    pid = doc["pid"]

    r = request(w.port, "GET", "/status")
    assert r.status == 418 and r.body == b"short and stout", r
    assert r.header("Content-Type") == "text/plain" and r.header("X-Tea") == "pot"
    r = request(w.port, "GET", "/binary")
    assert r.status == 200 and r.body == bytes(range(256)), r
    assert r.header("Content-Type") == "application/octet-stream"
    # `l`, `m` and `r` records in one write
    r = request(w.port, "GET", "/log?tag=T1")
    assert r.status == 200 and r.body == b"logged T1", r
    line = w.wait_log(r"nuclio-msg-T1.*").group(0)
    assert re.search(r"\bk\b.*\bv\b", line), f"the record's `with` map is not logged: {line!r}"
    # a reply split across three writes
    r = request(w.port, "GET", "/split")
    assert r.status == 200 and r.body == b"split reply " + b"x" * 100, r
    r = request(w.port, "GET", "/array")
    assert r.status == 201 and r.body == b"first", r
    r = request(w.port, "GET", "/nostatus")
    assert r.status == 200 and r.body == b"no status", r
    r = request(w.port, "GET", "/badjson")
    assert r.status == 502, r
    r = request(w.port, "GET", "/count")
    assert r.status == 200, r


def test_nuclio_deadline_restarts_worker(wd):
    w = start_warm(wd, fixture="warm_nuclio.py", exec_timeout="10s")
    before = json.loads(request(w.port, "GET", "/count").body)
    t = time.monotonic()
    r = request(w.port, "GET", "/sleep?ms=5000", headers={"X-Timeout": "500ms"})
    assert r.status == 504, r
    assert 0.5 <= time.monotonic() - t < 1.0
    assert dead(before["pid"])
    r = request(w.port, "GET", "/count")
    assert r.status == 200, r
    after = json.loads(r.body)
    assert after["pid"] != before["pid"] and after["count"] == 1, (before, after)
    # a worker that dies mid-request: 502, and its successor connects and serves
    r = request(w.port, "GET", "/crash")
    assert r.status == 502, r
    r = request(w.port, "GET", "/count")
    assert r.status == 200, r
    again = json.loads(r.body)
    assert again["pid"] not in (before["pid"], after["pid"]) and again["count"] == 1


def test_nuclio_one_socket_per_worker(wd):
    w = start_warm(wd, fixture="warm_nuclio.py", workers=2)
    res, total = parallel(w.port, ["/echo?ms=300"] * 2)
    assert all(r.status == 200 for r, _ in res), res
    assert total < 0.55, total  # both workers at once
    docs = [json.loads(r.body) for r, _ in res]
    socks = {d["argv"][0] for d in docs}
    assert len(socks) == 2 and len({d["pid"] for d in docs}) == 2, docs
    for d in docs:
        assert d["env_socket"] == d["argv"][0]
        assert re.fullmatch(re.escape(str(w.tmpdir)) + rf"/fwatchdog-{w.pid}-\d+\.sock",
                            d["argv"][0]), d["argv"][0]
    # no socket file is left behind
    assert w.stop() == 0, w.log_text()
    w.stopped_by_test = True
    assert list(w.tmpdir.glob("*.sock")) == []


@pytest.mark.parametrize(
    "env, said",
    [
        ({"workers": "5000", "fprocess": "cat"}, r"workers must be from 1 to 1024"),
        ({"fprocess": "no-such-worker-xyz"}, r'exec: "no-such-worker-xyz": executable file not found'),
        ({"fprocess": ""}, r"fprocess: required for mode=warm"),
    ],
)
def test_warm_start_errors_exit_1(tmp_path, env, said):
    full = {"PATH": PATH, "TMPDIR": str(tmp_path), "mode": "warm", "port": "0", "metrics_port": "0",
            "bind_address": "127.0.0.1", **env}
    p = subprocess.run([BIN], env=full, capture_output=True, text=True, timeout=5)
    assert p.returncode == 1, p.stderr
    assert re.search(said, p.stderr), p.stderr
    assert not os.path.exists(tmp_path / ".lock")
