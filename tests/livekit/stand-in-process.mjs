// The stand-in of ./stand-in.mjs as a process of its own, for the Rust test that
// drives Huddle's LiveKit plane directly (tests/livekit.rs: recording orders, which
// no route reaches without the recording service). It prints `{ url }` as one JSON
// line, then answers each command line on stdin with one JSON line:
//   requests             → what it was sent: [{ service, method, claims, authError, body }]
//   end <egressId>       → finishes that egress COMPLETE with a file: { body, authorization },
//                          its signed `egress_ended` webhook
// It stops when stdin closes.

import { createInterface } from 'node:readline';

import { sign, startRoomService } from './stand-in.mjs';

/** What the end command says LiveKit wrote. */
export const ENDED_FILE = { location: 's3://recordings/', size: 123456, duration: 6_200_000_000 };

const service = await startRoomService();
const print = (value) => process.stdout.write(`${JSON.stringify(value)}\n`);
print({ url: service.url });
for await (const line of createInterface({ input: process.stdin })) {
  const [command, argument] = line.trim().split(/\s+/);
  if (command === 'requests') {
    print(
      service.requests.map(({ service: name, method, claims, authError, body }) => ({
        service: name,
        method,
        claims,
        authError,
        body: body?.toJson(),
      })),
    );
  } else if (command === 'end') {
    const [output] = service.egresses.get(argument).request.value.fileOutputs;
    const file = { ...ENDED_FILE, location: ENDED_FILE.location + output.filepath };
    const body = service.endEgress(argument, { file });
    print({ body, authorization: await sign(body) });
  } else {
    print({ error: `unknown command ${line}` });
  }
}
await service.stop();
