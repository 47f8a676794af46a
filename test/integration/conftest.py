"""Shared helpers for the fwatchdog integration tests.

Every test starts its own watchdog (port=0, metrics_port=0, bind_address=127.0.0.1, a private
TMPDIR) through the `wd` fixture, talks raw HTTP/1.1 to it over sockets with timeouts, and the
fixture's teardown stops it (SIGTERM, then SIGKILL) and checks that it exited cleanly, left no
zombie child behind while it ran, and that no process carrying the instance marker survives.
"""
import email.utils
import hashlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "test" / "fixtures"
BIN = os.environ.get("FWATCHDOG") or str(ROOT / "build" / "fwatchdog")
PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
CLIENT_TIMEOUT = 5.0
START_TIMEOUT = 5.0
STOP_TIMEOUT = 5.0
LOG_TS = r"\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}"


def _sanitized():
    try:
        return b"__asan_init" in Path(BIN).read_bytes()
    except OSError:
        return False


# ASan/UBSan builds (`make asan test`) use several times the memory: RSS bounds do not apply.
SANITIZED = _sanitized()
RSS_LIMIT_KB = 16 * 1024


def assert_rss(sampler):
    assert sampler.samples > 3, "RSS sampler did not run"
    if not SANITIZED:
        assert sampler.peak < RSS_LIMIT_KB, f"watchdog VmRSS peaked at {sampler.peak} kB"


def fx(name):
    """Absolute path of a fixture script."""
    return str(FIXTURES / name)


def sh(name, *args):
    """An fprocess string running a fixture with sh (quoted, so odd paths survive)."""
    parts = ["sh", fx(name)] + [str(a) for a in args]
    return " ".join("'" + p + "'" for p in parts)


def free_port():
    """A loopback port that was free a moment ago (for upstreams and metrics_port)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_out_or_log(w, regex, timeout=3.0):
    """A handler's output line, relayed on the watchdog's stdout (stdout lines) or its stderr."""
    rx = re.compile(regex)
    deadline = time.monotonic() + timeout
    while True:
        with w.cond:
            if any(rx.search(x) for x in w.out + w.logs):
                return
        assert time.monotonic() < deadline, (
            f"no line matching {regex!r}; stdout: {w.out[-20:]}\nstderr:\n" + w.log_text()[-3000:])
        time.sleep(0.02)


def new_marker():
    return "fwdmark-" + uuid.uuid4().hex


# --------------------------------------------------------------------------------------------
# /proc helpers


def _read(path, mode="rb"):
    try:
        with open(path, mode) as f:
            return f.read()
    except OSError:
        return None


def procs_with(marker, exclude=()):
    """Processes whose argv or environment contains marker: [(pid, cmdline)]."""
    m = marker.encode()
    found = []
    me = os.getpid()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        pid = int(d)
        if pid == me or pid in exclude:
            continue
        cmd = _read(f"/proc/{d}/cmdline")
        env = _read(f"/proc/{d}/environ")
        if cmd is None and env is None:
            continue
        if (cmd and m in cmd) or (env and m in env):
            found.append((pid, (cmd or b"").replace(b"\0", b" ").decode(errors="replace")))
    return found


def wait_no_procs(marker, exclude=(), timeout=1.5):
    """Poll until no process carries marker; return the survivors (empty list = good)."""
    deadline = time.monotonic() + timeout
    while True:
        left = procs_with(marker, exclude)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def proc_status(pid):
    """/proc/<pid>/status as a dict, or {} when gone."""
    text = _read(f"/proc/{pid}/status", "r")
    if text is None:
        return {}
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def children_of(pid):
    out = []
    for t in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else []:
        txt = _read(f"/proc/{pid}/task/{t}/children", "r") or ""
        out += [int(x) for x in txt.split()]
    return out


def zombie_children(pid):
    return [c for c in children_of(pid) if proc_status(c).get("State", "").startswith("Z")]


def vmrss_kb(pid):
    v = proc_status(pid).get("VmRSS", "")
    return int(v.split()[0]) if v else 0


# --------------------------------------------------------------------------------------------
# The watchdog process


class Watchdog:
    def __init__(self, tmp_path, env=None, wrap=None, args=None):
        self.tmp_path = Path(tmp_path)
        n = len(list(self.tmp_path.glob("wdtmp*")))
        self.tmpdir = self.tmp_path / f"wdtmp{n}"
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self.lock_path = self.tmpdir / ".lock"
        self.marker = new_marker()
        base = {
            "PATH": PATH,
            "TMPDIR": str(self.tmpdir),
            "port": "0",
            "metrics_port": "0",
            "bind_address": "127.0.0.1",
            # Teardown sends SIGTERM: no unready wait unless a test asks for one.
            "healthcheck_interval": "0",
            "FWD_TEST_MARKER": self.marker,
        }
        for k, v in (env or {}).items():
            if v is None:
                base.pop(k, None)
            else:
                base[k] = str(v)
        self.env = base
        self.wrap = list(wrap or [])
        self.args = list(args or [])
        self.logs = []  # stderr lines, str, in order
        self.out = []  # stdout lines
        self.cond = threading.Condition()
        self.proc = None
        self.port = None
        self.inner_pid = None  # the watchdog itself when wrapped (unshare)
        self.stopped_by_test = False
        self.needed_sigkill = False
        self.zombie_report = []

    # -- process
    def start(self, wait=True):
        argv = self.wrap + [BIN] + self.args
        self.proc = subprocess.Popen(
            argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.logs), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.out), daemon=True),
        ]
        for t in self._threads:
            t.start()
        if wait:
            m = self.wait_log(r"Listening on port: (\d+)", timeout=START_TIMEOUT)
            self.port = int(m.group(1))
            assert self.port > 0, "port=0 must log the real port"
        return self

    def _pump(self, pipe, sink):
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            with self.cond:
                sink.append(line)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    @property
    def pid(self):
        """The pid of the watchdog itself (inside the unshare wrapper if any)."""
        if not self.wrap:
            return self.proc.pid
        if self.inner_pid is None:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                kids = children_of(self.proc.pid)
                if kids:
                    self.inner_pid = kids[0]
                    break
                time.sleep(0.02)
        return self.inner_pid

    def kill(self, sig):
        os.kill(self.pid, sig)

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """SIGTERM, wait, SIGKILL. Returns the exit status."""
        if self.proc.poll() is None:
            try:
                self.kill(sig)
            except (ProcessLookupError, TypeError):
                pass
            if self.wait_exit(timeout) is None:
                self.needed_sigkill = True
                for p in {self.pid, self.proc.pid}:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except (ProcessLookupError, TypeError):
                        pass
                self.proc.wait(5)
        for t in self._threads:
            t.join(2)
        return self.proc.returncode

    # -- logs
    def log_text(self):
        with self.cond:
            return "\n".join(self.logs)

    def wait_log(self, regex, timeout=3.0, flags=0):
        """Wait for a stderr line matching regex (re.search); return the match."""
        rx = re.compile(regex, flags)
        deadline = time.monotonic() + timeout
        with self.cond:
            i = 0
            while True:
                while i < len(self.logs):
                    m = rx.search(self.logs[i])
                    if m:
                        return m
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if self.proc.poll() is not None and i >= len(self.logs):
                    # process gone: give the pump a moment to deliver the last lines
                    self.cond.wait(min(left, 0.2))
                    if i >= len(self.logs):
                        break
                    continue
                self.cond.wait(min(left, 0.1))
        raise AssertionError(
            f"no stderr line matching {regex!r} within {timeout}s "
            f"(rc={self.proc.poll()}); stderr:\n" + self.log_text()[-4000:]
        )

    def log_lines(self, regex, flags=0):
        rx = re.compile(regex, flags)
        with self.cond:
            return [line for line in self.logs if rx.search(line)]

    # -- readiness
    def wait_lock(self, timeout=3.0):
        deadline = time.monotonic() + timeout
        while not self.lock_path.exists():
            assert time.monotonic() < deadline, f"lock file {self.lock_path} never written"
            assert self.proc.poll() is None, "watchdog exited:\n" + self.log_text()
            time.sleep(0.02)

    def health_ok(self, timeout=3.0):
        deadline = time.monotonic() + timeout
        while True:
            r = request(self.port, "GET", "/_/health")
            if r.status == 200 or time.monotonic() > deadline:
                return r
            time.sleep(0.03)


@pytest.fixture
def wd(tmp_path):
    """wd(env, wrap=None, args=None, start=True) -> a started Watchdog; stopped and checked
    at teardown."""
    made = []

    def factory(env=None, wrap=None, args=None, start=True, wait=True):
        w = Watchdog(tmp_path, env=env, wrap=wrap, args=args)
        made.append(w)
        if start:
            w.start(wait=wait)
        return w

    yield factory

    problems = []
    for w in made:
        if w.proc is None:
            continue
        alive = w.proc.poll() is None
        if alive:
            # no zombie child may linger (the watchdog reaps its handlers)
            deadline = time.monotonic() + 1.0
            z = zombie_children(w.pid)
            while z and time.monotonic() < deadline:
                time.sleep(0.05)
                z = zombie_children(w.pid)
            if z:
                problems.append(f"watchdog {w.pid} has unreaped zombie children {z}")
        elif not w.stopped_by_test:
            problems.append(
                f"watchdog died during the test with status {w.proc.returncode}:\n"
                + w.log_text()[-3000:]
            )
        rc = w.stop()
        if alive and w.needed_sigkill:
            problems.append(f"watchdog did not exit within {STOP_TIMEOUT}s of SIGTERM")
        elif alive and rc != 0:
            problems.append(f"watchdog exited with status {rc} after SIGTERM:\n" + w.log_text()[-3000:])
        left = wait_no_procs(w.marker, exclude=(w.proc.pid,))
        if left:
            problems.append(f"processes survived the watchdog: {left}")
            for pid, _ in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    if problems:
        pytest.fail("teardown: " + "\n".join(problems), pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def _binary_exists():
    if not os.access(BIN, os.X_OK):
        pytest.fail(f"watchdog binary {BIN} not built (make -C {ROOT})", pytrace=False)


# --------------------------------------------------------------------------------------------
# Raw HTTP/1.1 client


class Response:
    def __init__(self):
        self.version = None
        self.status = None
        self.reason = None
        self.headers = []  # [(name, value)] as received
        self.interim = []  # 1xx status lines seen before the final one
        self.body = b""
        self.complete = False  # framing finished (False: connection ended mid-body)
        self.chunked = False
        self.chunks = []  # [(t_since_send, size)] per chunk / per recv for non-chunked
        self.t_head = None  # seconds from the send to the complete head
        self.t_end = None
        self.closed = False  # server closed the connection after this response
        self.sha256 = None
        self.length = 0

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def __repr__(self):
        return (f"<Response {self.status} {self.reason!r} headers={self.headers} "
                f"body={self.body[:300]!r} complete={self.complete}>")


class Client:
    """One TCP connection with a receive buffer. All reads honour the socket timeout."""

    def __init__(self, port, timeout=CLIENT_TIMEOUT):
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = bytearray()
        self.eof = False
        self.t_send = time.monotonic()

    def settimeout(self, t):
        self.sock.settimeout(t)

    def send(self, data):
        self.t_send = time.monotonic()
        self.sock.sendall(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def _fill(self):
        if self.eof:
            return False
        try:
            d = self.sock.recv(1 << 18)
        except ConnectionResetError:
            d = b""
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def read_line(self, limit=1 << 21):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[: i + 1])
                del self.buf[: i + 1]
                return line
            if len(self.buf) > limit:
                raise AssertionError("line too long")
            if not self._fill():
                line = bytes(self.buf)
                self.buf.clear()
                return line

    def read_upto(self, n):
        """Up to n bytes (fewer only at EOF)."""
        while len(self.buf) < n and self._fill():
            pass
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_until_close(self):
        while self._fill():
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def wait_closed(self, timeout):
        """True if the server closes (EOF/reset) within timeout; extra bytes are kept."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                if not self._fill():
                    return True
        except (socket.timeout, TimeoutError):
            return False
        return False

    def read_head(self, resp):
        line = self.read_line()
        if not line:
            raise ConnectionError("connection closed before a status line")
        m = re.match(rb"(HTTP/\d\.\d) (\d{3})(?: ([^\r\n]*))?\r\n$", line)
        assert m, f"bad status line {line!r}"
        version, status, reason = m.group(1).decode(), int(m.group(2)), (m.group(3) or b"").decode()
        headers = []
        while True:
            h = self.read_line()
            assert h.endswith(b"\r\n"), f"header line not CRLF-terminated: {h!r}"
            if h == b"\r\n":
                break
            k, sep, v = h[:-2].partition(b":")
            assert sep, f"bad header line {h!r}"
            headers.append((k.decode("latin-1"), v.strip().decode("latin-1")))
        return version, status, reason, headers

    def read_response(self, method="GET", store=True, on_chunk=None):
        """Read one response (1xx interim responses are collected). store=False: only hash."""
        r = Response()
        while True:
            version, status, reason, headers = self.read_head(r)
            if 100 <= status < 200 and status != 101:
                r.interim.append((version, status, reason, headers))
                continue
            break
        r.version, r.status, r.reason, r.headers = version, status, reason, headers
        r.t_head = time.monotonic() - self.t_send
        h = hashlib.sha256()
        body = bytearray()

        def take(data):
            r.length += len(data)
            r.chunks.append((time.monotonic() - self.t_send, len(data)))
            h.update(data)
            if store:
                body.extend(data)
            if on_chunk:
                on_chunk(data)

        te = (r.header("Transfer-Encoding") or "").lower()
        cl = r.header("Content-Length")
        if method == "HEAD" or status in (204, 304):
            r.complete = True
        elif "chunked" in te:
            r.chunked = True
            while True:
                line = self.read_line()
                if not line.endswith(b"\r\n"):
                    break  # cut short
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while True:  # trailers
                        t = self.read_line()
                        if t in (b"\r\n", b""):
                            r.complete = t == b"\r\n"
                            break
                    break
                data = self.read_upto(size)
                if data:
                    take(data)
                if len(data) < size:
                    break
                crlf = self.read_upto(2)
                assert crlf == b"\r\n" or len(crlf) < 2, f"bad chunk terminator {crlf!r}"
                if len(crlf) < 2:
                    break
        elif cl is not None:
            n = int(cl)
            while n > 0:
                if not self.buf and not self._fill():
                    break
                data = bytes(self.buf[:n])
                del self.buf[: len(data)]
                n -= len(data)
                take(data)
            r.complete = n == 0
        else:
            while True:
                if self.buf:
                    data = bytes(self.buf)
                    self.buf.clear()
                    take(data)
                if not self._fill():
                    break
            r.complete = True
            r.closed = True
        r.t_end = time.monotonic() - self.t_send
        r.body = bytes(body)
        r.sha256 = h.hexdigest()
        return r

    def request(self, method, path, body=None, headers=None, version="HTTP/1.1", chunks=None,
                host=True):
        self.send(build_request(method, path, body, headers, version, chunks, host, self.port))
        return self.read_response(method)


def build_request(method, path, body=None, headers=None, version="HTTP/1.1", chunks=None,
                  host=True, port=0):
    lines = [f"{method} {path} {version}"]
    hdrs = list(headers.items() if isinstance(headers, dict) else (headers or []))
    names = {k.lower() for k, _ in hdrs}
    if host and "host" not in names:
        lines.append(f"Host: 127.0.0.1:{port}")
    if body is not None and isinstance(body, str):
        body = body.encode()
    if chunks is not None:
        if "transfer-encoding" not in names:
            lines.append("Transfer-Encoding: chunked")
    elif body is not None and "content-length" not in names:
        lines.append(f"Content-Length: {len(body)}")
    for k, v in hdrs:
        lines.append(f"{k}: {v}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if chunks is not None:
        payload = b"".join(
            b"%x\r\n%s\r\n" % (len(c), c.encode() if isinstance(c, str) else c) for c in chunks
        ) + b"0\r\n\r\n"
        return head + payload
    return head + (body or b"")


def request(port, method, path, body=None, headers=None, timeout=CLIENT_TIMEOUT, **kw):
    """One request on a fresh connection; returns the Response (connection then closed)."""
    with Client(port, timeout) as c:
        return c.request(method, path, body, headers, **kw)


def assert_date(resp):
    d = resp.header("Date")
    assert d, f"no Date header: {resp!r}"
    when = email.utils.parsedate_to_datetime(d)
    assert abs(when.timestamp() - time.time()) < 10, f"Date header far off: {d}"


def assert_duration_header(resp):
    v = resp.header("X-Duration-Seconds")
    assert v is not None, f"no X-Duration-Seconds: {resp!r}"
    assert re.fullmatch(r"\d+\.\d+", v), f"X-Duration-Seconds not a float: {v!r}"
    assert 0 <= float(v) < 30


def connect_refused(port, timeout=0.5):
    """True if a new connection is refused (or reset/closed without an answer)."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except ConnectionRefusedError:
        return True
    except OSError:
        return True
    s.close()
    return False


class RssSampler(threading.Thread):
    """Samples VmRSS of a pid every 20 ms; .peak in KiB."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.samples = 0
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            kb = vmrss_kb(self.pid)
            self.peak = max(self.peak, kb)
            self.samples += 1
            self._halt.wait(0.02)

    def stop(self):
        self._halt.set()
        self.join(2)


FORK_MODES = ["classic", "serializing", "streaming"]
