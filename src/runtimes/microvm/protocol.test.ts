import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { AGENT_VSOCK_PORT } from './firecracker/vmm.js';
import { FRAME, RUN_REQUEST_FIELDS } from './protocol.js';

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
