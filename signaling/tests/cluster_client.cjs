// Socket.IO clients for signaling/tests/cluster.rs, driven over stdin/stdout with one
// JSON object per line, using the official socket.io client from tests/socketio
// (`npm ci` there installs it).
//
// In:  { op: "connect", id, url, token }       -> { id, connected: true } | { id, connectError }
//      { op: "emit", id, event, data }          -> { id, ack } (the server's answer)
// Out: every event a socket receives           -> { id, event, data }

'use strict';
const path = require('node:path');
const readline = require('node:readline');

const clientPath = path.join(__dirname, '..', '..', 'tests', 'socketio', 'node_modules', 'socket.io-client');
let io;
try {
  ({ io } = require(clientPath));
} catch (e) {
  console.error(`socket.io-client is missing: run \`npm ci\` in tests/socketio (${e.message})`);
  process.exit(3);
}

const sockets = new Map();
const say = (message) => process.stdout.write(`${JSON.stringify(message)}\n`);

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const command = JSON.parse(line);
  const { op, id } = command;
  if (op === 'connect') {
    const socket = io(command.url, {
      auth: { token: command.token },
      transports: ['websocket'],
      reconnection: false,
      forceNew: true,
    });
    sockets.set(id, socket);
    socket.on('connect', () => say({ id, connected: true }));
    socket.on('connect_error', (e) => say({ id, connectError: e.message }));
    socket.onAny((event, data) => say({ id, event, data }));
  } else if (op === 'emit') {
    sockets.get(id).emit(command.event, command.data, (ack) => say({ id, ack }));
  }
});

process.stdin.on('end', () => {
  for (const socket of sockets.values()) socket.close();
  process.exit(0);
});
