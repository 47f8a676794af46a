// Mode http: a built-in http server (keep-alive) on 127.0.0.1:$BENCH_PORT calling the handler,
// as the node-http template does.
'use strict';

const http = require('http');
const handler = require('./hello.js');

http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
        const out = Buffer.from(String(await handler({ body: Buffer.concat(chunks).toString() })));
        res.writeHead(200, {
            'Content-Type': 'text/plain; charset=utf-8',
            'Content-Length': out.length,
        });
        res.end(out);
    });
}).listen(Number(process.env.BENCH_PORT), '127.0.0.1');
