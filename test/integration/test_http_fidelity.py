"""mode=http proxy fidelity (issue 3, "Tests that must exist"): what a client sends reaches the
upstream as sent, and what the upstream answers comes back as sent, live.

Upstreams: test/fixtures/httpfid_upstream.py (python http.server) and httpfid_node.js (node
http), started by the watchdog on a port the test picks and passed in UPSTREAM_PORT and
upstream_url. The upstream reports what it received (X-Got: length, sha256, Content-Length and
Transfer-Encoding values) and echoes bodies back, so both directions are checked.
"""
import hashlib
import json
import os
import socket
import time

import pytest

from conftest import Client, free_port, build_request, fx, request





def start(wd, fixture="httpfid_upstream.py", base="", **env):
    port = free_port()
    runner = "node" if fixture.endswith(".js") else "python3"
    cfg = {
        "mode": "http",
        "fprocess": f"{runner} {fx(fixture)}",
        "upstream_url": f"http://127.0.0.1:{port}{base}",
        "UPSTREAM_PORT": str(port),
    }
    cfg.update({k: str(v) for k, v in env.items()})
    w = wd(cfg)
    w.upstream_port = port
    r = w.health_ok(timeout=5)
    assert r.status == 200, w.log_text()
    return w


def req(w, method, path, **kw):
    """request() on a fresh connection; a hang or reset fails with the watchdog's log."""
    try:
        return request(w.port, method, path, **kw)
    except OSError as e:
        raise AssertionError(f"{method} {path}: {e!r}; watchdog log:\n" + w.log_text()[-3000:])


def got(resp):
    """The upstream's report of the request body it received."""
    assert resp.status == 200, resp
    v = resp.header("X-Got")
    assert v, f"no X-Got from the upstream: {resp!r}"
    return json.loads(v)


def send(port, method, path, body=None, chunks=None, headers=None, timeout=15, store=True):
    with Client(port, timeout) as c:
        c.send(build_request(method, path, body, headers, chunks=chunks, port=port))
        return c.read_response(method, store=store)


def no_more_bytes(c, wait=0.2):
    """Nothing beyond the response arrives on a kept-alive connection within wait."""
    if c.buf:
        return bytes(c.buf)
    c.settimeout(wait)
    try:
        d = c.sock.recv(4096)
    except (socket.timeout, TimeoutError):
        return b""
    finally:
        c.settimeout(5)
    return d  # b"" = closed, which is fine for "no body"


# --------------------------------------------------------------------------------------------
# request direction


SIZES = {"0B": 0, "1B": 1, "10MiB": 10 << 20}


@pytest.fixture(scope="module")
def payloads():
    return {k: os.urandom(n) for k, n in SIZES.items()}


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("size", list(SIZES))
def test_binary_body_fidelity(wd, payloads, size, framing):
    w = start(wd)
    data = payloads[size]
    sha = hashlib.sha256(data).hexdigest()
    if framing == "chunked":
        step = 64 * 1024
        chunks = [data[i:i + step] for i in range(0, len(data), step)]
        r = send(w.port, "POST", "/echo", chunks=chunks, store=False)
    else:
        r = send(w.port, "POST", "/echo", body=data, store=False)
    seen = got(r)
    # the upstream received exactly these bytes ...
    assert (seen["len"], seen["sha256"]) == (len(data), sha)
    # ... framed as the client framed them
    if framing == "chunked":
        assert seen["te"] == ["chunked"] and seen["cl"] == [], seen
    else:
        assert seen["cl"] == [str(len(data))] and seen["te"] == [], seen
    # and the echo came back intact, with the upstream's Content-Length
    assert r.complete and (r.length, r.sha256) == (len(data), sha)
    assert r.header("Content-Length") == str(len(data)) and not r.chunked, r.headers


def test_no_body_gets_no_framing(wd):
    w = start(wd)
    seen = got(req(w, "GET", "/echo"))
    assert seen == {"len": 0, "sha256": hashlib.sha256(b"").hexdigest(), "cl": [], "te": []}


def test_repeated_request_headers(wd):
    w = start(wd)
    hdrs = [("X-Rep", "one"), ("Accept", "text/plain"), ("X-Rep", "two, three"),
            ("Cookie", "a=1"), ("X-Rep", "four"), ("Cookie", "b=2")]
    doc = json.loads(req(w, "GET", "/headers", headers=hdrs).body)
    rep = [v for k, v in doc["headers"] if k.lower() == "x-rep"]
    cookie = [v for k, v in doc["headers"] if k.lower() == "cookie"]
    assert rep == ["one", "two, three", "four"], doc["headers"]
    assert cookie in (["a=1", "b=2"], ["a=1; b=2"]), doc["headers"]


@pytest.mark.parametrize("target", [
    "/p%20q/headers?a=%2F%3F%26&b=%E2%82%AC&c=+&d=%25&e",
    "/%2e%2E/%2F/headers?q=%00%ff",
    "/x//headers?",
    "/headers?a=1&a=2;b",
])
def test_query_and_base_path_exact(wd, target):
    w = start(wd, base="/base")
    r = req(w, "GET", target)
    assert r.status == 200, r
    assert json.loads(r.body)["path"] == "/base" + target


# --------------------------------------------------------------------------------------------
# response direction


def test_repeated_response_headers_and_custom_status(wd):
    w = start(wd)
    r = req(w, "GET", "/status?code=418&reason=I%27m%20a%20teapot")
    assert r.status == 418, r
    assert r.all("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly"], r.headers
    assert r.all("X-Rep") == ["one", "two, three"], r.headers
    assert r.body == b"short and stout\n"
    assert r.reason == "I'm a teapot", r.reason


def test_unknown_status_code_reason_as_go(wd):
    """The status code is relayed; the reason phrase is Go's (what of-watchdog clients see):
    for a code Go does not know, "status code N" (clients ignore reason phrases anyway)."""
    w = start(wd)
    r = req(w, "GET", "/status?code=299&reason=Custom%20Reason%20Here")
    assert (r.status, r.reason) == (299, "status code 299"), (r.status, r.reason)


@pytest.mark.parametrize("code", [204, 304])
def test_no_body_statuses(wd, code):
    w = start(wd)
    with Client(w.port) as c:
        r = c.request("GET", f"/nobody?code={code}")
        assert r.status == code, r
        assert r.header("X-Nobody") == str(code)
        if code == 304:
            assert r.header("ETag") == '"v1"'
        # no framing that announces a body, and no body bytes on the wire
        assert r.header("Transfer-Encoding") is None, r.headers
        assert r.header("Content-Length") in (None, "0"), r.headers
        assert no_more_bytes(c) == b"", "bytes after a %d response" % code
        # the connection is still in sync: the next response parses
        r2 = c.request("GET", "/headers")
        assert r2.status == 200 and json.loads(r2.body)["path"] == "/headers"


@pytest.mark.parametrize("path,length", [("/headcl", "12345"), ("/head", None)])
def test_head_headers_no_body(wd, path, length):
    w = start(wd)
    with Client(w.port, timeout=3) as c:
        r = c.request("HEAD", path)
        assert r.status == 200, r
        assert r.t_head < 1.0, r.t_head
        assert r.header("X-Head") in ("yes", "chunked"), r.headers
        assert r.header("Content-Length") == length, r.headers
        assert no_more_bytes(c) == b"", "body bytes after a HEAD response"
        # the upstream's HEAD answer was complete: the connection carries on at once
        t0 = time.monotonic()
        r2 = c.request("GET", path)
        assert r2.status == 200 and r2.complete, r2
        assert time.monotonic() - t0 < 1.0
        assert r2.body in (b"x" * 12345, b"head body\n")


def test_redirect_passed_through_not_followed(wd):
    w = start(wd)
    r = req(w, "GET", "/redir")
    assert r.status == 301, r
    assert r.header("Location") == f"http://127.0.0.1:{w.upstream_port}/elsewhere?x=%20y"
    assert r.body == b"moved\n"
    w.wait_log(r"httpfid REQ GET /redir")
    time.sleep(0.2)
    assert not w.log_lines(r"httpfid REQ .*/elsewhere"), w.log_text()


# --------------------------------------------------------------------------------------------
# live streams


def timed(port, path, sep, headers=None, timeout=5):
    """GET path; returns (response, [seconds from the send at which each sep-terminated record
    was complete])."""
    times = []
    buf = bytearray()

    def on_chunk(d):
        buf.extend(d)
        now = time.monotonic() - c.t_send
        while buf.count(sep) > len(times):
            times.append(now)

    with Client(port, timeout) as c:
        c.send(build_request("GET", path, headers=headers, port=port))
        r = c.read_response("GET", on_chunk=on_chunk)
        r.eof_after = c.wait_closed(0.05) if not r.complete else True
    return r, times


def assert_live(times, n):
    assert len(times) == n, times
    assert times[0] < 0.25, f"first record after {times[0]:.3f}s: {times}"
    for a, b in zip(times, times[1:]):
        assert 0.15 < b - a < 0.4, f"records not live: {times}"


@pytest.mark.parametrize("accept", [None, "text/event-stream", "*/*", "application/json"])
def test_sse_live(wd, accept):
    w = start(wd, base="/b")
    headers = [("Accept", accept)] if accept else None
    r, times = timed(w.port, "/sse?n=3&gap=0.3", b"\n\n", headers)
    assert r.status == 200 and r.complete, r
    assert r.header("Content-Type") == "text/event-stream"
    assert r.body == b"".join(b"id: %d\ndata: event %d\n\n" % (i, i) for i in range(3))
    assert_live(times, 3)


def test_ndjson_live(wd):
    w = start(wd)
    r, times = timed(w.port, "/ndjson?n=4&gap=0.3", b"\n", [("Accept", "application/x-ndjson")])
    assert r.status == 200 and r.complete, r
    assert r.header("Content-Type") == "application/x-ndjson"
    assert [json.loads(x) for x in r.body.splitlines()] == [{"n": i} for i in range(4)]
    assert_live(times, 4)


@pytest.mark.parametrize("how", ["exec_timeout", "X-Timeout"])
def test_sse_deadline_cuts_stream(wd, how):
    env = {"exec_timeout": "1s"} if how == "exec_timeout" else {"exec_timeout": "10s"}
    headers = [("Accept", "text/event-stream")]
    if how == "X-Timeout":
        headers.append(("X-Timeout", "1s"))
    w = start(wd, **env)
    r, times = timed(w.port, "/sse?n=0&gap=0.1", b"\n\n", headers, timeout=5)
    assert r.status == 200, r
    assert len(times) >= 5 and times[0] < 0.25, times  # live until the cut
    # (0.98: the loop clock has ms granularity)
    assert 0.98 <= r.t_end < 1.1, f"stream ended after {r.t_end:.3f}s (deadline 1 s)"
    assert r.eof_after, "connection not closed after the deadline"
    assert not r.complete, "a stream cut by the deadline must not look complete"
    # the upstream learns that the caller is gone
    w.wait_log(r"httpfid sse gone", timeout=2)


# --------------------------------------------------------------------------------------------
# node http upstream


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_node_echo_1mib(wd, framing):
    w = start(wd, fixture="httpfid_node.js", base="/n")
    data = os.urandom(1 << 20)
    sha = hashlib.sha256(data).hexdigest()
    if framing == "chunked":
        r = send(w.port, "PUT", "/echo", chunks=[data[:300000], data[300000:]])
    else:
        r = send(w.port, "PUT", "/echo", body=data)
    seen = got(r)
    assert (seen["len"], seen["sha256"]) == (len(data), sha)
    if framing == "chunked":
        assert seen["te"] == ["chunked"] and seen["cl"] == [], seen
    else:
        assert seen["cl"] == [str(len(data))] and seen["te"] == [], seen
    assert r.complete and r.body == data


def test_node_streamed_response(wd):
    w = start(wd, fixture="httpfid_node.js")
    r, times = timed(w.port, "/stream?n=3", b"\n", [("Accept", "application/x-ndjson")])
    assert r.status == 200 and r.complete, r
    assert r.header("Content-Type") == "application/x-ndjson"
    assert [json.loads(x) for x in r.body.splitlines()] == [{"n": i} for i in range(3)]
    assert_live(times, 3)
