import net from 'node:net';
import { encodeFrame, FRAME, FrameDecoder, type Frame } from './protocol.js';

/**
 * The host end of the agent's control port (a Unix socket QEMU serves): hello, run, kill. One
 * connection at a time, as QEMU allows; a restarted Boxcar simply connects again.
 */
export class AgentChannel {
  private readonly decoder = new FrameDecoder();
  private readonly frames: Frame[] = [];
  private waiter: (() => void) | undefined;
  private ended: Error | undefined;

  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.frames.push(...this.decoder.push(d));
      this.waiter?.();
    });
    const end = (err?: Error) => {
      this.ended ??= err ?? new Error('the VM closed its control channel');
      this.waiter?.();
    };
    socket.on('error', end);
    socket.on('close', () => end());
  }

  static async connect(socketPath: string, timeoutMs = 10_000): Promise<AgentChannel> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        return await new Promise<AgentChannel>((resolve, reject) => {
          const s = net.connect(socketPath, () => {
            s.off('error', reject);
            resolve(new AgentChannel(s));
          });
          s.once('error', reject);
        });
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if ((code !== 'ENOENT' && code !== 'ECONNREFUSED') || Date.now() > deadline)
          throw new Error(`cannot reach the VM's agent at ${socketPath}: ${(err as Error).message}`, {
            cause: err,
          });
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  }

  /** The next frame of one of `types`, skipping others. */
  async next(types: string[], timeoutMs: number, what: string): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.frames.findIndex((f) => types.includes(f.type));
      if (i >= 0) return this.frames.splice(i, 1)[0] as Frame;
      if (this.ended) throw new Error(`${what}: ${this.ended.message}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${what}: no answer from the guest agent within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          this.waiter = undefined;
          resolve();
        };
      });
    }
  }

  /** Waits for the agent's hello after a cold boot; returns the guest's kernel release. */
  async hello(timeoutMs: number): Promise<string> {
    return (await this.next([FRAME.hello], timeoutMs, 'booting the VM')).payload.toString();
  }

  /** Sends the job; resolves once its process runs, or fails with the agent's reason. */
  async run(request: Buffer, timeoutMs: number): Promise<number> {
    this.socket.write(encodeFrame(FRAME.run, request));
    const reply = await this.next([FRAME.started, FRAME.error], timeoutMs, 'starting the job in the VM');
    if (reply.type === FRAME.error) throw new Error(reply.payload.toString());
    return Number(reply.payload.toString());
  }

  signal(signo: number): void {
    this.socket.write(encodeFrame(FRAME.kill, Buffer.from([signo])));
  }

  close(): void {
    this.socket.destroy();
  }
}
