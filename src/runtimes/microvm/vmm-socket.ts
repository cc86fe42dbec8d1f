import net from 'node:net';
import { errnoCode, withContext } from '../../lib/errors.js';

/** Thrown by a `setup` step to have `connectVmmSocket` try again (the other end is not ready). */
export class NotReadyYet extends Error {}

/**
 * Connects to a Unix socket a VMM serves (QMP, the agent's channel), retrying while the VMM has
 * not created it or is not listening yet, then runs `setup` on the connected socket (a
 * handshake); `setup` may throw `NotReadyYet` to try again.
 */
export async function connectVmmSocket<T>(
  socketPath: string,
  timeoutMs: number,
  what: string,
  setup: (socket: net.Socket) => Promise<T>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const socket = await new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect(socketPath, () => {
          s.off('error', reject);
          resolve(s);
        });
        s.once('error', reject);
      });
      return await setup(socket);
    } catch (err) {
      const code = errnoCode(err);
      const retry = code === 'ENOENT' || code === 'ECONNREFUSED' || err instanceof NotReadyYet;
      if (!retry || Date.now() > deadline) throw withContext(`cannot reach ${what} at ${socketPath}`, err);
      await new Promise((r) => setTimeout(r, 5));
    }
  }
}
