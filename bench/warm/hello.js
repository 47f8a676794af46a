// The bench's Node.js hello world: the same handler in every mode (see bench/warm.sh).
'use strict';

module.exports = async () => 'Hello, world!\n';
