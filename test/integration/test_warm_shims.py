"""mode=warm with the language shims of templates/python3-warm and templates/node-warm.

Each handler shape the shims accept has a fixture in test/fixtures/shapes/ that answers the same
routes (/echo, /status, /json, /bin, /count, /boom, /print); the watchdog runs the shim as its
worker (fprocess) with WARM_HANDLER_FILE pointing at the fixture. The tests check what reaches
the client: status, headers (a repeated Set-Cookie), query, JSON and binary bodies both ways,
init once per worker, state kept between calls, and a handler exception answered 500 by a worker
that then serves the next call.
"""
import json
import os
import re
import threading
import time

import pytest

from conftest import FIXTURES, ROOT, request, wait_out_or_log

SHIMS = {
    "py": ("python3", ROOT / "templates" / "python3-warm" / "index.py"),
    "node": ("node", ROOT / "templates" / "node-warm" / "index.js"),
}

# fixture -> (detected style, type of a UTF-8 text body, type of a binary body)
SHAPES = {
    "py_openfaas.py": ("openfaas", "str", "bytes"),
    "py_openfaas_http.py": ("openfaas-http", "bytes", "bytes"),
    "py_kubeless.py": ("kubeless", "str", "bytes"),
    "py_nuclio.py": ("nuclio", "bytes", "bytes"),
    "node_openfaas.js": ("openfaas", "string", "Buffer"),
    "node_kubeless.js": ("kubeless", "string", "Buffer"),
    "node_nuclio.js": ("nuclio", "Buffer", "Buffer"),
}
ALL = list(SHAPES)
NODE = [s for s in ALL if s.endswith(".js")]


def start_warm(wd, shape, workers=1, **env):
    lang = "node" if shape.endswith(".js") else "py"
    runner, shim = SHIMS[lang]
    cfg = {
        "mode": "warm",
        "fprocess": f"'{runner}' '{shim}'",
        "workers": str(workers),
        "WARM_HANDLER_FILE": str(FIXTURES / "shapes" / shape),
        "exec_timeout": "5s",
    }
    cfg.update({k: str(v) for k, v in env.items()})
    w = wd(cfg)
    r = w.health_ok(timeout=10)
    assert r.status == 200, f"never ready: {r!r}\n" + w.log_text()
    return w



def count(w):
    r = request(w.port, "GET", "/count")
    assert r.status == 200, f"{r!r}\n" + w.log_text()[-2000:]
    m = re.fullmatch(rb"init=(\d+) calls=(\d+) pid=(\d+)", r.body)
    assert m, r
    return tuple(int(x) for x in m.groups())


@pytest.mark.parametrize("shape", ALL)
def test_request_fields_reach_the_handler(wd, shape):
    style, text_type, _ = SHAPES[shape]
    w = start_warm(wd, shape)
    w.wait_log(rf"warm: loaded .*{re.escape(shape)}: .* as style {re.escape(style)}$")
    body = "h\u00e9llo \u2615"
    r = request(w.port, "POST", "/echo?x=1&y=2&y=3", body=body.encode(),
                headers={"Content-Type": "text/plain; charset=utf-8", "X-Custom": "abc"})
    assert r.status == 200, r
    assert r.header("Content-Type") == "application/json"
    doc = json.loads(r.body)
    assert doc["method"] == "POST"
    assert doc["path"] == "/echo"
    assert doc["x"] == "1"
    if shape != "py_openfaas.py":  # handle(req) reads Http_Query: the raw string
        assert doc["y"] == ["2", "3"]
    assert doc["custom"] == "abc"
    assert doc["body_type"] == text_type
    assert doc["body"] == body
    # nothing of the previous request leaks into the next one
    r = request(w.port, "PUT", "/echo", body=b"", headers={"Content-Type": "text/plain"})
    doc = json.loads(r.body)
    assert (doc["method"], doc.get("x"), doc.get("custom"), doc["body"]) == ("PUT", None, None, "")


@pytest.mark.parametrize("shape", ALL)
def test_status_and_repeated_headers(wd, shape):
    w = start_warm(wd, shape)
    r = request(w.port, "GET", "/status")
    assert r.status == 201, r
    assert r.body == b"created"
    assert r.header("X-Test") == "yes"
    assert r.all("Set-Cookie") == ["a=1", "b=2"]
    assert r.header("Content-Type").startswith("text/plain")


@pytest.mark.parametrize("shape", ALL)
def test_json_both_ways(wd, shape):
    w = start_warm(wd, shape)
    doc = {"a": 1, "b": [2, 3]}
    r = request(w.port, "POST", "/json", body=json.dumps(doc),
                headers={"Content-Type": "application/json"})
    assert r.status == 200, r
    assert r.header("Content-Type") == "application/json"
    assert json.loads(r.body) == {"sum": 6, "got": doc}


@pytest.mark.parametrize("shape", ALL)
def test_binary_both_ways(wd, shape):
    _, _, bin_type = SHAPES[shape]
    w = start_warm(wd, shape)
    cases = [
        (bytes(range(256)) * 4, "application/octet-stream"),
        # not UTF-8 under a textual type: still bytes to the handler
        (b"\xff\xfe\x00abc\xc3", "text/plain"),
        (os.urandom(1 << 20), "application/octet-stream"),
    ]
    for data, ctype in cases:
        r = request(w.port, "POST", "/bin", body=data, headers={"Content-Type": ctype},
                    timeout=10)
        assert r.status == 200, r
        assert r.header("X-Body-Type") == bin_type
        assert r.header("Content-Type") == "application/octet-stream"
        assert len(r.body) == len(data)
        assert r.body == data[::-1]


@pytest.mark.parametrize("shape", ALL)
def test_init_once_per_worker_and_state_kept(wd, shape):
    w = start_warm(wd, shape, workers=2)
    seen = []
    lock = threading.Lock()
    errors = []

    def client():
        try:
            for _ in range(8):
                got = count(w)
                with lock:
                    seen.append(got)
        except AssertionError as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=client) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[0]
    assert len(seen) == 16
    by_pid = {}
    for init, calls, pid in seen:
        assert init == 1, f"init ran {init} times in worker {pid}"
        by_pid.setdefault(pid, []).append(calls)
    assert 1 <= len(by_pid) <= 2, by_pid
    for pid, calls in by_pid.items():
        # one counter per worker, never reset: 1..n, each value once
        assert sorted(calls) == list(range(1, len(calls) + 1)), (pid, calls)


@pytest.mark.parametrize("shape", ALL)
def test_exception_is_500_and_worker_survives(wd, shape):
    w = start_warm(wd, shape)
    _, calls1, pid1 = count(w)
    r = request(w.port, "GET", "/boom")
    assert r.status == 500, r
    assert r.body == b"handler failed: " + (b"RuntimeError" if shape.endswith(".py")
                                            else b"Error") + b"\n"
    init, calls2, pid2 = count(w)
    assert pid2 == pid1, "the worker was restarted after a handler exception"
    assert init == 1
    assert calls2 == calls1 + 2  # /boom ran in the same worker and kept its state
    # the traceback / stack is logged, not sent
    w.wait_log(r"RuntimeError: boom" if shape.endswith(".py") else r"Error: boom")


@pytest.mark.parametrize("shape", ALL)
def test_stdout_does_not_corrupt_answers(wd, shape):
    w = start_warm(wd, shape)
    r = request(w.port, "GET", "/print")
    assert r.status == 200, r
    assert r.body == b"printed"
    wait_out_or_log(w, r"stdout must not reach the client")
    wait_out_or_log(w, r"to stderr")
    assert count(w)[0] == 1


@pytest.mark.parametrize("shape", ["node_openfaas.js"])
def test_node_exception_outside_the_promise(wd, shape):
    w = start_warm(wd, shape)
    _, _, pid1 = count(w)
    r = request(w.port, "GET", "/boom-async")
    assert r.status == 500, r
    assert count(w)[2] == pid1
    w.wait_log(r"Error: boom later")


@pytest.mark.parametrize("shape", ["py_openfaas_http.py", "node_openfaas.js"])
def test_without_ack(wd, shape):
    w = start_warm(wd, shape, warm_ack="false")
    assert count(w)[:2] == (1, 1)
    assert count(w)[:2] == (1, 2)


def test_node_callback_style_by_name(wd):
    w = start_warm(wd, "node_callback.js", WARM_HANDLER_NAME="hello",
                   WARM_HANDLER_STYLE="openfaas")
    w.wait_log(r"warm: loaded .*node_callback\.js: hello\(\) as style openfaas$")
    r = request(w.port, "GET", "/?a=1")
    assert r.status == 200, r
    assert json.loads(r.body) == {"calls": 1, "query": {"a": "1"}}
    r = request(w.port, "GET", "/fail")
    assert r.status == 500, r
    assert r.body == b"Error: nope"
    r = request(w.port, "GET", "/")
    assert json.loads(r.body)["calls"] == 3


def test_bad_style_never_ready(wd):
    lang_runner, shim = SHIMS["py"]
    w = wd({"mode": "warm", "fprocess": f"'{lang_runner}' '{shim}'",
            "WARM_HANDLER_FILE": str(FIXTURES / "shapes" / "py_openfaas.py"),
            "WARM_HANDLER_STYLE": "lambda"})
    w.wait_log(r"WARM_HANDLER_STYLE='lambda': want one of openfaas, openfaas-http, kubeless")
    r = request(w.port, "GET", "/_/health")
    assert r.status == 503, r
