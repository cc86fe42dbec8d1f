import type net from 'node:net';
import { connectVmmSocket } from '../vmm-socket.js';

export class QmpError extends Error {}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  command: string;
}

/**
 * A client for QEMU's machine protocol (QMP): JSON lines over a Unix socket. Commands carry an
 * id so replies find their caller; asynchronous events are kept for `waitEvent`.
 */
export class QmpClient {
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private readonly events: Array<{ event: string; data?: unknown }> = [];
  private eventWaiters: Array<() => void> = [];
  private closed: Error | undefined;

  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => this.onData(d));
    const fail = (err: Error) => {
      this.closed = err;
      for (const p of this.pending.values()) p.reject(new QmpError(`QMP ${p.command}: ${err.message}`));
      this.pending.clear();
      for (const w of this.eventWaiters) w();
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('the VMM closed its QMP socket')));
  }

  /** Connects (retrying while the VMM creates its socket) and leaves capability negotiation. */
  static connect(socketPath: string, timeoutMs = 10_000): Promise<QmpClient> {
    return connectVmmSocket(socketPath, timeoutMs, 'QMP', async (socket) => {
      const client = new QmpClient(socket);
      await client.execute('qmp_capabilities');
      return client;
    });
  }

  private onData(d: string): void {
    this.buffer += d;
    let nl;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (!line) continue;
      const msg = JSON.parse(line) as {
        id?: string;
        return?: unknown;
        error?: { class: string; desc: string };
        event?: string;
        data?: unknown;
      };
      if (msg.event) {
        this.events.push({ event: msg.event, data: msg.data });
        for (const w of this.eventWaiters) w();
        continue;
      }
      const p = msg.id === undefined ? undefined : this.pending.get(msg.id);
      if (!p) continue; // the greeting
      this.pending.delete(msg.id as string);
      if (msg.error) p.reject(new QmpError(`QMP ${p.command}: ${msg.error.desc} (${msg.error.class})`));
      else p.resolve(msg.return);
    }
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closed) return Promise.reject(new QmpError(`QMP ${command}: ${this.closed.message}`));
    const id = String(this.nextId++);
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, command });
      this.socket.write(`${JSON.stringify({ execute: command, arguments: args, id })}\n`);
    });
  }

  /** Resolves with the first `event` seen since the connection (consuming it). */
  async waitEvent(event: string, timeoutMs: number): Promise<unknown> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.events.findIndex((e) => e.event === event);
      if (i >= 0) return this.events.splice(i, 1)[0]?.data;
      if (this.closed) throw new QmpError(`waiting for ${event}: ${this.closed.message}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new QmpError(`no ${event} event within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.eventWaiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
      this.eventWaiters = [];
    }
  }

  close(): void {
    this.socket.destroy();
  }
}
