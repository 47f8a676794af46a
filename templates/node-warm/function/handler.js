'use strict';

// Module state lives as long as the worker: the same process serves every request.
let calls = 0;

// Handle one request. event: {body, headers, method, query, path}; body is parsed JSON for a
// JSON Content-Type, a Buffer for application/octet-stream (or bytes that are not UTF-8), else a
// string. Return a body (string, Buffer, object as JSON), or answer through the OpenFaaS chain
// context.status(code).headers({...}).succeed(body) / .fail(err).
module.exports = async (event, context) => {
    calls++;
    if (event.body && typeof event.body === 'object' && !Buffer.isBuffer(event.body)) {
        return { hello: event.body.name || 'world', calls };
    }
    const name = String(event.body || '').trim() || event.query.name || 'world';
    return context
        .status(200)
        .headers({ 'Content-Type': 'text/plain; charset=utf-8', 'X-Worker-Calls': String(calls) })
        .succeed(`Hello, ${name}! Worker ${process.pid} has served ${calls} call(s).\n`);
};

// Optional: runs once per worker, before its first request (open connections, warm caches
// here; it may be async). A throw stops the worker, which the watchdog restarts.
module.exports.init = async (context) => {
    console.log(`worker ${process.pid} ready (${context.hostname})`);
};
