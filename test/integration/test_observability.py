"""Observability: Prometheus metrics (exact values, strict exposition format), JSON logs,
X-Call-Id and X-Deadline, and the FIFO admission queue (max_queue, queue_timeout, hang-ups,
/_/ready)."""
import datetime
import json
import math
import re
import threading
import time

import pytest

from conftest import FORK_MODES, free_port, Client, build_request, request, sh

LIMIT_BODY = "Concurrent request limit exceeded. Max concurrent requests: {}\n"
CALL_ID_RX = re.compile(r"[A-Za-z0-9._:-]{1,71}")
RFC3339_MS_RX = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, math.inf]


# --------------------------------------------------------------------------------------------
# A strict parser for the Prometheus text format 0.0.4


class ExpositionError(AssertionError):
    pass


METRIC_NAME_RX = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME_RX = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
VALUE_RX = re.compile(r" ([+-]?(?:Inf|NaN|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?))(?: (-?\d+))?$")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


class Exposition:
    def __init__(self):
        self.types = {}  # family -> type
        self.helps = {}  # family -> help text (unescaped)
        self.series = {}  # (sample name, frozenset(labels)) -> value
        self.samples = []  # (family, sample name, labels dict, value) in order

    def get(self, name, **labels):
        return self.series.get((name, frozenset(labels.items())))

    def named(self, name):
        """{frozenset(labels): value} of every series of one sample name."""
        return {lbl: v for (n, lbl), v in self.series.items() if n == name}

    def by(self, name, label):
        """{label value: sample value} for a sample name with one varying label."""
        out = {}
        for lbl, v in self.named(name).items():
            d = dict(lbl)
            out[d.get(label)] = v
        return out


def _unescape_help(text, lineno):
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            nxt = text[i + 1:i + 2]
            if nxt == "\\":
                out.append("\\")
            elif nxt == "n":
                out.append("\n")
            else:
                raise ExpositionError(f"line {lineno}: bad escape in HELP: {text!r}")
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _parse_labels(line, i, lineno):
    """line[i] == '{': returns (labels, index after '}')."""
    labels = {}
    i += 1
    while True:
        if i < len(line) and line[i] == "}":
            return labels, i + 1
        m = LABEL_NAME_RX.match(line, i)
        if not m:
            raise ExpositionError(f"line {lineno}: bad label name at {i}: {line!r}")
        name = m.group(0)
        i = m.end()
        if line[i:i + 2] != '="':
            raise ExpositionError(f"line {lineno}: expected =\" after label {name}: {line!r}")
        i += 2
        val = []
        while True:
            if i >= len(line):
                raise ExpositionError(f"line {lineno}: unterminated label value: {line!r}")
            ch = line[i]
            if ch == "\\":
                nxt = line[i + 1:i + 2]
                if nxt not in ("\\", '"', "n"):
                    raise ExpositionError(f"line {lineno}: bad escape \\{nxt} in label value")
                val.append("\n" if nxt == "n" else nxt)
                i += 2
            elif ch == '"':
                i += 1
                break
            else:
                val.append(ch)
                i += 1
        if name in labels:
            raise ExpositionError(f"line {lineno}: label {name} twice: {line!r}")
        if name.startswith("__"):
            raise ExpositionError(f"line {lineno}: reserved label name {name}")
        labels[name] = "".join(val)
        if line[i:i + 1] == ",":
            i += 1
            continue
        if line[i:i + 1] == "}":
            return labels, i + 1
        raise ExpositionError(f"line {lineno}: expected , or }} after label {name}: {line!r}")


def _family_of(name, types):
    t = types.get(name)
    if t is not None and t != "histogram":
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            bt = types.get(base)
            if bt == "histogram" or (bt == "summary" and suffix != "_bucket"):
                return base
    return None


def parse_exposition(text):
    """Parse every line; raise ExpositionError on anything the 0.0.4 format does not allow
    (and on samples without a prior TYPE, which this watchdog always writes)."""
    if not text.endswith("\n"):
        raise ExpositionError("exposition does not end with a newline")
    e = Exposition()
    current, seen = None, set()

    def enter(family, lineno):
        nonlocal current
        if family != current:
            if family in seen:
                raise ExpositionError(f"line {lineno}: lines of family {family} not grouped")
            seen.add(family)
            current = family

    for lineno, line in enumerate(text[:-1].split("\n"), 1):
        if line == "":
            continue  # empty lines are ignored by the format
        if line.startswith("#"):
            m = re.fullmatch(r"# (HELP|TYPE) ([^ ]+)(?: (.*))?", line)
            if not m:
                raise ExpositionError(f"line {lineno}: not a HELP/TYPE line: {line!r}")
            kind, family, rest = m.group(1), m.group(2), m.group(3) or ""
            if not METRIC_NAME_RX.fullmatch(family):
                raise ExpositionError(f"line {lineno}: bad metric name {family!r}")
            enter(family, lineno)
            if any(f == family for f, *_ in e.samples):
                raise ExpositionError(f"line {lineno}: {kind} for {family} after its samples")
            if kind == "TYPE":
                if family in e.types:
                    raise ExpositionError(f"line {lineno}: second TYPE for {family}")
                if rest not in TYPES:
                    raise ExpositionError(f"line {lineno}: bad type {rest!r}")
                e.types[family] = rest
            else:
                if family in e.helps:
                    raise ExpositionError(f"line {lineno}: second HELP for {family}")
                e.helps[family] = _unescape_help(rest, lineno)
            continue
        m = METRIC_NAME_RX.match(line)
        if not m:
            raise ExpositionError(f"line {lineno}: bad sample line {line!r}")
        name, i = m.group(0), m.end()
        labels = {}
        if line[i:i + 1] == "{":
            labels, i = _parse_labels(line, i, lineno)
        vm = VALUE_RX.match(line, i)
        if not vm:
            raise ExpositionError(f"line {lineno}: bad value part {line[i:]!r}")
        value = float(vm.group(1))
        family = _family_of(name, e.types)
        if family is None:
            raise ExpositionError(f"line {lineno}: sample {name} without a TYPE before it")
        enter(family, lineno)
        key = (name, frozenset(labels.items()))
        if key in e.series:
            raise ExpositionError(f"line {lineno}: duplicate series {line!r}")
        e.series[key] = value
        e.samples.append((family, name, labels, value))
        t = e.types[family]
        if t == "counter" and not value >= 0:
            raise ExpositionError(f"line {lineno}: counter {name} = {value}")
        if t == "histogram" and name.endswith("_bucket") != ("le" in labels):
            raise ExpositionError(f"line {lineno}: le label misplaced: {line!r}")
    _check_histograms(e)
    return e


def _check_histograms(e):
    for family, t in e.types.items():
        if t != "histogram":
            continue
        buckets, sums, counts = {}, {}, {}
        for fam, name, labels, value in e.samples:
            if fam != family:
                continue
            rest = frozenset((k, v) for k, v in labels.items() if k != "le")
            if name == family + "_bucket":
                le = labels["le"]
                try:
                    bound = float(le)
                except ValueError:
                    raise ExpositionError(f"{family}: bad le {le!r}") from None
                if le != "+Inf" and math.isinf(bound):
                    raise ExpositionError(f"{family}: +Inf bucket spelled {le!r}")
                buckets.setdefault(rest, []).append((bound, le, value))
            elif name == family + "_sum":
                sums[rest] = value
            else:
                counts[rest] = value
        if not (set(buckets) == set(sums) == set(counts)):
            raise ExpositionError(f"{family}: buckets/_sum/_count label sets differ")
        for rest, bs in buckets.items():
            bounds = [b for b, _, _ in bs]
            if any(b2 <= b1 for b1, b2 in zip(bounds, bounds[1:])):
                raise ExpositionError(f"{family}{dict(rest)}: le not increasing: {bounds}")
            if bs[-1][1] != "+Inf":
                raise ExpositionError(f"{family}{dict(rest)}: no +Inf bucket last")
            vals = [v for _, _, v in bs]
            if any(v < 0 or v != int(v) for v in vals):
                raise ExpositionError(f"{family}{dict(rest)}: bad bucket counts {vals}")
            if any(v2 < v1 for v1, v2 in zip(vals, vals[1:])):
                raise ExpositionError(f"{family}{dict(rest)}: buckets not cumulative: {vals}")
            if vals[-1] != counts[rest]:
                raise ExpositionError(
                    f"{family}{dict(rest)}: +Inf bucket {vals[-1]} != _count {counts[rest]}")
            if not sums[rest] >= 0:
                raise ExpositionError(f"{family}{dict(rest)}: _sum {sums[rest]}")


def buckets_of(e, family, **labels):
    """{le bound: cumulative count} of one histogram series."""
    out = {}
    for fam, name, lbl, value in e.samples:
        if name == family + "_bucket" and {k: v for k, v in lbl.items() if k != "le"} == labels:
            out[float(lbl["le"])] = value
    return out


GOOD_EXPOSITION = (
    "# HELP a_total A \\\\ help\\n line.\n# TYPE a_total counter\n"
    'a_total{x="q\\"uo\\\\te\\n"} 1\na_total{x="b",} 2e+00\n'
    "# TYPE h histogram\n"
    'h_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 3.5\nh_count 2\n'
    "# TYPE g gauge\ng -1.5 1700000000000\ng{a=\"\"} NaN\n"
)


@pytest.mark.parametrize("bad", [
    GOOD_EXPOSITION.replace("# TYPE a_total counter\n", ""),  # sample before TYPE
    GOOD_EXPOSITION + 'a_total{x="b"} 3\n',  # family not grouped (and duplicate)
    GOOD_EXPOSITION.replace('a_total{x="b",} 2e+00', 'a_total{x="q\\"uo\\\\te\\n"} 2'),  # dup
    GOOD_EXPOSITION.replace('\\"uo', '\\tuo'),  # bad escape
    GOOD_EXPOSITION.replace('x="b",}', 'x="b"'),  # unterminated label set
    GOOD_EXPOSITION.replace("h_bucket{le=\"+Inf\"} 2", "h_bucket{le=\"+Inf\"} 0"),  # decreasing
    GOOD_EXPOSITION.replace("h_count 2", "h_count 3"),  # +Inf != _count
    GOOD_EXPOSITION.replace('h_bucket{le="+Inf"} 2\n', ""),  # no +Inf
    GOOD_EXPOSITION.replace("g -1.5", "g  -1.5"),  # two spaces
    GOOD_EXPOSITION.replace("g -1.5", "g 1,5"),  # bad value
    GOOD_EXPOSITION.replace("# TYPE g gauge", "# TYPE g gauges"),
    GOOD_EXPOSITION.replace("# TYPE g gauge", "# TYPE g gauge\n# TYPE g gauge"),
    GOOD_EXPOSITION + "# random comment\n",
    GOOD_EXPOSITION.replace("a_total{x=\"b\",} 2e+00", "a_total{x=\"b\"} -2"),  # counter < 0
    GOOD_EXPOSITION[:-1],  # no final newline
])
def test_strict_parser_rejects(bad):
    """The parser the metrics tests rely on accepts the good sample and rejects each flaw."""
    e = parse_exposition(GOOD_EXPOSITION)
    assert e.get("a_total", x='q"uo\\te\n') == 1
    assert e.helps["a_total"] == "A \\ help\n line."
    with pytest.raises(ExpositionError):
        parse_exposition(bad)


# --------------------------------------------------------------------------------------------
# Helpers




def start_with_metrics(wd, env):
    port = free_port()
    w = wd(dict(env, metrics_port=str(port)))
    m = w.wait_log(r"Metrics listening on port: (\d+)")
    assert int(m.group(1)) == port, m.group(0)
    w.metrics_port = port
    return w


def scrape(w):
    r = request(w.metrics_port, "GET", "/metrics")
    assert r.status == 200, r
    ct = r.header("Content-Type") or ""
    assert ct.startswith("text/plain") and "version=0.0.4" in ct, ct
    return parse_exposition(r.body.decode("utf-8"))


def wait_metric(w, pred, timeout=3.0, what="condition"):
    """Scrape until pred(exposition) is true; return that exposition."""
    deadline = time.monotonic() + timeout
    while True:
        e = scrape(w)
        if pred(e):
            return e
        if time.monotonic() > deadline:
            raise AssertionError(f"metrics never showed {what}: "
                                 f"{ {k: v for k, v in e.series.items() if 'fwatchdog' in k[0]} }")
        time.sleep(0.02)


def bg_request(port, method, path, body=None, headers=None, timeout=8):
    """Run request() in a thread: returns (thread, result dict with r, t0, t1)."""
    out = {}

    def run():
        out["t0"] = time.monotonic()
        try:
            out["r"] = request(port, method, path, body, headers, timeout=timeout)
        except Exception as ex:  # noqa: BLE001 (reported by the test)
            out["err"] = ex
        out["t1"] = time.monotonic()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def assert_limit_429(r, n):
    assert r.status == 429, r
    assert r.body.decode() == LIMIT_BODY.format(n), r
    assert r.header("X-OpenFaaS-Internal") == "faas-middleware", r
    ra = r.header("Retry-After")
    assert ra is not None and re.fullmatch(r"\d+", ra) and int(ra) >= 1, r


def env_lines(body):
    return body.decode("utf-8", errors="replace").split("\n")


def env_value(body, name):
    vals = [ln.split("=", 1)[1] for ln in env_lines(body) if ln.startswith(name + "=")]
    assert len(vals) == 1, f"{name} appears {len(vals)} times in the handler environment"
    return vals[0]


def parse_ms_time(s):
    assert RFC3339_MS_RX.fullmatch(s), f"not RFC 3339 UTC with ms: {s!r}"
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


# --------------------------------------------------------------------------------------------
# 1. Metrics: exact values after a known script

FAMILIES = {
    "http_requests_total": "counter",
    "http_request_duration_seconds": "histogram",
    "http_requests_in_flight": "gauge",
    "fwatchdog_queue_depth": "gauge",
    "fwatchdog_queue_wait_seconds": "histogram",
    "fwatchdog_requests_rejected_total": "counter",
    "fwatchdog_requests_timed_out_total": "counter",
    "fwatchdog_handler_started_total": "counter",
    "fwatchdog_handler_exited_total": "counter",
    "fwatchdog_handler_killed_total": "counter",
    "fwatchdog_ready": "gauge",
    "fwatchdog_request_bytes_total": "counter",
    "fwatchdog_response_bytes_total": "counter",
    "process_cpu_seconds_total": "counter",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_start_time_seconds": "gauge",
}


def test_metrics_exact_values(wd):
    w = start_with_metrics(wd, {"mode": "streaming", "fprocess": sh("obs.sh"), "exec_timeout": "1s",
                                "max_inflight": "1", "max_queue": "0"})
    e0 = scrape(w)
    assert e0.named("http_requests_total") == {}, "no request yet"

    def probes():
        for path in ("/_/health", "/_/ready", "/_/health"):
            r = request(w.port, "GET", path)
            assert r.status == 200, (path, r)

    fn = []  # every function response, for the byte counters
    probes()
    for _ in range(3):
        r = request(w.port, "POST", "/", b"abcd")
        assert (r.status, r.body) == (200, b"abcd"), r
        fn.append(r)
    for _ in range(2):
        r = request(w.port, "GET", "/?exit=3")
        assert r.status == 500, r
        fn.append(r)
    r = request(w.port, "FOO", "/", b"xy")  # a non-standard method: label "unknown"
    assert (r.status, r.body) == (200, b"xy"), r
    fn.append(r)
    probes()

    t, slow = bg_request(w.port, "POST", "/?sleep=2", b"")
    wait_metric(w, lambda e: e.get("fwatchdog_handler_started_total", mode="streaming") == 7,
                what="the slow handler started")
    busy = request(w.port, "GET", "/")
    assert_limit_429(busy, 1)
    fn.append(busy)
    assert request(w.port, "GET", "/_/health").status == 200
    t.join(6)
    assert "r" in slow, slow
    assert slow["r"].status == 504, slow["r"]
    assert 0.9 <= slow["t1"] - slow["t0"] < 1.8, "exec_timeout=1s"
    fn.append(slow["r"])
    probes()

    def settled(e):
        ex = e.named("fwatchdog_handler_exited_total")
        return sum(ex.values()) == 7 and e.get("http_requests_in_flight") == 0

    e = wait_metric(w, settled, what="all 7 handlers exited, nothing in flight")

    for family, t_ in FAMILIES.items():
        assert e.types.get(family) == t_, f"{family}: TYPE {e.types.get(family)!r}, want {t_}"
        assert e.helps.get(family), f"{family} has no HELP"

    # http_requests_total: exactly the function requests, none for /_/health or /_/ready
    assert e.named("http_requests_total") == {
        frozenset({"code": "200", "method": "post"}.items()): 3,
        frozenset({"code": "500", "method": "get"}.items()): 2,
        frozenset({"code": "200", "method": "unknown"}.items()): 1,
        frozenset({"code": "504", "method": "post"}.items()): 1,
        frozenset({"code": "429", "method": "get"}.items()): 1,
    }, e.named("http_requests_total")
    for (name, lbl), _ in e.series.items():
        if name.startswith("http_"):
            keys = {k for k, _ in lbl}
            assert keys <= {"code", "method", "le"}, (name, lbl)

    # the duration histogram has the same series and counts, standard buckets
    hist = "http_request_duration_seconds"
    counts = {lbl: v for lbl, v in e.named(hist + "_count").items()}
    assert counts == e.named("http_requests_total"), counts
    for lbl in counts:
        assert list(buckets_of(e, hist, **dict(lbl))) == BUCKETS, dict(lbl)
    b504 = buckets_of(e, hist, code="504", method="post")
    # exec_timeout=1s: libuv timers have millisecond resolution, so the 504 may land a hair
    # under 1.0 s; what matters is that it is not early by any real amount.
    assert b504[0.5] == 0 and b504[2.5] == 1, f"504 after about 1 s: {b504}"
    assert 0.99 <= e.get(hist + "_sum", code="504", method="post") < 1.8
    b429 = buckets_of(e, hist, code="429", method="get")
    assert b429[0.25] == 1, f"an immediate 429 took long: {b429}"
    assert list(buckets_of(e, "fwatchdog_queue_wait_seconds", mode="streaming")) == BUCKETS

    m = {"mode": "streaming"}
    assert e.get("fwatchdog_requests_timed_out_total", **m) == 1
    assert e.get("fwatchdog_requests_rejected_total", **m) == 1
    # 3 POST + 2 exit=3 + 1 FOO + 1 timeout; the 429 never starts one
    assert e.get("fwatchdog_handler_started_total", **m) == 7
    assert e.by("fwatchdog_handler_exited_total", "status") == {"0": 4, "3": 2, "SIGKILL": 1}
    assert all(dict(lbl)["mode"] == "streaming"
               for lbl in e.named("fwatchdog_handler_exited_total"))
    assert e.get("fwatchdog_handler_killed_total", **m) == 1
    assert e.get("http_requests_in_flight") == 0
    assert e.get("fwatchdog_queue_depth", **m) == 0
    assert e.get("fwatchdog_ready", **m) == 1
    assert e.get("fwatchdog_request_bytes_total", **m) == 3 * 4 + 2
    assert e.get("fwatchdog_response_bytes_total", **m) == sum(len(r.body) for r in fn), \
        [(r.status, len(r.body)) for r in fn]
    assert abs(e.get("process_start_time_seconds") - time.time()) < 60
    assert e.get("process_open_fds") > 0 and e.get("process_max_fds") >= e.get("process_open_fds")
    assert e.get("process_resident_memory_bytes") > 0

    # the counters do not move on a scrape, and other paths on the metrics port are 404
    for path in ("/", "/metricsx", "/_/health", "/function"):
        assert request(w.metrics_port, "GET", path).status == 404, path
    again = scrape(w)
    for key in ("http_requests_total", "fwatchdog_handler_started_total",
                "fwatchdog_response_bytes_total"):
        assert again.named(key) == e.named(key), key


# --------------------------------------------------------------------------------------------
# 2. JSON logs


def _capture_raw(w, raw):
    """Make the Watchdog keep the raw stderr bytes too (the conftest pump decodes leniently)."""
    def pump(pipe, sink):
        for line in iter(pipe.readline, b""):
            if sink is w.logs:
                raw.append(line)
            with w.cond:
                sink.append(line.decode("utf-8", errors="replace").rstrip("\n"))
                w.cond.notify_all()
        with w.cond:
            w.cond.notify_all()

    w._pump = pump


HANDLER_LINES = ['say "hi" \\back\\slash {"json":1}',
                 "uni \u00fc \u2713 ctl\x01 esc\x1b tab\t bad\ufffd end",
                 "no newline"]


def test_json_logs(wd):
    w = wd({"fprocess": sh("obs_stderr.sh"), "log_format": "json"}, start=False)
    raw = []
    _capture_raw(w, raw)
    w.start()

    hostile_path = '/a%22b/c%5C?q="x"\\y&z=%22\'<>'
    r1 = request(w.port, "POST", hostile_path, b"hello",
                 headers=[("X-Call-Id", "client-id.42:Z_"), ("X-Thing", 'a"b\\c'),
                          ("User-Agent", 'ua "quoted" \\')])
    assert (r1.status, r1.body) == (200, b"hello"), r1
    assert r1.header("X-Call-Id") == "client-id.42:Z_"
    r2 = request(w.port, "GET", "/fail?fail=1", headers=[("X-Odd", '"}{"')])
    assert r2.status == 500, r2
    r3 = request(w.port, "PUT", "/plain", b"")
    assert r3.status == 200, r3
    with Client(w.port) as c:  # garbage: whatever is logged must stay JSON
        c.send(b'B"AD\\ /x\x01 HTTP/1.1\r\n\r\n')
        c.read_until_close()
    w.stopped_by_test = True
    assert w.stop() == 0, w.log_text()[-2000:]

    objs = []
    for line in raw:
        assert line.endswith(b"\n"), line
        text = line.decode("utf-8")  # strict: every line is valid UTF-8
        obj = json.loads(text)
        assert isinstance(obj, dict), text
        assert set(obj) >= {"time", "level", "msg"}, text
        assert abs(parse_ms_time(obj["time"]) - time.time()) < 60, text
        assert obj["level"] in ("debug", "info", "warn", "error"), text
        assert isinstance(obj["msg"], str), text
        objs.append(obj)
    assert any(o["msg"].startswith("Listening on port: ") for o in objs)

    reqs = {}
    for o in (o for o in objs if o["msg"] == "request"):
        for k, typ in (("method", str), ("path", str), ("status", int), ("bytes_in", int),
                       ("bytes_out", int), ("call_id", str), ("mode", str)):
            assert type(o.get(k)) is typ, f"{k} in {o}"
        assert type(o.get("duration_ms")) in (int, float) and o["duration_ms"] >= 0, o
        assert CALL_ID_RX.fullmatch(o["call_id"]), o
        assert o["call_id"] not in reqs, f"two request lines for one call id: {o}"
        reqs[o["call_id"]] = o

    ids = [r.header("X-Call-Id") for r in (r1, r2, r3)]
    assert len(set(ids)) == 3 and all(ids), ids
    expect = [
        (r1, "POST", hostile_path, 200, 5),
        (r2, "GET", "/fail?fail=1", 500, 0),
        (r3, "PUT", "/plain", 200, 0),
    ]
    for r, method, path, status, bytes_in in expect:
        o = reqs.get(r.header("X-Call-Id"))
        assert o is not None, f"no request line for {r.header('X-Call-Id')}: {reqs}"
        assert (o["method"], o["path"], o["status"]) == (method, path, status), o
        assert (o["bytes_in"], o["bytes_out"]) == (bytes_in, len(r.body)), o
        assert o["mode"] == "streaming", o
        if status >= 500:
            assert isinstance(o.get("error"), str) and o["error"], o
            assert o["level"] in ("warn", "error"), o
        else:
            assert "error" not in o, o

    handler = [o for o in objs if "stream" in o]
    for cid in ids:
        mine = [o["msg"] for o in handler if o.get("call_id") == cid]
        assert mine == HANDLER_LINES, (cid, mine)
    assert all(o["stream"] == "stderr" and o.get("call_id") in ids for o in handler), handler


# --------------------------------------------------------------------------------------------
# 3. X-Call-Id and X-Deadline


def test_call_id_echoed_generated_and_given_to_handler(wd):
    w = wd({"fprocess": sh("env.sh")})
    seen = set()
    for _ in range(20):
        r = request(w.port, "GET", "/")
        assert r.status == 200, r
        cid = r.header("X-Call-Id")
        assert cid and CALL_ID_RX.fullmatch(cid), r
        assert env_value(r.body, "Http_X_Call_Id") == cid
        seen.add(cid)
    assert len(seen) == 20, "generated call ids must be unique"

    for given in ("client-id.42:Z_", "a" * 71, "0"):
        r = request(w.port, "POST", "/", b"", headers=[("X-Call-Id", given)])
        assert r.header("X-Call-Id") == given, r
        assert r.all("X-Call-Id") == [given], "echoed exactly once"
        assert env_value(r.body, "Http_X_Call_Id") == given

    for bad in ('bad"id', "a b", "x/y", "a" * 72, "{$(id)}", ""):
        r = request(w.port, "GET", "/", headers=[("X-Call-Id", bad)])
        cid = r.header("X-Call-Id")
        assert cid != bad and CALL_ID_RX.fullmatch(cid or ""), (bad, r)
        assert cid not in seen, "generated ids stay unique"
        seen.add(cid)
        assert env_value(r.body, "Http_X_Call_Id") == cid


@pytest.mark.parametrize("mode,env,seconds", [
    ("classic", {"exec_timeout": "3s"}, 3),
    ("serializing", {"exec_timeout": "3s"}, 3),
    ("streaming", {"exec_timeout": "3s"}, 3),
    ("classic", {"write_timeout": "7s"}, 7),  # classic: exec_timeout defaults to 0
    ("streaming", {"exec_timeout": "0", "write_timeout": "7s"}, 7),
])
def test_deadline_and_call_id_in_fork_modes(wd, mode, env, seconds):
    w = wd(dict(env, mode=mode, fprocess=sh("env.sh")))
    fake = "1999-01-01T00:00:00.000Z"
    for headers in ([("X-Deadline", fake), ("X-Call-Id", "mine-1")], []):
        t0 = time.time()
        r = request(w.port, "POST", "/", b"x", headers=headers)
        t1 = time.time()
        assert r.status == 200, r
        cid = r.header("X-Call-Id")
        if headers:
            assert cid == "mine-1", r
        assert cid and env_value(r.body, "Http_X_Call_Id") == cid
        dl = env_value(r.body, "Http_X_Deadline")
        assert dl != fake, "a client-sent X-Deadline must not reach the handler"
        when = parse_ms_time(dl)
        assert t0 + seconds - 1 <= when <= t1 + seconds + 1, \
            f"Http_X_Deadline {dl} not ~{seconds}s after the request ({t0:.3f})"


# --------------------------------------------------------------------------------------------
# 4. Queue


@pytest.mark.parametrize("mode", FORK_MODES)
def test_queue_burst_five_served_one_rejected(wd, mode):
    w = wd({"mode": mode, "fprocess": sh("obs.sh"), "max_inflight": "2", "max_queue": "3"})
    go = threading.Barrier(6)
    res = [{} for _ in range(6)]

    def run(i):
        go.wait(3)
        res[i]["t0"] = time.monotonic()
        res[i]["r"] = request(w.port, "GET", "/?sleep=0.5", timeout=8)
        res[i]["t1"] = time.monotonic()

    ts = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(8)
    assert all("r" in x for x in res), res
    ok = [x for x in res if x["r"].status == 200]
    rejected = [x for x in res if x["r"].status != 200]
    assert len(ok) == 5 and len(rejected) == 1, [x["r"] for x in res]
    assert all(x["r"].body == b"slept\n" for x in ok)
    assert_limit_429(rejected[0]["r"], 2)
    assert rejected[0]["t1"] - rejected[0]["t0"] < 0.4, "a full queue answers 429 at once"
    ends = sorted(x["t1"] - min(y["t0"] for y in res) for x in ok)
    # two at a time: waves end at ~0.5, ~1.0, ~1.5 s
    assert ends[1] >= 0.45 and ends[2] >= 0.95 and ends[4] >= 1.45, ends
    assert ends[4] < 3.0, ends


def test_queue_is_fifo_and_wait_is_measured(wd):
    w = start_with_metrics(wd, {"fprocess": sh("obs.sh"), "max_inflight": "1", "max_queue": "5"})
    m = {"mode": "streaming"}
    ta, a = bg_request(w.port, "GET", "/?sleep=0.6")
    wait_metric(w, lambda e: e.get("fwatchdog_handler_started_total", **m) == 1, what="A runs")
    queued = []
    for n in (1, 2, 3):
        queued.append(bg_request(w.port, "GET", "/?sleep=0.15"))
        wait_metric(w, lambda e, n=n: e.get("fwatchdog_queue_depth", **m) == n,
                    what=f"queue depth {n}")
    ta.join(6)
    for t, _ in queued:
        t.join(6)
    assert a["r"].status == 200
    assert all(o["r"].status == 200 for _, o in queued), [o.get("r") for _, o in queued]
    ends = [o["t1"] for _, o in queued]
    assert ends[0] < ends[1] < ends[2], "served in arrival order"
    assert ends[1] - ends[0] >= 0.12 and ends[2] - ends[1] >= 0.12, "one at a time"
    e = wait_metric(w, lambda e: e.get("fwatchdog_queue_depth", **m) == 0, what="empty queue")
    assert e.get("fwatchdog_queue_wait_seconds_count", **m) == 3
    waited = e.get("fwatchdog_queue_wait_seconds_sum", **m)
    # B waited ~0.4 s (it arrived after A had run a while), C ~0.15 s more, D ~0.3 s more
    assert 0.6 <= waited <= 3.0, waited
    wb = buckets_of(e, "fwatchdog_queue_wait_seconds", **m)
    assert wb[0.1] == 0 and wb[2.5] == 3, wb


def test_queued_client_hangup_frees_its_place(wd):
    w = start_with_metrics(wd, {"fprocess": sh("obs.sh"), "max_inflight": "2", "max_queue": "3"})
    m = {"mode": "streaming"}
    slow = [bg_request(w.port, "GET", "/?sleep=1.2") for _ in range(2)]
    wait_metric(w, lambda e: e.get("fwatchdog_handler_started_total", **m) == 2, what="2 running")
    clients = []
    for n in (1, 2, 3):
        c = Client(w.port, timeout=6)
        c.send(build_request("GET", "/?sleep=0", port=w.port))
        clients.append(c)
        wait_metric(w, lambda e, n=n: e.get("fwatchdog_queue_depth", **m) == n,
                    what=f"queue depth {n}")
    assert request(w.port, "GET", "/_/ready").status == 429, "queue full: not ready"
    clients[1].close()
    t_close = time.monotonic()
    wait_metric(w, lambda e: e.get("fwatchdog_queue_depth", **m) == 2, timeout=0.5,
                what="the hung-up client left the queue")
    assert time.monotonic() - t_close < 0.5
    tn, new = bg_request(w.port, "GET", "/?sleep=0")
    wait_metric(w, lambda e: e.get("fwatchdog_queue_depth", **m) == 3 or "t1" in new,
                what="the new request queued")
    assert "t1" not in new, f"the new request was answered while the slots were busy: {new}"
    tn.join(6)
    assert new["r"].status == 200, f"a freed place must take the new request: {new['r']}"
    assert new["r"].body == b"slept\n"
    for t, o in slow:
        t.join(6)
        assert o["r"].status == 200, o
    for c in (clients[0], clients[2]):
        r = c.read_response()
        c.close()
        assert (r.status, r.body) == (200, b"slept\n"), r
    e = wait_metric(w, lambda e: e.get("http_requests_in_flight") == 0, what="idle")
    # 2 slow + 2 queued + the new one; the hung-up request never ran
    assert e.get("fwatchdog_handler_started_total", **m) == 5
    assert e.get("fwatchdog_requests_rejected_total", **m) == 0
    assert request(w.port, "GET", "/_/ready").status == 200


def test_queue_timeout_answers_429_in_time(wd):
    w = start_with_metrics(wd, {"fprocess": sh("obs.sh"), "max_inflight": "1", "max_queue": "5",
                                "queue_timeout": "300ms"})
    m = {"mode": "streaming"}
    ta, a = bg_request(w.port, "GET", "/?sleep=1")
    wait_metric(w, lambda e: e.get("fwatchdog_handler_started_total", **m) == 1, what="A runs")
    for _ in range(2):
        t0 = time.monotonic()
        r = request(w.port, "GET", "/?sleep=0")
        dt = time.monotonic() - t0
        assert_limit_429(r, 1)
        # libuv timers have 1 ms granularity: allow a few ms below the 300 ms
        assert 0.295 <= dt <= 0.4, f"queue_timeout=300ms answered after {dt:.3f}s"
    e = scrape(w)
    assert e.get("fwatchdog_queue_depth", **m) == 0, "timed-out requests left the queue"
    ta.join(6)
    assert a["r"].status == 200, a
    r = request(w.port, "GET", "/?sleep=0")
    assert (r.status, r.body) == (200, b"slept\n"), r
    e = wait_metric(w, lambda e: e.get("http_requests_in_flight") == 0, what="idle")
    assert e.get("fwatchdog_handler_started_total", **m) == 2, "timed-out requests never ran"
    assert e.named("http_requests_total") == {
        frozenset({"code": "200", "method": "get"}.items()): 2,
        frozenset({"code": "429", "method": "get"}.items()): 2,
    }


def test_ready_is_429_only_while_queue_full(wd):
    w = start_with_metrics(wd, {"fprocess": sh("obs.sh"), "max_inflight": "1", "max_queue": "1"})
    m = {"mode": "streaming"}
    assert request(w.port, "GET", "/_/ready").status == 200
    ta, a = bg_request(w.port, "GET", "/?sleep=1")
    wait_metric(w, lambda e: e.get("fwatchdog_handler_started_total", **m) == 1, what="A runs")
    r = request(w.port, "GET", "/_/ready")
    assert r.status == 200, f"slot busy but the queue has room: still ready: {r}"
    tb, b = bg_request(w.port, "GET", "/?sleep=0")
    wait_metric(w, lambda e: e.get("fwatchdog_queue_depth", **m) == 1, what="B queued")
    for _ in range(3):
        r = request(w.port, "GET", "/_/ready")
        assert r.status == 429, f"queue full: /_/ready must be 429: {r}"
    assert request(w.port, "GET", "/_/health").status == 200
    ta.join(6)
    tb.join(6)
    assert (a["r"].status, b["r"].status) == (200, 200)
    deadline = time.monotonic() + 1
    while request(w.port, "GET", "/_/ready").status != 200:
        assert time.monotonic() < deadline, "/_/ready stays 429 after the queue drained"
        time.sleep(0.02)
    e = scrape(w)
    # probes are not counted
    assert e.named("http_requests_total") == {
        frozenset({"code": "200", "method": "get"}.items()): 2}
