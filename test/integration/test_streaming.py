"""mode=streaming (the default): live, chunked, full duplex."""
import hashlib
import os
import threading
import time

import pytest

from conftest import Client, RssSampler, assert_rss, build_request, request, sh, wait_no_procs


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "OPTIONS", "FOO"])
def test_any_method_chunked(wd, method):
    w = wd({"fprocess": "cat"})  # no mode: streaming is the default
    r = request(w.port, method, "/", b"abc")
    assert r.status == 200, r
    assert r.header("Transfer-Encoding") == "chunked"
    assert r.header("Content-Length") is None
    assert r.header("Content-Type") == "application/octet-stream"
    assert r.body == b"abc"
    assert r.complete


def test_output_is_live(wd):
    w = wd({"fprocess": sh("stream.sh")})
    with Client(w.port) as c:
        c.send(build_request("GET", "/", port=w.port))
        r = c.read_response()
    assert r.status == 200
    assert r.body == b"ab"
    first_t = r.chunks[0][0]
    assert r.t_head < 0.4, f"headers after {r.t_head:.2f}s"
    assert first_t < 0.4, f"first chunk after {first_t:.2f}s: output is buffered"
    assert r.chunks[-1][0] >= 0.45, "b must come after the handler's 0.5 s sleep"


def test_output_lines_live(wd):
    w = wd({"fprocess": sh("stream.sh")})
    with Client(w.port) as c:
        seen = []
        c.send(build_request("GET", "/?lines=1", port=w.port))
        r = c.read_response(on_chunk=lambda d: seen.append((time.monotonic() - c.t_send, d)))
    assert r.body == b"one\ntwo\nthree\n"
    assert seen[0][0] < 0.25, seen
    assert len(seen) >= 3, f"expected 3 separate chunks: {seen}"


def _duplex(port, size, pid, chunked=False, piece=1 << 20):
    """Send size random bytes to an echo handler while reading the answer concurrently."""
    sent = hashlib.sha256()
    err = []
    c = Client(port, timeout=20)
    head = build_request("POST", "/", port=port, headers=[("Content-Length", str(size))]
                         if not chunked else [("Transfer-Encoding", "chunked")])
    rss = RssSampler(pid)

    def sender():
        try:
            c.sock.sendall(head)
            left = size
            while left:
                n = min(piece, left)
                d = os.urandom(n)
                sent.update(d)
                if chunked:
                    c.sock.sendall(b"%x\r\n" % n + d + b"\r\n")
                else:
                    c.sock.sendall(d)
                left -= n
            if chunked:
                c.sock.sendall(b"0\r\n\r\n")
        except OSError as e:
            err.append(e)

    rss.start()
    t = threading.Thread(target=sender, daemon=True)
    t.start()
    try:
        r = c.read_response(store=False)
    finally:
        t.join(30)
        rss.stop()
        c.close()
    assert not err, f"sending failed: {err}"
    return r, sent.hexdigest(), rss


@pytest.mark.parametrize("mib", [64, 256])
def test_full_duplex_echo(wd, mib):
    w = wd({"fprocess": "cat"})
    size = mib << 20
    r, sent, rss = _duplex(w.port, size, w.pid)
    assert r.status == 200
    assert r.length == size, f"got {r.length} of {size} bytes back"
    assert r.sha256 == sent
    assert_rss(rss)


def test_full_duplex_echo_chunked_request(wd):
    w = wd({"fprocess": "cat"})
    size = 16 << 20
    r, sent, rss = _duplex(w.port, size, w.pid, chunked=True, piece=100003)
    assert r.status == 200
    assert r.length == size
    assert r.sha256 == sent
    assert_rss(rss)


def test_failure_without_output_500(wd):
    w = wd({"fprocess": "sh -c 'exit 3'"})
    r = request(w.port, "POST", "/", b"x")
    assert r.status == 500, r
    assert b"exit status 3" in r.body


def test_failure_after_output_ends_response(wd):
    w = wd({"fprocess": sh("exit.sh")})
    r = request(w.port, "GET", "/?code=3")
    assert r.status == 200, "status cannot change once output started"
    assert r.body.startswith(b"out-before\n")


def test_missing_executable_500(wd):
    w = wd({"fprocess": "nosuch-xyz"})
    r = request(w.port, "POST", "/", b"x")
    assert r.status == 500, r
    assert b"nosuch-xyz" in r.body


def test_exec_timeout_no_output_504(wd):
    w = wd({"fprocess": "sleep 5", "exec_timeout": "1s"})
    t0 = time.monotonic()
    r = request(w.port, "POST", "/", b"x")
    dt = time.monotonic() - t0
    assert r.status == 504, r
    assert 0.9 <= dt <= 1.3, f"answered after {dt:.2f}s"


def test_exec_timeout_after_output(wd):
    marker = "tree-" + os.urandom(6).hex()
    w = wd({"fprocess": sh("tree.sh", marker), "exec_timeout": "1s"})
    t0 = time.monotonic()
    r = request(w.port, "GET", "/?out=1")
    dt = time.monotonic() - t0
    assert r.status == 200
    assert r.body.startswith(b"start\n")
    assert dt <= 1.3, f"response ended after {dt:.2f}s"
    assert not wait_no_procs(marker, exclude=(w.pid,), timeout=0.5), "handler processes survived the timeout"
    assert not wait_no_procs(w.marker, exclude=(w.pid,), timeout=0.5)


def test_large_body_to_handler_that_reads_all_first(wd):
    w = wd({"fprocess": "wc -c"})
    body = os.urandom(3 << 20)
    r = request(w.port, "POST", "/", body, timeout=10)
    assert r.status == 200
    assert r.body.strip() == str(len(body)).encode()


def test_handler_not_reading_body(wd):
    w = wd({"fprocess": "echo ignored"})
    r = request(w.port, "POST", "/", os.urandom(2 << 20), timeout=10)
    assert r.status == 200
    assert r.body == b"ignored\n"
    # the connection (or a new one) is usable afterwards
    r = request(w.port, "GET", "/")
    assert (r.status, r.body) == (200, b"ignored\n")


def test_slow_reader_backpressure(wd):
    """A handler that writes 48 MiB to a client that does not read yet: the watchdog must
    apply back-pressure (pause the pipe), not buffer the output in memory."""
    w = wd({"fprocess": "head -c 50331648 /dev/zero"})
    rss = RssSampler(w.pid)
    rss.start()
    try:
        with Client(w.port, timeout=10) as c:
            c.send(build_request("GET", "/", port=w.port))
            time.sleep(0.7)
            r = c.read_response(store=False)
    finally:
        rss.stop()
    assert r.status == 200 and r.complete
    assert r.length == 48 << 20
    assert_rss(rss)


def test_client_gone_kills_handler(wd):
    marker = "yes-" + os.urandom(6).hex()
    w = wd({"fprocess": "yes " + marker})
    c = Client(w.port)
    c.send(build_request("GET", "/", port=w.port))
    r_head = c.read_line()
    assert r_head.startswith(b"HTTP/1.1 200"), r_head
    c.read_upto(1 << 20)
    c.close()
    left = wait_no_procs(marker, exclude=(w.pid,), timeout=1.0)
    assert not left, f"the handler keeps running after its client left: {left}"
    r = request(w.port, "GET", "/_/health")
    assert r.status == 200


@pytest.mark.parametrize("mode", ["serializing", "streaming"])
def test_head_has_no_body_on_keepalive(wd, mode):
    w = wd({"fprocess": "echo hello-head", "mode": mode})
    with Client(w.port) as c:
        r = c.request("HEAD", "/")
        assert r.status == 200
        r2 = c.request("POST", "/x", b"")
        assert (r2.status, r2.body) == (200, b"hello-head\n"), "stray HEAD body bytes on the wire"


@pytest.mark.parametrize("mode", ["classic", "serializing", "streaming"])
def test_unread_body_then_keepalive(wd, mode):
    w = wd({"fprocess": "echo ignored", "mode": mode})
    with Client(w.port, timeout=10) as c:
        r = c.request("POST", "/", os.urandom(200_000))
        assert (r.status, r.body) == (200, b"ignored\n")
        if not r.closed and (r.header("Connection") or "").lower() != "close":
            r = c.request("POST", "/", b"second")
            assert (r.status, r.body) == (200, b"ignored\n")


def test_many_concurrent_clients(wd):
    w = wd({"fprocess": "cat"})
    out = [None] * 40
    errs = []

    def one(i):
        try:
            out[i] = request(w.port, "POST", f"/{i}", b"body-%d" % i, timeout=10)
        except Exception as e:  # noqa: BLE001
            errs.append(e)

    ts = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(15)
    assert not errs, errs
    bad = [(i, r) for i, r in enumerate(out) if r is None or (r.status, r.body) != (200, b"body-%d" % i)]
    assert not bad, bad


def test_exec_timeout_during_duplex_upload(wd):
    """The deadline hits while the client is still uploading: the response ends at once, the
    client is not left hanging and the handler is gone."""
    marker = "dup-" + os.urandom(6).hex()
    w = wd({"fprocess": f"sh -c 'cat; :' {marker}", "exec_timeout": "1s"})
    c = Client(w.port, timeout=5)
    stop = threading.Event()

    def sender():
        try:
            c.sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (64 << 20))
            for _ in range(64):
                if stop.is_set():
                    return
                c.sock.sendall(os.urandom(1 << 20))
                time.sleep(0.05)
        except OSError:
            pass

    t = threading.Thread(target=sender, daemon=True)
    t0 = time.monotonic()
    t.start()
    try:
        r = c.read_response(store=False)
        dt = time.monotonic() - t0
    finally:
        stop.set()
        t.join(5)
        c.close()
    assert r.status == 200
    assert 0 < r.length < 64 << 20
    assert dt <= 1.5, f"response ended {dt:.2f}s after the start (exec_timeout=1s)"
    assert not wait_no_procs(marker, exclude=(w.pid,), timeout=0.5)
    assert request(w.port, "GET", "/_/health").status == 200
