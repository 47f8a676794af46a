"""Graceful shutdown on SIGTERM / SIGINT."""
import os
import signal
import threading
import time

import pytest

from conftest import Client, connect_refused, procs_with, request, sh, wait_no_procs


def _poll(fn, timeout, step=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


def test_sigterm_graceful_drain(wd):
    w = wd({"fprocess": sh("sleep.sh"), "healthcheck_interval": "1s", "write_timeout": "3s"})
    w.wait_lock()
    assert request(w.port, "GET", "/_/health").status == 200
    res = {}

    def slow():
        try:
            res["r"] = request(w.port, "GET", "/?s=2", timeout=6)
        except Exception as e:  # noqa: BLE001
            res["e"] = e
        res["t"] = time.monotonic()

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.2)
    w.stopped_by_test = True
    ts = time.monotonic()
    w.kill(signal.SIGTERM)

    h = _poll(lambda: request(w.port, "GET", "/_/health").status == 503, 0.2)
    assert h, "health must turn 503 at once after SIGTERM"
    assert _poll(lambda: not w.lock_path.exists(), 0.2), "lock file must be removed at once"
    assert request(w.port, "GET", "/_/ready").status == 503

    time.sleep(max(0, ts + 0.4 - time.monotonic()))
    r = request(w.port, "GET", "/?s=0")
    assert (r.status, r.body) == (200, b"slept\n"), "requests in the first second are served"
    assert time.monotonic() - ts < 0.9

    refused_at = _poll(lambda: connect_refused(w.port) and time.monotonic(), 2.0)
    assert refused_at, "new connections must be refused after healthcheck_interval"
    assert 0.8 <= refused_at - ts <= 1.5, f"refused {refused_at - ts:.2f}s after SIGTERM"

    t.join(6)
    assert "e" not in res, f"in-flight request failed: {res.get('e')!r}"
    r = res["r"]
    assert (r.status, r.body) == (200, b"slept\n"), r
    assert (r.header("Connection") or "").lower() == "close"
    rc = w.wait_exit(2)
    assert rc == 0, f"exit status {rc}"
    exited = time.monotonic()
    assert exited - res["t"] < 0.6, "exit promptly once the last request is done"
    assert not w.lock_path.exists()
    assert not wait_no_procs(w.marker, exclude=(w.proc.pid,))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_no_wait_exit_fast(wd, sig):
    w = wd({"fprocess": "cat", "healthcheck_interval": "0"})
    w.wait_lock()
    assert request(w.port, "POST", "/", b"x").status == 200
    w.stopped_by_test = True
    t0 = time.monotonic()
    w.kill(sig)
    rc = w.wait_exit(2)
    dt = time.monotonic() - t0
    assert rc == 0, f"exit status {rc}"
    assert dt < 0.5, f"exit took {dt:.2f}s"
    assert not w.lock_path.exists(), "lock file must be removed"
    assert connect_refused(w.port)


def test_idle_keepalive_connection_does_not_block_exit(wd):
    w = wd({"fprocess": "cat", "healthcheck_interval": "0"})
    with Client(w.port) as c:
        assert c.request("POST", "/", b"x").status == 200
        w.stopped_by_test = True
        t0 = time.monotonic()
        w.kill(signal.SIGTERM)
        assert w.wait_exit(2) == 0
        assert time.monotonic() - t0 < 0.5
        assert c.wait_closed(0.5), "idle keep-alive connection must be closed"


def test_inflight_beyond_write_timeout_killed(wd):
    marker = "tree-" + os.urandom(6).hex()
    w = wd({"fprocess": sh("tree.sh", marker), "healthcheck_interval": "0",
            "write_timeout": "1s", "exec_timeout": "30s"})
    c = Client(w.port, timeout=4)
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    t_req = c.t_send
    assert _poll(lambda: len(procs_with(marker, exclude=(w.pid,))) >= 2, 1.0)
    time.sleep(max(0, t_req + 0.3 - time.monotonic()))
    w.stopped_by_test = True
    t0 = time.monotonic()
    w.kill(signal.SIGTERM)
    rc = w.wait_exit(3)
    t_exit = time.monotonic()
    assert rc == 0, f"exit status {rc}"
    # the request may be cut at its own write deadline (1 s after it arrived) or at the drain
    # deadline (1 s after SIGTERM), not before the first and not long after the second
    assert t_exit - t_req >= 0.9, f"exit {t_exit - t_req:.2f}s after the request: drain cut short"
    assert t_exit - t0 <= 1.5, f"exit {t_exit - t0:.2f}s after SIGTERM (write_timeout=1s)"
    assert c.wait_closed(1.0), "the client must not hang"
    c.close()
    assert not wait_no_procs(marker, exclude=(w.proc.pid,)), "handler groups must be killed at exit"


def test_second_sigterm_still_graceful(wd):
    w = wd({"fprocess": sh("sleep.sh"), "healthcheck_interval": "0", "write_timeout": "3s"})
    res = {}
    t = threading.Thread(target=lambda: res.setdefault("r", request(w.port, "GET", "/?s=1")))
    t.start()
    time.sleep(0.2)
    w.stopped_by_test = True
    w.kill(signal.SIGTERM)
    time.sleep(0.1)
    w.kill(signal.SIGTERM)
    t.join(4)
    assert res["r"].status == 200 and res["r"].body == b"slept\n"
    assert w.wait_exit(2) == 0


def test_sigterm_right_after_listening(tmp_path):
    """A SIGTERM that arrives as soon as the port is announced is still a graceful shutdown
    (exit 0, lock file removed), never the default action of the signal."""
    import subprocess

    from conftest import BIN, PATH

    bad = []
    for i in range(25):
        d = tmp_path / f"t{i}"
        d.mkdir()
        env = {"PATH": PATH, "TMPDIR": str(d), "port": "0", "metrics_port": "0",
               "bind_address": "127.0.0.1", "fprocess": "cat", "healthcheck_interval": "0"}
        p = subprocess.Popen([BIN], env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            while True:
                line = p.stderr.readline()
                if not line or b"Listening on port" in line:
                    break
            p.send_signal(signal.SIGTERM)
            rc = p.wait(3)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
        p.stderr.close()
        if rc != 0 or (d / ".lock").exists():
            bad.append((rc, (d / ".lock").exists()))
    assert not bad, f"(exit status, lock file left) for failing starts: {bad} of 25"
