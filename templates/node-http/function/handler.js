'use strict';

// Handle one request. event.body is parsed JSON (application/json), a string (text/*) or a
// Buffer; event.headers (lower-case names), event.method, event.query, event.path.
// Answer with context.status(...).headers({...}).succeed(body), or return the body.
module.exports = async (event, context) => {
  const name = event.query.name || 'world';
  return context
    .status(200)
    .headers({'X-Handler': 'node-http'})
    .succeed({
      message: `Hello, ${name}!`,
      method: event.method,
      path: event.path,
      received: event.body,
    });
};

// Optional: while this returns false, the function is unready (the watchdog's ready_path).
// module.exports.ready = async () => true;
