import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import type { Socket } from 'node:net';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { builtCProgram } from '../../lib/c-program.js';
import { scrubbedEnv } from '../../lib/exec.js';

const SOURCE = fileURLToPath(new URL('../../../../src/runtimes/shared/uts-setter.c', import.meta.url));

/**
 * Sets the hostname inside a running container's UTS namespace, through one long-lived helper
 * (uts-setter.c) rather than a process per call. Requests are answered in order; a helper that
 * dies fails the calls waiting on it and is started again by the next.
 */
export class HostnameSetter {
  private helper: ChildProcessWithoutNullStreams | undefined;
  private readonly waiting: Array<{ resolve: () => void; reject: (err: Error) => void }> = [];

  constructor(private readonly binDir: string) {}

  async set(pid: number, hostname: string): Promise<void> {
    if (!/^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/.test(hostname))
      throw new Error(`hostname ${JSON.stringify(hostname)} is not a valid host name`);
    const helper = await this.started();
    // Held only while an answer is due: an idle helper never keeps Node up.
    socket(helper.stdout).ref();
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      helper.stdin.write(`${pid} ${hostname}\n`);
    });
  }

  /** Builds the helper (once per host), so that a later `set` waits for no compiler. */
  prepare(): Promise<string> {
    return builtCProgram(SOURCE, this.binDir, 'the warm pool of containers');
  }

  private async started(): Promise<ChildProcessWithoutNullStreams> {
    if (this.helper && this.helper.exitCode === null && this.helper.signalCode === null) return this.helper;
    const binary = await this.prepare();
    const helper = spawn(binary, [], { stdio: 'pipe', env: scrubbedEnv({}) });
    let stderr = '';
    helper.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    createInterface({ input: helper.stdout }).on('line', (line) => {
      const call = this.waiting.shift();
      if (!this.waiting.length) socket(helper.stdout).unref();
      if (line === 'ok') call?.resolve();
      else call?.reject(new Error(`setting a pooled container's hostname: ${line.replace(/^error /, '')}`));
    });
    helper.on('exit', (code, signal) => {
      const why = new Error(
        `the hostname helper ended (${signal ?? `exit ${code}`}) ${stderr.trim()}`.trim(),
      );
      for (const call of this.waiting.splice(0)) call.reject(why);
    });
    // Not a reason for Node to stay up: the pool that owns it closes it.
    helper.unref();
    socket(helper.stdout).unref();
    socket(helper.stderr).unref();
    // A write to a helper that just died: its exit (above) fails the calls waiting on it.
    helper.stdin.on('error', (err) => this.waiting.shift()?.reject(err));
    this.helper = helper;
    return helper;
  }

  close(): void {
    this.helper?.stdin.end();
    this.helper = undefined;
  }
}

/** A child's piped stream is a socket underneath, which can stop holding Node up. */
const socket = (stream: Readable) => stream as unknown as Socket;
