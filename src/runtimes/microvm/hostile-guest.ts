import net from 'node:net';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { AgentChannel } from './agent-channel.js';
import { FRAME } from './protocol.js';

/**
 * A broken-into guest's end of the agent channel, on a Unix socket as QEMU's virtio-serial or
 * Firecracker's vsock socket carries it: what `verify-isolation` and the tests point the host's
 * channel at to see that it holds.
 */
export async function hostileGuest(
  dir: string,
  behave: (s: net.Socket) => void,
): Promise<{ socket: string; close: () => void }> {
  const socket = path.join(dir, `guest-${randomUUID().slice(0, 8)}.sock`);
  const server = net.createServer((s) => {
    s.on('error', () => undefined); // the host hangs up on it: that is the point
    behave(s);
  });
  await new Promise<void>((r) => server.listen(socket, r));
  return { socket, close: () => server.close() };
}

/**
 * A guest announces a 4 GiB frame and streams 256 MiB behind it: the host must close the
 * channel with the reason at the header, and grow by nothing near that.
 */
export async function oversizedFrameRefused(dir: string): Promise<{ refused: boolean; detail: string }> {
  const total = 256 * 2 ** 20;
  let sent = 0;
  const guest = await hostileGuest(dir, (s) => {
    s.write(Buffer.from([FRAME.hello.charCodeAt(0), 0xff, 0xff, 0xff, 0xff]));
    const chunk = Buffer.alloc(2 ** 20, 0x41);
    const pump = () => {
      while (sent < total && s.writable && s.write(chunk)) sent += chunk.length;
      if (sent < total && s.writable) s.once('drain', pump);
    };
    pump();
  });
  try {
    const before = process.memoryUsage().rss;
    const channel = await AgentChannel.connect(guest.socket, { timeoutMs: 2000 });
    let reason = '';
    try {
      await channel.hello(5000);
    } catch (err) {
      reason = (err as Error).message;
    } finally {
      channel.close();
    }
    const grown = process.memoryUsage().rss - before;
    const refused = /over the \d+-byte maximum/.test(reason) && grown < 64 * 2 ** 20 && sent < total;
    return { refused, detail: `${reason || 'accepted'}; the host grew by ${grown} bytes` };
  } finally {
    guest.close();
  }
}
