/* cgi.h: pure helpers of the fork modes: the Http_* environment of a request, and parsing of
 * CGI response headers at the start of a handler's stdout (cgi_response=true). No I/O. */
#ifndef WD_CGI_H
#define WD_CGI_H

#include "wd.h"
#include "http1.h"

enum wd_cgi_flavor {
    WD_CGI_OW =
        0, /* of-watchdog: headers, Http_Method, Http_Transfer_Encoding, Http_Query, Http_Path */
    WD_CGI_CW, /* classic: the above plus Http_ContentLength, Http_Content_Length, Http_Host */
};

/* Build the handler's environment: a copy of base (the watchdog's own environment) where
 *  1. each request header adds Http_<Canonical_Name>=<value> (Go canonical form, '-' -> '_';
 *     only the first value of a repeated header; Host and Transfer-Encoding are not headers
 *     here, as in Go), overriding an inherited variable of the same name;
 *  2. then the explicit entries override: Http_Method, (CW) Http_ContentLength and
 *     Http_Content_Length, Http_Transfer_Encoding (when chunked), Http_Query (when non-empty),
 *     Http_Path (percent-decoded, when non-empty), (CW) Http_Host (when non-empty).
 * Fixed (CONFIG.md): a header whose env name equals one of the explicit names above is never
 * used, even when the explicit entry is absent (no `Query:` header injection).
 * `extra` (may be NULL) is a NULL-terminated list of NAME=value entries appended last (they
 * win over everything). The result is ONE allocation (pointer array + strings) freed with
 * free(); names are unique. Returns 0 or UV_ENOMEM. */
int wd_cgi_build_env(char ***out, char *const *base, const struct wd_http1_head *head,
                     enum wd_cgi_flavor flavor, char *const *extra);

/* Go's textproto canonical form of a header name into out (same length as name + NUL). */
void wd_cgi_canonical_name(char *out, const char *name);

/* Percent-decode a path (like Go's URL.Path): returns 0, or UV_EINVAL for a bad escape. */
int wd_cgi_decode_path(char *out, size_t outlen, const char *path);

/* CGI response head parser. Feed the start of stdout; it finds the header block that ends
 * with an empty line (CRLF or bare LF line ends both accepted).
 *   returns 0          need more bytes (nothing is consumed yet; call again with more);
 *   returns > 0        head complete: the number of bytes of the head including the blank
 *                      line; the body starts there; status and headers are filled;
 *   returns UV_EINVAL  malformed (a line without ':', bad Status, head > max_bytes).
 * `Status: 404 Not Found` sets status (default 200); `Location:` without Status gives 302;
 * other lines become response headers (names as written, values trimmed). */
struct wd_cgi_head {
    int status;
    struct wd_header headers[64];
    size_t nheaders;
    char *storage; /* owned: strings of headers; free with wd_cgi_head_free() */
};

int wd_cgi_parse_head(struct wd_cgi_head *h, const char *buf, size_t len, size_t max_bytes);
void wd_cgi_head_free(struct wd_cgi_head *h);

#endif
