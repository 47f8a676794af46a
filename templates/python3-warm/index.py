#!/usr/bin/env python3
"""fwatchdog warm worker for Python handlers (mode=warm, warm_protocol=actionloop).

The watchdog starts this file once per worker. It loads the user's module once, calls its
optional init hook, acknowledges with {"ok":true} on fd 3 (when __OW_WAIT_FOR_ACK is set), then
serves one request per line read on stdin and writes one answer line on fd 3, in the web-action
form {"statusCode", "headers", "body"} that the watchdog turns into the HTTP response. Handler
output on stdout/stderr is only logged by the watchdog: answers go to fd 3 and nowhere else.

Standard library only. Handler shapes (see README.md, "Handler shapes"):
  openfaas       handle(req)               req: the body, str (bytes when not UTF-8)
  openfaas-http  handle(event, context)    OpenFaaS python3-http: event.body/.headers/...
  kubeless       handler(event, context)   event["data"], event["extensions"]["request"]
  nuclio         handler(context, event)   context.Response, context.user_data, event.body
Environment: WARM_HANDLER_FILE (function/handler.py), WARM_HANDLER_NAME (handle, else handler),
WARM_HANDLER_STYLE (detected unless set).
"""
import asyncio
import base64
import binascii
import datetime
import importlib.util
import inspect
import json
import os
import select
import signal
import sys
import time
import traceback
import types
from urllib.parse import parse_qs

STYLES = ("openfaas", "openfaas-http", "kubeless", "nuclio")
RESPONSE_KEYS = frozenset(("statusCode", "headers", "body", "isBase64Encoded"))
NUCLIO_CONTEXT_NAMES = ("context", "ctx", "_context", "_ctx")
ANSWER_FD = 3


def log(msg):
    sys.stderr.write("warm: " + msg + "\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------------------------------
# Answers


def is_textual(content_type):
    """The watchdog's rule (README, "Mode warm"): a string body with any other Content-Type is base64."""
    ct = content_type.lower()
    return (ct.startswith("text/") or "json" in ct or "xml" in ct or "javascript" in ct
            or "application/x-www-form-urlencoded" in ct)


def find_header(headers, name):
    for k, v in headers.items():
        if k.lower() == name:
            return k, v
    return None, None


def to_json_text(value):
    return json.dumps(value, default=str, ensure_ascii=False)


def web_answer(status, headers, body, default_ct=None):
    """The answer object for the watchdog. headers: {name: str | [str, ...]}; body: None, str,
    bytes, dict/list (JSON), or anything else (str()). default_ct: the Content-Type to use when
    headers carry none (None: the watchdog's default for the body's kind)."""
    out_headers = {}
    for k, v in (headers or {}).items():
        if v is None:
            continue
        if isinstance(v, (list, tuple)):
            out_headers[str(k)] = [str(x) for x in v]
        elif isinstance(v, bool):
            out_headers[str(k)] = "true" if v else "false"
        else:
            out_headers[str(k)] = str(v)
    ct_name, ct = find_header(out_headers, "content-type")
    if isinstance(ct, list):
        ct = ct[0] if ct else None
    if ct is None and default_ct:
        ct = default_ct
        out_headers["Content-Type"] = ct
    if body is None:
        text = ""
    elif isinstance(body, (bytes, bytearray, memoryview)):
        raw = bytes(body)
        if ct is None:
            ct = "application/octet-stream"
            out_headers["Content-Type"] = ct
        if is_textual(ct):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                # The line protocol cannot carry non-UTF-8 bytes under a textual type.
                log(f"bytes body is not UTF-8 but Content-Type is {ct!r}: invalid bytes replaced")
                text = raw.decode("utf-8", "replace")
        else:
            text = base64.b64encode(raw).decode("ascii")
        return {"statusCode": status, "headers": out_headers, "body": text}
    elif isinstance(body, str):
        text = body
    elif isinstance(body, (dict, list, tuple, int, float, bool)):
        text = to_json_text(body)
        if ct is None and isinstance(body, (dict, list, tuple)):
            ct = "application/json"
            out_headers["Content-Type"] = ct
    else:
        text = str(body)
    if ct is not None and not is_textual(ct):
        text = base64.b64encode(text.encode("utf-8")).decode("ascii")
    return {"statusCode": status, "headers": out_headers, "body": text}


def is_response_dict(value):
    """A dict made only of statusCode/headers/body(/isBase64Encoded), with statusCode or body."""
    return (isinstance(value, dict) and value and RESPONSE_KEYS.issuperset(value.keys())
            and ("statusCode" in value or "body" in value))


def status_of(value, default=200):
    try:
        code = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"statusCode {value!r} is not an integer") from None
    if not 100 <= code <= 599:
        raise ValueError(f"statusCode {code} is not in 100..599")
    return code


def from_response_dict(res):
    body = res.get("body")
    if res.get("isBase64Encoded") and isinstance(body, str):
        body = base64.b64decode(body)
    return web_answer(status_of(res.get("statusCode", 200)), res.get("headers"), body)


def from_value(result):
    """openfaas, openfaas-http, kubeless: a response dict, or the body itself."""
    if is_response_dict(result):
        return from_response_dict(result)
    return web_answer(200, None, result)


def error_answer(exc):
    return {"statusCode": 500, "headers": {"Content-Type": "text/plain; charset=utf-8"},
            "body": f"handler failed: {type(exc).__name__}\n"}


# ---------------------------------------------------------------------------------------------
# Requests: the actionloop line -> the parts every style uses


class Headers(dict):
    """Header names lower-cased (as the watchdog sends them); lookups ignore case."""

    def __getitem__(self, key):
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key):
        return isinstance(key, str) and dict.__contains__(self, key.lower())

    def get(self, key, default=None):
        return dict.get(self, key.lower(), default) if isinstance(key, str) else default


class Query(dict):
    """name -> first value, as Flask's request.args; getlist(name) -> every value."""

    def __init__(self, raw):
        self.lists = parse_qs(raw, keep_blank_values=True)
        super().__init__((k, v[0]) for k, v in self.lists.items())

    def getlist(self, key):
        return list(self.lists.get(key, []))


class Request:
    __slots__ = ("method", "path", "query_string", "headers", "raw", "text", "activation_id",
                 "deadline_ms", "action_name")

    def __init__(self, msg):
        v = msg.get("value") or {}
        self.method = str(v.get("__ow_method") or "get").upper()
        self.path = v.get("__ow_path") or "/"
        self.query_string = v.get("__ow_query") or ""
        self.headers = Headers((str(k).lower(), str(x)) for k, x in
                               (v.get("__ow_headers") or {}).items())
        body = v.get("__ow_body") or ""
        if v.get("__ow_isBase64Encoded"):
            self.raw = base64.b64decode(body)
            try:
                self.text = self.raw.decode("utf-8")
            except UnicodeDecodeError:
                self.text = None
        else:
            self.text = body
            self.raw = None
        self.activation_id = msg.get("activation_id") or ""
        try:
            self.deadline_ms = int(msg.get("deadline") or 0)
        except (TypeError, ValueError):
            self.deadline_ms = 0
        self.action_name = msg.get("action_name") or "function"

    @property
    def body_bytes(self):
        if self.raw is None:
            self.raw = self.text.encode("utf-8")
        return self.raw

    @property
    def body_native(self):
        """str when the body is UTF-8, else bytes."""
        return self.text if self.text is not None else self.raw

    @property
    def content_type(self):
        return self.headers.get("content-type", "")

    def json_or_native(self):
        """Parsed JSON for application/json (as Kubeless and Nuclio do), else body_native."""
        if self.content_type.split(";")[0].strip().lower() == "application/json" and self.text:
            try:
                return json.loads(self.text)
            except ValueError as exc:
                log(f"request body is not valid JSON ({exc}): passed as text")
        return self.body_native

    @property
    def url(self):
        return self.path + ("?" + self.query_string if self.query_string else "")


# ---------------------------------------------------------------------------------------------
# Styles


class OpenFaaSEvent:
    """The event of the OpenFaaS python3-http template (body is bytes, as Flask's get_data())."""

    def __init__(self, req):
        self.body = req.body_bytes
        self.headers = req.headers
        self.method = req.method
        self.query = Query(req.query_string)
        self.path = req.path


class OpenFaaSContext:
    def __init__(self):
        self.hostname = os.getenv("HOSTNAME", "localhost")


class NuclioResponse:
    """nuclio_sdk.Response(headers=None, body=None, content_type=None, status_code=200)."""

    def __init__(self, headers=None, body=None, content_type=None, status_code=200, event_id=None):
        self.headers = headers or {}
        self.body = body
        self.content_type = content_type
        self.status_code = status_code
        self.event_id = event_id

    def __repr__(self):
        return "Response(%s)" % ", ".join(f"{k}={v!r}" for k, v in vars(self).items())


class NuclioLogger:
    def __init__(self):
        self.name = "handler"

    def _log(self, level, message, args, kwargs):
        if args:
            try:
                message = str(message) % args
            except (TypeError, ValueError):
                message = " ".join([str(message)] + [str(a) for a in args])
        line = f"{level} {message}"
        if kwargs:
            line += " " + to_json_text(kwargs)
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def debug(self, message, *args):
        self._log("DEBUG", message, args, None)

    def info(self, message, *args):
        self._log("INFO", message, args, None)

    def warn(self, message, *args):
        self._log("WARNING", message, args, None)

    warning = warn

    def error(self, message, *args):
        self._log("ERROR", message, args, None)

    def debug_with(self, message, *args, **kw):
        self._log("DEBUG", message, args, kw)

    def info_with(self, message, *args, **kw):
        self._log("INFO", message, args, kw)

    def warn_with(self, message, *args, **kw):
        self._log("WARNING", message, args, kw)

    def error_with(self, message, *args, **kw):
        self._log("ERROR", message, args, kw)

    def exception(self, message, *args):
        self._log("ERROR", message, args, None)
        traceback.print_exc()


class NuclioTrigger:
    def __init__(self):
        self.klass = "sync"
        self.kind = "http"
        self.name = "fwatchdog"


class NuclioContext:
    Response = NuclioResponse

    def __init__(self, name):
        self.user_data = types.SimpleNamespace()
        self.logger = NuclioLogger()
        self.worker_id = os.getpid()
        self.function_name = name
        self.trigger_name = "fwatchdog"
        self.platform = None


class NuclioEvent:
    def __init__(self, req):
        self.content_type = req.content_type
        if self.content_type == "application/json" and req.text:
            try:
                self.body = json.loads(req.text)
            except ValueError as exc:
                sys.stderr.write(str(exc) + "\n")
                self.body = req.body_bytes
        else:
            self.body = req.body_bytes
        # Nuclio passes the names as sent; the actionloop line has them lower-cased.
        self.headers = {"-".join(p.capitalize() for p in k.split("-")): v
                        for k, v in req.headers.items()}
        self.fields = Query(req.query_string)
        self.id = req.activation_id
        self.method = req.method
        self.path = req.path
        self.url = req.url
        self.size = len(req.body_bytes)
        self.timestamp = datetime.datetime.now(datetime.timezone.utc)
        self.trigger = NuclioTrigger()
        self.shard_id = None
        self.num_shards = None
        self.type = None
        self.type_version = None
        self.version = None

    def get_header(self, key):
        for k, v in self.headers.items():
            if k.lower() == key.lower():
                return v
        return None


def nuclio_answer(out):
    """nuclio_sdk Response.from_entrypoint_output, plus bytes kept as bytes."""
    if isinstance(out, NuclioResponse):
        ct = out.content_type
        body = out.body
        headers = dict(out.headers or {})
        if isinstance(body, (dict, list)):
            body = to_json_text(body)
            ct = "application/json"
        if ct is None:
            _, hct = find_header(headers, "content-type")
            if hct is None:
                ct = "text/plain"
                if isinstance(body, (bytes, bytearray)):
                    try:
                        bytes(body).decode("utf-8")
                    except UnicodeDecodeError:
                        ct = "application/octet-stream"
        if ct is not None:
            name, _ = find_header(headers, "content-type")
            headers[name or "Content-Type"] = ct
        return web_answer(status_of(out.status_code), headers, body)
    if isinstance(out, tuple) and len(out) == 2:
        status, body = out
        if isinstance(body, (str, bytes, bytearray)):
            return web_answer(status_of(status), None, body)
        return web_answer(status_of(status), {"Content-Type": "application/json"},
                          to_json_text(body))
    if isinstance(out, (dict, list)):
        return web_answer(200, {"Content-Type": "application/json"}, to_json_text(out))
    return web_answer(200, None, out)


def param_names(fn):
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    return [p.name for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def detect_style(name, fn):
    """The documented rule (README.md): 0-1 positional parameters -> openfaas; a first parameter
    named context/ctx -> nuclio; handle(a, b) -> openfaas-http; any other two -> kubeless."""
    names = param_names(fn)
    if len(names) <= 1:
        return "openfaas"
    if names[0] in NUCLIO_CONTEXT_NAMES:
        return "nuclio"
    if name == "handle":
        return "openfaas-http"
    return "kubeless"


class Worker:
    def __init__(self):
        path = os.environ.get("WARM_HANDLER_FILE") or "function/handler.py"
        if not os.path.isabs(path) and not os.path.exists(path):
            alt = os.path.join(os.path.dirname(os.path.abspath(__file__)), path)
            if os.path.exists(alt):
                path = alt
        path = os.path.abspath(path)
        self.module = self.load(path)
        name = os.environ.get("WARM_HANDLER_NAME") or ""
        if not name:
            name = next((n for n in ("handle", "handler")
                         if callable(getattr(self.module, n, None))), "")
        fn = getattr(self.module, name, None) if name else None
        if not callable(fn):
            raise SystemExit(f"warm: {path}: no handler function "
                             f"({name or 'handle or handler'}) found")
        self.fn = fn
        self.style = os.environ.get("WARM_HANDLER_STYLE") or detect_style(name, fn)
        if self.style not in STYLES:
            raise SystemExit(f"warm: WARM_HANDLER_STYLE={self.style!r}: "
                             f"want one of {', '.join(STYLES)}")
        self.loop = None
        self.http_env = {}
        self.action_name = os.environ.get("OPENFAAS_NAME") or "function"
        if self.style == "nuclio":
            self.context = NuclioContext(self.action_name)
        elif self.style == "kubeless":
            self.context = {
                "function-name": self.action_name,
                "timeout": os.environ.get("FUNC_TIMEOUT") or os.environ.get("exec_timeout")
                or "30",
                "runtime": "python%d.%d" % sys.version_info[:2],
                "memory-limit": os.environ.get("FUNC_MEMORY_LIMIT", ""),
            }
        else:
            self.context = OpenFaaSContext()
        log(f"loaded {path}: {name}() as style {self.style}")

    @staticmethod
    def load(path):
        # As in OpenFaaS's templates: a handler in a package (function/__init__.py) is imported
        # as function.handler, so relative imports work; its siblings import as top-level
        # modules too.
        pkg_dir = os.path.dirname(path)
        for d in (pkg_dir, os.path.dirname(pkg_dir)):
            if d not in sys.path:
                sys.path.insert(0, d)
        pkg = os.path.basename(pkg_dir)
        stem = os.path.splitext(os.path.basename(path))[0]
        if os.path.exists(os.path.join(pkg_dir, "__init__.py")) and pkg.isidentifier():
            return importlib.import_module(f"{pkg}.{stem}")
        spec = importlib.util.spec_from_file_location(stem, path)
        if spec is None:
            raise SystemExit(f"warm: cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[stem] = module
        spec.loader.exec_module(module)
        return module

    def settle(self, value):
        if inspect.isawaitable(value):
            if self.loop is None:
                self.loop = asyncio.new_event_loop()
                asyncio.set_event_loop(self.loop)
            value = self.loop.run_until_complete(value)
        return value

    def init(self):
        for n in ("init", "init_context"):
            hook = getattr(self.module, n, None)
            if callable(hook):
                self.settle(hook(self.context) if param_names(hook) else hook())
                return

    def set_http_env(self, req):
        """handle(req) reads the request's headers from Http_* variables, as in the fork modes
        (of-watchdog's names: Http_Method, Http_Path, Http_Query, Http_<Canonical_Name>). Only
        the variables that changed since the last request are set or removed."""
        names = {"Http_Method": req.method, "Http_Path": req.path, "Http_Query": req.query_string}
        for k, v in req.headers.items():
            names.setdefault("Http_" + "_".join(p.capitalize() for p in k.split("-")), v)
        env = os.environ
        old = self.http_env
        for k in old:
            if k not in names:
                try:
                    del env[k]
                except KeyError:
                    pass
        for k, v in names.items():
            if old.get(k) != v:
                try:
                    env[k] = v
                except ValueError:  # a NUL byte
                    names[k] = None
        self.http_env = names

    def call(self, req):
        s = self.style
        if s == "openfaas":
            self.set_http_env(req)
            return from_value(self.settle(self.fn(req.body_native)))
        if s == "openfaas-http":
            return from_value(self.settle(self.fn(OpenFaaSEvent(req), self.context)))
        if s == "kubeless":
            event = {
                "data": req.json_or_native(),
                "event-id": req.activation_id,
                "event-type": req.content_type,
                "event-time": time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime()),
                "event-namespace": "fwatchdog",
                "extensions": {"request": {
                    "method": req.method, "path": req.path, "url": req.url,
                    "headers": req.headers, "query": Query(req.query_string),
                    "query_string": req.query_string}},
            }
            return from_value(self.settle(self.fn(event, self.context)))
        return nuclio_answer(self.settle(self.fn(self.context, NuclioEvent(req))))


def write_all(fd, data):
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:  # fd 3 inherited in non-blocking mode: wait until writable
            select.select([], [fd], [])
            continue
        view = view[n:]


def main():
    try:
        os.fstat(ANSWER_FD)
    except OSError:
        sys.stderr.write("warm: fd 3 is not open: run me as fwatchdog's mode=warm worker\n")
        return 2
    # Handler prints are logged line by line by the watchdog: do not hold them back.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    # At shutdown the watchdog closes stdin, then sends SIGTERM: leave quietly, with status 0.
    # A handler module that installs its own SIGTERM handler replaces this one.
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))
    worker = Worker()
    worker.init()
    if os.environ.get("__OW_WAIT_FOR_ACK"):
        write_all(ANSWER_FD, b'{"ok":true}\n')
    # The protocol keeps fd 0 to itself: a handler that reads stdin (input()) gets EOF instead
    # of the next request.
    stdin = os.fdopen(os.dup(0), "rb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(0, "r", closefd=False)
    while True:
        line = stdin.readline()
        if not line:
            return 0
        if not line.strip():
            continue
        try:
            try:
                msg = json.loads(line)
                req = Request(msg)
            except (ValueError, binascii.Error, AttributeError) as exc:
                log(f"bad request line ({exc}): {line[:200]!r}")
                answer = error_answer(exc)
            else:
                answer = worker.call(req)
        except (Exception, SystemExit) as exc:  # a handler error never ends the worker
            traceback.print_exc()
            sys.stderr.flush()
            answer = error_answer(exc)
        try:
            data = json.dumps(answer, ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            log(f"answer not serialisable: {exc}")
            data = json.dumps(error_answer(exc))
        write_all(ANSWER_FD, data.encode("utf-8", "replace") + b"\n")


if __name__ == "__main__":
    sys.exit(main())
