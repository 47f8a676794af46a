#!/usr/bin/env node
// fwatchdog warm worker for Node.js handlers (mode=warm, warm_protocol=actionloop).
//
// The watchdog starts this file once per worker. It loads the user's module once, calls its
// optional init hook, acknowledges with {"ok":true} on fd 3 (when __OW_WAIT_FOR_ACK is set), then
// serves one request per line read on stdin and writes one answer line on fd 3, in the web-action
// form {statusCode, headers, body} that the watchdog turns into the HTTP response. console.log
// goes to stdout, which the watchdog only logs: answers go to fd 3 and nowhere else.
//
// Built-in modules only. Handler shapes (see README.md, "Handler shapes"):
//   openfaas  module.exports = async (event, context[, callback]) => ...   (of-watchdog node18)
//   kubeless  exports.handler = (event, context) => ...
//   nuclio    exports.handler = (context, event) => context.callback(new context.Response(...))
// Environment: WARM_HANDLER_FILE (function/handler.js), WARM_HANDLER_NAME (handle, else handler),
// WARM_HANDLER_STYLE (detected unless set).
'use strict';

const fs = require('fs');
const path = require('path');
const os = require('os');
const { pathToFileURL } = require('url');

const STYLES = ['openfaas', 'kubeless', 'nuclio'];
const RESPONSE_KEYS = new Set(['statusCode', 'headers', 'body', 'isBase64Encoded']);
const NUCLIO_CONTEXT_NAMES = new Set(['context', 'ctx', '_context', '_ctx']);
const ANSWER_FD = 3;

function log(msg) {
    process.stderr.write(`warm: ${msg}\n`);
}

// ---------------------------------------------------------------------------------------------
// Answers

// The watchdog's rule (README, "Mode warm"): a string body with any other Content-Type is base64.
function isTextual(contentType) {
    const ct = String(contentType).toLowerCase();
    return ct.startsWith('text/') || ct.includes('json') || ct.includes('xml') ||
        ct.includes('javascript') || ct.includes('application/x-www-form-urlencoded');
}

function findHeader(headers, name) {
    for (const k of Object.keys(headers)) {
        if (k.toLowerCase() === name) return k;
    }
    return null;
}

function isBinary(v) {
    return Buffer.isBuffer(v) || v instanceof Uint8Array || v instanceof ArrayBuffer;
}

// The answer object for the watchdog. headers: {name: value | [value, ...]}; body: undefined,
// null, string, Buffer/Uint8Array (binary), or anything else (JSON). defaultCt: the Content-Type
// used when headers carry none (undefined: the watchdog's default for the body's kind).
function webAnswer(status, headers, body, defaultCt) {
    const out = {};
    for (const [k, v] of Object.entries(headers || {})) {
        if (v === undefined || v === null) continue;
        out[k] = Array.isArray(v) ? v.map(String) : String(v);
    }
    let ctName = findHeader(out, 'content-type');
    let ct = ctName === null ? undefined : out[ctName];
    if (Array.isArray(ct)) ct = ct[0];
    if (ct === undefined && defaultCt) {
        ct = defaultCt;
        out['Content-Type'] = ct;
    }
    let text;
    if (body === undefined || body === null) {
        text = '';
    } else if (isBinary(body)) {
        const buf = Buffer.isBuffer(body) ? body : Buffer.from(body.buffer || body,
            body.byteOffset || 0, body.byteLength);
        if (ct === undefined) {
            ct = 'application/octet-stream';
            out['Content-Type'] = ct;
        }
        if (isTextual(ct)) {
            text = buf.toString('utf8');
            if (!Buffer.from(text, 'utf8').equals(buf)) {
                // The line protocol cannot carry non-UTF-8 bytes under a textual type.
                log(`Buffer body is not UTF-8 but Content-Type is ${ct}: invalid bytes replaced`);
            }
        } else {
            text = buf.toString('base64');
        }
        return { statusCode: status, headers: out, body: text };
    } else if (typeof body === 'string') {
        text = body;
    } else if (typeof body === 'object') {
        text = JSON.stringify(body);
        if (ct === undefined) {
            ct = 'application/json';
            out['Content-Type'] = ct;
        }
    } else {
        text = String(body);
    }
    if (ct !== undefined && !isTextual(ct)) text = Buffer.from(text, 'utf8').toString('base64');
    return { statusCode: status, headers: out, body: text };
}

// An object made only of statusCode/headers/body(/isBase64Encoded), with statusCode or body.
function isResponseObject(v) {
    if (!v || typeof v !== 'object' || Array.isArray(v) || isBinary(v)) return false;
    const keys = Object.keys(v);
    return keys.length > 0 && keys.every((k) => RESPONSE_KEYS.has(k)) &&
        ('statusCode' in v || 'body' in v);
}

function statusOf(v) {
    const code = Number(v === undefined ? 200 : v);
    if (!Number.isInteger(code) || code < 100 || code > 599) {
        throw new Error(`statusCode ${JSON.stringify(v)} is not an integer in 100..599`);
    }
    return code;
}

function fromResponseObject(res) {
    let body = res.body;
    if (res.isBase64Encoded && typeof body === 'string') body = Buffer.from(body, 'base64');
    return webAnswer(statusOf(res.statusCode), res.headers, body);
}

function fromValue(v, status, headers) {
    if (isResponseObject(v)) return fromResponseObject(v);
    return webAnswer(status === undefined ? 200 : statusOf(status), headers, v);
}

function errorAnswer(err) {
    const name = (err && err.name) || typeof err;
    return {
        statusCode: 500,
        headers: { 'Content-Type': 'text/plain; charset=utf-8' },
        body: `handler failed: ${name}\n`,
    };
}

// ---------------------------------------------------------------------------------------------
// Requests: the actionloop line -> the parts every style uses

function parseQuery(raw) {
    const q = {};
    for (const [k, v] of new URLSearchParams(raw)) {
        if (!(k in q)) q[k] = v;
        else if (Array.isArray(q[k])) q[k].push(v);
        else q[k] = [q[k], v];
    }
    return q;
}

function isUtf8(buf) {
    return Buffer.from(buf.toString('utf8'), 'utf8').equals(buf);
}

class Request {
    constructor(msg) {
        const v = msg.value || {};
        this.method = String(v.__ow_method || 'get').toUpperCase();
        this.path = v.__ow_path || '/';
        this.queryString = v.__ow_query || '';
        this.headers = {};
        for (const [k, x] of Object.entries(v.__ow_headers || {})) {
            this.headers[k.toLowerCase()] = String(x);
        }
        const body = v.__ow_body || '';
        if (v.__ow_isBase64Encoded) {
            this.raw = Buffer.from(body, 'base64');
            this.text = isUtf8(this.raw) ? this.raw.toString('utf8') : null;
        } else {
            this.text = body;
            this.raw = null;
        }
        this.activationId = msg.activation_id || '';
        this.deadline = Number(msg.deadline || 0);
        this.actionName = msg.action_name || 'function';
    }

    get bytes() {
        if (this.raw === null) this.raw = Buffer.from(this.text, 'utf8');
        return this.raw;
    }

    get contentType() {
        return this.headers['content-type'] || '';
    }

    get mediaType() {
        return this.contentType.split(';')[0].trim().toLowerCase();
    }

    get url() {
        return this.path + (this.queryString ? `?${this.queryString}` : '');
    }

    // Parsed JSON for a JSON Content-Type, a Buffer for application/octet-stream or a body that
    // is not UTF-8, else the string (the bodyParser json/raw/text trio of the OpenFaaS template).
    parsedBody() {
        if (this.text === null || this.mediaType === 'application/octet-stream') return this.bytes;
        if (/json/.test(this.mediaType) && this.text !== '') {
            try {
                return JSON.parse(this.text);
            } catch (e) {
                log(`request body is not valid JSON (${e.message}): passed as text`);
            }
        }
        return this.text;
    }
}

// ---------------------------------------------------------------------------------------------
// Styles

// The of-watchdog node18 template's FunctionContext.
class FunctionContext {
    constructor(cb) {
        this.statusCode = 200;
        this.cb = cb;
        this.headerValues = {};
        this.cbCalled = 0;
    }

    status(statusCode) {
        if (!statusCode) return this.statusCode;
        this.statusCode = statusCode;
        return this;
    }

    headers(value) {
        if (!value) return this.headerValues;
        this.headerValues = value;
        return this;
    }

    succeed(value) {
        this.cbCalled++;
        this.cb(undefined, value);
    }

    fail(value) {
        if (this.status() === 200) this.status(500);
        this.cbCalled++;
        this.cb(value === undefined ? new Error('fail') : value, undefined);
    }
}

// Nuclio's nodejs wrapper: Response(body, headers, contentType, statusCode, bodyEncoding).
function NuclioResponse(body = null, headers = null, contentType = 'text/plain', statusCode = 200,
    bodyEncoding = 'text') {
    this.body = body;
    this.headers = headers;
    this.content_type = contentType;
    this.status_code = statusCode;
    this.body_encoding = bodyEncoding;
}

function nuclioLogger() {
    const at = (level) => (message, withData) => {
        let line = `${level} ${message}`;
        if (withData !== undefined) line += ` ${JSON.stringify(withData)}`;
        process.stderr.write(`${line}\n`);
    };
    return {
        error: at('ERROR'), warn: at('WARNING'), info: at('INFO'), debug: at('DEBUG'),
        errorWith: at('ERROR'), warnWith: at('WARNING'), infoWith: at('INFO'),
        debugWith: at('DEBUG'),
    };
}

function nuclioAnswer(out) {
    if (out instanceof NuclioResponse) {
        let body = out.body;
        let ct = out.content_type;
        if (typeof body === 'string' && out.body_encoding === 'base64') {
            body = Buffer.from(body, 'base64');
        }
        if (body !== null && body !== undefined && typeof body === 'object' && !isBinary(body)) {
            body = JSON.stringify(body);
            ct = 'application/json';
        }
        if (isBinary(body) && ct === 'text/plain' && !isUtf8(Buffer.from(body))) {
            ct = 'application/octet-stream';
        }
        const headers = Object.assign({}, out.headers || {});
        if (ct && findHeader(headers, 'content-type') === null) headers['Content-Type'] = ct;
        return webAnswer(statusOf(out.status_code), headers, body);
    }
    if (Array.isArray(out) && out.length === 2 && typeof out[0] === 'number') {
        return webAnswer(statusOf(out[0]), null, out[1]);
    }
    return webAnswer(200, null, out);
}

function paramNames(fn) {
    let src = Function.prototype.toString.call(fn).replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '');
    src = src.replace(/^\s*async\b\s*/, '');
    let inner;
    const arrow = src.match(/^\s*([A-Za-z_$][\w$]*)\s*=>/);
    if (arrow) {
        inner = arrow[1];
    } else {
        const open = src.indexOf('(');
        if (open < 0) return [];
        let depth = 0;
        let end = open;
        for (; end < src.length; end++) {
            if (src[end] === '(') depth++;
            else if (src[end] === ')' && --depth === 0) break;
        }
        inner = src.slice(open + 1, end);
    }
    return inner.split(',').map((p) => p.trim().replace(/[\s=].*$/s, '')).filter((p) => p);
}

// The documented rule (README.md): module.exports itself a function, or handle() -> openfaas;
// a first parameter named context/ctx -> nuclio; any other function -> kubeless.
function detectStyle(name, fn) {
    if (name === '' || name === 'handle') return 'openfaas';
    const names = paramNames(fn);
    if (names.length > 0 && NUCLIO_CONTEXT_NAMES.has(names[0])) return 'nuclio';
    return 'kubeless';
}

async function loadModule(file) {
    try {
        return require(file);
    } catch (e) {
        if (e.code !== 'ERR_REQUIRE_ESM') throw e;
        return import(pathToFileURL(file).href);
    }
}

class Worker {
    async load() {
        let file = process.env.WARM_HANDLER_FILE || 'function/handler.js';
        if (!path.isAbsolute(file) && !fs.existsSync(file)) {
            const alt = path.join(__dirname, file);
            if (fs.existsSync(alt)) file = alt;
        }
        file = path.resolve(file);
        this.module = await loadModule(file);
        let name = process.env.WARM_HANDLER_NAME || '';
        let fn;
        if (name) {
            fn = this.module[name];
        } else if (typeof this.module === 'function') {
            fn = this.module;
        } else {
            name = ['handle', 'handler'].find((n) => typeof this.module[n] === 'function') || '';
            fn = name ? this.module[name] : undefined;
            if (!fn && typeof this.module.default === 'function') {
                fn = this.module.default; // an ES module's `export default`
            }
        }
        if (typeof fn !== 'function') {
            throw new Error(`${file}: no handler function (${name || 'module.exports, handle ' +
                'or handler'}) found`);
        }
        this.fn = fn;
        this.style = process.env.WARM_HANDLER_STYLE || detectStyle(name, fn);
        if (!STYLES.includes(this.style)) {
            throw new Error(`WARM_HANDLER_STYLE=${this.style}: want one of ${STYLES.join(', ')}`);
        }
        this.actionName = process.env.OPENFAAS_NAME || 'function';
        if (this.style === 'nuclio') {
            this.context = {
                userData: {},
                Response: NuclioResponse,
                logger: nuclioLogger(),
                callback: (r) => this.settle(r),
                workerId: process.pid,
                functionName: this.actionName,
            };
        } else if (this.style === 'kubeless') {
            this.context = {
                'function-name': this.actionName,
                timeout: process.env.FUNC_TIMEOUT || process.env.exec_timeout || '30',
                runtime: `nodejs${process.versions.node.split('.')[0]}`,
                'memory-limit': process.env.FUNC_MEMORY_LIMIT || '',
            };
        } else {
            this.context = { hostname: os.hostname(), functionName: this.actionName, userData: {} };
        }
        const label = name || (typeof this.module === 'function' ? 'module.exports' : 'default');
        log(`loaded ${file}: ${label}() as style ${this.style}`);
    }

    async init() {
        const m = this.module;
        const hook = typeof m === 'object' || typeof m === 'function' ?
            ['init', 'initContext', 'init_context'].map((n) => m[n])
                .find((f) => typeof f === 'function' && f !== this.fn) : undefined;
        if (hook) await hook(this.context);
    }

    // Runs one request; resolves to the answer object, never rejects.
    call(req) {
        return new Promise((resolve) => {
            let done = false;
            const finish = (answer) => {
                if (done) return;
                done = true;
                this.settle = () => {};
                this.current = null;
                resolve(answer);
            };
            const fail = (err) => {
                log(`handler error: ${err && err.stack ? err.stack : err}`);
                finish(errorAnswer(err));
            };
            const guard = (f) => (...args) => {
                try {
                    finish(f(...args));
                } catch (e) {
                    fail(e);
                }
            };
            this.current = fail;
            try {
                if (this.style === 'openfaas') this.callOpenFaaS(req, guard, fail);
                else if (this.style === 'kubeless') this.callKubeless(req, guard, fail);
                else this.callNuclio(req, guard, fail);
            } catch (e) {
                fail(e);
            }
        });
    }

    callOpenFaaS(req, guard, fail) {
        const event = {
            body: req.parsedBody(),
            headers: req.headers,
            method: req.method,
            query: parseQuery(req.queryString),
            path: req.path,
        };
        let ctx;
        const cb = (err, result) => {
            if (err) {
                if (ctx.status() === 200) ctx.status(500);
                log(`handler failed: ${err && err.stack ? err.stack : err}`);
                const msg = err instanceof Error ? err.toString() : err;
                guard(() => fromValue(msg, ctx.status(), ctx.headers()))();
                return;
            }
            guard(() => fromValue(result, ctx.status(), ctx.headers()))();
        };
        ctx = new FunctionContext(cb);
        const ret = this.fn(event, ctx, cb);
        // A handler that takes the callback and returns nothing answers through it.
        if (ret === undefined && this.fn.length >= 3) return;
        Promise.resolve(ret).then((res) => {
            if (!ctx.cbCalled) ctx.succeed(res);
        }, fail);
    }

    callKubeless(req, guard, fail) {
        const event = {
            data: req.parsedBody(),
            'event-id': req.activationId,
            'event-type': req.contentType,
            'event-time': new Date().toISOString(),
            'event-namespace': 'fwatchdog',
            extensions: {
                request: {
                    method: req.method, path: req.path, url: req.url, headers: req.headers,
                    query: parseQuery(req.queryString), queryString: req.queryString,
                },
            },
        };
        Promise.resolve(this.fn(event, this.context))
            .then(guard((res) => fromValue(res)), fail);
    }

    callNuclio(req, guard, fail) {
        const headers = {};
        for (const [k, v] of Object.entries(req.headers)) {
            headers[k.split('-').map((p) => p.charAt(0).toUpperCase() + p.slice(1)).join('-')] = v;
        }
        const event = {
            body: req.bytes,
            headers,
            method: req.method,
            path: req.path,
            url: req.url,
            fields: parseQuery(req.queryString),
            id: req.activationId,
            size: req.bytes.length,
            timestamp: new Date(),
            trigger: { kind: 'http', name: 'fwatchdog', class: 'sync' },
            'content-type': req.contentType,
            contentType: req.contentType,
        };
        this.settle = guard((r) => nuclioAnswer(r));
        const ret = this.fn(this.context, event);
        // Nuclio answers through context.callback(); a returned value (or promise) counts too.
        Promise.resolve(ret).then((res) => {
            if (res !== undefined) this.settle(res);
        }, fail);
    }
}

function writeAll(fd, data) {
    let buf = Buffer.from(data, 'utf8');
    while (buf.length > 0) {
        let n;
        try {
            n = fs.writeSync(fd, buf);
        } catch (e) {
            if (e.code !== 'EAGAIN') throw e;
            Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
            continue;
        }
        buf = buf.subarray(n);
    }
}

async function main() {
    try {
        fs.fstatSync(ANSWER_FD);
    } catch (e) {
        process.stderr.write('warm: fd 3 is not open: run me as fwatchdog\'s mode=warm worker\n');
        process.exit(2);
    }
    const worker = new Worker();
    worker.settle = () => {};
    await worker.load();
    await worker.init();

    // An exception thrown outside the handler's promise (a timer, an emitter) answers the
    // request in flight with 500 instead of ending the worker.
    process.on('uncaughtException', (err) => {
        if (worker.current) worker.current(err);
        else log(`uncaught exception: ${err && err.stack ? err.stack : err}`);
    });
    process.on('unhandledRejection', (err) => {
        log(`unhandled rejection: ${err && err.stack ? err.stack : err}`);
    });

    // At shutdown the watchdog closes stdin, then sends SIGTERM: leave quietly, with status 0,
    // unless the handler listens for SIGTERM itself.
    if (process.listenerCount('SIGTERM') === 0) process.on('SIGTERM', () => process.exit(0));

    if (process.env.__OW_WAIT_FOR_ACK) writeAll(ANSWER_FD, '{"ok":true}\n');

    const lines = [];
    const parts = [];
    let busy = false;
    let ended = false;
    const pump = async () => {
        if (busy) return;
        busy = true;
        while (lines.length > 0) {
            const line = lines.shift();
            let answer;
            let msg;
            try {
                msg = JSON.parse(line);
            } catch (e) {
                log(`bad request line (${e.message}): ${line.slice(0, 200)}`);
                answer = errorAnswer(e);
            }
            if (answer === undefined) {
                let req;
                try {
                    req = new Request(msg);
                } catch (e) {
                    answer = errorAnswer(e);
                }
                if (answer === undefined) answer = await worker.call(req);
            }
            let text;
            try {
                text = JSON.stringify(answer);
            } catch (e) {
                text = JSON.stringify(errorAnswer(e));
            }
            writeAll(ANSWER_FD, `${text}\n`);
        }
        busy = false;
        if (ended) process.exit(0);
    };
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (chunk) => {
        // Only the new chunk is searched, so a long line costs linear time.
        let start = 0;
        let i;
        while ((i = chunk.indexOf('\n', start)) >= 0) {
            const line = parts.join('') + chunk.slice(start, i);
            parts.length = 0;
            start = i + 1;
            if (line.trim() !== '') lines.push(line);
        }
        if (start < chunk.length) parts.push(chunk.slice(start));
        pump();
    });
    process.stdin.on('end', () => {
        ended = true;
        if (!busy) process.exit(0);
    });
}

main().catch((err) => {
    process.stderr.write(`warm: cannot start: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
});
