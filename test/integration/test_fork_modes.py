"""Behaviour shared by the fork modes: classic, serializing, streaming."""
import json
import os
import re
import time

import pytest

from conftest import FORK_MODES, fx, request, sh, wait_no_procs

TIMEOUT_STATUS = {"classic": 408, "serializing": 504, "streaming": 504}


@pytest.mark.parametrize("mode", FORK_MODES)
def test_exec_timeout_kills_process_group(wd, mode):
    marker = "tree-" + os.urandom(6).hex()
    w = wd({"mode": mode, "fprocess": sh("tree.sh", marker), "exec_timeout": "1s"})
    t0 = time.monotonic()
    r = request(w.port, "POST", "/", b"x")
    dt = time.monotonic() - t0
    assert r.status == TIMEOUT_STATUS[mode], r
    assert dt <= 1.3, f"response after {dt:.2f}s: grandchildren holding the pipes delayed it"
    left = wait_no_procs(marker, exclude=(w.pid,), timeout=0.5)
    assert not left, f"grandchildren survived exec_timeout: {left}"
    left = wait_no_procs(w.marker, exclude=(w.pid,), timeout=0.5)
    assert not left, f"handler processes survived exec_timeout: {left}"


@pytest.mark.parametrize("mode", FORK_MODES)
def test_orphan_killed_at_shutdown(wd, mode):
    marker = "orphan-" + os.urandom(6).hex()
    w = wd({"mode": mode, "fprocess": sh("orphan.sh", marker)})
    t0 = time.monotonic()
    r = request(w.port, "GET", "/")
    assert (r.status, r.body) == (200, b"ok\n"), r
    assert time.monotonic() - t0 < 1.0, "a detached grandchild must not delay the response"
    # the watchdog may kill the handler's group when the handler exits, or leave the detached
    # grandchild running until shutdown: either way nothing may survive the watchdog
    w.stopped_by_test = True
    assert w.stop() == 0
    assert not wait_no_procs(marker, timeout=1.0), "shutdown must kill leftover process groups"


@pytest.mark.parametrize("mode", FORK_MODES)
@pytest.mark.parametrize("ends", ["crlf", "lf"])
def test_cgi_response(wd, mode, ends):
    w = wd({"mode": mode, "fprocess": sh("cgi.sh"), "cgi_response": "true"})
    r = request(w.port, "GET", "/?" + ends)
    assert r.status == 404, r
    assert r.header("X-Foo") == "bar"
    assert r.header("Content-Type") == "text/plain"
    assert r.body == b"body"
    assert r.header("Status") is None, "the CGI Status line is not a response header"


@pytest.mark.parametrize("mode", FORK_MODES)
def test_cgi_response_off_by_default(wd, mode):
    w = wd({"mode": mode, "fprocess": sh("cgi.sh")})
    r = request(w.port, "GET", "/?crlf")
    assert r.status == 200
    assert r.body.startswith(b"Status: 404 Not Found\r\n")


@pytest.mark.parametrize("mode", FORK_MODES)
def test_rlimit_nofile(wd, mode):
    w = wd({"mode": mode, "fprocess": sh("ulimit.sh"), "rlimit_nofile": "17"})
    r = request(w.port, "GET", "/")
    assert (r.status, r.body) == (200, b"17\n"), r


@pytest.mark.parametrize("mode", FORK_MODES)
def test_handler_signal_state_and_fds(wd, mode):
    w = wd({"mode": mode, "fprocess": sh("fds.sh"), "combine_output": "false"})
    # a few requests in, so that any leaked client/pipe fd would show
    for _ in range(2):
        assert request(w.port, "POST", "/", b"x").status == 200
    r = request(w.port, "POST", "/", b"x")
    assert r.status == 200, r
    text = r.body.decode()
    sig = dict(re.findall(r"^(SigBlk|SigIgn|pySigBlk):\s*([0-9a-f]+)$", text, re.M))
    assert set(sig) == {"SigBlk", "SigIgn", "pySigBlk"}, text
    assert int(sig["SigBlk"], 16) == 0, f"blocked signals in the handler: {text}"
    assert int(sig["pySigBlk"], 16) == 0, f"blocked signals in the handler: {text}"
    assert int(sig["SigIgn"], 16) == 0, f"ignored signals in the handler: {text}"
    fds = re.search(r"^fds: (.*)$", text, re.M).group(1).split()
    assert fds == ["0", "1", "2"], f"handler inherited fds {fds}"


@pytest.mark.parametrize("mode", FORK_MODES)
@pytest.mark.parametrize("path", ["//x", "/a/../b", "/a/./b//c/"])
def test_non_canonical_paths_reach_handler(wd, mode, path):
    w = wd({"mode": mode, "fprocess": "python3 " + fx("env.py")})
    r = request(w.port, "GET", path + "?k=v")
    assert r.status == 200, r
    env = json.loads(r.body)
    assert env["Http_Path"] == path
    assert env["Http_Query"] == "k=v"


@pytest.mark.parametrize("mode", FORK_MODES)
@pytest.mark.parametrize("lang", ["sh", "python3", "node"])
def test_handler_languages(wd, mode, lang):
    fproc = {
        "sh": sh("echo.sh"),
        "python3": "python3 " + fx("handler.py"),
        "node": "node " + fx("handler.js"),
    }[lang]
    w = wd({"mode": mode, "fprocess": fproc})
    body = b"payload-" + os.urandom(8).hex().encode()
    r = request(w.port, "POST", "/", body)
    assert r.status == 200, r
    expected = {"sh": body, "python3": b"py:POST:" + body, "node": b"node:POST:" + body}[lang]
    assert r.body == expected


@pytest.mark.parametrize("mode", FORK_MODES)
def test_fprocess_with_quoted_path(wd, tmp_path, mode):
    d = tmp_path / "with space"
    d.mkdir()
    (d / "x.sh").write_text(open(fx("args.sh")).read())
    w = wd({"mode": mode, "fprocess": f"sh '{d / 'x.sh'}' arg \"two words\""})
    r = request(w.port, "POST", "/", b"")
    assert (r.status, r.body) == (200, b"[arg]\n[two words]\n"), r


@pytest.mark.parametrize("mode", FORK_MODES)
def test_concurrent_requests(wd, mode):
    import threading

    w = wd({"mode": mode, "fprocess": sh("sleep.sh")})
    results = []

    def one(i):
        results.append(request(w.port, "GET", "/?s=0.5"))

    t0 = time.monotonic()
    ts = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(5)
    assert [r.status for r in results] == [200] * 4
    assert all(r.body == b"slept\n" for r in results)
    assert time.monotonic() - t0 < 1.4, "requests must run in parallel"


@pytest.mark.parametrize("mode", FORK_MODES)
def test_cgi_response_split_writes_and_large_body(wd, mode):
    """CGI headers arriving in pieces, then a 1 MiB body."""
    script = ("printf 'Stat'; sleep 0.1; printf 'us: 201 Created\\r\\nX-A'; sleep 0.1; "
              "printf ': 1\\r\\n'; sleep 0.1; printf '\\r\\n'; head -c 1048576 /dev/zero")
    w = wd({"mode": mode, "fprocess": f"sh -c \"{script}\"", "cgi_response": "true"})
    r = request(w.port, "GET", "/", timeout=10)
    assert r.status == 201, r
    assert r.header("X-A") == "1"
    assert len(r.body) == 1048576 and r.body == b"\0" * 1048576


@pytest.mark.parametrize("mode", FORK_MODES)
def test_cgi_response_no_status_defaults_200(wd, mode):
    w = wd({"mode": mode, "fprocess": "printf 'Content-Type: text/csv\\n\\na,b\\n'",
            "cgi_response": "true"})
    r = request(w.port, "GET", "/")
    assert r.status == 200, r
    assert r.header("Content-Type") == "text/csv"
    assert r.body == b"a,b\n"
