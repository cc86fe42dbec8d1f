import { appendFileSync, statSync } from 'node:fs';
import { ifExistsSync } from '../../lib/errors.js';
import type net from 'node:net';
import { connectVmmSocket, NotReadyYet } from './vmm-socket.js';
import { encodeFrame, FRAME, FrameDecoder, type Frame } from './protocol.js';

export interface ChannelOptions {
  timeoutMs?: number;
  /** Firecracker: the guest's vsock port to ask for. */
  vsockPort?: number;
  /** Firecracker: where output frames are appended (the job's log). */
  outFile?: string;
  /** Firecracker: the log's size cap; output frames past it are dropped here, whatever the guest does. */
  outCapBytes?: number;
}

const OUTPUT_FRAMES: string[] = [FRAME.stdout, FRAME.stderr, FRAME.notice, FRAME.exit];
/** Replies the host has not asked for yet; an agent only ever has a few in flight. */
const QUEUED_FRAMES_MAX = 64;

/**
 * The host end of the agent's control channel: hello, run, kill. Under QEMU it is a
 * virtio-serial port QEMU serves as a Unix socket, and the job's output arrives on a second
 * port QEMU writes to the log itself. Under Firecracker it is a vsock connection (through
 * Firecracker's Unix socket and its `CONNECT <port>` handshake) that carries the output too:
 * this end appends those frames to the log. One connection at a time; a restarted Boxcar
 * simply connects again (the agent holds the job's output until then).
 */
export class AgentChannel {
  private readonly decoder = new FrameDecoder();
  private readonly frames: Frame[] = [];
  private waiter: (() => void) | undefined;
  private ended: Error | undefined;

  private constructor(
    private readonly socket: net.Socket,
    relay?: LogRelay,
  ) {
    const end = (err?: Error) => {
      this.ended ??= err ?? new Error('the VM closed its control channel');
      this.waiter?.();
    };
    socket.on('data', (d: Buffer) => {
      try {
        for (const f of this.decoder.push(d)) {
          if (relay && OUTPUT_FRAMES.includes(f.type)) relay.append(f);
          else if (this.frames.length >= QUEUED_FRAMES_MAX)
            throw new Error(
              `the VM sent over ${QUEUED_FRAMES_MAX} frames nobody asked for: its channel is closed`,
            );
          else this.frames.push(f);
        }
      } catch (err) {
        // A guest that breaks the protocol is cut off; the job fails with this reason.
        end(err as Error);
        socket.destroy();
        return;
      }
      this.waiter?.();
    });
    socket.on('error', end);
    socket.on('close', () => end());
    socket.resume();
  }

  static connect(socketPath: string, opts: ChannelOptions = {}): Promise<AgentChannel> {
    return connectVmmSocket(socketPath, opts.timeoutMs ?? 10_000, "the VM's agent", async (socket) => {
      if (opts.vsockPort !== undefined) await vsockHandshake(socket, opts.vsockPort);
      return new AgentChannel(
        socket,
        opts.outFile ? new LogRelay(opts.outFile, opts.outCapBytes) : undefined,
      );
    });
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

  /** A warm-up run (a job's start without its exec); resolves when the agent is done. */
  async warm(request: Buffer, timeoutMs: number): Promise<void> {
    this.socket.write(encodeFrame(FRAME.warm, request));
    await this.next([FRAME.warm], timeoutMs, 'warming the VM');
  }

  signal(signo: number): void {
    this.socket.write(encodeFrame(FRAME.kill, Buffer.from([signo])));
  }

  close(): void {
    this.socket.destroy();
  }
}

/**
 * Firecracker's output relay: frames appended to the job's log as the agent framed them (so the
 * log reads the same under both VMMs), up to the cap; past it only the exit frame still lands.
 * The count starts from the file's size, so a re-attached relay keeps the same cap.
 */
class LogRelay {
  private written: number;

  constructor(
    private readonly file: string,
    private readonly capBytes = Infinity,
  ) {
    this.written = ifExistsSync(() => statSync(file).size) ?? 0;
  }

  append(f: Frame): void {
    const bytes = encodeFrame(f.type, f.payload);
    if (f.type !== FRAME.exit && this.written + bytes.length > this.capBytes) return;
    appendFileSync(this.file, bytes);
    this.written += bytes.length;
  }
}

/** Firecracker's host-initiated vsock: `CONNECT <port>\n`, answered by `OK <host port>\n`. */
function vsockHandshake(socket: net.Socket, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let reply = '';
    const onData = (d: Buffer) => {
      reply += d.toString('latin1');
      const nl = reply.indexOf('\n');
      if (nl < 0) return;
      socket.off('data', onData);
      // Paused until the channel listens: a flowing socket would drop what arrives meanwhile.
      socket.pause();
      const rest = Buffer.from(reply.slice(nl + 1), 'latin1');
      if (!reply.startsWith('OK ')) {
        socket.destroy();
        reject(new NotReadyYet(`vsock port ${port}: ${reply.slice(0, nl) || 'refused'}`));
        return;
      }
      if (rest.length) socket.unshift(rest);
      resolve();
    };
    socket.on('data', onData);
    socket.once('close', () => reject(new NotReadyYet(`vsock port ${port}: closed before answering`)));
    socket.write(`CONNECT ${port}\n`);
  });
}
