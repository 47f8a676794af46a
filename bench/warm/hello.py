"""The bench's Python hello world: the same handle(req) in every mode (see bench/warm.sh)."""


def handle(req):
    return "Hello, world!\n"
