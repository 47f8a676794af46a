"""HTTP/1.1 server behaviour: framing, keep-alive, limits, smuggling, timeouts, admission."""
import os
import socket
import struct
import threading
import time

import pytest

from conftest import Client, assert_date, build_request, request, sh


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
