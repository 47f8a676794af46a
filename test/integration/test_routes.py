"""Internal routes (/_/health, /_/ready) and the watchdog's log lines."""
import re
import threading
import time

import pytest

from conftest import LOG_TS, assert_date, request, sh


def test_startup_log_lines(wd):
    w = wd({"fprocess": "cat"})
    w.wait_log(r"Listening on port: %d$" % w.port)
    w.wait_log(r"Writing lock-file to: " + re.escape(str(w.lock_path)) + "$")
    w.wait_lock()


def test_health_ok_when_ready(wd):
    w = wd({"fprocess": "cat"})
    w.wait_lock()
    r = request(w.port, "GET", "/_/health")
    assert r.status == 200, r
    assert r.body == b"OK"
    assert_date(r)


@pytest.mark.parametrize("method", ["POST", "PUT", "HEAD", "DELETE"])
def test_health_non_get_405(wd, method):
    w = wd({"fprocess": sh("touch.sh", "/nonexistent-dir/never")})
    w.wait_lock()
    r = request(w.port, method, "/_/health", b"x" if method in ("POST", "PUT") else None)
    assert r.status == 405, r
    assert r.body == b""


def test_health_stale_lock_removed_at_start(wd, tmp_path):
    w = wd({"fprocess": "cat", "suppress_lock": "true"}, start=False)
    w.lock_path.write_text("stale")
    w.start()
    time.sleep(0.3)
    assert not w.lock_path.exists(), "a stale lock file must be removed at start"


def test_suppress_lock_health_still_ok(wd):
    w = wd({"fprocess": "cat", "suppress_lock": "true"})
    time.sleep(0.3)
    assert not w.lock_path.exists(), "suppress_lock=true must not write the lock file"
    r = w.health_ok(timeout=2)
    assert (r.status, r.body) == (200, b"OK"), r
    # and the function still works
    r = request(w.port, "POST", "/", b"hi")
    assert (r.status, r.body) == (200, b"hi")


def test_health_trailing_slash_goes_to_function(wd):
    w = wd({"fprocess": sh("ready.sh"), "mode": "serializing"})
    w.wait_lock()
    r = request(w.port, "GET", "/_/health/")
    assert (r.status, r.body) == (200, b"fn /_/health/\n"), r


def test_ready_ok_empty_body(wd):
    w = wd({"fprocess": "cat"})
    w.wait_lock()
    r = request(w.port, "GET", "/_/ready")
    assert r.status == 200, r
    assert r.body == b""
    assert_date(r)


def test_ready_429_when_inflight_limit_met(wd):
    w = wd({"fprocess": sh("sleep.sh"), "max_inflight": "1"})
    w.wait_lock()
    result = {}

    def slow():
        result["r"] = request(w.port, "GET", "/?s=1")

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    r = request(w.port, "GET", "/_/ready")
    t.join(5)
    assert r.status == 429, r
    assert result["r"].status == 200 and result["r"].body == b"slept\n"
    r = request(w.port, "GET", "/_/ready")
    assert r.status == 200, "ready again once the slot is free"


def test_ready_path_invokes_handler(wd):
    w = wd({"fprocess": sh("ready.sh"), "ready_path": "/healthz"})
    w.wait_lock()
    r = request(w.port, "GET", "/_/ready")
    assert r.status == 200, r
    assert r.body == b"ready /healthz\n"


def test_ready_path_failure_is_returned(wd):
    w = wd({"fprocess": sh("ready.sh"), "ready_path": "/healthz", "READY_EXIT": "3",
            "mode": "serializing"})
    w.wait_lock()
    r = request(w.port, "GET", "/_/ready")
    assert r.status == 500, r
    assert r.body == b"exit status 3"


# ---------------------------------------------------------------------------- logs


@pytest.mark.parametrize("mode", ["classic", "serializing", "streaming"])
def test_request_log_line(wd, mode):
    w = wd({"fprocess": "cat", "mode": mode})
    r = request(w.port, "POST", "/path?q=1&x=%20", b"hello")
    assert (r.status, r.body) == (200, b"hello")
    m = w.wait_log(r"POST /path\?q=1&x=%20 - 200 - ContentLength: 5B \((\d+\.\d+)s\)$")
    assert float(m.group(1)) < 2
    r = request(w.port, "PUT", "/other", b"")
    w.wait_log(r"PUT /other - 200 - ContentLength: 0B \(\d+\.\d+s\)$")
    assert len(w.log_lines(r"POST /path\?q=1&x=%20 - ")) == 1, "one line per request"


def test_request_log_line_failure_and_size(wd):
    w = wd({"fprocess": "sh -c 'exit 3'", "mode": "streaming"})
    r = request(w.port, "GET", "/fail?code=3")
    assert r.status == 500
    w.wait_log(r"GET /fail\?code=3 - 500 - ContentLength: \d+(\.\d+)?k?B \(\d+\.\d+s\)$")
    w2 = wd({"fprocess": "head -c 300000 /dev/zero", "mode": "serializing"})
    r = request(w2.port, "GET", "/big")
    assert r.status == 200 and len(r.body) == 300000
    w2.wait_log(r"GET /big - 200 - ContentLength: 300kB \(")


@pytest.mark.parametrize("mode", ["serializing", "streaming"])
def test_handler_stderr_logged_with_prefix(wd, mode):
    w = wd({"fprocess": sh("exit.sh"), "mode": mode})
    r = request(w.port, "GET", "/?code=0")
    assert r.status == 200
    assert r.body == b"out-before\n", "stderr must not reach the response in OW modes"
    w.wait_log(r"^" + LOG_TS + r" stderr: err-line$")


def test_handler_stderr_prefix_logs_false(wd):
    w = wd({"fprocess": sh("exit.sh"), "prefix_logs": "false"})
    r = request(w.port, "GET", "/?code=0")
    assert r.status == 200
    w.wait_log(r"^err-line$")
    assert not w.log_lines(r"stderr: err-line")


def test_long_stderr_line_split_not_stalled(wd):
    w = wd({"fprocess": sh("bigerr.sh"), "exec_timeout": "5s"})
    t0 = time.monotonic()
    r = request(w.port, "GET", "/")
    assert (r.status, r.body) == (200, b"done\n"), r
    assert time.monotonic() - t0 < 2, "the handler was stalled by its stderr"
    w.wait_log(r"small-line-after$")
    pieces = w.log_lines(r"stderr: x+$")
    assert len(pieces) >= 4, f"a 200000-byte line must be split into >= 4 lines (got {len(pieces)})"
    xs = sum(len(re.search(r"x+$", p).group(0)) for p in pieces)
    assert xs == 200000, f"{xs} of 200000 bytes logged"
    assert max(len(re.search(r"x+$", p).group(0)) for p in pieces) <= 65536


def test_long_stderr_line_small_log_buffer(wd):
    w = wd({"fprocess": sh("bigerr.sh"), "log_buffer_size": "1000", "prefix_logs": "false"})
    r = request(w.port, "GET", "/")
    assert (r.status, r.body) == (200, b"done\n")
    w.wait_log(r"^small-line-after$")
    pieces = w.log_lines(r"^x+$")
    assert sum(len(p) for p in pieces) == 200000
    assert max(len(p) for p in pieces) <= 1000


def test_log_format_json(wd):
    import json

    w = wd({"fprocess": sh("exit.sh"), "log_format": "json"})
    r = request(w.port, "POST", "/jp?code=0", b"x")
    assert r.status == 200
    time.sleep(0.3)
    w.kill(15)
    w.stopped_by_test = True
    assert w.wait_exit(3) == 0
    time.sleep(0.1)
    lines = [line for line in w.logs if line.strip()]
    objs = []
    for line in lines:
        try:
            objs.append(json.loads(line))
        except ValueError:
            pytest.fail(f"log line is not JSON: {line!r}")
    assert all(isinstance(o, dict) for o in objs)
    text = "\n".join(lines)
    assert "/jp?code=0" in text and "err-line" in text
    assert any("Listening on port" in json.dumps(o) for o in objs)
