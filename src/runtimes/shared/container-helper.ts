import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import type { Socket } from 'node:net';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { builtCProgram } from '../../lib/c-program.js';
import { scrubbedEnv } from '../../lib/exec.js';

const SOURCE = fileURLToPath(new URL('../../../../src/runtimes/shared/container-helper.c', import.meta.url));

/**
 * What the host does for a job's container without a process of its own (container-helper.c):
 * set a pooled container's hostname inside its UTS namespace (runc), send a pooled container
 * its job on stdin through conmon's attach socket (gVisor), start a created runc container
 * through its exec FIFO. One long-lived helper rather than a process per call; requests are
 * answered in order; a helper that dies fails the calls waiting on it and is started again by
 * the next.
 */
export class ContainerHelper {
  private readonly waiting: Array<{ resolve: () => void; reject: (err: Error) => void }> = [];
  /**
   * The running helper, or the one being started: set synchronously, so that concurrent first
   * calls share one helper (two would leave one unclosed, holding Node up after `close`).
   */
  private helper: Promise<ChildProcessWithoutNullStreams> | undefined;
  private closed = false;

  constructor(private readonly binDir: string) {}

  /** Sets the hostname of the UTS namespace process `pid` is in. */
  setHostname(pid: number, hostname: string): Promise<void> {
    if (!/^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/.test(hostname))
      return Promise.reject(new Error(`hostname ${JSON.stringify(hostname)} is not a valid host name`));
    return this.request('hostname', String(pid), hostname);
  }

  /** Sends the bytes of `file` to conmon's attach socket `socket` (the container's stdin), then hangs up. */
  send(socket: string, file: string): Promise<void> {
    return this.request('send', socket, file);
  }

  /** Starts a created runc container: `fifo` is its `exec.fifo`, `initPid` its init (container-helper.c). */
  startContainer(fifo: string, initPid: number): Promise<void> {
    return this.request('start', fifo, String(initPid));
  }

  private async request(op: string, ...args: string[]): Promise<void> {
    if (args.some((a) => /[\t\n]/.test(a)))
      throw new Error(`container helper: ${op} ${args.join(' ')}: a tab or newline`);
    const helper = await this.started();
    if (this.closed) throw new Error('the container helper is closed');
    // Held only while an answer is due: an idle helper never keeps Node up.
    socket(helper.stdout).ref();
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      helper.stdin.write(`${[op, ...args].join('\t')}\n`);
    });
  }

  /** Builds the helper (once per host), so that a later call waits for no compiler. */
  prepare(): Promise<string> {
    return builtCProgram(SOURCE, this.binDir, 'container jobs');
  }

  private started(): Promise<ChildProcessWithoutNullStreams> {
    if (this.closed) return Promise.reject(new Error('the container helper is closed'));
    if (this.helper) return this.helper;
    const starting: Promise<ChildProcessWithoutNullStreams> = this.prepare().then((binary) =>
      this.spawnHelper(binary, () => this.forget(starting)),
    );
    // A failed build fails its callers (they hold `starting`); the next call tries again.
    starting.then(undefined, () => this.forget(starting));
    this.helper = starting;
    return starting;
  }

  private forget(helper: Promise<ChildProcessWithoutNullStreams>): void {
    if (this.helper === helper) this.helper = undefined;
  }

  private spawnHelper(binary: string, forgetSelf: () => void): ChildProcessWithoutNullStreams {
    const helper = spawn(binary, [], { stdio: 'pipe', env: scrubbedEnv({}) });
    let stderr = '';
    helper.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    createInterface({ input: helper.stdout }).on('line', (line) => {
      const call = this.waiting.shift();
      if (!this.waiting.length) socket(helper.stdout).unref();
      if (line === 'ok') call?.resolve();
      else call?.reject(new Error(`container helper: ${line.replace(/^error /, '')}`));
    });
    helper.on('exit', (code, signal) => {
      forgetSelf();
      const why = new Error(
        `the container helper ended (${signal ?? `exit ${code}`}) ${stderr.trim()}`.trim(),
      );
      for (const call of this.waiting.splice(0)) call.reject(why);
    });
    // Not a reason for Node to stay up: the driver that owns it closes it.
    helper.unref();
    socket(helper.stdout).unref();
    socket(helper.stderr).unref();
    // A write to a helper that just died: its exit (above) fails the calls waiting on it.
    helper.stdin.on('error', (err) => this.waiting.shift()?.reject(err));
    // Closed while it was being built: it ends at once.
    if (this.closed) helper.stdin.end();
    return helper;
  }

  /** Ends the helper, also one still being started, and waits until it has exited; later calls fail. */
  async close(): Promise<void> {
    this.closed = true;
    const helper = this.helper;
    this.helper = undefined;
    // A helper that failed to start has nothing to end (its callers got the error).
    const h = await helper?.catch(() => undefined);
    if (!h || h.exitCode !== null || h.signalCode !== null) return;
    const exited = new Promise((resolve) => h.once('exit', resolve));
    h.ref(); // its exit is awaited now: Node stays up for it
    h.stdin.end();
    await exited;
  }
}

/** A child's piped stream is a socket underneath, which can stop holding Node up. */
const socket = (stream: Readable) => stream as unknown as Socket;
