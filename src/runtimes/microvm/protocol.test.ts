import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { AGENT_VSOCK_PORT } from './firecracker/vmm.js';
import { FRAME, FRAME_MAX_BYTES, FrameDecoder, FrameTooLarge, RUN_REQUEST_FIELDS } from './protocol.js';

/**
 * The guest agent (C) and Boxcar (TypeScript) speak one protocol; this holds them together as
 * `api.test.ts` holds the Firecracker client to its OpenAPI file: the run request's fields in
 * the agent's `F_*` order, the frame letters each side sends and reads, and the vsock port.
 */
const agent = readFileSync(
  new URL('../../../../src/runtimes/microvm/guest/agent.c', import.meta.url),
  'utf8',
);

test('the run request’s fields are the agent’s F_* fields, in the same order', () => {
  const body = /enum\s*\{([^}]*F_COUNT[^}]*)\}/.exec(agent)?.[1];
  assert.ok(body, 'agent.c has its F_* enum');
  const fields = body
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s && s !== 'F_COUNT')
    .map((s) => s.replace(/^F_/, '').toLowerCase());
  assert.deepEqual(fields, Object.keys(RUN_REQUEST_FIELDS));
  const max = Number(/#define MAX_FIELDS (\d+)/.exec(agent)?.[1]);
  assert.ok(max >= fields.length, `MAX_FIELDS ${max} holds all ${fields.length} fields`);
});

test('the frame letters: what the agent sends, Boxcar reads; what Boxcar sends, the agent reads', () => {
  const sent = new Set(
    [...agent.matchAll(/(?:send_text|send_frame|forward)\([^,]+,\s*(?:[^,]*\?\s*)?'(.)'/g)].map((m) => m[1]),
  );
  for (const m of agent.matchAll(/'(.)'\s*:\s*'(.)'/g)) for (const c of [m[1], m[2]]) sent.add(c);
  const read = new Set([...agent.matchAll(/type\s*[!=]=\s*'(.)'/g)].map((m) => m[1]));
  const guestToHost = [
    FRAME.hello,
    FRAME.started,
    FRAME.error,
    FRAME.warm,
    FRAME.stdout,
    FRAME.stderr,
    FRAME.notice,
    FRAME.exit,
  ];
  const hostToGuest = [FRAME.run, FRAME.warm, FRAME.kill];
  assert.deepEqual([...sent].sort(), [...guestToHost].sort());
  assert.deepEqual([...read].sort(), [...hostToGuest].sort());
});

test('the agent listens on the vsock port Boxcar connects to', () => {
  assert.equal(Number(/#define AGENT_VSOCK_PORT (\d+)/.exec(agent)?.[1]), AGENT_VSOCK_PORT);
});

test('both sides cap a frame at the same size', () => {
  const max = /#define MAX_FRAME \(1u << (\d+)\)/.exec(agent)?.[1];
  assert.equal(2 ** Number(max), FRAME_MAX_BYTES);
});

test('a frame header claiming 4 GiB is refused at once, before any of it is buffered', () => {
  const d = new FrameDecoder();
  const ok = Buffer.from([0x6f, 0, 0, 0, 2, 0x68, 0x69]); // 'o', 2, "hi"
  const huge = Buffer.from([0x6f, 0xff, 0xff, 0xff, 0xff]);
  assert.deepEqual(
    d.push(ok).map((f) => f.payload.toString()),
    ['hi'],
  );
  const before = process.memoryUsage().arrayBuffers;
  assert.throws(() => d.push(Buffer.concat([huge, Buffer.alloc(64 * 1024)])), FrameTooLarge);
  assert.ok(
    process.memoryUsage().arrayBuffers - before < 16 * 2 ** 20,
    'nothing near the claimed size was held',
  );
  // A frame just under the cap still passes whole, in pieces.
  const big = Buffer.alloc(FRAME_MAX_BYTES, 1);
  const head = Buffer.from([0x6f, 0, 0, 0, 0]);
  head.writeUInt32BE(big.length, 1);
  const d2 = new FrameDecoder();
  assert.deepEqual(d2.push(Buffer.concat([head, big.subarray(0, 1000)])), []);
  assert.equal(d2.push(big.subarray(1000))[0]?.payload.length, FRAME_MAX_BYTES);
});
