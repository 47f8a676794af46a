"""Command line: --help, -version, -run-healthcheck, configuration errors."""
import os
import re
import socket
import subprocess

import pytest

from conftest import free_port, BIN, PATH, fx, request

# Every variable named in CONFIG.md.
CONFIG_VARIABLES = [
    "fprocess", "function_process", "mode", "port", "PORT", "bind_address", "metrics_port",
    "read_timeout", "write_timeout", "exec_timeout", "healthcheck_interval", "shutdown_grace",
    "suppress_lock", "ready_path", "max_inflight", "max_queue", "queue_timeout", "max_body_size",
    "max_header_size", "content_type", "cgi_headers", "combine_output", "write_debug",
    "marshal_request", "debug_headers", "cgi_response", "rlimit_as", "rlimit_cpu", "rlimit_nofile",
    "rlimit_nproc", "upstream_url", "http_upstream_url", "buffer_http", "http_buffer_req_body",
    "restart_policy", "workers", "warm_protocol", "warm_ack", "static_path", "prefix_logs",
    "log_buffer_size", "log_callid", "log_format",
]


def run(args, env=None, tmp_path=None, timeout=5):
    e = {"PATH": PATH, "port": "0", "metrics_port": "0", "bind_address": "127.0.0.1"}
    if tmp_path is not None:
        e["TMPDIR"] = str(tmp_path)
    for k, v in (env or {}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    return subprocess.run([BIN] + args, env=e, stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=timeout)


def test_help_lists_every_variable(tmp_path):
    p = run(["--help"], {"fprocess": "cat"}, tmp_path)
    assert p.returncode == 0, p.stderr
    text = (p.stdout + p.stderr).decode()
    missing = [v for v in CONFIG_VARIABLES if not re.search(r"(?<![\w-])" + re.escape(v) + r"(?![\w-])", text)]
    assert not missing, f"--help does not mention {missing}"
    assert "Listening" not in text


def test_version(tmp_path):
    p = run(["-version"], {"fprocess": "cat"}, tmp_path)
    assert p.returncode == 0, p.stderr
    text = (p.stdout + p.stderr).decode()
    assert any("Version:" in line for line in text.splitlines()), text
    assert "Listening" not in text


def test_run_healthcheck_without_lock(tmp_path):
    p = run(["-run-healthcheck"], {"fprocess": "cat"}, tmp_path)
    assert p.returncode == 1
    assert "unable to find lock file." in (p.stdout + p.stderr).decode()


def test_run_healthcheck_with_lock(tmp_path):
    (tmp_path / ".lock").write_text("")
    p = run(["-run-healthcheck"], {"fprocess": "cat"}, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Listening" not in (p.stdout + p.stderr).decode()


def test_run_healthcheck_against_running_watchdog(wd):
    w = wd({"fprocess": "cat"})
    w.wait_lock()
    p = run(["-run-healthcheck"], {"fprocess": "cat"}, w.tmpdir)
    assert p.returncode == 0, p.stdout + p.stderr
    w.stopped_by_test = True
    assert w.stop() == 0
    p = run(["-run-healthcheck"], {"fprocess": "cat"}, w.tmpdir)
    assert p.returncode == 1, "lock file must be gone after shutdown"


@pytest.mark.parametrize(
    "env,name,value",
    [
        ({"fprocess": "cat", "read_timeout": "abc"}, "read_timeout", "abc"),
        ({"fprocess": "cat", "mode": "inproc"}, "mode", "inproc"),
        ({"fprocess": "cat", "mode": "nope"}, "mode", "nope"),
        ({"fprocess": "cat", "jwt_auth": "true"}, "jwt_auth", None),
        ({"mode": "streaming"}, "fprocess", None),
        ({"fprocess": "cat", "port": "abc"}, "port", "abc"),
        ({"fprocess": "cat", "max_body_size": "12Q"}, "max_body_size", "12Q"),
        ({"fprocess": "cat", "cgi_headers": "maybe"}, "cgi_headers", "maybe"),
    ],
    ids=["read_timeout", "mode-inproc", "mode-nope", "jwt_auth", "no-fprocess", "port",
         "max_body_size", "bool"],
)
def test_config_error(tmp_path, env, name, value):
    p = run([], env, tmp_path)
    out, err = p.stdout.decode(), p.stderr.decode()
    assert p.returncode == 1, f"rc={p.returncode} stderr={err!r}"
    assert "Listening" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {lines!r}"
    assert re.search(r"(?<![\w])" + re.escape(name) + r"(?![\w])", lines[0]), lines[0]
    if value:
        assert value in lines[0], lines[0]
    assert not (tmp_path / ".lock").exists()


def test_config_error_unknown_mode_lists_valid_ones(tmp_path):
    p = run([], {"fprocess": "cat", "mode": "nope"}, tmp_path)
    assert p.returncode == 1
    err = p.stderr.decode()
    for m in ("classic", "serializing", "streaming", "http", "static"):
        assert m in err, f"valid mode {m} not listed: {err!r}"


def test_metrics_port_in_use_is_config_error(tmp_path):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 0))
    s.listen(1)
    try:
        port = s.getsockname()[1]
        try:
            p = run([], {"fprocess": "cat", "metrics_port": str(port)}, tmp_path, timeout=3)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"started although metrics_port {port} is in use: {e.stderr!r}")
        err = p.stderr.decode()
        assert p.returncode == 1, err
        assert "metrics_port" in err or str(port) in err, err
    finally:
        s.close()


def test_fprocess_shell_like_quoting(wd, tmp_path):
    d = tmp_path / "with space"
    d.mkdir()
    script = d / "x.sh"
    script.write_text(open(fx("args.sh")).read())
    w = wd({"fprocess": f"sh '{script}' \"a b\" c\\ d 'e'\"f\" \"\"", "mode": "serializing"})
    r = request(w.port, "POST", "/", b"")
    assert r.status == 200, r
    assert r.body == b"[a b]\n[c d]\n[ef]\n[]\n"


def test_function_process_wins_over_fprocess(wd):
    w = wd({"fprocess": "false", "function_process": "echo fp", "mode": "serializing"})
    r = request(w.port, "POST", "/", b"")
    assert (r.status, r.body) == (200, b"fp\n")


def test_metrics_endpoint(wd):
    port = free_port()
    w = wd({"fprocess": "cat", "metrics_port": str(port)})
    assert request(w.port, "POST", "/", b"x").status == 200
    assert request(w.port, "GET", "/_/health").status in (200, 503)
    r = request(port, "GET", "/metrics")
    assert r.status == 200, r
    text = r.body.decode()
    assert re.search(r'^http_requests_total\{code="200",method="post"\} 1$', text, re.M), text[:2000]
    assert "http_request_duration_seconds_bucket" in text
    assert re.search(r"^http_requests_in_flight 0$", text, re.M)


@pytest.mark.parametrize("var,value", [
    ("read_timeout", "250ms"), ("read_timeout", "1.5s"), ("write_timeout", "1m30s"),
    ("exec_timeout", "2h"), ("exec_timeout", "10"), ("max_body_size", "64k"),
    ("max_body_size", "16M"), ("max_header_size", "1G"), ("cgi_headers", "TRUE"),
    ("combine_output", "0"), ("suppress_lock", "yes"), ("prefix_logs", "No"),
])
def test_config_accepts_valid_values(wd, var, value):
    w = wd({"fprocess": "cat", "mode": "classic", var: value})
    r = request(w.port, "POST", "/", b"ok")
    assert r.status == 200


@pytest.mark.parametrize("var,value", [("exec_timeout", "1.5"), ("read_timeout", "-1"),
                                       ("max_inflight", "-1"), ("rlimit_nofile", "x")])
def test_config_rejects_invalid_values(tmp_path, var, value):
    p = run([], {"fprocess": "cat", var: value}, tmp_path)
    err = p.stderr.decode()
    assert p.returncode == 1, err
    assert var in err and value in err
    assert "Listening" not in err


def test_PORT_used_when_port_unset(wd):
    w = wd({"fprocess": "cat", "port": None, "PORT": "0"})
    assert request(w.port, "POST", "/", b"x").body == b"x"


def test_port_wins_over_PORT(wd):
    w = wd({"fprocess": "cat", "port": "0", "PORT": "1"})
    assert w.port != 1
    assert request(w.port, "POST", "/", b"x").body == b"x"


def test_default_bind_all_interfaces_v4_and_v6(wd):
    w = wd({"fprocess": "cat", "bind_address": None, "mode": "serializing"})
    assert request(w.port, "POST", "/", b"v4").body == b"v4"
    try:
        s6 = socket.create_connection(("::1", w.port), timeout=3)
    except OSError as e:
        if not socket.has_ipv6 or not os.path.exists("/proc/net/if_inet6"):
            pytest.skip(f"no IPv6 loopback: {e}")
        raise
    with s6:
        s6.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nv6")
        data = b""
        while True:
            d = s6.recv(4096)
            if not d:
                break
            data += d
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"v6"), data
