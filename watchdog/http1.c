/* http1.c: HTTP/1.x request parsing for server.c, on top of Debian's llhttp 8.1 (loose build).
 *
 * Two machines read every byte of a request, in step:
 *  - scan_*(): our own framing scanner. It checks the syntax that llhttp 8.1 lets through in
 *    its loose build (bare LF, obs-fold, space before the colon, HTTP/2.0 or RTSP versions, the
 *    two bytes after chunk data that llhttp skips unread, ...), counts the head bytes for 431
 *    and the chunk sizes for 413. It knows where the head and the message end.
 *  - llhttp: method, URL and header syntax, Content-Length and chunk parsing, keep-alive.
 * execute() runs the scanner first over the new bytes, then gives llhttp exactly the bytes the
 * scanner accepted. So the first bad byte decides the error, wherever the input was split.
 * Both must agree on where the head and the message end, or the request is refused.
 *
 * Owns: the llhttp parser, one arena with the head's strings, the head itself.
 * Must not: touch sockets, timers or the loop; keep a pointer into the caller's bytes. */
#include "http1.h"

#include <stdlib.h>
#include <string.h>
#include <llhttp.h>
#include <uv.h>

#define ARENA_MIN_BYTES 1024
#define ARENA_KEEP_BYTES ((size_t)64 * 1024) /* a larger arena is freed between requests */
#define CHUNK_LINE_MAX_BYTES 4096            /* chunk-size line with extensions, as Go's limit */

/* Where the scanner is. Field lines are shared by the header and the trailer sections. */
enum scan_state {
    SCAN_IDLE,    /* before the request line: empty lines are skipped (RFC 9112 2.2) */
    SCAN_IDLE_LF, /* CR of an empty line seen */
    SCAN_METHOD,  /* RFC 9112 3: method SP request-target SP HTTP-version CRLF */
    SCAN_TARGET,
    SCAN_VERSION,
    SCAN_LINE_LF, /* CR at the end of the request line or of a field line seen */
    SCAN_LINE,    /* start of a field line or of the empty line ending the section */
    SCAN_NAME,
    SCAN_VALUE,
    SCAN_END_LF,     /* CR of the empty line ending the section seen */
    SCAN_HEAD_DONE,  /* head complete; llhttp's on_headers_complete sets the framing */
    SCAN_BODY,       /* Content-Length body: `remaining` bytes */
    SCAN_CHUNK_SIZE, /* RFC 9112 7.1: chunk-size [ chunk-ext ] CRLF */
    SCAN_CHUNK_EXT,
    SCAN_CHUNK_LF,
    SCAN_CHUNK_DATA,    /* `remaining` bytes of chunk-data */
    SCAN_CHUNK_DATA_CR, /* chunk-data CRLF */
    SCAN_CHUNK_DATA_LF,
    SCAN_DONE, /* message complete */
};

/* Created by wd_http1_new(), freed by wd_http1_free(). The head and the strings it points to
 * live in `arena` and stay valid until wd_http1_next(). Never keeps the caller's bytes. */
struct wd_http1 {
    llhttp_t ll;
    struct wd_http1_cbs cbs;
    void *arg;
    struct wd_http1_limits limits;
    struct wd_http1_head head;
    char *arena; /* owned: method\0 target\0 (name\0 value\0)*, then path and header array */
    size_t arena_len, arena_cap;
    size_t nheaders;
    /* scanner */
    enum scan_state scan;
    bool is_trailer;        /* the field lines are the trailer section */
    uint64_t section_bytes; /* bytes of the head (or trailer section) so far */
    uint64_t remaining;     /* body or chunk-data bytes still expected */
    uint64_t chunk_size;    /* size of the chunk being announced */
    uint64_t chunked_bytes; /* sum of the chunk sizes announced so far */
    size_t item_bytes;      /* bytes of the current target / version / chunk line */
    char version[8];        /* "HTTP/1.1" */
    int scan_status;        /* error found by the scanner: 400, 413, 431 */
    const char *scan_reason;
    uint64_t body_bytes; /* given to on_body so far */
    /* outcome */
    int error;  /* < 0 once failed: every later execute returns it */
    int status; /* status to answer, 0 when a callback aborted */
    const char *reason;
    bool is_head_done, is_stopped, is_executing, is_next_pending;
};

/* ---- small helpers ---------------------------------------------------------------------- */

/* RFC 9110 5.6.2: tchar. */
static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* RFC 5234 B.1: CTL. */
static bool is_ctl(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static unsigned char ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static bool eq_nocase(const char *a, const char *b)
{
    while (*a != '\0' && ascii_lower((unsigned char)*a) == ascii_lower((unsigned char)*b)) {
        a++;
        b++;
    }
    return *a == '\0' && *b == '\0';
}

static bool starts_nocase(const char *s, const char *prefix)
{
    while (*prefix != '\0' && ascii_lower((unsigned char)*s) == (unsigned char)*prefix) {
        s++;
        prefix++;
    }
    return *prefix == '\0';
}

/* Record the first error; every later execute() returns it. */
static int fail(struct wd_http1 *p, int error, int status, const char *reason)
{
    if (p->error == 0) {
        p->error = error;
        p->status = status;
        p->reason = reason;
    }
    return error;
}

/* ---- arena ------------------------------------------------------------------------------ */

static int arena_reserve(struct wd_http1 *p, size_t extra)
{
    size_t cap = p->arena_cap != 0 ? p->arena_cap : ARENA_MIN_BYTES;
    char *arena;

    if (p->arena_cap - p->arena_len >= extra)
        return 0;
    while (cap - p->arena_len < extra) {
        if (cap > SIZE_MAX / 2)
            return UV_ENOMEM;
        cap *= 2;
    }
    arena = realloc(p->arena, cap);
    if (arena == NULL)
        return UV_ENOMEM;
    p->arena = arena;
    p->arena_cap = cap;
    return 0;
}

static int arena_append(struct wd_http1 *p, const char *at, size_t len)
{
    int rc = arena_reserve(p, len);

    if (rc < 0)
        return rc;
    if (len > 0)
        memcpy(p->arena + p->arena_len, at, len);
    p->arena_len += len;
    return 0;
}

/* ---- scanner: request line and field lines (RFC 9112 2-5) --------------------------------- */

static int scan_fail(struct wd_http1 *p, int status, const char *reason)
{
    p->scan_status = status;
    p->scan_reason = reason;
    return -1;
}

static int scan_version_end(struct wd_http1 *p)
{
    /* RFC 9112 2.3: only HTTP/1.0 and 1.1 are spoken here; llhttp 8.1 also takes 2.0, 0.9
     * (no version at all) and RTSP/1.0. */
    if (p->item_bytes != sizeof(p->version) ||
        (memcmp(p->version, "HTTP/1.1", 8) != 0 && memcmp(p->version, "HTTP/1.0", 8) != 0))
        return scan_fail(p, 400, "unsupported HTTP version");
    p->scan = SCAN_LINE_LF;
    return 0;
}

static int scan_request_line(struct wd_http1 *p, unsigned char c)
{
    switch (p->scan) {
    case SCAN_IDLE:
        if (c == '\r') {
            p->scan = SCAN_IDLE_LF;
            return 0;
        }
        if (!is_tchar(c))
            return scan_fail(p, 400, "invalid request line");
        p->scan = SCAN_METHOD;
        return 0;
    case SCAN_IDLE_LF:
        if (c != '\n')
            return scan_fail(p, 400, "CR without LF");
        p->scan = SCAN_IDLE;
        return 0;
    case SCAN_METHOD:
        if (c == ' ') {
            p->scan = SCAN_TARGET;
            p->item_bytes = 0;
            return 0;
        }
        return is_tchar(c) ? 0 : scan_fail(p, 400, "invalid method");
    case SCAN_TARGET:
        if (c == ' ' && p->item_bytes > 0) {
            p->scan = SCAN_VERSION;
            p->item_bytes = 0;
            return 0;
        }
        if (c == ' ' || is_ctl(c))
            return scan_fail(p, 400, "invalid request-target");
        p->item_bytes++;
        return 0;
    default: /* SCAN_VERSION */
        if (c == '\r')
            return scan_version_end(p);
        if (p->item_bytes == sizeof(p->version))
            return scan_fail(p, 400, "unsupported HTTP version");
        p->version[p->item_bytes++] = (char)c;
        return 0;
    }
}

static int scan_line_start(struct wd_http1 *p, unsigned char c)
{
    if (c == '\r') {
        p->scan = SCAN_END_LF;
        return 0;
    }
    /* RFC 9112 5.2: obs-fold must be refused (400) in a request; RFC 9112 2.2: so must
     * whitespace between the start-line and the first field line. */
    if (c == ' ' || c == '\t')
        return scan_fail(p, 400, "line folding or leading whitespace");
    if (c == ':')
        return scan_fail(p, 400, "empty field name");
    if (!is_tchar(c))
        return scan_fail(p, 400, c == '\n' ? "bare LF" : "invalid field name");
    p->scan = SCAN_NAME;
    return 0;
}

static int scan_field_line(struct wd_http1 *p, unsigned char c)
{
    switch (p->scan) {
    case SCAN_LINE:
        return scan_line_start(p, c);
    case SCAN_NAME:
        if (c == ':') {
            p->scan = SCAN_VALUE;
            return 0;
        }
        /* RFC 9112 5.1: no whitespace is allowed between the field name and the colon. */
        if (c == ' ' || c == '\t')
            return scan_fail(p, 400, "whitespace before colon");
        return is_tchar(c) ? 0 : scan_fail(p, 400, "invalid field name");
    case SCAN_VALUE:
        if (c == '\r') {
            p->scan = SCAN_LINE_LF;
            return 0;
        }
        /* RFC 9110 5.5: field-value is VCHAR, obs-text, SP and HTAB; CR, LF, NUL are errors. */
        if (is_ctl(c) && c != '\t')
            return scan_fail(p, 400, c == '\n' ? "bare LF" : "invalid field value");
        return 0;
    case SCAN_LINE_LF:
        if (c != '\n')
            return scan_fail(p, 400, "CR without LF");
        p->scan = SCAN_LINE;
        return 0;
    default: /* SCAN_END_LF */
        if (c != '\n')
            return scan_fail(p, 400, "CR without LF");
        p->scan = p->is_trailer ? SCAN_DONE : SCAN_HEAD_DONE;
        return 0;
    }
}

/* One byte of the head or of the trailer section. */
static int scan_head_byte(struct wd_http1 *p, unsigned char c)
{
    p->section_bytes++;
    if (p->limits.max_header_bytes != 0 && p->section_bytes > p->limits.max_header_bytes)
        return scan_fail(p, 431, "request header fields too large");
    if (p->scan <= SCAN_VERSION)
        return scan_request_line(p, c);
    return scan_field_line(p, c);
}

/* ---- scanner: chunked body (RFC 9112 7.1) ------------------------------------------------ */

static int scan_chunk_digit(struct wd_http1 *p, int digit)
{
    if (p->chunk_size > (UINT64_MAX >> 4))
        return scan_fail(p, 400, "chunk size overflow");
    p->chunk_size = p->chunk_size * 16 + (uint64_t)digit;
    if (p->chunk_size > UINT64_MAX - p->chunked_bytes)
        return scan_fail(p, 400, "chunk size overflow");
    if (p->limits.max_body_bytes != 0 &&
        p->chunked_bytes + p->chunk_size > p->limits.max_body_bytes)
        return scan_fail(p, 413, "request body too large");
    return 0;
}

static int scan_chunk_size(struct wd_http1 *p, unsigned char c)
{
    int digit = hex_value(c);

    if (digit >= 0)
        return scan_chunk_digit(p, digit);
    if (p->item_bytes == 1) /* this byte is the first of the line */
        return scan_fail(p, 400, "invalid chunk size");
    if (c == '\r') {
        p->scan = SCAN_CHUNK_LF;
        return 0;
    }
    /* RFC 9112 7.1.1: chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] );
     * llhttp checks its grammar, we only bound the line and refuse controls. */
    if (c != ';' && c != ' ' && c != '\t')
        return scan_fail(p, 400, "invalid chunk size");
    p->scan = SCAN_CHUNK_EXT;
    return 0;
}

static int scan_chunk_lf(struct wd_http1 *p, unsigned char c)
{
    if (c != '\n')
        return scan_fail(p, 400, "CR without LF");
    if (p->chunk_size == 0) { /* last-chunk: the trailer section follows */
        p->scan = SCAN_LINE;
        p->is_trailer = true;
        p->section_bytes = 0;
        return 0;
    }
    p->chunked_bytes += p->chunk_size;
    p->remaining = p->chunk_size;
    p->scan = SCAN_CHUNK_DATA;
    return 0;
}

static int scan_chunk_byte(struct wd_http1 *p, unsigned char c)
{
    if (p->scan <= SCAN_CHUNK_LF && ++p->item_bytes > CHUNK_LINE_MAX_BYTES)
        return scan_fail(p, 400, "chunk line too long");
    switch (p->scan) {
    case SCAN_CHUNK_SIZE:
        return scan_chunk_size(p, c);
    case SCAN_CHUNK_EXT:
        if (c == '\r') {
            p->scan = SCAN_CHUNK_LF;
            return 0;
        }
        return (is_ctl(c) && c != '\t') ? scan_fail(p, 400, "invalid chunk extension") : 0;
    case SCAN_CHUNK_LF:
        return scan_chunk_lf(p, c);
    case SCAN_CHUNK_DATA_CR:
        /* RFC 9112 7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF. llhttp 8.1
         * (loose build) skips these two bytes without looking at them. */
        if (c != '\r')
            return scan_fail(p, 400, "missing CRLF after chunk data");
        p->scan = SCAN_CHUNK_DATA_LF;
        return 0;
    default: /* SCAN_CHUNK_DATA_LF */
        if (c != '\n')
            return scan_fail(p, 400, "missing CRLF after chunk data");
        p->scan = SCAN_CHUNK_SIZE;
        p->chunk_size = 0;
        p->item_bytes = 0;
        return 0;
    }
}

/* Scan data up to the end of the head, the end of the message, or the first bad byte.
 * Returns the number of good bytes; a bad byte sets scan_status. */
static size_t scan(struct wd_http1 *p, const char *data, size_t len)
{
    size_t i = 0;

    while (i < len && p->scan != SCAN_HEAD_DONE && p->scan != SCAN_DONE) {
        int rc;

        if (p->scan == SCAN_BODY || p->scan == SCAN_CHUNK_DATA) {
            size_t n = p->remaining < len - i ? (size_t)p->remaining : len - i;

            i += n;
            p->remaining -= n;
            if (p->remaining == 0)
                p->scan = p->scan == SCAN_BODY ? SCAN_DONE : SCAN_CHUNK_DATA_CR;
            continue;
        }
        if (p->scan < SCAN_HEAD_DONE)
            rc = scan_head_byte(p, (unsigned char)data[i]);
        else
            rc = scan_chunk_byte(p, (unsigned char)data[i]);
        if (rc < 0)
            break;
        i++;
    }
    return i;
}

/* ---- the head, built at headers-complete ---------------------------------------------------- */

/* Request-target forms (RFC 9112 3.2). Sets the path range [*start, *end) inside target and
 * the query offset (or 0 when there is none). */
static int split_target(struct wd_http1 *p, const char *target, size_t *start, size_t *end,
                        size_t *query)
{
    const char *method = p->arena;
    size_t len = strlen(target), q = strcspn(target, "?");

    *start = 0;
    *query = q < len ? q + 1 : 0;
    *end = q;
    if (p->ll.method == HTTP_CONNECT)
        return fail(p, UV_EPROTO, 400, "CONNECT is not supported"); /* we are not a proxy */
    if (target[0] == '/')                                           /* origin-form */
        return 0;
    if (strcmp(target, "*") == 0 && strcmp(method, "OPTIONS") == 0) /* asterisk-form */
        return 0;
    /* absolute-form: the path is what follows the authority ("/" when empty, RFC 9112 3.2.1) */
    if (starts_nocase(target, "http://"))
        *start = 7;
    else if (starts_nocase(target, "https://"))
        *start = 8;
    else
        return fail(p, UV_EPROTO, 400, "invalid request-target");
    if (strcspn(target + *start, "/?") == 0)
        return fail(p, UV_EPROTO, 400, "invalid request-target");
    *start += strcspn(target + *start, "/?");
    return 0;
}

static void trim_value(struct wd_header *h, char *value, size_t len)
{
    while (len > 0 && (*value == ' ' || *value == '\t')) {
        value++;
        len--;
    }
    while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t'))
        value[--len] = '\0';
    h->value = value;
}

/* Point each header at its name and trimmed value: name\0 value\0 pairs start at `off`. */
static void link_headers(struct wd_http1 *p, struct wd_header *headers, size_t off)
{
    for (size_t i = 0; i < p->nheaders; i++) {
        size_t len;

        headers[i].name = p->arena + off;
        off += strlen(p->arena + off) + 1;
        len = strlen(p->arena + off);
        trim_value(&headers[i], p->arena + off, len); /* may shorten it: step over first */
        off += len + 1;
    }
}

/* Lay out the path copy and the header array after the strings, then point into the arena
 * (which cannot move any more until wd_http1_next()). */
static int build_head(struct wd_http1 *p)
{
    struct wd_http1_head *h = &p->head;
    size_t target = strlen(p->arena) + 1, start, end, query, path, array;
    struct wd_header *headers;
    int rc;

    rc = split_target(p, p->arena + target, &start, &end, &query);
    if (rc < 0)
        return rc;
    path = p->arena_len;
    array = path + (end - start) + 1;
    array += (_Alignof(struct wd_header) - array % _Alignof(struct wd_header)) %
             _Alignof(struct wd_header);
    if (p->nheaders > (SIZE_MAX - array) / sizeof(*headers))
        return fail(p, UV_ENOMEM, 500, "out of memory");
    rc = arena_reserve(p, array - p->arena_len + p->nheaders * sizeof(*headers));
    if (rc < 0)
        return fail(p, rc, 500, "out of memory");
    memcpy(p->arena + path, p->arena + target + start, end - start);
    p->arena[path + end - start] = '\0';
    p->arena_len = array + p->nheaders * sizeof(*headers);
    headers = (struct wd_header *)(void *)(p->arena + array);
    link_headers(p, headers, target + strlen(p->arena + target) + 1);

    h->method = p->arena;
    h->target = p->arena + target;
    h->path = end > start ? p->arena + path : "/";
    h->query = query != 0 ? p->arena + target + query : "";
    h->headers = headers;
    h->nheaders = p->nheaders;
    h->host = "";
    h->http_major = p->ll.http_major;
    h->http_minor = p->ll.http_minor;
    return 0;
}

/* ---- framing and header checks (RFC 9112 6) ------------------------------------------------ */

struct framing {
    int n_length, n_coding, n_host;
    const char *length, *coding;
};

static int parse_content_length(struct wd_http1 *p, const char *s, int64_t *out)
{
    int64_t v = 0;

    /* RFC 9110 8.6: Content-Length = 1*DIGIT. A list ("5, 5") is refused, not merged. */
    if (*s == '\0')
        return fail(p, UV_EPROTO, 400, "invalid Content-Length");
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return fail(p, UV_EPROTO, 400, "invalid Content-Length");
        if (v > (INT64_MAX - (*s - '0')) / 10)
            return fail(p, UV_EPROTO, 400, "invalid Content-Length");
        v = v * 10 + (*s - '0');
    }
    *out = v;
    return 0;
}

static void collect_fields(struct wd_http1 *p, struct framing *f)
{
    struct wd_http1_head *h = &p->head;
    size_t i;

    memset(f, 0, sizeof(*f));
    for (i = 0; i < h->nheaders; i++) {
        const struct wd_header *hd = &h->headers[i];

        if (eq_nocase(hd->name, "content-length")) {
            f->n_length++;
            f->length = hd->value;
        } else if (eq_nocase(hd->name, "transfer-encoding")) {
            f->n_coding++;
            f->coding = hd->value;
        } else if (eq_nocase(hd->name, "host")) {
            f->n_host++;
            h->host = hd->value;
        } else if (eq_nocase(hd->name, "expect")) {
            /* RFC 9110 10.1.1: a server MUST ignore 100-continue in an HTTP/1.0 request. */
            h->expect_continue = eq_nocase(hd->value, "100-continue") && h->http_minor == 1;
        }
    }
}

/* RFC 9112 6.1 and 6.3: exactly one framing, so that no hop can read another one. */
static int check_framing(struct wd_http1 *p, const struct framing *f)
{
    struct wd_http1_head *h = &p->head;

    if (f->n_coding > 0) {
        /* RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 means faulty framing. */
        if (h->http_minor == 0)
            return fail(p, UV_EPROTO, 400, "Transfer-Encoding in HTTP/1.0");
        if (f->n_length > 0)
            return fail(p, UV_EPROTO, 400, "both Content-Length and Transfer-Encoding");
        /* We decode no coding but chunked, and chunked must be the only one (RFC 9112 6.1). */
        if (f->n_coding > 1 || !eq_nocase(f->coding, "chunked"))
            return fail(p, UV_EPROTO, 400, "unsupported Transfer-Encoding");
        if ((p->ll.flags & F_CHUNKED) == 0)
            return fail(p, UV_EPROTO, 400, "ambiguous message framing");
        h->content_length = -1;
        return 0;
    }
    if (f->n_length > 1)
        return fail(p, UV_EPROTO, 400, "more than one Content-Length");
    h->content_length = 0;
    if (f->n_length == 1 && parse_content_length(p, f->length, &h->content_length) < 0)
        return p->error;
    if ((p->ll.flags & (F_CHUNKED | F_TRANSFER_ENCODING)) != 0 ||
        p->ll.content_length != (uint64_t)h->content_length)
        return fail(p, UV_EPROTO, 400, "ambiguous message framing");
    return 0;
}

static int check_head(struct wd_http1 *p)
{
    struct wd_http1_head *h = &p->head;
    struct framing f;
    int rc;

    collect_fields(p, &f);
    /* RFC 9112 3.2: a 1.1 request without Host, or any request with several, gets 400. */
    if (f.n_host > 1)
        return fail(p, UV_EPROTO, 400, "more than one Host");
    if (f.n_host == 0 && h->http_minor == 1)
        return fail(p, UV_EPROTO, 400, "missing Host");
    rc = check_framing(p, &f);
    if (rc < 0)
        return rc;
    if (p->limits.max_body_bytes != 0 && h->content_length > 0 &&
        (uint64_t)h->content_length > p->limits.max_body_bytes)
        return fail(p, UV_EPROTO, 413, "request body too large");
    h->keep_alive = llhttp_should_keep_alive(&p->ll) != 0;
    h->is_upgrade = p->ll.upgrade != 0;
    return 0;
}

/* ---- llhttp callbacks ------------------------------------------------------------------------ */

static int append_span(llhttp_t *ll, const char *at, size_t len)
{
    struct wd_http1 *p = ll->data;
    int rc;

    if (p->is_head_done) /* trailer fields: checked by the scanner, then dropped */
        return 0;
    rc = arena_append(p, at, len);
    return rc < 0 ? fail(p, rc, 500, "out of memory") : 0;
}

static int end_string(llhttp_t *ll)
{
    return append_span(ll, "", 1);
}

static int end_value(llhttp_t *ll)
{
    struct wd_http1 *p = ll->data;

    if (!p->is_head_done)
        p->nheaders++;
    return end_string(ll);
}

static int on_headers_complete(llhttp_t *ll)
{
    struct wd_http1 *p = ll->data;

    if (p->scan != SCAN_HEAD_DONE)
        return fail(p, UV_EPROTO, 400, "ambiguous message framing");
    if (build_head(p) < 0 || check_head(p) < 0)
        return -1;
    p->is_head_done = true;
    if (p->head.content_length < 0) {
        p->scan = SCAN_CHUNK_SIZE;
        p->chunk_size = 0;
        p->item_bytes = 0;
    } else {
        p->remaining = (uint64_t)p->head.content_length;
        p->scan = p->remaining > 0 ? SCAN_BODY : SCAN_DONE;
    }
    if (p->cbs.on_head != NULL && p->cbs.on_head(p->arg, &p->head) < 0)
        return fail(p, UV_ECANCELED, 0, "aborted by on_head");
    /* 0 even for an Upgrade: llhttp then reads the body it declares like any other. */
    return 0;
}

static int on_body(llhttp_t *ll, const char *at, size_t len)
{
    struct wd_http1 *p = ll->data;

    p->body_bytes += len;
    if (p->limits.max_body_bytes != 0 && p->body_bytes > p->limits.max_body_bytes)
        return fail(p, UV_EPROTO, 413, "request body too large");
    if (p->cbs.on_body != NULL && p->cbs.on_body(p->arg, at, len) < 0)
        return fail(p, UV_ECANCELED, 0, "aborted by on_body");
    return 0;
}

static int on_message_complete(llhttp_t *ll)
{
    struct wd_http1 *p = ll->data;

    if (p->scan != SCAN_DONE)
        return fail(p, UV_EPROTO, 400, "ambiguous message framing");
    p->is_stopped = true;
    if (p->cbs.on_end != NULL && p->cbs.on_end(p->arg) < 0)
        return fail(p, UV_ECANCELED, 0, "aborted by on_end");
    return HPE_PAUSED; /* stop right after this message: pipelined bytes stay with the caller */
}

static const llhttp_settings_t settings = {
    /* No on_method: the method is taken by take_method(), llhttp only sees a stand-in. */
    .on_url = append_span,
    .on_url_complete = end_string,
    .on_header_field = append_span,
    .on_header_field_complete = end_string,
    .on_header_value = append_span,
    .on_header_value_complete = end_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- public API ------------------------------------------------------------------------------ */

int wd_http1_new(struct wd_http1 **out, const struct wd_http1_cbs *cbs, void *arg,
                 const struct wd_http1_limits *limits)
{
    struct wd_http1 *p = calloc(1, sizeof(*p));

    if (p == NULL)
        return UV_ENOMEM;
    llhttp_init(&p->ll, HTTP_REQUEST, &settings); /* no lenient flag is ever set */
    p->ll.data = p;
    if (cbs != NULL)
        p->cbs = *cbs;
    p->arg = arg;
    if (limits != NULL)
        p->limits = *limits;
    *out = p;
    return 0;
}

void wd_http1_free(struct wd_http1 *p)
{
    if (p == NULL)
        return;
    free(p->arena);
    free(p);
}

/* Give llhttp the n bytes the scanner accepted. Returns 0, WD_HTTP1_STOP or < 0. */
static int feed(struct wd_http1 *p, const char *data, size_t n, size_t *used)
{
    llhttp_errno_t err;

    *used = 0;
    if (n == 0)
        return 0;
    err = llhttp_execute(&p->ll, data, n);
    /* After an Upgrade request llhttp pauses once the message is complete; we stopped there
     * already (on_message_complete) and next() resets llhttp, so this is only a safety net:
     * the request is an ordinary one, and whatever follows is parsed as HTTP again. */
    while (err == HPE_PAUSED_UPGRADE && !p->is_stopped) {
        const char *pos = llhttp_get_error_pos(&p->ll);

        llhttp_resume_after_upgrade(&p->ll);
        err = llhttp_execute(&p->ll, pos, (size_t)(data + n - pos));
    }
    if (err == HPE_OK) {
        *used = n;
        if (p->scan == SCAN_HEAD_DONE || p->scan == SCAN_DONE) /* llhttp saw no end there */
            return fail(p, UV_EPROTO, 400, "ambiguous message framing");
        return 0;
    }
    if (err == HPE_PAUSED && p->is_stopped) {
        *used = (size_t)(llhttp_get_error_pos(&p->ll) - data);
        if (*used != n)
            return fail(p, UV_EPROTO, 400, "ambiguous message framing");
        return WD_HTTP1_STOP;
    }
    if (p->error != 0) /* one of our callbacks failed */
        return p->error;
    return fail(p, UV_EPROTO, 400, llhttp_get_error_reason(&p->ll));
}

/* RFC 9110 9.1: a method is any token, and Go's server passes unknown ones (`FOO`) to the
 * handler; llhttp 8.1 only knows a fixed list. So the request line's method is scanned and
 * stored here, and llhttp is fed the stand-in "GET " instead: for a request, llhttp's framing
 * never depends on the method (CONNECT, the one exception, is refused by split_target).
 * Returns the bytes used; stops once the method and its SP are done, or on a bad byte. */
static size_t take_method(struct wd_http1 *p, const char *data, size_t len)
{
    size_t i = 0;

    while (i < len && p->scan <= SCAN_METHOD) {
        unsigned char c = (unsigned char)data[i];
        enum scan_state before = p->scan;

        if (scan_head_byte(p, c) < 0)
            return i;
        i++;
        if (p->scan == SCAN_METHOD && arena_append(p, (const char *)&c, 1) < 0) {
            fail(p, UV_ENOMEM, 500, "out of memory");
            return i;
        }
        if (before == SCAN_METHOD && p->scan == SCAN_TARGET) {
            if (arena_append(p, "", 1) < 0) {
                fail(p, UV_ENOMEM, 500, "out of memory");
                return i;
            }
            if (llhttp_execute(&p->ll, "GET ", 4) != HPE_OK)
                fail(p, UV_EPROTO, 400, llhttp_get_error_reason(&p->ll));
            return i;
        }
    }
    return i;
}

int wd_http1_execute(struct wd_http1 *p, const char *data, size_t len, size_t *consumed)
{
    size_t off = 0;
    int rc = 0;

    *consumed = 0;
    if (p->error != 0)
        return p->error;
    if (p->is_stopped)
        return WD_HTTP1_STOP;
    p->is_executing = true;
    while (off < len && rc == 0) {
        if (p->scan <= SCAN_METHOD) {
            off += take_method(p, data + off, len - off);
            if (p->error != 0)
                rc = p->error;
            else if (p->scan_status != 0)
                rc = fail(p, UV_EPROTO, p->scan_status, p->scan_reason);
            continue;
        }
        size_t n = scan(p, data + off, len - off), used;

        rc = feed(p, data + off, n, &used);
        off += used;
        if (rc == 0 && p->scan_status != 0)
            rc = fail(p, UV_EPROTO, p->scan_status, p->scan_reason);
        else if (rc == 0 && used == 0) /* cannot happen: no progress would loop forever */
            rc = fail(p, UV_EPROTO, 400, "ambiguous message framing");
    }
    p->is_executing = false;
    *consumed = off;
    if (p->is_next_pending)
        wd_http1_next(p);
    return rc;
}

void wd_http1_next(struct wd_http1 *p)
{
    if (p->is_executing) { /* called from on_end: done when execute returns */
        p->is_next_pending = true;
        return;
    }
    llhttp_reset(&p->ll);
    if (p->arena_cap > ARENA_KEEP_BYTES) {
        free(p->arena);
        p->arena = NULL;
        p->arena_cap = 0;
    }
    p->arena_len = 0;
    p->nheaders = 0;
    memset(&p->head, 0, sizeof(p->head));
    p->scan = SCAN_IDLE;
    p->is_trailer = false;
    p->section_bytes = 0;
    p->chunked_bytes = 0;
    p->body_bytes = 0;
    p->is_head_done = false;
    p->is_stopped = false;
    p->is_next_pending = false;
}

int wd_http1_finish(struct wd_http1 *p)
{
    if (p->error != 0)
        return p->error;
    if (p->is_stopped || p->scan == SCAN_IDLE)
        return 0;
    if (!p->is_head_done)
        return fail(p, UV_EPROTO, 400, "connection closed in the request head");
    return fail(p, UV_EPROTO, 0, "connection closed in the request body");
}

bool wd_http1_is_idle(const struct wd_http1 *p)
{
    return p->error == 0 && !p->is_stopped && p->scan == SCAN_IDLE;
}

int wd_http1_error(const struct wd_http1 *p, const char **reason)
{
    if (reason != NULL)
        *reason = p->reason != NULL ? p->reason : "";
    return p->status;
}
