import { StringDecoder } from 'node:string_decoder';
import type { OutputChunk } from '../../lib/follow.js';
import type { LogDecoder } from '../../lib/follow.js';
import { UserError } from '../../lib/errors.js';

/**
 * The wire format between Boxcar and its guest agent (guest/agent.c), on both virtio-serial
 * ports: 1 type byte, a 4-byte big-endian length, the payload. Job output only ever travels as
 * the payload of an output frame, so nothing a job prints can pass for an exit or a reply.
 */
export const FRAME = {
  /** host → guest */
  run: 'R',
  /** Everything a run does short of the exec, answered by W: warms a pooled VM. */
  warm: 'W',
  kill: 'K',
  /** guest → host, on the control port */
  hello: 'H',
  started: 'S',
  error: 'E',
  /** guest → host, on the output port (a file QEMU writes) */
  stdout: 'o',
  stderr: 'e',
  notice: 'n',
  exit: 'x',
} as const;

export interface Frame {
  type: string;
  payload: Buffer;
}

const HEADER = 5;
/**
 * The largest frame either side accepts (the agent's `MAX_FRAME`): output travels in frames of
 * 32 KiB at most and a run request is far smaller, so a bigger length can only be a broken or
 * hostile peer, and buffering what it announces would let a guest grow the host's memory.
 */
export const FRAME_MAX_BYTES = 1024 * 1024;

/** A peer announced a frame over FRAME_MAX_BYTES: the channel is closed and the job fails. */
export class FrameTooLarge extends Error {}

export function encodeFrame(type: string, payload: Buffer | string): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
  const head = Buffer.alloc(HEADER);
  head[0] = type.charCodeAt(0);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

/**
 * Splits a byte stream into frames; a partial frame waits for the next bytes. It holds at most
 * one partial frame, and refuses (throws FrameTooLarge) a length over FRAME_MAX_BYTES as soon as
 * its header arrives, before buffering any of it.
 */
export class FrameDecoder {
  private pending: Buffer = Buffer.alloc(0);

  push(bytes: Buffer): Frame[] {
    this.pending = this.pending.length ? Buffer.concat([this.pending, bytes]) : bytes;
    const frames: Frame[] = [];
    while (this.pending.length >= HEADER) {
      const len = this.pending.readUInt32BE(1);
      if (len > FRAME_MAX_BYTES) {
        this.pending = Buffer.alloc(0);
        throw new FrameTooLarge(
          `the VM sent a frame of ${len} bytes, over the ${FRAME_MAX_BYTES}-byte maximum: its channel is closed`,
        );
      }
      if (this.pending.length < HEADER + len) break;
      frames.push({
        type: String.fromCharCode(this.pending[0] as number),
        payload: this.pending.subarray(HEADER, HEADER + len),
      });
      this.pending = this.pending.subarray(HEADER + len);
    }
    return frames;
  }
}

/** What the agent needs to run one job; the order is the agent's `F_*` field order. */
export interface RunRequest {
  hostname: string;
  /** Wall-clock time to set in the guest: a restored clone wakes at its snapshot's time. */
  nowMs: number;
  /** Fresh bytes for the guest's RNG: every clone of a snapshot starts with the same state. */
  seed: Buffer;
  outputCapBytes: number;
  pids: number;
  memoryBytes: number;
  cpuMillis: number;
  tmpBytes: number;
  workspaceBytes: number;
  /** Capability bits the job keeps (the same set container jobs get). */
  capabilities: bigint;
  /** Classic BPF seccomp program, 8 bytes per instruction. */
  seccomp: Buffer;
  argv: string[];
  env: string[];
  /** `ip/prefix gateway` for a job with network; empty: its own loopback only. */
  network: string;
  /** The VM's workspace disk holds the job's files: the agent mounts it at /workspace (else a tmpfs). */
  workspaceDisk: boolean;
}

/**
 * A run request's fields in wire order, each as the agent reads it: the order is the agent's
 * `F_*` enum (`protocol.test.ts` holds the two together).
 */
const nul = (list: string[]) => Buffer.from(list.map((s) => `${s}\0`).join(''));
export const RUN_REQUEST_FIELDS = {
  hostname: (r: RunRequest) => r.hostname,
  time: (r: RunRequest) => `${Math.floor(r.nowMs / 1000)}.${(r.nowMs % 1000) * 1_000_000}`,
  seed: (r: RunRequest) => r.seed,
  output_cap: (r: RunRequest) => String(r.outputCapBytes),
  pids: (r: RunRequest) => String(r.pids),
  memory: (r: RunRequest) => String(r.memoryBytes),
  cpu: (r: RunRequest) => String(r.cpuMillis),
  tmp: (r: RunRequest) => String(r.tmpBytes),
  workspace: (r: RunRequest) => String(r.workspaceBytes),
  caps: (r: RunRequest) => r.capabilities.toString(),
  seccomp: (r: RunRequest) => r.seccomp,
  argv: (r: RunRequest) => nul(r.argv),
  env: (r: RunRequest) => nul(r.env),
  network: (r: RunRequest) => r.network,
  workspace_disk: (r: RunRequest) => (r.workspaceDisk ? '1' : ''),
} satisfies Record<string, (r: RunRequest) => Buffer | string>;

export function encodeRunRequest(r: RunRequest): Buffer {
  const fields = Object.values(RUN_REQUEST_FIELDS).map((f) => f(r));
  for (const s of [...r.argv, ...r.env])
    if (s.includes('\0')) throw new Error('a command argument or environment value contains a NUL byte');
  const request = Buffer.concat(
    fields.map((f) => {
      const body = typeof f === 'string' ? Buffer.from(f) : f;
      const len = Buffer.alloc(4);
      len.writeUInt32BE(body.length);
      return Buffer.concat([len, body]);
    }),
  );
  if (request.length > FRAME_MAX_BYTES)
    throw new UserError(
      `the job's command and environment take ${request.length} bytes; a microVM job takes at most ${FRAME_MAX_BYTES}: shorten them or pass data through the workspace`,
    );
  return request;
}

export interface GuestExit {
  exitCode: number;
  oomKilled: boolean;
  /** The job's cgroup in the guest: peak memory and CPU time. */
  peakMemoryBytes: number;
  cpuUsageNs: number;
}

export function parseExit(payload: Buffer): GuestExit {
  const [code, oom, peak, cpuUs] = payload.toString().split(' ').map(Number);
  if (code === undefined || Number.isNaN(code))
    throw new Error(`malformed exit frame "${payload.toString()}"`);
  return {
    exitCode: code,
    oomKilled: oom === 1,
    peakMemoryBytes: Math.max(0, peak ?? 0),
    cpuUsageNs: Math.max(0, (cpuUs ?? 0) * 1000),
  };
}

/** What an honest agent writes past the log cap: its notice and its exit frame. */
const LOG_CAP_SLACK = 4096;

/** A guest wrote its log past the cap it was given (an honest agent stops there itself). */
export class LogOverCap extends Error {}

/**
 * The job's log (output-port frames) as output chunks; the exit frame goes to `onExit`. The
 * agent stops at `capBytes` itself, so a log that grows further is a guest ignoring the cap:
 * `overCap: 'throw'` raises LogOverCap (the driver then stops the VM), `'drop'` ends the
 * output there with a notice (a reader of that log).
 */
export function vmLogDecoder(
  onExit: (e: GuestExit) => void,
  capBytes = Infinity,
  overCap: 'throw' | 'drop' = 'throw',
): LogDecoder {
  const frames = new FrameDecoder();
  const text = { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') };
  let read = 0;
  return {
    push(bytes) {
      const before = read;
      read += bytes.length;
      if (read > capBytes + LOG_CAP_SLACK) {
        const why = `the VM wrote over ${capBytes} bytes to the job's log, past its size cap`;
        if (overCap === 'throw') throw new LogOverCap(why);
        return before > capBytes + LOG_CAP_SLACK ? [] : [{ stream: 'stderr', text: `[boxcar: ${why}]\n` }];
      }
      const out: OutputChunk[] = [];
      for (const f of frames.push(bytes)) {
        if (f.type === FRAME.exit) onExit(parseExit(f.payload));
        else if (f.type === FRAME.notice)
          out.push({ stream: 'stderr', text: `[boxcar: ${f.payload.toString()}]\n` });
        else if (f.type === FRAME.stdout || f.type === FRAME.stderr) {
          const stream = f.type === FRAME.stdout ? 'stdout' : 'stderr';
          const s = text[stream].write(f.payload); // a character may span two frames
          if (s) out.push({ stream, text: s });
        }
      }
      return out;
    },
  };
}
