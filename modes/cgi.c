/* cgi.c: the pure helpers of the fork modes: the Http_* environment of a request (reference
 * 1.8 plus the CONFIG.md fix against header injection) and the parser of a CGI response head
 * at the start of a handler's stdout. No I/O, no logging, no globals: callers own every buffer.
 * The request head is borrowed for the duration of a call only. */
#include "cgi.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

/* ---------------------------------------------------------------- environment */

/* Names the watchdog sets itself. A header mapping to one of them is never used, even when the
 * watchdog leaves the variable unset (fixed: `Query: evil=1` used to become Http_Query). Host and
 * Transfer-Encoding never reach Go's header map, and their names are in this list, so one check
 * covers both. The last name is reserved in the classic flavor only: of-watchdog passes the
 * client's Content-Length header through as Http_Content_Length. */
static const struct {
    const char *name;
    size_t len;
} reserved[] = {
    {"Http_Method", 11},
    {"Http_Query", 10},
    {"Http_Path", 9},
    {"Http_Transfer_Encoding", 22},
    {"Http_Host", 9},
    {"Http_ContentLength", 18},
    {"Http_Content_Length", 19}, /* classic only: keep last */
};

#define HTTP_PREFIX "Http_"
#define HTTP_PREFIX_LEN 5
#define MAX_EXPLICIT 7

/* One explicit entry: NAME=value, or NAME=<decoded value> when is_path. */
struct explicit_entry {
    const char *name;
    const char *value;
    bool is_path;
};

/* Pass 2 state. Names are kept unique with an open-addressing table of indexes into env (+1,
 * 0 = empty slot) that lives in the same allocation; a clash keeps the first position and
 * stores the newer string there, as Go's exec de-duplication did (last value wins). */
struct env_builder {
    char **env;
    size_t n;
    uint32_t *table;
    size_t mask;
    char *cur;             /* where the next string is written */
    const char *new_start; /* strings at or after this address were not copied from base */
};

static const char *or_empty(const char *s)
{
    return s != NULL ? s : "";
}

static char canon_char(char c, bool is_upper)
{
    if (is_upper && c >= 'a' && c <= 'z')
        return (char)(c - 'a' + 'A');
    if (!is_upper && c >= 'A' && c <= 'Z')
        return (char)(c - 'A' + 'a');
    return c;
}

/* Go textproto.CanonicalMIMEHeaderKey. Go returns the name unchanged when it holds a byte that
 * is not a token char; the HTTP parser rejects such names before we get here. */
void wd_cgi_canonical_name(char *out, const char *name)
{
    bool is_upper = true;

    for (; *name != '\0'; name++) {
        *out++ = canon_char(*name, is_upper);
        is_upper = *name == '-';
    }
    *out = '\0';
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Like Go's unescape(s, encodePath): '+' stays '+', a '%' needs two hex digits. %00 is refused
 * too: it would cut the environment string short. On error out holds garbage. Returns
 * UV_ENOBUFS if outlen < strlen(path) + 1 could not hold the result. */
int wd_cgi_decode_path(char *out, size_t outlen, const char *path)
{
    size_t o = 0;

    for (const char *p = path; *p != '\0'; p++) {
        char c = *p;
        if (c == '%') {
            int hi = hex_value(p[1]);
            if (hi < 0)
                return UV_EINVAL;
            int lo = hex_value(p[2]);
            if (lo < 0 || (hi | lo) == 0)
                return UV_EINVAL;
            c = (char)(hi << 4 | lo);
            p += 2;
        }
        if (o + 1 >= outlen)
            return UV_ENOBUFS;
        out[o++] = c;
    }
    if (outlen == 0)
        return UV_ENOBUFS;
    out[o] = '\0';
    return 0;
}

static uint32_t name_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

/* Does the entry `old` have the name s[0..n)? strncmp stops at old's end, so a shorter old
 * string is never over-read. */
static bool name_eq(const char *old, const char *s, size_t n)
{
    return strncmp(old, s, n) == 0 && (old[n] == '=' || old[n] == '\0');
}

/* Add the string s (already written at b->cur, name of length n) to the result. A name already
 * present is replaced in place (the last value wins), except that a header never replaces an
 * earlier header: only the first value of a repeated header is used. Returns true if s was kept
 * (the caller then moves b->cur past it), false if it was dropped (its bytes get overwritten). */
static bool env_put(struct env_builder *b, char *s, size_t n, bool is_header)
{
    size_t i = name_hash(s, n) & b->mask;

    for (;;) {
        uint32_t slot = b->table[i];
        if (slot == 0) {
            b->env[b->n] = s;
            b->n++;
            b->table[i] = (uint32_t)b->n;
            return true;
        }
        char *old = b->env[slot - 1];
        if (name_eq(old, s, n)) {
            if (is_header && old >= b->new_start)
                return false;
            b->env[slot - 1] = s;
            return true;
        }
        i = (i + 1) & b->mask;
    }
}

static bool is_reserved(const char *s, size_t n, size_t nreserved)
{
    for (size_t i = 0; i < nreserved; i++) {
        if (reserved[i].len == n && memcmp(reserved[i].name, s, n) == 0)
            return true;
    }
    return false;
}

/* Copy the string src with its NUL to dst; returns its length. */
static size_t copy_str(char *dst, const char *src)
{
    size_t len = strlen(src);

    memcpy(dst, src, len + 1);
    return len;
}

/* Write Http_<Canonical_Name>=<value> at dst; returns the length of the name and sets *len to
 * the length of the whole string. */
static size_t write_header_entry(char *dst, const struct wd_header *hd, size_t *len)
{
    const char *name = or_empty(hd->name);
    char *p = dst;
    bool is_upper = true;

    memcpy(p, HTTP_PREFIX, HTTP_PREFIX_LEN + 1); /* the NUL is overwritten below */
    p += HTTP_PREFIX_LEN;
    for (; *name != '\0'; name++) {
        char c = canon_char(*name, is_upper);
        is_upper = *name == '-';
        *p++ = (char)(c == '-' ? '_' : c); /* the env name: '-' becomes '_' */
    }
    size_t n = (size_t)(p - dst);
    *p++ = '=';
    *len = n + 1 + copy_str(p, or_empty(hd->value));
    return n;
}

/* Add the string of length len and name length n just written at b->cur. */
static void put_written(struct env_builder *b, size_t n, size_t len, bool is_header)
{
    if (env_put(b, b->cur, n, is_header))
        b->cur += len + 1;
}

int wd_cgi_build_env(char ***out, char *const *base, const struct wd_http1_head *head,
                     enum wd_cgi_flavor flavor, char *const *extra)
{
    struct explicit_entry ex[MAX_EXPLICIT];
    char content_length[24];
    size_t nex = 0;
    size_t nbase = 0, nextra = 0, bytes = 0;
    size_t nreserved = WD_ARRAY_LEN(reserved) - (flavor == WD_CGI_CW ? 0 : 1);
    const char *path = or_empty(head->path);

    *out = NULL;

    /* Pass 1: an upper bound of entries and string bytes, and the explicit entries. */
    for (; base != NULL && base[nbase] != NULL; nbase++)
        bytes += strlen(base[nbase]) + 1;
    for (size_t i = 0; i < head->nheaders; i++) {
        bytes += HTTP_PREFIX_LEN + strlen(or_empty(head->headers[i].name)) + 1 +
                 strlen(or_empty(head->headers[i].value)) + 1;
    }
    ex[nex++] = (struct explicit_entry){"Http_Method", or_empty(head->method), false};
    snprintf(content_length, sizeof(content_length), "%" PRId64, head->content_length);
    if (flavor == WD_CGI_CW) {
        ex[nex++] = (struct explicit_entry){"Http_ContentLength", content_length, false};
        ex[nex++] = (struct explicit_entry){"Http_Content_Length", content_length, false};
    }
    if (head->content_length == -1)
        ex[nex++] = (struct explicit_entry){"Http_Transfer_Encoding", "chunked", false};
    if (head->query != NULL && head->query[0] != '\0')
        ex[nex++] = (struct explicit_entry){"Http_Query", head->query, false};
    if (path[0] != '\0')
        ex[nex++] = (struct explicit_entry){"Http_Path", path, true};
    if (flavor == WD_CGI_CW && head->host != NULL && head->host[0] != '\0')
        ex[nex++] = (struct explicit_entry){"Http_Host", head->host, false};
    for (size_t i = 0; i < nex; i++)
        bytes += strlen(ex[i].name) + 1 + strlen(ex[i].value) + 1;
    for (; extra != NULL && extra[nextra] != NULL; nextra++)
        bytes += strlen(extra[nextra]) + 1;

    size_t cap = nbase + head->nheaders + nex + nextra;
    if (cap >= UINT32_MAX / 4)
        return UV_ENOMEM;
    size_t tsize = 16;
    while (tsize < 2 * cap)
        tsize *= 2;
    size_t ptr_bytes = (cap + 1) * sizeof(char *);
    size_t table_bytes = tsize * sizeof(uint32_t);
    char *mem = malloc(ptr_bytes + table_bytes + bytes);
    if (mem == NULL)
        return UV_ENOMEM;

    /* Pass 2: write. Layout: pointer array, hash table (scratch), strings. */
    struct env_builder b = {
        .env = (char **)(void *)mem,
        .n = 0,
        .table = (uint32_t *)(void *)(mem + ptr_bytes),
        .mask = tsize - 1,
        .cur = mem + ptr_bytes + table_bytes,
        .new_start = mem + ptr_bytes + table_bytes + bytes, /* nothing is new yet */
    };
    memset(b.table, 0, table_bytes);

    for (size_t i = 0; i < nbase; i++) {
        char *s = b.cur;
        b.cur += copy_str(s, base[i]) + 1;
        env_put(&b, s, strcspn(s, "="), false); /* a base duplicate: the last value wins */
    }
    b.new_start = b.cur;

    for (size_t i = 0; i < head->nheaders; i++) {
        size_t len;
        size_t n = write_header_entry(b.cur, &head->headers[i], &len);
        if (!is_reserved(b.cur, n, nreserved))
            put_written(&b, n, len, true);
    }

    for (size_t i = 0; i < nex; i++) {
        size_t n = strlen(ex[i].name);
        char *v = b.cur + n + 1;
        memcpy(b.cur, ex[i].name, n);
        b.cur[n] = '=';
        size_t vlen = strlen(ex[i].value);
        if (!ex[i].is_path || wd_cgi_decode_path(v, vlen + 1, ex[i].value) < 0)
            memcpy(v, ex[i].value, vlen + 1); /* a bad escape: pass the raw path */
        else
            vlen = strlen(v);
        put_written(&b, n, n + 1 + vlen, false);
    }

    for (size_t i = 0; i < nextra; i++) {
        size_t len = copy_str(b.cur, extra[i]);
        put_written(&b, strcspn(b.cur, "="), len, false);
    }

    b.env[b.n] = NULL;
    *out = b.env;
    return 0;
}

/* ---------------------------------------------------------------- CGI response head */

/* RFC 9110 5.6.2: tchar. */
static bool is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* RFC 9110 5.5: field-value bytes are VCHAR, obs-text, SP and HTAB; no CR, LF or NUL. */
static bool is_value_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static bool name_is(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

/* Length of the head including its blank line, or 0 if the blank line is not there yet. */
static size_t find_head_end(const char *buf, size_t len)
{
    size_t pos = 0;
    const char *nl;

    while (pos < len && (nl = memchr(buf + pos, '\n', len - pos)) != NULL) {
        size_t linelen = (size_t)(nl - (buf + pos));
        if (linelen == 0 || (linelen == 1 && buf[pos] == '\r'))
            return (size_t)(nl - buf) + 1;
        pos = (size_t)(nl - buf) + 1;
    }
    return 0;
}

/* `404` or `404 Reason phrase`; RFC 3875 6.3.3. */
static int parse_status(const char *v, size_t n)
{
    if (n < 3 || (n > 3 && v[3] != ' ' && v[3] != '\t'))
        return -1;
    for (size_t i = 0; i < 3; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
    }
    int status = (v[0] - '0') * 100 + (v[1] - '0') * 10 + (v[2] - '0');
    /* A 1xx is not a final answer (it would leave the client without a response). */
    return status >= 200 ? status : -1;
}

/* Parse the lines of a complete head of `end` bytes (blank line included) into h. */
static int parse_lines(struct wd_cgi_head *h, const char *buf, size_t end)
{
    char *store = h->storage;
    bool has_status = false, has_location = false;
    size_t pos = 0;

    for (;;) {
        const char *line = buf + pos;
        const char *nl = memchr(line, '\n', end - pos);
        size_t linelen = (size_t)(nl - line);
        pos += linelen + 1;
        if (linelen > 0 && line[linelen - 1] == '\r')
            linelen--;
        if (linelen == 0)
            break;

        const char *colon = memchr(line, ':', linelen);
        if (colon == NULL || colon == line)
            return UV_EINVAL;
        size_t namelen = (size_t)(colon - line);
        for (size_t i = 0; i < namelen; i++) {
            if (!is_tchar((unsigned char)line[i]))
                return UV_EINVAL;
        }
        const char *v = colon + 1, *vend = line + linelen;
        while (v < vend && (*v == ' ' || *v == '\t'))
            v++;
        while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t'))
            vend--;
        for (const char *p = v; p < vend; p++) {
            if (!is_value_char((unsigned char)*p))
                return UV_EINVAL;
        }
        size_t vlen = (size_t)(vend - v);

        if (name_is(line, namelen, "Status")) {
            int status = parse_status(v, vlen);
            if (status < 0)
                return UV_EINVAL;
            h->status = status;
            has_status = true;
            continue;
        }
        /* Framing is ours: the server sets these from what it actually sends. */
        if (name_is(line, namelen, "Content-Length") ||
            name_is(line, namelen, "Transfer-Encoding") || name_is(line, namelen, "Connection"))
            continue;
        if (h->nheaders == WD_ARRAY_LEN(h->headers))
            return UV_EINVAL;
        if (name_is(line, namelen, "Location"))
            has_location = true;

        /* name + NUL + value + NUL fits in the line and its '\n': storage of `end` suffices. */
        struct wd_header *hd = &h->headers[h->nheaders++];
        memcpy(store, line, namelen);
        store[namelen] = '\0';
        hd->name = store;
        store += namelen + 1;
        memcpy(store, v, vlen);
        store[vlen] = '\0';
        hd->value = store;
        store += vlen + 1;
    }
    if (has_location && !has_status)
        h->status = 302; /* RFC 3875 6.2.3: client redirect */
    return 0;
}

int wd_cgi_parse_head(struct wd_cgi_head *h, const char *buf, size_t len, size_t max_bytes)
{
    h->status = 200;
    h->nheaders = 0;
    h->storage = NULL;

    size_t end = find_head_end(buf, len);
    if (end == 0)
        return max_bytes != 0 && len > max_bytes ? UV_EINVAL : 0;
    if ((max_bytes != 0 && end > max_bytes) || end > INT32_MAX)
        return UV_EINVAL;
    if (end <= 2)
        return (int)end; /* the output starts with a blank line: an empty head */

    h->storage = malloc(end);
    if (h->storage == NULL)
        return UV_ENOMEM;
    int rc = parse_lines(h, buf, end);
    if (rc < 0) {
        wd_cgi_head_free(h);
        h->status = 200;
        return rc;
    }
    if (h->nheaders == 0) {
        free(h->storage); /* only Status and dropped lines: keep no empty allocation */
        h->storage = NULL;
    }
    return (int)end;
}

void wd_cgi_head_free(struct wd_cgi_head *h)
{
    if (h == NULL)
        return;
    free(h->storage);
    h->storage = NULL;
    h->nheaders = 0;
}
