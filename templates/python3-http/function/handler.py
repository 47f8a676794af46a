def handle(event, context):
    """Handle one request.

    event.body: bytes; event.headers: case-insensitive .get(); event.method, event.path,
    event.query ({name: first value}). Return a dict with statusCode, body (str, bytes, or a
    dict/list sent as JSON) and headers; or just a body; or None for an empty 200.
    A handle(req) with one parameter gets the body as text instead, as in the python3 template.
    """
    name = event.query.get("name") or "world"
    return {
        "statusCode": 200,
        "body": {"message": f"Hello, {name}!", "method": event.method, "path": event.path,
                 "received": event.body.decode("utf-8", errors="replace")},
        "headers": {"X-Handler": "python3-http"},
    }


# Optional: while this returns False, the function is unready (the watchdog's ready_path).
# def ready():
#     return True
