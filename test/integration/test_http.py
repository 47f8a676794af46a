"""HTTP/1.1 server behaviour: framing, keep-alive, limits, smuggling, timeouts, admission."""
import os
import socket
import struct
import threading
import time

import pytest

from conftest import Client, assert_date, build_request, request, sh, wait_no_procs


@pytest.mark.parametrize("mode", ["classic", "streaming"])
def test_keep_alive(wd, mode):
    w = wd({"mode": mode, "fprocess": "cat"})
    with Client(w.port) as c:
        r1 = c.request("POST", "/1", b"one")
        r2 = c.request("POST", "/2", b"two")
        assert (r1.status, r1.body) == (200, b"one")
        assert (r2.status, r2.body) == (200, b"two")
        assert not r1.closed and not r2.closed


@pytest.mark.parametrize("mode", ["classic", "serializing", "streaming"])
def test_pipelining(wd, mode):
    w = wd({"mode": mode, "fprocess": "cat"})
    with Client(w.port) as c:
        c.send(build_request("POST", "/a", b"first", port=w.port)
               + build_request("POST", "/b", b"second", port=w.port)
               + build_request("GET", "/_/health", port=w.port))
        r1 = c.read_response()
        r2 = c.read_response()
        r3 = c.read_response()
    assert (r1.status, r1.body) == (200, b"first")
    assert (r2.status, r2.body) == (200, b"second")
    assert r3.status in (200, 503)


@pytest.mark.parametrize("mode", ["classic", "serializing", "streaming"])
def test_chunked_request_body(wd, mode):
    w = wd({"mode": mode, "fprocess": "cat"})
    with Client(w.port) as c:
        c.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n")
        r = c.read_response()
        assert (r.status, r.body) == (200, b"hello 0123456789")
        r = c.request("POST", "/", b"again")  # connection still in sync
        assert r.body == b"again"


@pytest.mark.parametrize("mode", ["classic", "streaming"])
def test_expect_100_continue(wd, mode):
    w = wd({"mode": mode, "fprocess": "cat"})
    with Client(w.port) as c:
        c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        c.settimeout(2)
        line = c.read_line()
        assert line == b"HTTP/1.1 100 Continue\r\n", line
        assert c.read_line() == b"\r\n"
        c.settimeout(5)
        c.send(b"hello")
        r = c.read_response()
    assert (r.status, r.body) == (200, b"hello")


@pytest.mark.parametrize("mode", ["classic", "serializing", "streaming"])
def test_http10_answered_and_closed(wd, mode):
    w = wd({"mode": mode, "fprocess": "echo ten"})
    with Client(w.port) as c:
        c.send(b"GET / HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert r.version in ("HTTP/1.0", "HTTP/1.1")
        assert r.body == b"ten\n"
        assert not r.chunked, "no chunked encoding for an HTTP/1.0 client"
        assert c.wait_closed(1.0), "HTTP/1.0 without keep-alive must be closed"
    assert_date(r)


def test_date_on_every_response(wd, tmp_path):
    w = wd({"mode": "classic", "fprocess": "cat", "max_body_size": "1k"})
    w.wait_lock()
    for method, path, body in [("POST", "/", b"x"), ("GET", "/_/health", None),
                               ("HEAD", "/", None), ("POST", "/", b"y" * 2000)]:
        r = request(w.port, method, path, body)
        assert_date(r)
    with Client(w.port) as c:
        c.send(b"GET / HTTP/1.1\r\n\r\n")  # no Host: 400
        r = c.read_response()
        assert r.status == 400
        assert_date(r)


@pytest.mark.parametrize("mode", ["classic", "serializing", "streaming"])
def test_max_body_size_413(wd, tmp_path, mode):
    flag = tmp_path / "started"
    w = wd({"mode": mode, "fprocess": sh("touch.sh", flag), "max_body_size": "1k"})
    r = request(w.port, "POST", "/", b"z" * 2000)
    assert r.status == 413, r
    time.sleep(0.2)
    assert not flag.exists(), "no handler may start for a 413"
    r = request(w.port, "POST", "/", b"z" * 1000)
    assert (r.status, r.body) == (200, b"z" * 1000), "1000 bytes are within 1k"


def test_huge_header_431(wd, tmp_path):
    flag = tmp_path / "started"
    w = wd({"fprocess": sh("touch.sh", flag)})
    c = Client(w.port)
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (2 << 20) + b"\r\n\r\n"
    errs = []

    def send():
        try:
            c.sock.sendall(big)
        except OSError as e:
            errs.append(e)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    try:
        r = c.read_response()
    except (ConnectionError, OSError) as e:
        pytest.fail(f"no 431 response, connection failed: {e!r}")
    finally:
        c.close()
        t.join(5)
    assert r.status == 431, r
    assert not flag.exists()


SMUGGLING = {
    "cl-twice-different": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "cl-twice-same": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "cl-and-te": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nhello\r\n0\r\n\r\n",
    "te-gzip-chunked": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                       b"5\r\nhello\r\n0\r\n\r\n",
    "obs-fold": b"POST / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\nContent-Length: 5\r\n\r\nhello",
    "nul-in-value": b"POST / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\nContent-Length: 5\r\n\r\nhello",
    "no-host-11": b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    "cl-negative": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nhello",
    "cl-garbage": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5x\r\n\r\nhello",
    "bad-chunk-size": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "space-before-colon": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello",
}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_smuggling_rejected(wd, tmp_path, name):
    flag = tmp_path / "started"
    w = wd({"fprocess": sh("touch.sh", flag)})
    with Client(w.port) as c:
        c.send(SMUGGLING[name] + build_request("GET", "/second", port=w.port))
        r = c.read_response()
        assert r.status == 400, r
        assert c.wait_closed(1.0), "the connection must be closed after a 400"
        assert not c.buf, f"nothing may follow the 400: {bytes(c.buf)!r}"
    time.sleep(0.2)
    if name != "bad-chunk-size":  # streaming may start the handler before the bad chunk
        assert not flag.exists(), "the handler must never start for a rejected request"


def test_read_timeout_slow_client(wd):
    w = wd({"fprocess": "cat", "read_timeout": "1s"})
    slow = Client(w.port, timeout=3)
    t0 = time.monotonic()
    slow.send(b"GET /slo")
    time.sleep(0.3)
    r = request(w.port, "POST", "/", b"meanwhile")  # served while the slow one hangs
    assert (r.status, r.body) == (200, b"meanwhile")
    assert time.monotonic() - t0 < 0.8
    closed = slow.wait_closed(2.5)
    dt = time.monotonic() - t0
    slow.close()
    assert closed, "a half-sent request must be closed by read_timeout"
    assert 0.8 <= dt <= 1.3, f"closed after {dt:.2f}s"


def test_keepalive_idle_closed_after_read_timeout(wd):
    w = wd({"fprocess": "cat", "read_timeout": "1s"})
    with Client(w.port, timeout=3) as c:
        r = c.request("POST", "/", b"x")
        assert r.status == 200
        t0 = time.monotonic()
        assert c.wait_closed(2.5)
        assert 0.7 <= time.monotonic() - t0 <= 1.4


@pytest.mark.parametrize("mode", ["classic", "streaming"])
def test_max_inflight_429(wd, mode):
    w = wd({"mode": mode, "fprocess": sh("sleep.sh"), "max_inflight": "1"})
    result = {}

    def slow():
        result["r"] = request(w.port, "GET", "/?s=1")

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    r = request(w.port, "POST", "/", b"x")
    t.join(5)
    assert r.status == 429, r
    assert r.body == b"Concurrent request limit exceeded. Max concurrent requests: 1\n"
    assert r.header("X-OpenFaaS-Internal") == "faas-middleware"
    assert result["r"].status == 200
    r = request(w.port, "GET", "/?s=0")
    assert r.status == 200, "the slot is released after the first request"


def test_client_disconnect_kills_nothing_else(wd):
    """A client that goes away mid-request must not crash the watchdog."""
    w = wd({"fprocess": sh("sleep.sh"), "exec_timeout": "2s"})
    c = Client(w.port)
    c.send(build_request("GET", "/?s=0.5", port=w.port))
    time.sleep(0.1)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()  # RST
    time.sleep(0.8)
    r = request(w.port, "GET", "/?s=0")
    assert (r.status, r.body) == (200, b"slept\n")


def test_garbage_request_line_400(wd):
    w = wd({"fprocess": "cat"})
    with Client(w.port) as c:
        c.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n")
        try:
            r = c.read_response()
            assert r.status == 400
        except ConnectionError:
            pass
        assert c.wait_closed(1.0)
    assert request(w.port, "POST", "/", b"ok").body == b"ok"


def test_many_sequential_requests_no_fd_leak(wd):
    w = wd({"fprocess": "cat", "mode": "serializing"})
    before = len(os.listdir(f"/proc/{w.pid}/fd"))
    with Client(w.port) as c:
        for i in range(100):
            r = c.request("POST", "/", b"%d" % i)
            assert r.body == b"%d" % i
    for i in range(30):
        assert request(w.port, "POST", "/", b"n").status == 200
    time.sleep(0.2)
    after = len(os.listdir(f"/proc/{w.pid}/fd"))
    assert after <= before + 2, f"fds grew from {before} to {after}"


def test_pipelining_slow_first(wd):
    w = wd({"fprocess": "sh -c 'sleep ${Http_Query#s=}; echo \"$Http_Path\"'"})
    with Client(w.port) as c:
        c.send(build_request("GET", "/first?s=0.4", port=w.port)
               + build_request("GET", "/second?s=0", port=w.port))
        r1 = c.read_response()
        r2 = c.read_response()
    assert (r1.status, r1.body) == (200, b"/first\n")
    assert (r2.status, r2.body) == (200, b"/second\n")


@pytest.mark.parametrize("mode", ["classic", "streaming"])
def test_expect_continue_rejected_early(wd, tmp_path, mode):
    flag = tmp_path / "started"
    w = wd({"mode": mode, "fprocess": sh("touch.sh", flag), "max_body_size": "1k"})
    with Client(w.port) as c:
        c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\nExpect: 100-continue\r\n\r\n")
        c.settimeout(2)
        r = c.read_response()
    assert r.status == 413, r
    assert not r.interim, "no 100 Continue for a body that will be refused"
    assert not flag.exists()


def test_connection_close_honoured(wd):
    w = wd({"fprocess": "cat"})
    with Client(w.port) as c:
        r = c.request("POST", "/", b"x", {"Connection": "close"})
        assert (r.status, r.body) == (200, b"x")
        assert (r.header("Connection") or "").lower() == "close"
        assert c.wait_closed(1.0)


@pytest.mark.parametrize("mode", ["classic", "streaming"])
def test_read_timeout_stalled_body(wd, mode):
    marker = "stall-" + os.urandom(6).hex()
    w = wd({"mode": mode, "fprocess": f"sh -c 'cat; :' {marker}", "read_timeout": "1s"})
    c = Client(w.port, timeout=3)
    t0 = time.monotonic()
    c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf")
    closed = c.wait_closed(2.5)
    dt = time.monotonic() - t0
    c.close()
    assert closed, "a stalled body must hit read_timeout"
    assert dt <= 1.4, f"closed after {dt:.2f}s"
    assert not wait_no_procs(marker, exclude=(w.pid,), timeout=0.5), "handler left running"


@pytest.mark.parametrize("mode", ["classic", "serializing", "streaming"])
def test_http10_keep_alive_framing(wd, mode):
    w = wd({"mode": mode, "fprocess": "echo ten"})
    with Client(w.port) as c:
        c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = c.read_response()
        assert (r.status, r.body) == (200, b"ten\n")
        assert not r.chunked, "no chunked encoding for an HTTP/1.0 client"
        if r.header("Content-Length") is not None and not r.closed and \
                (r.header("Connection") or "").lower() == "keep-alive":
            c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            r2 = c.read_response()
            assert (r2.status, r2.body) == (200, b"ten\n")
        else:
            assert c.wait_closed(1.0), "a response without length must end with a close"


def test_header_value_obs_text_passed(wd):
    import json

    from conftest import fx
    w = wd({"mode": "classic", "fprocess": "python3 " + fx("env.py")})
    with Client(w.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Utf: caf\xc3\xa9\r\n\r\n")
        r = c.read_response()
    assert r.status == 200, r
    assert json.loads(r.body)["Http_X_Utf"] == "caf\u00e9"


def test_zero_length_chunked_body(wd):
    w = wd({"fprocess": "wc -c"})
    r = request(w.port, "POST", "/", chunks=[])
    assert r.status == 200
    assert r.body.strip() == b"0"


@pytest.mark.parametrize("mode", ["classic", "serializing"])
def test_max_body_size_chunked_413(wd, tmp_path, mode):
    flag = tmp_path / "started"
    w = wd({"mode": mode, "fprocess": sh("touch.sh", flag), "max_body_size": "1k"})
    r = request(w.port, "POST", "/", chunks=[b"a" * 700, b"b" * 700])
    assert r.status == 413, r
    assert not flag.exists(), "buffering modes must refuse before starting the handler"


def test_max_header_size_setting(wd):
    w = wd({"fprocess": "cat", "max_header_size": "1k"})
    r = request(w.port, "GET", "/", headers={"X-Big": "b" * 2000})
    assert r.status == 431, r
    r = request(w.port, "POST", "/", b"ok", headers={"X-Small": "s" * 200})
    assert (r.status, r.body) == (200, b"ok")


def test_many_headers_reach_env(wd):
    import json

    from conftest import fx
    w = wd({"mode": "classic", "fprocess": "python3 " + fx("env.py")})
    hdrs = [(f"X-H{i}", f"v{i}") for i in range(3000)]
    r = request(w.port, "GET", "/", headers=hdrs, timeout=10)
    assert r.status == 200, r
    env = json.loads(r.body)
    assert sum(1 for k in env if k.startswith("Http_X_H")) == 3000
    assert env["Http_X_H2999"] == "v2999"


@pytest.mark.parametrize("mode", ["classic", "streaming"])
def test_header_too_long_for_exec(wd, mode):
    """A 200 KB header value cannot be passed in one environment string (E2BIG): the request
    fails cleanly and the watchdog keeps serving."""
    w = wd({"mode": mode, "fprocess": "cat"})
    r = request(w.port, "POST", "/", b"x", headers={"X-Huge": "h" * 200_000}, timeout=10)
    assert r.status in (431, 500), r
    r = request(w.port, "POST", "/", b"after")
    assert (r.status, r.body) == (200, b"after")


def test_pipelined_after_429(wd):
    w = wd({"fprocess": sh("sleep.sh"), "max_inflight": "1"})
    res = {}
    t = threading.Thread(target=lambda: res.setdefault("r", request(w.port, "GET", "/?s=0.5")))
    t.start()
    time.sleep(0.2)
    with Client(w.port) as c:
        c.send(build_request("GET", "/?s=0", port=w.port))
        r1 = c.read_response()
        assert r1.status == 429
        t.join(3)
        if not r1.closed and (r1.header("Connection") or "").lower() != "close":
            r2 = c.request("GET", "/?s=0")
            assert (r2.status, r2.body) == (200, b"slept\n")
    assert res["r"].status == 200
