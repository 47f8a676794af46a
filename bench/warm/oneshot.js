// Mode streaming: one process per request (read stdin, call the handler, write the answer).
'use strict';

const handler = require('./hello.js');

const chunks = [];
process.stdin.on('data', (c) => chunks.push(c));
process.stdin.on('end', async () => {
    process.stdout.write(String(await handler({ body: Buffer.concat(chunks).toString() })));
});
