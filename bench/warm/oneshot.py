"""Mode streaming: one process per request, as the python3 template (read stdin, call, print)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hello  # noqa: E402

sys.stdout.write(hello.handle(sys.stdin.buffer.read().decode("utf-8", "replace")))
