"""Admission control beyond max_inflight (max_queue, queue_timeout) and classic marshal_request."""
import base64
import json
import threading
import time

from conftest import Client, request, sh

LIMIT_BODY = b"Concurrent request limit exceeded. Max concurrent requests: 1\n"


def _bg(port, path, out, key, delay=0.0):
    def run():
        time.sleep(delay)
        t0 = time.monotonic()
        out[key] = request(port, "GET", path, timeout=6)
        out[key + "_t"] = time.monotonic() - t0

    t = threading.Thread(target=run)
    t.start()
    return t


def test_max_queue_waits_then_serves(wd):
    w = wd({"fprocess": sh("sleep.sh"), "max_inflight": "1", "max_queue": "1"})
    res = {}
    ta = _bg(w.port, "/?s=0.6", res, "a")
    tb = _bg(w.port, "/?s=0", res, "b", delay=0.15)
    time.sleep(0.3)
    c = request(w.port, "GET", "/?s=0")  # slot busy, queue full
    ta.join(5)
    tb.join(5)
    assert c.status == 429, c
    assert c.body == LIMIT_BODY
    assert c.header("X-OpenFaaS-Internal") == "faas-middleware"
    assert c.header("Retry-After"), "429 from a full queue carries Retry-After"
    assert (res["a"].status, res["b"].status) == (200, 200), res
    assert res["b"].body == b"slept\n"
    assert res["b_t"] >= 0.35, "the queued request must wait for the slot"


def test_queue_timeout(wd):
    w = wd({"fprocess": sh("sleep.sh"), "max_inflight": "1", "max_queue": "5",
            "queue_timeout": "300ms"})
    res = {}
    ta = _bg(w.port, "/?s=1", res, "a")
    time.sleep(0.15)
    t0 = time.monotonic()
    r = request(w.port, "GET", "/?s=0")
    dt = time.monotonic() - t0
    ta.join(5)
    assert r.status == 429, r
    assert r.header("Retry-After")
    assert 0.25 <= dt <= 0.7, f"queue_timeout=300ms answered after {dt:.2f}s"
    assert res["a"].status == 200


def test_marshal_request(wd):
    w = wd({"mode": "classic", "fprocess": "cat", "marshal_request": "true"})
    with Client(w.port) as c:
        c.send(b"POST /m?q=1 HTTP/1.1\r\nHost: h\r\nx-multi: 1\r\nX-Multi: 2\r\n"
               b"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
        r = c.read_response()
    assert r.status == 200, r
    doc = json.loads(r.body)
    assert base64.b64decode(doc["body"]["raw"]) == b"hello"
    hdr = doc["header"]
    assert hdr["X-Multi"] == ["1", "2"]
    assert hdr["Content-Type"] == ["text/plain"]
    assert "Host" not in hdr
