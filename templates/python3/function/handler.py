import os


def handle(req):
    """Handle one request.

    req: the request body as text. Headers are in os.environ as Http_* (Http_Method, Http_Path,
    Http_Query, Http_Content_Type, ...). Return the response body (str, bytes or None).
    """
    method = os.environ.get("Http_Method", "?")
    return f"Hello from Python! {method}, you said: {req}"
