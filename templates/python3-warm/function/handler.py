import json
import os

# Module state lives as long as the worker: the same process serves every request.
calls = 0
started = None


def init(context):
    """Optional: runs once per worker, before its first request (open connections, load
    models here). An exception stops the worker, which the watchdog restarts."""
    global started
    started = os.getpid()


def handle(event, context):
    """Handle one request.

    event.body (bytes), event.headers (case-insensitive), event.method, event.path, event.query
    (first value per name; event.query.getlist(name) for all). Return a body (str, bytes,
    dict/list as JSON) or {"statusCode": ..., "headers": {...}, "body": ...}.
    """
    global calls
    calls += 1
    if event.headers.get("Content-Type", "").startswith("application/json"):
        doc = json.loads(event.body or b"{}")
        return {"statusCode": 200,
                "body": {"hello": doc.get("name", "world"), "calls": calls}}
    name = event.body.decode("utf-8", "replace").strip() or event.query.get("name", "world")
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "text/plain; charset=utf-8", "X-Worker-Calls": str(calls)},
        "body": f"Hello, {name}! Worker {started} has served {calls} call(s).\n",
    }
