"""Edge cases of the server core and the fork modes: queue + pipelining re-entrancy, responses
still being flushed (shutdown, idle timer), memory a client can make the watchdog hold, and
handler-chosen statuses that cannot be final."""
import signal
import socket
import time

from conftest import SANITIZED, Client, RssSampler, RSS_LIMIT_KB, proc_status, vmrss_kb

BIG = 20_000_000  # larger than every socket buffer on the path: most of it waits in our queue


def test_queued_request_answered_at_once_then_pipelined_request(wd):
    """A queued request that the mode answers synchronously at dispatch (classic: 405) must not
    make the server feed the next pipelined request into the mode twice (double on_end ->
    two spawns on one job: corrupted loop, zombies, no answer)."""
    w = wd({"mode": "classic", "fprocess": "sh -c 'sleep 0.5; echo hi'",
            "max_inflight": "1", "max_queue": "5"})
    a = Client(w.port, timeout=5)
    a.send(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)  # /first holds the only slot
    b = Client(w.port, timeout=5)
    b.send(b"OPTIONS / HTTP/1.1\r\nHost: x\r\n\r\n"  # queued, then 405 from classic
           b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
    r = a.read_response()
    assert (r.status, r.body) == (200, b"hi\n")
    r1 = b.read_response()
    assert r1.status == 405
    r2 = b.read_response()
    assert (r2.status, r2.body) == (200, b"hi\n")
    a.close()
    b.close()


def test_sigterm_keeps_response_that_is_still_being_written(wd):
    """The handler is done and the response complete on our side, but most of it still waits in
    the socket queue: shutdown must flush it, not close the connection as idle."""
    w = wd({"mode": "serializing", "fprocess": f"head -c {BIG} /dev/zero"})
    c = Client(w.port, timeout=5)
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    w.wait_log(r"GET / - 200", timeout=5)  # the response is complete on our side
    time.sleep(0.2)
    w.stopped_by_test = True
    w.kill(signal.SIGTERM)
    time.sleep(0.3)
    r = c.read_response(store=False)
    c.close()
    assert r.status == 200
    assert r.complete and r.length == BIG, f"response cut at {r.length} of {BIG} bytes"
    assert w.wait_exit(5) == 0


def test_read_timeout_does_not_cut_response_being_written(wd):
    """read_timeout is the idle timeout of a keep-alive connection; a connection whose response
    is still being written (well within write_timeout) is not idle."""
    w = wd({"mode": "serializing", "fprocess": f"head -c {BIG} /dev/zero",
            "read_timeout": "1s", "write_timeout": "10s"})
    c = Client(w.port, timeout=5)
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(2.5)  # a client slow to start reading
    r = c.read_response(store=False)
    c.close()
    assert r.status == 200
    assert r.complete and r.length == BIG, f"response cut at {r.length} of {BIG} bytes"


def test_pipelining_client_that_never_reads_is_bounded(wd):
    """A client pipelining requests without reading the answers must be slowed down by
    back-pressure (we stop reading it), not buffered without limit in our write queue."""
    w = wd({"fprocess": "cat"})
    s = socket.create_connection(("127.0.0.1", w.port), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.setblocking(False)
    sampler = RssSampler(w.pid)
    sampler.start()
    rss0 = vmrss_kb(w.pid)
    batch = b"GET /_/health HTTP/1.1\r\nHost: x\r\n\r\n" * 1000
    buf, sent = batch, 0
    t0 = last_progress = time.monotonic()
    plateau = False
    while time.monotonic() - t0 < 12:
        try:
            n = s.send(buf)
            sent += n
            buf = buf[n:] or batch
            last_progress = time.monotonic()
        except BlockingIOError:
            if time.monotonic() - last_progress > 1.5:
                plateau = True
                break
            time.sleep(0.01)
    sampler.stop()
    rss1 = vmrss_kb(w.pid)
    s.close()
    assert plateau, (f"the watchdog kept reading a client that does not read: {sent >> 20} MiB "
                     f"of requests taken, VmRSS {rss0} -> {rss1} kB")
    if not SANITIZED:
        assert sampler.peak < RSS_LIMIT_KB, f"watchdog VmRSS peaked at {sampler.peak} kB"


def test_huge_content_length_not_reserved_up_front(wd):
    """Content-Length is a claim, not bytes: the buffered modes must not reserve it before the
    body arrives (a 100 GB claim gave 500 'not enough memory' at once, and aborted ASan builds).
    With max_body_size unlimited, a stalled body ends with read_timeout, never with a 500."""
    w = wd({"mode": "serializing", "fprocess": "cat", "read_timeout": "1s"})
    vm0 = int(proc_status(w.pid).get("VmSize", "0 kB").split()[0])
    c = Client(w.port, timeout=4)
    c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000\r\n\r\nhalf")
    time.sleep(0.3)
    vm1 = int(proc_status(w.pid).get("VmSize", "0 kB").split()[0])
    data = c.read_until_close()
    c.close()
    assert w.proc.poll() is None, "watchdog died:\n" + w.log_text()[-1500:]
    assert b" 500 " not in data.split(b"\r\n", 1)[0], data[:300]
    assert vm1 - vm0 < 1 << 20, f"VmSize grew by {vm1 - vm0} kB for a 4-byte body"


def test_cgi_informational_status_still_gets_a_final_response(wd):
    """A handler printing `Status: 101` (or 100) must not leave the client with an interim
    response and nothing after it on a keep-alive connection."""
    w = wd({"mode": "serializing", "fprocess": "printf 'Status: 101\\r\\n\\r\\nhello'",
            "cgi_response": "true"})
    c = Client(w.port, timeout=3)
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    r = c.read_response()  # collects 1xx as interim, then needs a final status
    c.close()
    assert r.status >= 200, r
