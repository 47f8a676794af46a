"""mode=serializing: OW semantics, whole body in, whole body out."""
import os
import time

import pytest

from conftest import assert_date, assert_duration_header, request, sh


def ser(wd, **env):
    e = {"mode": "serializing"}
    e.update(env)
    return wd(e)


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "FOO"])
def test_any_method(wd, method):
    w = ser(wd, fprocess="cat")
    r = request(w.port, method, "/", b"abc")
    assert r.status == 200, r
    assert r.body == b"abc"
    assert r.header("Content-Type") == "application/octet-stream"
    assert_duration_header(r)
    assert_date(r)


def test_head_headers_only(wd):
    w = ser(wd, fprocess="echo hi")
    r = request(w.port, "HEAD", "/")
    assert r.status == 200, r
    with_len = r.header("Content-Length")
    assert with_len in (None, "3")


def test_content_type_setting(wd):
    w = ser(wd, fprocess="cat", content_type="text/plain")
    r = request(w.port, "POST", "/", b"abc", {"Content-Type": "application/json"})
    assert r.status == 200
    assert r.header("Content-Type") == "text/plain"


def test_exit_status_500(wd):
    w = ser(wd, fprocess=sh("exit.sh"))
    r = request(w.port, "GET", "/?code=3")
    assert r.status == 500, r
    assert r.body == b"exit status 3"


def test_exec_timeout_504(wd):
    w = ser(wd, fprocess="sleep 5", exec_timeout="1s")
    t0 = time.monotonic()
    r = request(w.port, "POST", "/", b"x")
    dt = time.monotonic() - t0
    assert r.status == 504, r
    assert 0.9 <= dt <= 1.3, f"answered after {dt:.2f}s"


def test_missing_executable_500(wd):
    w = ser(wd, fprocess="nosuch-xyz")
    r = request(w.port, "POST", "/", b"x")
    assert r.status == 500, r
    assert b"nosuch-xyz" in r.body


def test_300kb_echo_exact(wd):
    w = ser(wd, fprocess="cat")
    body = os.urandom(300 * 1024)
    r = request(w.port, "POST", "/", body, timeout=10)
    assert r.status == 200
    assert r.header("Content-Length") == str(len(body)) or r.chunked
    assert r.body == body


def test_handler_ignoring_large_body(wd):
    w = ser(wd, fprocess="echo ignored")
    r = request(w.port, "POST", "/", os.urandom(1 << 20), timeout=10)
    assert (r.status, r.body) == (200, b"ignored\n")
