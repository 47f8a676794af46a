'use strict';
// node-http template: the long-running HTTP server the watchdog supervises (mode http).
//
// Built-in modules only (`http`). It listens where the watchdog proxies to: the host and port
// of `http_upstream_url`, else `upstream_url` (the watchdog's own settings, inherited through
// the environment, so the two cannot disagree). It listens only once function/handler.js is
// loaded, so "port accepts" already means ready; when the watchdog's `ready_path` is set,
// GET <ready_path> answers 200, or 503 while the handler module's optional ready() is false.
//
// function/handler.js exports async (event, context) => ..., as OpenFaaS's node templates:
// event.body (parsed JSON for application/json, a string for text/*, else a Buffer),
// event.headers, .method, .query, .path; context.status(code), context.headers({...}),
// context.succeed(value), context.fail(err); or just return the body. Edit the handler, not
// this file. SIGTERM (sent by the watchdog once in-flight requests are answered) exits 0.

const http = require('http');
const handler = require('./function/handler');

const upstream = new URL(process.env.http_upstream_url || process.env.upstream_url ||
                         'http://127.0.0.1:3000');
let host = upstream.hostname.replace(/^\[(.*)\]$/, '$1');
if (host === 'localhost') host = '127.0.0.1';
const port = Number(upstream.port || 80);
const base = upstream.pathname.replace(/\/+$/, '');
const readyPath = process.env.ready_path || '';

class FunctionContext {
  constructor() {
    this.statusCode = 200;
    this.headerValues = {};
    this.done = false;
    this.value = undefined;
    this.error = undefined;
  }
  status(code) {
    if (code === undefined) return this.statusCode;
    this.statusCode = code;
    return this;
  }
  headers(values) {
    if (values === undefined) return this.headerValues;
    this.headerValues = values;
    return this;
  }
  succeed(value) {
    this.done = true;
    this.value = value;
    return this;
  }
  fail(error) {
    this.done = true;
    this.error = error === undefined ? new Error('fail') : error;
    return this;
  }
}

function parseBody(req, raw) {
  const type = (req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
  if (type === 'application/json' || type.endsWith('+json')) {
    return raw.length ? JSON.parse(raw.toString('utf8')) : undefined;
  }
  if (type.startsWith('text/')) return raw.toString('utf8');
  return raw;
}

function send(res, status, headers, value) {
  const out = {};
  for (const [k, v] of Object.entries(headers || {})) out[k.toLowerCase()] = String(v);
  let body;
  if (value === undefined || value === null) {
    body = Buffer.alloc(0);
  } else if (Buffer.isBuffer(value) || value instanceof Uint8Array) {
    body = Buffer.from(value);
    out['content-type'] = out['content-type'] || 'application/octet-stream';
  } else if (typeof value === 'object') {
    body = Buffer.from(JSON.stringify(value));
    out['content-type'] = out['content-type'] || 'application/json';
  } else {
    body = Buffer.from(String(value));
    out['content-type'] = out['content-type'] || 'text/plain; charset=utf-8';
  }
  delete out['transfer-encoding'];
  out['content-length'] = String(body.length);
  res.writeHead(status, out);
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

async function dispatch(req, res, raw) {
  const url = new URL(req.url, 'http://localhost');
  let path = url.pathname;
  if (base && (path === base || path.startsWith(base + '/'))) path = path.slice(base.length) || '/';
  if (readyPath && path === readyPath && req.method === 'GET') {
    const ok = typeof handler.ready === 'function' ? await handler.ready() : true;
    send(res, ok ? 200 : 503, {'content-type': 'text/plain'}, ok ? 'OK' : 'not ready');
    return;
  }
  const context = new FunctionContext();
  let event;
  try {
    event = {
      body: parseBody(req, raw),
      headers: req.headers,
      method: req.method,
      query: Object.fromEntries(url.searchParams),
      path,
    };
  } catch (err) {
    send(res, 400, {}, `bad request body: ${err.message}\n`);
    return;
  }
  try {
    const result = await handler(event, context);
    if (!context.done) context.succeed(result === context ? undefined : result);
  } catch (err) {
    context.fail(err);
  }
  if (context.error !== undefined) {
    console.error(context.error);
    const status = context.statusCode === 200 ? 500 : context.statusCode;
    send(res, status, context.headerValues, String(context.error.message || context.error) + '\n');
    return;
  }
  send(res, context.statusCode, context.headerValues, context.value);
}

const server = http.createServer((req, res) => {
  const parts = [];
  req.on('data', (chunk) => parts.push(chunk));
  req.on('end', () => {
    dispatch(req, res, Buffer.concat(parts)).catch((err) => {
      console.error(err);
      if (!res.headersSent) send(res, 500, {}, 'Internal Server Error\n');
      else res.destroy();
    });
  });
});
// The watchdog keeps idle upstream connections for reuse: do not time them out under it.
server.keepAliveTimeout = 0;

function stop() {
  server.close(() => process.exit(0));
  server.closeIdleConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

server.listen(port, host, () => {
  console.error(`node-http: listening on ${host}:${port}`);
});
