"""mode=classic: CW semantics."""
import json
import time

import pytest

from conftest import Client, assert_date, assert_duration_header, fx, request, sh

ENV_PY = "python3 " + fx("env.py")


def classic(wd, **env):
    e = {"mode": "classic"}
    e.update(env)
    return wd(e)


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
def test_methods_run_handler(wd, method):
    w = classic(wd, fprocess="python3 " + fx("handler.py"))
    r = request(w.port, method, "/", b"abc")
    assert r.status == 200, r
    assert r.body == b"py:" + method.encode() + b":abc"
    assert_duration_header(r)
    assert r.header("Content-Length") == str(len(r.body))
    assert_date(r)


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "FOO", "TRACE"])
def test_other_methods_405(wd, tmp_path, method):
    flag = tmp_path / "started"
    w = classic(wd, fprocess=sh("touch.sh", flag))
    r = request(w.port, method, "/")
    assert r.status == 405, r
    assert r.body == b""
    time.sleep(0.2)
    assert not flag.exists(), "the handler must not run for a 405"


def test_content_type_echoed_from_request(wd):
    w = classic(wd, fprocess="cat")
    r = request(w.port, "POST", "/", b"{}", {"Content-Type": "application/json"})
    assert r.status == 200
    assert r.header("Content-Type") == "application/json"


def test_content_type_setting_wins(wd):
    w = classic(wd, fprocess="cat", content_type="text/x-custom")
    r = request(w.port, "POST", "/", b"{}", {"Content-Type": "application/json"})
    assert r.status == 200
    assert r.header("Content-Type") == "text/x-custom"
    assert r.body == b"{}"


def test_nonzero_exit_500_with_output(wd):
    w = classic(wd, fprocess=sh("exit.sh"))
    r = request(w.port, "GET", "/?code=3")
    assert r.status == 500, r
    assert r.body == b"exit status 3\nout-before\nerr-line\n"


def test_combine_output_false_keeps_stderr_out(wd):
    w = classic(wd, fprocess=sh("exit.sh"), combine_output="false")
    r = request(w.port, "GET", "/?code=0")
    assert (r.status, r.body) == (200, b"out-before\n")
    w.wait_log(r"err-line")


def test_exec_timeout_408(wd):
    w = classic(wd, fprocess="sleep 5", exec_timeout="1s")
    t0 = time.monotonic()
    r = request(w.port, "GET", "/")
    dt = time.monotonic() - t0
    assert r.status == 408, r
    assert r.body == b"Killed process.\n"
    assert 0.9 <= dt <= 1.3, f"answered after {dt:.2f}s"


def test_missing_executable_500(wd):
    w = classic(wd, fprocess="nosuch-xyz")
    r = request(w.port, "POST", "/", b"x")
    assert r.status == 500, r
    assert r.body.startswith(b'exec: "nosuch-xyz": executable file not found in $PATH'), r.body


def test_no_default_exec_timeout(wd):
    # classic has no exec_timeout by default: a 1.5 s handler with a short write path is fine
    w = classic(wd, fprocess=sh("sleep.sh"))
    r = request(w.port, "GET", "/?s=1.5")
    assert (r.status, r.body) == (200, b"slept\n")


def _env(r):
    assert r.status == 200, r
    return json.loads(r.body)


def test_cgi_env(wd):
    w = classic(wd, fprocess=ENV_PY)
    with Client(w.port) as c:
        c.send(
            b"POST /p/a?x=1&y=%20z HTTP/1.1\r\nHost: example.test:99\r\nContent-Length: 5\r\n"
            b"X-Custom: one\r\nx-custom: two\r\nx_under_score: u\r\nX.Dot: d\r\nx-1-two: v\r\n"
            b"content-type: text/plain\r\nACCEPT-language: fr\r\nX-Empty:\r\n\r\nhello"
        )
        env = _env(c.read_response())
    assert env["Http_Method"] == "POST"
    assert env["Http_ContentLength"] == "5"
    assert env["Http_Content_Length"] == "5"
    assert env["Http_Host"] == "example.test:99"
    assert env["Http_Query"] == "x=1&y=%20z"
    assert env["Http_Path"] == "/p/a"
    assert env["Http_X_Custom"] == "one", "only the first value of a repeated header"
    assert env["Http_X_under_score"] == "u"
    assert env["Http_X.dot"] == "d"
    assert env["Http_X_1_Two"] == "v"
    assert env["Http_Content_Type"] == "text/plain"
    assert env["Http_Accept_Language"] == "fr"
    assert "Http_Transfer_Encoding" not in env
    assert env.get("Http_X_Empty") == ""


def test_cgi_env_path_decoded(wd):
    w = classic(wd, fprocess=ENV_PY)
    env = _env(request(w.port, "GET", "/some/path%20x?a=%20"))
    assert env["Http_Path"] == "/some/path x"
    assert env["Http_Query"] == "a=%20"


def test_cgi_env_no_body_and_no_query(wd):
    w = classic(wd, fprocess=ENV_PY)
    env = _env(request(w.port, "GET", "/"))
    assert env["Http_ContentLength"] == "0"
    assert env["Http_Content_Length"] == "0"
    assert "Http_Query" not in env
    assert env["Http_Path"] == "/"


def test_cgi_env_chunked(wd):
    w = classic(wd, fprocess=ENV_PY)
    env = _env(request(w.port, "POST", "/c", chunks=[b"ab", b"cde"]))
    assert env["Http_ContentLength"] == "-1"
    assert env["Http_Content_Length"] == "-1"
    assert env["Http_Transfer_Encoding"] == "chunked"


def test_cgi_headers_false(wd):
    w = classic(wd, fprocess=ENV_PY, cgi_headers="false")
    env = _env(request(w.port, "POST", "/p?q=1", b"x", {"X-Custom": "one"}))
    http = sorted(k for k in env if k.startswith("Http_"))
    assert http == [], f"cgi_headers=false leaked {http}"
    assert env.get("FWD_TEST_MARKER"), "the watchdog's own environment is still inherited"


@pytest.mark.parametrize("mode", ["classic", "serializing", "streaming"])
def test_headers_cannot_override_watchdog_variables(wd, mode):
    w = wd({"mode": mode, "fprocess": ENV_PY})
    env = _env(request(w.port, "GET", "/real", None,
                       [("Query", "evil=1"), ("Path", "/evil"), ("Method", "EVIL"),
                        ("Http-Method", "EVIL2")]))
    assert env.get("Http_Query") != "evil=1", "Query: header injected Http_Query"
    assert env["Http_Path"] == "/real"
    assert env["Http_Method"] == "GET"


@pytest.mark.parametrize("mode", ["serializing", "streaming"])
def test_ow_env_has_no_host_or_contentlength(wd, mode):
    w = wd({"mode": mode, "fprocess": ENV_PY})
    env = _env(request(w.port, "POST", "/p?z=9", b"abc", {"X-A": "b"}))
    assert "Http_Host" not in env
    assert "Http_ContentLength" not in env
    assert env["Http_Method"] == "POST"
    assert env["Http_Query"] == "z=9"
    assert env["Http_Path"] == "/p"
    assert env["Http_X_A"] == "b"


def test_hello_fixture(wd):
    w = wd({"fprocess": sh("hello.sh")})
    r = request(w.port, "POST", "/", b"hi")
    assert (r.status, r.body) == (200, b"Hello from fwatchdog! You said: hi\n")


def test_large_output_has_content_length(wd):
    w = classic(wd, fprocess="head -c 100000 /dev/zero")
    r = request(w.port, "GET", "/")
    assert r.status == 200
    assert r.header("Content-Length") == "100000"
    assert r.body == b"\0" * 100000
