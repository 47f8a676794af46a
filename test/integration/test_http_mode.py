"""mode=http: the watchdog supervises a warm HTTP server (fprocess) and proxies to it.

Upstreams are test/fixtures/http_echo.py (python http.server) and http_echo.js (node http),
listening on a port the test picks (bind port 0, close, pass it in UPSTREAM_PORT and
upstream_url).
"""
import json
import os
import signal
import threading
import time

import pytest

from conftest import Client, free_port, fx, procs_with, request, wait_no_procs





def start_http(wd, fixture="http_echo.py", base="", wait_ready=True, **env):
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
    if wait_ready:
        r = w.health_ok(timeout=5)
        assert r.status == 200, w.log_text()
    return w


def echo(resp):
    assert resp.status == 200, resp
    return json.loads(resp.body)


def hdr(doc, name):
    return [v for k, v in doc["headers"] if k.lower() == name.lower()]


def test_proxy_fidelity(wd):
    w = start_http(wd, base="/base")
    r = request(w.port, "PUT", "/x//y?z=1&a=%20b", body=b"hello",
                headers=[("X-Multi", "a"), ("X-Multi", "b"), ("X-Forwarded-For", "10.0.0.1"),
                         ("Connection", "keep-alive, X-Drop"), ("X-Drop", "1"),
                         ("Keep-Alive", "timeout=5")])
    doc = echo(r)
    assert doc["method"] == "PUT"
    assert doc["path"] == "/base/x//y?z=1&a=%20b"
    assert doc["body"] == "hello"
    assert hdr(doc, "Content-Length") == ["5"]
    assert hdr(doc, "Transfer-Encoding") == []
    assert hdr(doc, "X-Multi") == ["a", "b"]
    assert hdr(doc, "Host") == [f"127.0.0.1:{w.port}"]
    assert hdr(doc, "X-Forwarded-For") == ["10.0.0.1, 127.0.0.1"]
    assert hdr(doc, "X-Forwarded-Proto") == ["http"]
    assert hdr(doc, "X-Forwarded-Host") == [f"127.0.0.1:{w.port}"]
    assert hdr(doc, "X-Drop") == [] and hdr(doc, "Keep-Alive") == []
    assert hdr(doc, "X-Call-Id") == [r.header("X-Call-Id")]
    assert len(hdr(doc, "X-Deadline")) == 1
    assert r.header("X-Upstream") == "py"
    assert r.header("Content-Type") == "application/json"
    assert float(r.header("X-Duration-Seconds")) >= 0
    assert len(r.all("Date")) == 1
    # HEAD keeps the upstream's Content-Length, without a body
    r = request(w.port, "HEAD", "/h")
    assert r.status == 200 and r.body == b"" and int(r.header("Content-Length")) > 0
    # empty body with Content-Length: 0
    doc = echo(request(w.port, "POST", "/e", body=b""))
    assert doc["body_len"] == 0 and hdr(doc, "Content-Length") == ["0"]


def test_chunked_request_and_big_bodies(wd):
    w = start_http(wd)
    doc = echo(request(w.port, "POST", "/c", chunks=["ab", "cd", "e"]))
    assert doc["body"] == "abcde"
    assert hdr(doc, "Transfer-Encoding") == ["chunked"]
    assert hdr(doc, "Content-Length") == []
    data = os.urandom(1 << 20)
    r = request(w.port, "POST", "/raw", body=data, timeout=10)
    assert r.status == 200 and r.body == data
    r = request(w.port, "POST", "/raw", chunks=[data[: 1 << 19], data[1 << 19:]], timeout=10)
    assert r.status == 200 and r.body == data
    r = request(w.port, "GET", "/big?n=1048576", timeout=10)
    assert r.status == 200 and r.body == bytes(i % 251 for i in range(1 << 20))


def test_buffer_http_sends_content_length(wd):
    w = start_http(wd, buffer_http="true")
    doc = echo(request(w.port, "POST", "/c", chunks=["ab", "cd"]))
    assert doc["body"] == "abcd"
    assert hdr(doc, "Content-Length") == ["4"] and hdr(doc, "Transfer-Encoding") == []


def test_node_upstream(wd):
    w = start_http(wd, fixture="http_echo.js", base="/n")
    r = request(w.port, "POST", "/p?q=1", body=b"xyz")
    doc = echo(r)
    assert r.header("X-Upstream") == "node"
    assert doc["path"] == "/n/p?q=1" and doc["body"] == "xyz"
    assert ["content-length", "3"] in doc["headers"]


def test_keep_alive_reuse(wd):
    w = start_http(wd)
    ports = set()
    with Client(w.port) as c:
        for _ in range(5):
            ports.add(echo(c.request("GET", "/k"))["client_port"])
    assert len(ports) == 1, ports


def test_broken_pooled_connection_is_retried(wd):
    w = start_http(wd)
    with Client(w.port) as c:
        first = echo(c.request("GET", "/drop-next"))
        # the pooled connection now closes on its next request: retried on a fresh one
        second = echo(c.request("GET", "/again"))
    assert second["path"] == "/again"
    assert second["client_port"] != first["client_port"]


def test_upgrade_forwarded_and_plain_answer_proxied(wd):
    """An upgrade request reaches the upstream with its Upgrade header; an upstream that answers
    without 101 is proxied as a normal response (the tunnel case is in test_http_ws.py)."""
    w = start_http(wd)
    r = request(w.port, "GET", "/ws", headers=[("Connection", "Upgrade"), ("Upgrade", "websocket")])
    assert r.status == 200, r
    doc = echo(r)
    assert hdr(doc, "Upgrade") == ["websocket"]


def test_slow_start_readiness(wd):
    w = start_http(wd, wait_ready=False, UPSTREAM_DELAY="1")
    assert request(w.port, "GET", "/_/health").status == 503
    assert not w.lock_path.exists()
    t0 = time.monotonic()
    r = request(w.port, "GET", "/cold")  # arrives during the cold start: waits, no 5xx
    assert r.status == 200, r
    assert time.monotonic() - t0 > 0.5
    w.wait_lock()
    assert request(w.port, "GET", "/_/health").status == 200


def test_ready_path_probe(wd):
    w = start_http(wd, wait_ready=False, ready_path="/ready", READY_SLOW="1")
    assert request(w.port, "GET", "/_/health").status == 503
    w.wait_log(r"upstream ready", timeout=5)
    assert w.health_ok().status == 200
    assert w.log_lines(r"Writing lock-file")


def test_streaming_response(wd):
    w = start_http(wd)
    with Client(w.port) as c:
        r = c.request("GET", "/stream")
    assert r.status == 200 and r.body == b"part0\npart1\npart2\n"
    assert r.chunks[0][0] < 0.25, r.chunks
    assert r.t_end > 0.55


@pytest.mark.parametrize("how", ["exec_timeout", "X-Timeout"])
def test_deadline_504(wd, how):
    env = {"exec_timeout": "500ms"} if how == "exec_timeout" else {"exec_timeout": "5s"}
    w = start_http(wd, **env)
    headers = {"X-Timeout": "500ms"} if how == "X-Timeout" else None
    t0 = time.monotonic()
    r = request(w.port, "GET", "/sleep?s=2", headers=headers)
    took = time.monotonic() - t0
    assert r.status == 504 and r.body == b""
    assert r.header("X-OpenFaaS-Internal") == "of-watchdog"
    assert 0.5 <= took < 0.6, took
    # X-Timeout never raises, a bare number is ignored
    if how == "exec_timeout":
        r = request(w.port, "GET", "/sleep?s=0.8", headers={"X-Timeout": "10s"})
        assert r.status == 504


def test_upstream_killed_restarts(wd):
    w = start_http(wd)
    pid = echo(request(w.port, "GET", "/a"))["pid"]
    os.kill(pid, signal.SIGKILL)
    w.wait_log(r"Forked function has terminated: signal: killed", timeout=3)
    w.wait_log(r"restarting upstream in 100ms", timeout=1)
    assert request(w.port, "GET", "/_/health").status == 503
    assert w.health_ok(timeout=5).status == 200
    doc = echo(request(w.port, "GET", "/b"))
    assert doc["pid"] != pid


def test_request_during_restart_waits(wd):
    w = start_http(wd)
    pid = echo(request(w.port, "GET", "/a"))["pid"]
    os.kill(pid, signal.SIGKILL)
    w.wait_log(r"Forked function has terminated", timeout=3)
    r = request(w.port, "GET", "/b")
    assert r.status == 200, r


def test_killed_mid_request_502(wd):
    w = start_http(wd)
    pid = echo(request(w.port, "GET", "/a"))["pid"]
    threading.Timer(0.3, os.kill, (pid, signal.SIGKILL)).start()
    r = request(w.port, "GET", "/sleep?s=2")
    assert r.status == 502, r
    assert w.health_ok(timeout=5).status == 200


def test_restart_policy_never(wd):
    w = start_http(wd, restart_policy="never")
    r = request(w.port, "GET", "/exit?code=7")
    assert r.status == 200
    assert w.wait_exit(5) == 7, w.log_text()
    w.stopped_by_test = True
    assert not w.lock_path.exists()


def test_sigterm_drains_then_stops_upstream(wd):
    w = start_http(wd, shutdown_grace="2s")
    out = {}

    def slow():
        out["r"] = request(w.port, "GET", "/sleep?s=1")

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.2)
    w.kill(signal.SIGTERM)
    t.join(5)
    assert out["r"].status == 200 and out["r"].body == b"slept\n"
    assert w.wait_exit(5) == 0
    w.stopped_by_test = True
    text = w.log_text()
    i_req = text.index("GET /sleep?s=1 - 200")
    i_term = text.index("stopping upstream")
    i_got = text.index("got SIGTERM")
    assert i_req < i_term < i_got, text
    assert not wait_no_procs(w.marker, exclude=(w.proc.pid,))


def test_sigterm_ignored_gets_sigkill(wd):
    w = start_http(wd, shutdown_grace="300ms", UPSTREAM_IGNORE_TERM="1")
    t0 = time.monotonic()
    w.kill(signal.SIGTERM)
    assert w.wait_exit(5) == 0
    w.stopped_by_test = True
    took = time.monotonic() - t0
    assert 0.3 <= took < 2.5, took
    text = w.log_text()
    assert "got SIGTERM" in text and "SIGKILL" in text
    assert not wait_no_procs(w.marker, exclude=(w.proc.pid,))


def test_bad_upstream_url_refused(wd):
    w = wd({"mode": "http", "fprocess": "true", "upstream_url": "https://127.0.0.1:1"},
           wait=False)
    assert w.wait_exit(5) == 1
    w.stopped_by_test = True
    assert "upstream_url" in w.log_text()
    assert procs_with(w.marker, exclude=(w.proc.pid,)) == []


def test_restart_policy_on_failure_and_backoff(wd):
    w = start_http(wd, restart_policy="on-failure")
    assert request(w.port, "GET", "/exit?code=3").status == 200
    w.wait_log(r"Forked function has terminated: exit status 3", timeout=3)
    w.wait_log(r"restarting upstream in 100ms", timeout=1)
    assert w.health_ok(timeout=5).status == 200
    assert request(w.port, "GET", "/exit?code=4").status == 200
    w.wait_log(r"restarting upstream in 200ms", timeout=3)  # backoff doubles
    assert w.health_ok(timeout=5).status == 200
    # a clean exit is final with on-failure: unready, requests get 503 + Retry-After
    assert request(w.port, "GET", "/exit?code=0").status == 200
    w.wait_log(r"clean exit, not restarted", timeout=3)
    r = request(w.port, "GET", "/after")
    assert r.status == 503 and r.header("Retry-After") == "1", r
    assert request(w.port, "GET", "/_/health").status == 503
