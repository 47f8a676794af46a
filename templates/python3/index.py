#!/usr/bin/env python3
"""python3 template entry point, run by the watchdog once per request (mode streaming).

Reads the whole request body from stdin, calls function/handler.py's handle(req) with it as
text, and writes the result to stdout, as OpenFaaS's python3 template does: a str (or any other
value) is printed with a trailing newline, bytes are written as they are, None writes nothing.
Request headers are in the environment as Http_* variables (Http_Method, Http_Path, ...).
An exception prints its traceback on stderr (the watchdog logs it) and exits 1: the caller
gets 500. Edit function/handler.py, not this file.
"""
import sys

from function import handler


def main():
    req = sys.stdin.buffer.read().decode("utf-8", errors="replace")
    res = handler.handle(req)
    if res is None:
        return
    if isinstance(res, (bytes, bytearray)):
        sys.stdout.buffer.write(res)
    else:
        print(res)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
