"""Helpers for the template tests: run each templates/<name>/ handler under $FWATCHDOG as its
Dockerfile would, without a container engine.

Self-contained (standard library, plus PyYAML from Debian's python3-yaml for template.yml and
the deploy/ manifests): a Dockerfile reader (stages, ENV, WORKDIR, COPY, USER, ENTRYPOINT,
HEALTHCHECK), Go-style durations, and a watchdog runner that lays out the image's WORKDIR in a
temporary directory, starts the watchdog there and checks that it stops cleanly.

How a template runs here, step by step (see `prepare` and `TemplateRun`):
  1. the template directory is copied to <tmp>/context (the build context);
  2. test.json's "build" commands run in that copy (what the Dockerfile's build stage does for
     the handler, e.g. compiling handler.c);
  3. the final stage's COPY lines are replayed into <tmp>/app, which stands for the image's
     WORKDIR: a COPY from the context takes the file from <tmp>/context; a COPY --from=<stage>
     takes it from <tmp>/context too when it lies under that stage's WORKDIR (the build
     commands ran there); anything copied outside the WORKDIR (/fwatchdog, /tmp) is skipped;
  4. the watchdog starts with cwd <tmp>/app and the final stage's ENV, the WORKDIR path in
     values replaced by <tmp>/app, plus: port=0, metrics_port=0, bind_address=127.0.0.1, a
     private TMPDIR, healthcheck_interval=0 (no unready wait at SIGTERM), and the upstream
     port of mode http moved to a free one (the handlers read it from upstream_url).
"""
import json
import os
import posixpath
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
DEPLOY = ROOT / "deploy"
BIN = os.environ.get("FWATCHDOG") or str(ROOT / "build" / "fwatchdog")
PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
START_TIMEOUT = 15.0  # interpreters on a busy 2-core machine
STOP_TIMEOUT = 10.0
BUILD_TIMEOUT = 120.0
CLIENT_TIMEOUT = 10.0


def template_dirs():
    """Every templates/*/ with a Dockerfile and a test.json, sorted by name."""
    if not TEMPLATES.is_dir():
        return []
    return sorted(
        d for d in TEMPLATES.iterdir()
        if d.is_dir() and (d / "Dockerfile").is_file() and (d / "test.json").is_file()
    )


@pytest.fixture(scope="session")
def fwatchdog():
    if not os.access(BIN, os.X_OK):
        pytest.fail(f"watchdog binary {BIN} not built (make -C {ROOT})", pytrace=False)
    return BIN


# --------------------------------------------------------------------------------------------
# Dockerfile


class Stage:
    """One FROM ... section: base image, optional alias, and its instructions in order."""

    def __init__(self, base, name):
        self.base = base
        self.name = name
        self.instrs = []  # [(INSTRUCTION, argument text)]

    def all(self, instr):
        return [a for i, a in self.instrs if i == instr]

    def last(self, instr):
        found = self.all(instr)
        return found[-1] if found else None

    @property
    def workdir(self):
        """The WORKDIR in effect at the end of the stage ("/" when none)."""
        wd = "/"
        for i, a in self.instrs:
            if i == "WORKDIR":
                wd = posixpath.normpath(posixpath.join(wd, a.strip()))
        return wd

    def env(self):
        """ENV of this stage, in order of definition (later ones win)."""
        out = {}
        for a in self.all("ENV"):
            out.update(parse_env(a))
        return out


def dockerfile_lines(text):
    """[(INSTRUCTION, arguments)]: comments dropped, backslash continuations joined."""
    out = []
    cur = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and cur is None):
            continue  # Docker drops comment lines, also inside a continuation
        if not line:
            continue
        part = line[:-1].rstrip() if line.endswith("\\") else line
        cur = part if cur is None else cur + " " + part
        if line.endswith("\\"):
            continue
        instr, _, rest = cur.partition(" ")
        out.append((instr.upper(), rest.strip()))
        cur = None
    if cur is not None:
        instr, _, rest = cur.partition(" ")
        out.append((instr.upper(), rest.strip()))
    return out


def parse_dockerfile(text):
    """[Stage] in file order; instructions before the first FROM (global ARGs) are dropped."""
    stages = []
    for instr, args in dockerfile_lines(text):
        if instr == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instrs.append((instr, args))
    return stages


def parse_env(args):
    """One ENV instruction: `ENV a=1 b="two words"` or the legacy `ENV key value text`."""
    first = args.split(None, 1)[0] if args.strip() else ""
    if "=" not in first:
        key, _, value = args.strip().partition(" ")
        return {key: value.strip()}
    out = {}
    for tok in shlex.split(args, posix=True):
        key, sep, value = tok.partition("=")
        if not sep or not key:
            raise ValueError(f"ENV: {tok!r} is not key=value in {args!r}")
        out[key] = value
    return out


def parse_exec_form(args):
    """The JSON (exec) form of ENTRYPOINT/CMD, or None for the shell form."""
    args = args.strip()
    if not args.startswith("["):
        return None
    return json.loads(args)


def parse_healthcheck(args):
    """HEALTHCHECK [options] CMD <exec form> -> (options dict, argv list or None)."""
    words = args.split()
    opts = {}
    i = 0
    while i < len(words) and words[i].startswith("--"):
        k, _, v = words[i][2:].partition("=")
        opts[k] = v
        i += 1
    if i >= len(words) or words[i].upper() != "CMD":
        return opts, None
    rest = args.split(None, i + 1)[i + 1] if len(words) > i + 1 else ""
    return opts, parse_exec_form(rest)


def parse_copy(args):
    """COPY/ADD arguments -> (flags dict, [sources], destination)."""
    args = args.strip()
    flags = {}
    words = shlex.split(args, posix=True) if not args.startswith("[") else []
    while words and words[0].startswith("--"):
        k, _, v = words.pop(0)[2:].partition("=")
        flags[k] = v
    if args.startswith("[") or (words and words[0].startswith("[")):
        rest = args
        while rest.startswith("--"):
            rest = rest.split(None, 1)[1]
        words = json.loads(rest)
    if len(words) < 2:
        raise ValueError(f"COPY needs a source and a destination: {args!r}")
    return flags, words[:-1], words[-1]


def _under(path, root):
    """path relative to root when path lies at or under it, else None (both absolute)."""
    path = posixpath.normpath(path)
    root = posixpath.normpath(root)
    if path == root:
        return ""
    prefix = root if root.endswith("/") else root + "/"
    return path[len(prefix):] if path.startswith(prefix) else None


def _docker_copy(src, dest, dest_is_dir):
    """Docker's COPY semantics: a directory's contents go into dest; a file goes to dest, or
    into it when dest is a directory."""
    if src.is_dir():
        shutil.copytree(src, dest, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "node_modules"))
        return
    if dest_is_dir or dest.is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        dest = dest / src.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)


def lay_out(stages, context, app):
    """Replay the final stage's COPY lines into app (the image's final WORKDIR).

    Returns [(instruction text, reason)] for the copies that were skipped (outside the
    WORKDIR, or from a stage path that is not under that stage's WORKDIR)."""
    final = stages[-1]
    by_name = {s.name: s for s in stages if s.name}
    final_wd = final.workdir
    skipped = []
    wd = "/"
    app.mkdir(parents=True, exist_ok=True)
    for instr, args in final.instrs:
        if instr == "WORKDIR":
            wd = posixpath.normpath(posixpath.join(wd, args.strip()))
            continue
        if instr not in ("COPY", "ADD"):
            continue
        flags, srcs, dest = parse_copy(args)
        dest_abs = posixpath.join(wd, dest)
        rel = _under(dest_abs, final_wd)
        if rel is None:
            skipped.append((args, "destination outside the WORKDIR"))
            continue
        dest_is_dir = dest.endswith("/") or dest in (".", "./") or len(srcs) > 1
        target = app / rel if rel else app
        for src in srcs:
            if "from" in flags:
                stage = by_name.get(flags["from"])
                if stage is None:
                    raise AssertionError(f"COPY --from={flags['from']}: no such stage")
                srel = _under(posixpath.join(stage.workdir, src), stage.workdir)
                if srel is None:
                    skipped.append((args, f"source outside stage {stage.name}'s WORKDIR"))
                    continue
                matches = [context / srel] if srel else [context]
            else:
                matches = sorted(context.glob(src.rstrip("/"))) if src not in (".", "./") \
                    else [context]
            if not matches or not all(m.exists() for m in matches):
                raise AssertionError(f"COPY {args}: {src} does not exist in the build context")
            for m in matches:
                _docker_copy(m, target, dest_is_dir)
    return skipped


def map_workdir(value, workdir, local):
    """Replace the image's WORKDIR path in an ENV value by the local directory."""
    if workdir in ("", "/"):
        return value
    rx = re.compile(r"(?<![\w./-])" + re.escape(workdir) + r"(?=/|\s|$|[:;,'\"])")
    return rx.sub(lambda m: str(local), value)


def parse_yaml(text):
    """[document] for every `---`-separated document (empty documents dropped)."""
    return [d for d in yaml.safe_load_all(text) if d]


# --------------------------------------------------------------------------------------------
# Settings as the watchdog reads them

_DUR_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text):
    """Seconds from `30`, `2.5`, `250ms`, `1m30s` (Go syntax), as the watchdog's config."""
    text = str(text).strip()
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        return float(text)
    parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(a) * _DUR_UNITS[b] for a, b in parts)


# --------------------------------------------------------------------------------------------
# Processes


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def procs_with(marker, exclude=()):
    """Processes whose argv or environment contains marker: [(pid, cmdline)]."""
    m = marker.encode()
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid() or int(d) in exclude:
            continue
        blobs = []
        for f in ("cmdline", "environ"):
            try:
                with open(f"/proc/{d}/{f}", "rb") as fh:
                    blobs.append(fh.read())
            except OSError:
                blobs.append(b"")
        if any(m in b for b in blobs):
            found.append((int(d), blobs[0].replace(b"\0", b" ").decode(errors="replace")))
    return found


def wait_no_procs(marker, exclude=(), timeout=3.0):
    deadline = time.monotonic() + timeout
    while True:
        left = procs_with(marker, exclude)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def run_build(commands, cwd):
    """test.json's build commands, each an argv list, in cwd; fails the test on error."""
    for argv in commands:
        if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
            pytest.fail(f"build command must be a non-empty list of strings: {argv!r}")
        if shutil.which(argv[0], path=PATH) is None:
            pytest.fail(f"build tool {argv[0]!r} not installed (CI installs build-essential)")
        p = subprocess.run(argv, cwd=cwd, env={"PATH": PATH, "HOME": str(cwd)},
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=BUILD_TIMEOUT)
        if p.returncode != 0:
            pytest.fail(f"build {argv} failed ({p.returncode}):\n"
                        + (p.stdout + p.stderr).decode(errors="replace")[-3000:])


class TemplateRun:
    """One watchdog started from a template's final stage. Use as a context manager: the exit
    stops it (SIGTERM) and records the exit status and any surviving process."""

    def __init__(self, tdir, tmp_path, build=()):
        self.tdir = Path(tdir)
        self.stages = parse_dockerfile((self.tdir / "Dockerfile").read_text())
        self.final = self.stages[-1]
        self.context = tmp_path / "context"
        self.app = tmp_path / "app"
        self.tmpdir = tmp_path / "tmp"
        shutil.copytree(self.tdir, self.context,
                        ignore=shutil.ignore_patterns("__pycache__", "node_modules"))
        run_build(build, self.context)
        self.skipped = lay_out(self.stages, self.context, self.app)
        self.tmpdir.mkdir()
        self.marker = "fwdtpl-" + uuid.uuid4().hex
        self.env = self.make_env()
        self.proc = None
        self.port = None
        self.logs = []
        self.cond = threading.Condition()
        self.returncode = None
        self.survivors = []
        self.needed_sigkill = False

    def make_env(self):
        wd = self.final.workdir
        env = {k: map_workdir(v, wd, self.app) for k, v in self.final.env().items()}
        env.pop("PATH", None)  # the image's PATH names the image's directories
        for k in ("http_upstream_url", "upstream_url"):
            if env.get(k):
                env[k] = re.sub(r"^(\w+://[^/:]+|\w+://\[[^\]]+\]):\d+",
                                lambda m: f"{m.group(1)}:{free_port()}", env[k])
        env.update({
            "PATH": PATH,
            "HOME": str(self.app),
            "TMPDIR": str(self.tmpdir),
            "port": "0",
            "metrics_port": "0",
            "bind_address": "127.0.0.1",
            "healthcheck_interval": "0",
            "FWD_TEST_MARKER": self.marker,
        })
        env.pop("PORT", None)
        return env

    def start(self):
        self.proc = subprocess.Popen(
            [BIN], cwd=self.app, env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        rx = re.compile(r"Listening on port: (\d+)")
        with self.cond:
            while self.port is None:
                for line in self.logs:
                    m = rx.search(line)
                    if m:
                        self.port = int(m.group(1))
                        break
                else:
                    left = deadline - time.monotonic()
                    if left <= 0 or self.proc.poll() is not None:
                        break
                    self.cond.wait(min(left, 0.1))
        if self.port is None:
            self.stop()
            raise AssertionError(f"watchdog did not log its port (exit status "
                                 f"{self.returncode}):\n" + self.log_text())
        return self

    def _pump(self):
        for raw in iter(self.proc.stdout.readline, b""):
            with self.cond:
                self.logs.append(raw.decode("utf-8", errors="replace").rstrip("\n"))
                self.cond.notify_all()

    def log_text(self):
        with self.cond:
            return "\n".join(self.logs)[-4000:]

    def wait_ready(self):
        """Poll GET /_/health until 200 (the handler is up: for mode http, the upstream)."""
        deadline = time.monotonic() + START_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"watchdog exited ({self.proc.returncode}):\n"
                                     + self.log_text())
            try:
                last = http_request(self.port, "GET", "/_/health", timeout=2)
                if last["status"] == 200:
                    return
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise AssertionError(f"not ready within {START_TIMEOUT}s (last: {last}):\n"
                             + self.log_text())

    def healthcheck(self):
        """`fwatchdog -run-healthcheck` as the image's HEALTHCHECK runs it."""
        env = dict(self.env, port=str(self.port))
        p = subprocess.run([BIN, "-run-healthcheck"], cwd=self.app, env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
        return p.returncode, (p.stdout + p.stderr).decode(errors="replace")

    def stop(self):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.needed_sigkill = True
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.returncode = self.proc.returncode
        self.survivors = wait_no_procs(self.marker, exclude=(self.proc.pid,))
        for pid, _ in self.survivors:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return self.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# --------------------------------------------------------------------------------------------
# HTTP


def http_request(port, method, path, headers=None, body=None, chunks=None,
                 timeout=CLIENT_TIMEOUT):
    """One request on a fresh connection: {"status", "headers" (lower-case names), "body"}."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = dict(headers or {})
        if chunks is not None:
            payload = (c.encode() if isinstance(c, str) else c for c in chunks)
            conn.request(method, path, body=payload, headers=hdrs, encode_chunked=True)
        else:
            data = body.encode() if isinstance(body, str) else body
            conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return {
            "status": resp.status,
            "headers": {k.lower(): v for k, v in resp.getheaders()},
            "body": data,
        }
    finally:
        conn.close()


REQUEST_KEYS = {"method", "path", "headers", "body", "chunks", "expect"}
EXPECT_KEYS = {"status", "body", "body_contains", "headers"}
TEST_KEYS = {"build", "requests"}


def load_test_json(path):
    """test.json, checked against the schema (unknown keys are errors, not silent passes)."""
    spec = json.loads(Path(path).read_text())
    assert isinstance(spec, dict), f"{path}: not an object"
    assert set(spec) <= TEST_KEYS, f"{path}: unknown keys {set(spec) - TEST_KEYS}"
    assert isinstance(spec.get("build", []), list), f"{path}: build must be a list"
    reqs = spec.get("requests")
    assert isinstance(reqs, list) and reqs, f"{path}: requests must be a non-empty list"
    for n, r in enumerate(reqs):
        where = f"{path}: requests[{n}]"
        assert isinstance(r, dict), f"{where}: not an object"
        assert set(r) <= REQUEST_KEYS, f"{where}: unknown keys {set(r) - REQUEST_KEYS}"
        assert "expect" in r and isinstance(r["expect"], dict), f"{where}: no expect"
        e = r["expect"]
        assert set(e) <= EXPECT_KEYS, f"{where}: unknown expect keys {set(e) - EXPECT_KEYS}"
        assert set(e) & {"status", "body", "body_contains", "headers"}, f"{where}: expects nothing"
        assert not ("body" in r and "chunks" in r), f"{where}: body and chunks"
    return spec


def check_response(resp, expect):
    """Assert one response against test.json's expect object."""
    text = resp["body"].decode("utf-8", errors="replace")
    if "status" in expect:
        assert resp["status"] == expect["status"], (
            f"status {resp['status']} != {expect['status']}; body {text[:500]!r}")
    if "body" in expect:
        assert text == expect["body"], f"body {text[:500]!r} != {expect['body']!r}"
    if "body_contains" in expect:
        assert expect["body_contains"] in text, (
            f"{expect['body_contains']!r} not in body {text[:500]!r}")
    for name, value in (expect.get("headers") or {}).items():
        got = resp["headers"].get(name.lower())
        assert got == value, f"header {name}: {got!r} != {value!r}"
