"""mode=http: Upgrade (WebSocket) requests are tunnelled to the upstream after its 101.

The upstream is test/fixtures/ws_echo.py (stdlib WebSocket echo server) on a port the test picks;
the client is a raw socket speaking just enough WebSocket (masked frames out, unmasked in).
"""
import base64
import hashlib
import json
import os
import signal
import socket
import struct
import time

from conftest import request
from test_http_mode import start_http

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_connect(port, path="/ws", timeout=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\n"
               f"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
               f"Sec-WebSocket-Key: {key}\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = s.recv(65536)
        assert b, f"EOF during handshake: {buf!r}"
        buf += b
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return s, status, hdrs, key, bytearray(rest)


class Reader:
    def __init__(self, s, rest):
        self.s, self.buf = s, rest

    def exact(self, n):
        while len(self.buf) < n:
            b = self.s.recv(1 << 20)
            assert b, "EOF inside a frame"
            self.buf += b
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def frame(self):
        h = self.exact(2)
        assert not h[1] & 0x80, "server frames are not masked"
        n = h[1] & 0x7F
        if n == 126:
            n = struct.unpack("!H", self.exact(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.exact(8))[0]
        return h[0] & 0x0F, self.exact(n)


def masked(opcode, payload):
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = os.urandom(4)
    mask = (key * (n // 4 + 1))[:n]
    data = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")
    return head + key + data


def expect_eof(s, timeout=3.0):
    s.settimeout(timeout)
    while True:
        try:
            b = s.recv(65536)
        except ConnectionResetError:
            return
        if not b:
            return


def test_ws_tunnel_echo_timeout_and_client_close(wd):
    w = start_http(wd, fixture="ws_echo.py", exec_timeout="1s")
    s, status, hdrs, key, rest = ws_connect(w.port)
    try:
        assert status == 101, (status, hdrs)
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        assert hdrs.get("sec-websocket-accept") == accept
        assert hdrs.get("upgrade", "").lower() == "websocket"
        assert "upgrade" in hdrs.get("connection", "").lower()
        assert "content-length" not in hdrs and "transfer-encoding" not in hdrs
        r = Reader(s, rest)
        assert r.frame() == (1, b"hello")  # sent by the upstream right behind its 101
        texts = [b"one", "two \u00e9".encode(), b"x" * 300]
        for t in texts:
            s.sendall(masked(1, t))
        for t in texts:
            assert r.frame() == (1, t)
        big = os.urandom(200 * 1024)
        s.sendall(masked(2, big))
        assert r.frame() == (2, big)
        time.sleep(1.5)  # past exec_timeout: the tunnel stays
        s.sendall(masked(1, b"still here"))
        assert r.frame() == (1, b"still here")
    finally:
        s.close()
    w.wait_log(r"ws: EOF from client", timeout=3)
    assert request(w.port, "GET", "/plain").status == 200
    assert "exec_timeout" not in w.log_text()


def test_ws_upstream_close_reaches_client(wd):
    w = start_http(wd, fixture="ws_echo.py")
    s, status, hdrs, key, rest = ws_connect(w.port, "/bye")
    try:
        assert status == 101
        assert Reader(s, rest).frame() == (1, b"hello")
        expect_eof(s)
    finally:
        s.close()
    assert request(w.port, "GET", "/plain").status == 200


def test_ws_close_frame_roundtrip(wd):
    w = start_http(wd, fixture="ws_echo.py")
    s, status, _, _, rest = ws_connect(w.port)
    try:
        assert status == 101
        r = Reader(s, rest)
        assert r.frame() == (1, b"hello")
        s.sendall(masked(8, struct.pack("!H", 1000)))
        assert r.frame() == (8, struct.pack("!H", 1000))
        expect_eof(s)
    finally:
        s.close()
    w.wait_log(r"ws: close frame", timeout=3)


def test_ws_non101_answer_proxied_normally(wd):
    w = start_http(wd, fixture="ws_echo.py")
    s, status, hdrs, _, rest = ws_connect(w.port, "/nows")
    try:
        assert status == 200, (status, hdrs)
        n = int(hdrs["content-length"])
        while len(rest) < n:
            rest += s.recv(65536)
        doc = json.loads(bytes(rest[:n]))
        assert doc["upgrade"] == "websocket"
        assert "upgrade" in doc["connection"].lower()
        assert "upgrade" not in hdrs
    finally:
        s.close()
    assert request(w.port, "GET", "/plain").status == 200


def test_ws_exec_timeout_applies_until_101(wd):
    w = start_http(wd, fixture="ws_echo.py", exec_timeout="1s")
    s, status, _, _, _ = ws_connect(w.port, "/slow101")
    s.close()
    assert status == 504
    assert request(w.port, "GET", "/plain").status == 200


def test_ws_open_tunnel_closed_when_drain_starts(wd):
    # An upgraded connection has no end to wait for: the drain closes it at once (well before
    # the write_timeout drain deadline), the upstream is stopped and the watchdog exits 0.
    w = start_http(wd, fixture="ws_echo.py", write_timeout="3s")
    s, status, _, _, rest = ws_connect(w.port)
    try:
        assert status == 101
        assert Reader(s, rest).frame() == (1, b"hello")
        t0 = time.monotonic()
        w.stopped_by_test = True
        w.kill(signal.SIGTERM)
        expect_eof(s, timeout=5)
        assert w.wait_exit(5) == 0, w.log_text()
        assert time.monotonic() - t0 < 2.5
    finally:
        s.close()
