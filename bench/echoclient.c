/* echoclient.c: the streaming echo client of bench/run.sh. One thread, one non-blocking socket,
 * poll(): it connects to 127.0.0.1:PORT, sends
 *   POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: N\r\n\r\n
 * and N body bytes (a repeating 64 KiB block of bytes i % 251), and reads the response while it
 * is still sending. The response must be 200 with a chunked or Content-Length body (or one ended
 * by close); every body byte is checked against the pattern at its offset, and the total must be
 * N. send() and recv() move up to 256 KiB at a time. The clock runs from before connect() to the
 * last body byte.
 *
 * usage: echoclient PORT BYTES [idle_timeout_seconds=30]
 * prints on success (exit 0):  bytes=N seconds=S MiBps=X
 * on failure: one line "echoclient: ..." on stderr, exit 1 (2 for bad usage).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IO_SIZE (256u << 10) /* bytes per send() / recv() */
#define PAT_SIZE (64u << 10) /* the pattern repeats every PAT_SIZE bytes */
#define PAT_BUF (IO_SIZE + PAT_SIZE)
#define RBUF_SIZE (2 * IO_SIZE) /* unparsed response bytes; a header line must fit */

enum state {
    S_HEAD,
    S_CHUNK_SIZE,
    S_CHUNK_DATA,
    S_CHUNK_CRLF,
    S_TRAILER,
    S_LENGTH,
    S_CLOSE,
    S_DONE
};

static const char *const state_name[] = {
    "headers",  "chunk size",          "chunk data",           "chunk CRLF",
    "trailers", "Content-Length body", "close-delimited body", "done"};

static unsigned char pat[PAT_BUF]; /* pat[j] == (j % PAT_SIZE) % 251 */
static unsigned char rbuf[RBUF_SIZE];
static size_t rpos, rlen; /* unparsed bytes are rbuf[rpos, rlen) */
static enum state st = S_HEAD;
static uint64_t total;      /* N */
static uint64_t sent, got;  /* body bytes sent, body bytes received and checked */
static uint64_t chunk_left; /* S_CHUNK_DATA / S_LENGTH: bytes still due */
static int status;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "echoclient: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (sent %" PRIu64 " of %" PRIu64 " body bytes, received %" PRIu64 ", in %s)\n",
            sent, total, got, state_name[st]);
    exit(1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool parse_u64(const char *s, const char *end, int base, uint64_t *out)
{
    uint64_t v = 0;
    if (s == end)
        return false;
    for (; s < end; s++) {
        int d;
        if (*s >= '0' && *s <= '9')
            d = *s - '0';
        else if (base == 16 && *s >= 'a' && *s <= 'f')
            d = *s - 'a' + 10;
        else if (base == 16 && *s >= 'A' && *s <= 'F')
            d = *s - 'A' + 10;
        else
            return false;
        if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base)
            return false;
        v = v * (uint64_t)base + (uint64_t)d;
    }
    *out = v;
    return true;
}

/* Printable copy of up to 200 bytes, for error messages; two may be used in one call. */
static const char *show(const unsigned char *p, size_t n)
{
    static char bufs[2][201];
    static int which;
    char *out = bufs[which ^= 1];
    size_t i;
    if (n > 200)
        n = 200;
    for (i = 0; i < n; i++)
        out[i] = (p[i] >= 0x20 && p[i] < 0x7f) ? (char)p[i] : '.';
    out[i] = '\0';
    return out;
}

/* Check n body bytes against the pattern at offset got. */
static void check_body(const unsigned char *p, size_t n)
{
    if (got + n > total)
        fail("response body is longer than the %" PRIu64 " bytes sent", total);
    while (n > 0) {
        size_t k = n < IO_SIZE ? n : IO_SIZE;
        const unsigned char *want = pat + got % PAT_SIZE;
        if (memcmp(p, want, k) != 0) {
            size_t i = 0;
            while (p[i] == want[i])
                i++;
            fail("body byte at offset %" PRIu64 " is 0x%02x, expected 0x%02x", got + i, p[i],
                 want[i]);
        }
        got += k;
        p += k;
        n -= k;
    }
}

/* One CRLF-terminated line at rbuf[rpos]: its length (without CRLF), or -1 if incomplete. */
static long next_line(void)
{
    const unsigned char *p = rbuf + rpos;
    const unsigned char *lf = memchr(p, '\n', rlen - rpos);
    if (lf == NULL)
        return -1;
    if (lf == p || lf[-1] != '\r')
        fail("bare LF in response: \"%s\"", show(p, (size_t)(lf - p)));
    return (long)(lf - p - 1);
}

/* The head: status line and headers, rbuf[rpos, rpos + len) without the final CRLFCRLF. */
static void parse_head(size_t len)
{
    const char *h = (const char *)rbuf + rpos, *end = h + len;
    const char *eol = memchr(h, '\r', len);
    bool chunked = false, has_length = false;
    uint64_t length = 0;
    if (eol == NULL)
        eol = end;
    if (eol - h < 12 || strncmp(h, "HTTP/1.", 7) != 0 || h[8] != ' ' ||
        !parse_u64(h + 9, h + 12, 10, &(uint64_t){0}))
        fail("bad status line \"%s\"", show((const unsigned char *)h, (size_t)(eol - h)));
    status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
    for (const char *l = eol + 2; l < end;) {
        const char *le = memchr(l, '\r', (size_t)(end - l));
        const char *colon, *v, *ve;
        if (le == NULL)
            le = end;
        colon = memchr(l, ':', (size_t)(le - l));
        if (colon == NULL)
            fail("bad header line \"%s\"", show((const unsigned char *)l, (size_t)(le - l)));
        for (v = colon + 1; v < le && (*v == ' ' || *v == '\t'); v++)
            ;
        for (ve = le; ve > v && (ve[-1] == ' ' || ve[-1] == '\t'); ve--)
            ;
        if ((size_t)(colon - l) == 17 && strncasecmp(l, "Transfer-Encoding", 17) == 0) {
            /* chunked must be the last coding */
            chunked = ve - v >= 7 && strncasecmp(ve - 7, "chunked", 7) == 0;
        } else if ((size_t)(colon - l) == 14 && strncasecmp(l, "Content-Length", 14) == 0) {
            if (!parse_u64(v, ve, 10, &length))
                fail("bad Content-Length \"%s\"", show((const unsigned char *)v, (size_t)(ve - v)));
            has_length = true;
        }
        l = le + 2;
    }
    if (status >= 100 && status < 200 && status != 101) {
        status = 0; /* interim response (100 Continue): the real head follows */
        return;
    }
    if (status != 200) {
        size_t body = rlen - (rpos + len + 4);
        fail("HTTP %d, expected 200: \"%s\" body \"%s\"", status,
             show((const unsigned char *)h, (size_t)(eol - h)), show(rbuf + rpos + len + 4, body));
    }
    if (chunked) {
        st = S_CHUNK_SIZE;
    } else if (has_length) {
        if (length != total)
            fail("Content-Length %" PRIu64 " in the response, sent %" PRIu64, length, total);
        chunk_left = length;
        st = length ? S_LENGTH : S_DONE;
    } else {
        st = S_CLOSE;
    }
}

/* Consume what rbuf holds. Returns when more input is needed or the response is complete. */
static void parse(void)
{
    for (;;) {
        size_t avail = rlen - rpos;
        long n;
        switch (st) {
        case S_HEAD: {
            const unsigned char *e = memmem(rbuf + rpos, avail, "\r\n\r\n", 4);
            if (e == NULL)
                return;
            size_t len = (size_t)(e - (rbuf + rpos));
            parse_head(len);
            rpos += len + 4;
            break;
        }
        case S_CHUNK_SIZE: {
            const char *l = (const char *)rbuf + rpos, *e;
            uint64_t size;
            if ((n = next_line()) < 0)
                return;
            for (e = l; e < l + n && *e != ';' && *e != ' ' && *e != '\t'; e++)
                ;
            if (!parse_u64(l, e, 16, &size))
                fail("bad chunk size line \"%s\"", show(rbuf + rpos, (size_t)n));
            rpos += (size_t)n + 2;
            chunk_left = size;
            st = size ? S_CHUNK_DATA : S_TRAILER;
            break;
        }
        case S_CHUNK_DATA:
        case S_LENGTH:
        case S_CLOSE: {
            size_t k = avail;
            if (k == 0)
                return;
            if (st != S_CLOSE && k > chunk_left)
                k = (size_t)chunk_left;
            check_body(rbuf + rpos, k);
            rpos += k;
            if (st == S_CLOSE)
                break;
            chunk_left -= k;
            if (chunk_left == 0)
                st = st == S_LENGTH ? S_DONE : S_CHUNK_CRLF;
            break;
        }
        case S_CHUNK_CRLF:
            if (avail < 2)
                return;
            if (rbuf[rpos] != '\r' || rbuf[rpos + 1] != '\n')
                fail("no CRLF after chunk data: \"%s\"", show(rbuf + rpos, avail));
            rpos += 2;
            st = S_CHUNK_SIZE;
            break;
        case S_TRAILER:
            if ((n = next_line()) < 0)
                return;
            rpos += (size_t)n + 2;
            if (n == 0)
                st = S_DONE;
            break;
        case S_DONE:
            if (avail > 0)
                fail("%zu unexpected bytes after the response: \"%s\"", avail,
                     show(rbuf + rpos, avail));
            return;
        }
    }
}

int main(int argc, char **argv)
{
    uint64_t port, timeout_s = 30;
    char head[160];
    size_t head_len, head_sent = 0;
    struct sockaddr_in sa;
    int fd, one = 1;
    bool connected = false;
    double t0, t1;

    if (argc < 3 || argc > 4 || !parse_u64(argv[1], argv[1] + strlen(argv[1]), 10, &port) ||
        port == 0 || port > 65535 || !parse_u64(argv[2], argv[2] + strlen(argv[2]), 10, &total) ||
        (argc == 4 && (!parse_u64(argv[3], argv[3] + strlen(argv[3]), 10, &timeout_s) ||
                       timeout_s == 0 || timeout_s > 86400))) {
        fprintf(stderr, "usage: echoclient PORT BYTES [idle_timeout_seconds=30]\n");
        return 2;
    }
    for (size_t j = 0; j < PAT_BUF; j++)
        pat[j] = (unsigned char)(j % PAT_SIZE % 251);
    head_len = (size_t)snprintf(
        head, sizeof(head), "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %" PRIu64 "\r\n\r\n",
        total);

    t0 = now_s();
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fail("socket: %s", strerror(errno));
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
        fail("setsockopt TCP_NODELAY: %s", strerror(errno));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
        connected = true;
    else if (errno != EINPROGRESS)
        fail("connect to 127.0.0.1:%" PRIu64 ": %s", port, strerror(errno));

    while (st != S_DONE) {
        bool sending = head_sent < head_len || sent < total;
        struct pollfd p = {.fd = fd,
                           .events = (short)(POLLIN | (sending || !connected ? POLLOUT : 0))};
        int r = poll(&p, 1, (int)(timeout_s * 1000));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            fail("poll: %s", strerror(errno));
        }
        if (r == 0)
            fail("no progress for %" PRIu64 " s", timeout_s);
        if (!connected) {
            int err = 0;
            socklen_t len = sizeof(err);
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
                err = errno;
            if (err != 0)
                fail("connect to 127.0.0.1:%" PRIu64 ": %s", port, strerror(err));
            connected = true;
        }
        if (sending && (p.revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t w;
            if (head_sent < head_len) {
                w = send(fd, head + head_sent, head_len - head_sent, MSG_NOSIGNAL);
            } else {
                uint64_t left = total - sent;
                size_t k = left < IO_SIZE ? (size_t)left : IO_SIZE;
                w = send(fd, pat + sent % PAT_SIZE, k, MSG_NOSIGNAL);
            }
            if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                fail("send: %s", strerror(errno));
            if (w > 0) {
                if (head_sent < head_len)
                    head_sent += (size_t)w;
                else
                    sent += (uint64_t)w;
            }
        }
        if (p.revents & (POLLIN | POLLERR | POLLHUP)) {
            ssize_t n;
            if (rpos == rlen) {
                rpos = rlen = 0;
            } else if (rlen - rpos < IO_SIZE && RBUF_SIZE - rlen < IO_SIZE) {
                memmove(rbuf, rbuf + rpos, rlen - rpos); /* only a partial line is left */
                rlen -= rpos;
                rpos = 0;
            }
            if (rlen == RBUF_SIZE)
                fail("response line or head longer than %u bytes", RBUF_SIZE);
            size_t room = RBUF_SIZE - rlen;
            n = recv(fd, rbuf + rlen, room < IO_SIZE ? room : IO_SIZE, 0);
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                fail("recv: %s", strerror(errno));
            if (n == 0) {
                if (st == S_CLOSE) {
                    st = S_DONE;
                    break;
                }
                fail("connection closed by the server");
            }
            if (n > 0) {
                rlen += (size_t)n;
                parse();
            }
        }
    }
    t1 = now_s();
    close(fd);
    if (got != total || sent != total)
        fail("response complete with %" PRIu64 " body bytes, expected %" PRIu64, got, total);
    printf("bytes=%" PRIu64 " seconds=%.3f MiBps=%.1f\n", total, t1 - t0,
           (double)total / 1048576.0 / (t1 - t0));
    return 0;
}
