// Pages on other sites (CORS_ORIGINS), as the official socket.io client sends them:
// the Origin a browser would put on its long-polling requests and its WebSocket
// handshake (node's client sends none unless told, through `extraHeaders`).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { request, startServer, uid } from './harness.mjs';

const APP = 'http://app.example:8080';
const ELSEWHERE = 'http://elsewhere.example';

let server;
before(async () => {
  server = await startServer({ CORS_ORIGINS: `${APP},https://other.example` });
});
after(async () => {
  await server?.stop();
});

const from = (origin, transport) => ({ extra: { transports: [transport], extraHeaders: { origin } } });

describe('a page on another site', () => {
  for (const transport of ['polling', 'websocket']) {
    test(`connects over ${transport} when its origin is listed, and is answered`, async () => {
      const socket = await server.connect(uid('alice'), from(APP, transport));
      assert.equal(socket.io.engine.transport.name, transport);
      const ack = await request(socket, 'call:invite', { type: 'audio', participantIds: [uid('bob')] });
      assert.equal(ack.ok, true, JSON.stringify(ack));
      assert.equal(ack.call.state, 'ringing', JSON.stringify(ack));
      socket.disconnect();
    });

    test(`is refused over ${transport} when its origin is not listed`, async () => {
      await assert.rejects(server.connect(uid('mallory'), from(ELSEWHERE, transport)), (error) => {
        assert.match(error.message, transport === 'polling' ? /xhr poll error/ : /websocket error/);
        // The handshake was answered 403: polling's error carries the status, ws's the
        // "Unexpected server response" it read.
        const answer = transport === 'polling' ? error.description : error.description?.message;
        assert.match(String(answer), /403/);
        return true;
      });
    });
  }
});
