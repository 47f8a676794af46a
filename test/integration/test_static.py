"""mode=static: static_path served as of-watchdog (Go's http.FileServer) does, never anything
outside it, large files streamed with bounded memory."""
import email.utils
import hashlib
import os
import time

import pytest

from conftest import BIN, SANITIZED, Client, RssSampler, RSS_LIMIT_KB, request

SECRET = b"TOP-SECRET-outside-static-path"


@pytest.fixture
def site(tmp_path):
    """tmp/public (served) with files, a sub directory, symlinks; tmp/secret.txt beside it."""
    pub = tmp_path / "public"
    (pub / "sub").mkdir(parents=True)
    (pub / "empty").mkdir()
    (pub / "index.html").write_bytes(b"<h1>home</h1>\n")
    (pub / "sub" / "index.html").write_bytes(b"<h1>sub</h1>\n")
    (pub / "a.txt").write_bytes(b"0123456789")
    (pub / "style.css").write_bytes(b"body{}")
    (pub / "data.json").write_bytes(b"{}")
    (pub / "blob.bin").write_bytes(b"\x00\x01")
    (tmp_path / "secret.txt").write_bytes(SECRET)
    os.symlink("../secret.txt", pub / "out-rel")
    os.symlink(str(tmp_path / "secret.txt"), pub / "out-abs")
    os.symlink("..", pub / "up")
    os.symlink("a.txt", pub / "in-link")
    os.symlink("sub", pub / "sub-link")
    return pub


def static(wd, path):
    return wd({"mode": "static", "static_path": str(path)})


def no_secret(r):
    assert SECRET not in r.body, r


def test_file_headers(wd, site):
    w = static(wd, site)
    r = request(w.port, "GET", "/a.txt")
    assert r.status == 200, r
    assert r.body == b"0123456789"
    assert r.header("Content-Type") == "text/plain; charset=utf-8"
    assert r.header("Content-Length") == "10"
    assert r.header("Accept-Ranges") == "bytes"
    mtime = os.stat(site / "a.txt").st_mtime
    lm = email.utils.parsedate_to_datetime(r.header("Last-Modified")).timestamp()
    assert lm == int(mtime)
    etag = r.header("ETag")
    assert etag and etag.startswith('"') and etag.endswith('"')
    assert r.header("Date")


@pytest.mark.parametrize(
    "path,ctype",
    [
        ("/style.css", "text/css; charset=utf-8"),
        ("/data.json", "application/json"),
        ("/blob.bin", "application/octet-stream"),
        ("/sub/", "text/html; charset=utf-8"),
    ],
)
def test_content_type_from_extension(wd, site, path, ctype):
    w = static(wd, site)
    r = request(w.port, "GET", path)
    assert r.status == 200, r
    assert r.header("Content-Type") == ctype


def test_head_has_headers_and_no_body(wd, site):
    w = static(wd, site)
    with Client(w.port) as c:
        r = c.request("HEAD", "/a.txt")
        assert r.status == 200, r
        assert r.header("Content-Length") == "10"
        assert r.header("ETag")
        # keep-alive: the next response starts right away, so no body bytes were sent
        r2 = c.request("GET", "/a.txt")
        assert r2.status == 200 and r2.body == b"0123456789", r2


def test_index_and_redirects(wd, site):
    w = static(wd, site)
    r = request(w.port, "GET", "/")
    assert r.status == 200 and r.body == b"<h1>home</h1>\n", r
    r = request(w.port, "GET", "/sub/")
    assert r.status == 200 and r.body == b"<h1>sub</h1>\n", r
    r = request(w.port, "GET", "/sub")
    assert r.status == 301 and r.header("Location") == "sub/", r
    r = request(w.port, "GET", "/sub?x=1")
    assert r.status == 301 and r.header("Location") == "sub/?x=1", r
    r = request(w.port, "GET", "/index.html")
    assert r.status == 301 and r.header("Location") == "./", r
    r = request(w.port, "GET", "/sub/index.html")
    assert r.status == 301 and r.header("Location") == "./", r
    r = request(w.port, "GET", "/a.txt/")
    assert r.status == 301 and r.header("Location") == "../a.txt", r


def test_not_found_and_no_listing(wd, site):
    w = static(wd, site)
    for path in ("/nope", "/empty/", "/sub/nope.txt"):
        r = request(w.port, "GET", path)
        assert r.status == 404, (path, r)
        assert r.body == b"404 page not found\n"
        assert r.header("X-Content-Type-Options") == "nosniff"
        assert r.header("Content-Type") == "text/plain; charset=utf-8"


def test_if_modified_since(wd, site):
    w = static(wd, site)
    lm = request(w.port, "GET", "/a.txt").header("Last-Modified")
    r = request(w.port, "GET", "/a.txt", headers={"If-Modified-Since": lm})
    assert r.status == 304 and r.body == b"", r
    older = email.utils.formatdate(os.stat(site / "a.txt").st_mtime - 3600, usegmt=True)
    r = request(w.port, "GET", "/a.txt", headers={"If-Modified-Since": older})
    assert r.status == 200 and r.body == b"0123456789", r


def test_if_none_match(wd, site):
    w = static(wd, site)
    etag = request(w.port, "GET", "/a.txt").header("ETag")
    r = request(w.port, "GET", "/a.txt", headers={"If-None-Match": etag})
    assert r.status == 304 and r.header("ETag") == etag, r
    r = request(w.port, "GET", "/a.txt", headers={"If-None-Match": f'"x", W/{etag}'})
    assert r.status == 304, r
    r = request(w.port, "GET", "/a.txt", headers={"If-None-Match": '"other"'})
    assert r.status == 200, r
    # a changed file gets a new ETag
    (site / "a.txt").write_bytes(b"changed!")
    r = request(w.port, "GET", "/a.txt", headers={"If-None-Match": etag})
    assert r.status == 200 and r.body == b"changed!", r


@pytest.mark.parametrize(
    "rng,status,body,crange",
    [
        ("bytes=2-4", 206, b"234", "bytes 2-4/10"),
        ("bytes=-3", 206, b"789", "bytes 7-9/10"),
        ("bytes=7-", 206, b"789", "bytes 7-9/10"),
        ("bytes=8-100", 206, b"89", "bytes 8-9/10"),
        ("bytes=0-1,4-5", 200, b"0123456789", None),
        ("bytes=10-", 416, None, "bytes */10"),
        ("bytes=50-60", 416, None, "bytes */10"),
    ],
)
def test_range(wd, site, rng, status, body, crange):
    w = static(wd, site)
    r = request(w.port, "GET", "/a.txt", headers={"Range": rng})
    assert r.status == status, r
    if body is not None:
        assert r.body == body
        assert r.header("Content-Length") == str(len(body))
    assert r.header("Content-Range") == crange


def test_if_range_mismatch_sends_whole_file(wd, site):
    w = static(wd, site)
    etag = request(w.port, "GET", "/a.txt").header("ETag")
    r = request(w.port, "GET", "/a.txt", headers={"Range": "bytes=0-0", "If-Range": etag})
    assert r.status == 206 and r.body == b"0", r
    r = request(w.port, "GET", "/a.txt", headers={"Range": "bytes=0-0", "If-Range": '"old"'})
    assert r.status == 200 and r.body == b"0123456789", r


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/../../../../etc/passwd",
        "/%2e%2e/secret.txt",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/a/%2e%2e/%2e%2e/secret.txt",
        "/sub/..%2f..%2fsecret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/a.txt%00.html",
        "/%00",
        "/up/secret.txt",
        "/out-rel",
        "/out-abs",
    ],
)
def test_traversal_refused(wd, site, path):
    w = static(wd, site)
    with Client(w.port) as c:
        c.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        r = c.read_response()
    assert r.status in (400, 404), r
    no_secret(r)


def test_bad_escape_is_400(wd, site):
    w = static(wd, site)
    r = request(w.port, "GET", "/%zz")
    assert r.status == 400, r


def test_symlinks_inside_work(wd, site):
    w = static(wd, site)
    r = request(w.port, "GET", "/in-link")
    assert r.status == 200 and r.body == b"0123456789", r
    r = request(w.port, "GET", "/sub-link/")
    assert r.status == 200 and r.body == b"<h1>sub</h1>\n", r


def test_missing_static_path_is_404(wd, tmp_path):
    w = static(wd, tmp_path / "does-not-exist")
    assert w.log_lines(r"static_path .*every request will get 404")
    r = request(w.port, "GET", "/")
    assert r.status == 404 and r.body == b"404 page not found\n", r


def test_keep_alive_and_any_method(wd, site):
    w = static(wd, site)
    with Client(w.port) as c:
        for path in ("/a.txt", "/", "/style.css", "/nope", "/sub", "/a.txt"):
            r = c.request("GET", path)
            assert r.status in (200, 301, 404), r
            assert r.header("Connection") is None, r
        r = c.request("POST", "/a.txt", b"ignored body")
        assert r.status == 200 and r.body == b"0123456789", r
        r = c.request("PUT", "/a.txt", b"x" * 100000)
        assert r.status == 200 and r.body == b"0123456789", r
        r = c.request("GET", "/a.txt")
        assert r.status == 200 and r.body == b"0123456789", r


def test_large_file_streamed_with_bounded_memory(wd, site):
    size = 64 << 20
    block = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB, not all zeros
    h = hashlib.sha256()
    with open(site / "big.bin", "wb") as f:
        for i in range(size // len(block)):
            chunk = i.to_bytes(4, "big") + block[4:]
            f.write(chunk)
            h.update(chunk)
    w = static(wd, site)
    sampler = RssSampler(w.pid)
    sampler.start()
    try:
        with Client(w.port, timeout=30) as c:
            c.send(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.3)  # a slow reader at first: the socket queue fills up
            r = c.read_response(store=False)
            assert r.status == 200 and r.complete, r
            assert r.length == size
            assert r.sha256 == h.hexdigest()
            r = c.request("GET", "/big.bin", headers={"Range": "bytes=-5"})
            assert r.status == 206 and r.length == 5, r
    finally:
        sampler.stop()
    assert sampler.samples > 3
    if "/asan/" not in BIN and not SANITIZED:
        assert sampler.peak < RSS_LIMIT_KB, f"VmRSS peaked at {sampler.peak} kB"
