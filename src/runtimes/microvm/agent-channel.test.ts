import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { AgentChannel } from './agent-channel.js';
import { hostileGuest, oversizedFrameRefused } from './hostile-guest.js';
import { encodeFrame, FRAME, FrameDecoder } from './protocol.js';

/**
 * The host end of the agent's channel against a guest that breaks the protocol: a Unix socket
 * server plays the broken-into guest (as QEMU's virtio-serial socket or Firecracker's vsock
 * socket would carry it).
 */
let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'bx-channel-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('a frame header claiming 4 GiB closes the channel with the reason, and the host holds none of it', async () => {
  const r = await oversizedFrameRefused(dir);
  assert.ok(r.refused, r.detail);
  assert.match(r.detail, /frame of 4294967295 bytes/);
});

test('a guest flooding frames nobody asked for is cut off', async () => {
  const guest = await hostileGuest(dir, (s) => {
    for (let i = 0; i < 1000; i++) s.write(encodeFrame(FRAME.started, '1'));
  });
  try {
    const channel = await AgentChannel.connect(guest.socket, { timeoutMs: 2000 });
    await assert.rejects(channel.hello(5000), /over 64 frames nobody asked for/);
    channel.close();
  } finally {
    guest.close();
  }
});

test('Firecracker’s relay keeps the log within its cap whatever the guest sends; the exit still lands', async () => {
  const out = path.join(dir, 'relay.log');
  const cap = 256 * 1024;
  const guest = await hostileGuest(dir, (s) => {
    s.once('data', () => {
      s.write('OK 1073741824\n'); // Firecracker's answer to the host's CONNECT
      const frame = encodeFrame(FRAME.stdout, Buffer.alloc(32 * 1024, 0x42));
      for (let i = 0; i < 128; i++) s.write(frame); // 4 MiB, sixteen times the cap
      s.write(encodeFrame(FRAME.exit, '0 0 0 0'));
      s.write(encodeFrame(FRAME.hello, 'done'));
    });
  });
  try {
    const channel = await AgentChannel.connect(guest.socket, {
      timeoutMs: 2000,
      vsockPort: 1024,
      outFile: out,
      outCapBytes: cap,
    });
    await channel.hello(5000);
    channel.close();
    const size = (await stat(out)).size;
    assert.ok(size <= cap + 64, `the log holds ${size} bytes, cap ${cap}`);
    const frames = new FrameDecoder().push(await readFile(out));
    assert.equal(frames.at(-1)?.type, FRAME.exit);
  } finally {
    guest.close();
  }
});
