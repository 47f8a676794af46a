#!/usr/bin/env python3
"""python3-http template: the long-running HTTP server the watchdog supervises (mode http).

Standard library only (http.server, ThreadingHTTPServer: one thread per connection). It listens
where the watchdog proxies to: the host and port of `http_upstream_url`, else `upstream_url`
(the watchdog's own settings, inherited through the environment, so the two cannot disagree).
It binds only once function/handler.py is imported, so "port accepts" already means ready; when
the watchdog's `ready_path` is set, GET <ready_path> answers 200, or 503 while the handler's
optional ready() returns false.

function/handler.py defines either handle(event, context), as OpenFaaS's python3-http template
(event.body bytes, .headers, .method, .query, .path; return a dict with statusCode, body,
headers, or a str/bytes body, or None), or handle(req) with the body as text, as the python3
template. Edit the handler, not this file. SIGTERM (sent by the watchdog once in-flight
requests are answered) stops the server and exits 0.
"""
import inspect
import json
import os
import signal
import socket
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from function import handler

MAX_LINE = 65536


def upstream_address():
    """(host, port, base path) from the watchdog's upstream URL."""
    url = os.environ.get("http_upstream_url") or os.environ.get("upstream_url") or ""
    u = urlsplit(url or "http://127.0.0.1:5000")
    host = u.hostname or "127.0.0.1"
    if host == "localhost":
        host = "127.0.0.1"
    return host, u.port or 80, u.path.rstrip("/")


HOST, PORT, BASE = upstream_address()
READY_PATH = os.environ.get("ready_path") or None


class Event:
    """The request as OpenFaaS's python3-http template presents it."""

    def __init__(self, method, path, query, headers, body):
        self.method = method
        self.path = path
        self.query = query  # {name: first value}
        self.headers = headers  # case-insensitive .get()
        self.body = body  # bytes


class Context:
    def __init__(self):
        self.hostname = os.environ.get("HOSTNAME", "localhost")


def _takes_event(fn):
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) != 1


TAKES_EVENT = _takes_event(handler.handle)


def encode_body(body, headers):
    """bytes for the wire; sets a Content-Type when the handler did not."""
    if body is None:
        body = b""
    if isinstance(body, (dict, list)):
        headers.setdefault("Content-Type", "application/json")
        return json.dumps(body).encode()
    if isinstance(body, (bytes, bytearray)):
        headers.setdefault("Content-Type", "application/octet-stream")
        return bytes(body)
    headers.setdefault("Content-Type", "text/plain; charset=utf-8")
    return str(body).encode()


def format_response(res):
    """(status, {header: value}, bytes) from what handle() returned."""
    headers = {}
    if isinstance(res, dict) and ("statusCode" in res or "body" in res or "headers" in res):
        headers.update({str(k): str(v) for k, v in (res.get("headers") or {}).items()})
        # Case-insensitive setdefault for Content-Type.
        for k in list(headers):
            if k.lower() == "content-type" and k != "Content-Type":
                headers["Content-Type"] = headers.pop(k)
        status = int(res.get("statusCode", 200))
        return status, headers, encode_body(res.get("body"), headers)
    return 200, headers, encode_body(res, headers)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the watchdog pools its upstream connections
    disable_nagle_algorithm = True  # else small answers wait for delayed ACKs (~40 ms)

    def version_string(self):
        return "python3-http"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # the watchdog already logs one line per request

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                line = self.rfile.readline(MAX_LINE)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(MAX_LINE) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline(MAX_LINE)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def send(self, status, headers, body):
        self.send_response(status)
        for k, v in headers.items():
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(body)

    def dispatch(self):
        body = self.read_body()
        url = urlsplit(self.path)
        path = url.path
        if BASE and (path == BASE or path.startswith(BASE + "/")):
            path = path[len(BASE):] or "/"
        if READY_PATH and path == READY_PATH and self.command == "GET":
            ready = getattr(handler, "ready", None)
            ok = ready() if callable(ready) else True
            self.send(200 if ok else 503, {"Content-Type": "text/plain"},
                      b"OK" if ok else b"not ready")
            return
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            if TAKES_EVENT:
                event = Event(self.command, path, query, self.headers, body)
                res = handler.handle(event, Context())
            else:
                res = handler.handle(body.decode("utf-8", errors="replace"))
            status, headers, out = format_response(res)
        except Exception:  # the handler's bug: log it, answer 500, keep serving
            traceback.print_exc()
            status, headers, out = 500, {"Content-Type": "text/plain"}, b"Internal Server Error\n"
        self.send(status, headers, out)

    def __getattr__(self, name):
        # http.server looks up do_<METHOD>: every method goes to the handler.
        if name.startswith("do_"):
            return self.dispatch
        raise AttributeError(name)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    address_family = socket.AF_INET6 if ":" in HOST else socket.AF_INET


def main():
    server = Server((HOST, PORT), Handler)

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"python3-http: listening on {HOST}:{PORT}", file=sys.stderr, flush=True)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
