import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { currentOwner, ownerAlive } from '../../lib/owner.js';
import { mountTmpfs, unmount } from '../shared/mounts.js';

const SPARE = '.wasm-spare@';

/**
 * WASM jobs' workspaces: a tmpfs of the job's workspace size per job, so files a module writes
 * cannot fill the host's disk. A `mount` costs a process start (~3 ms, most of a WASM job's
 * start), so `fill` mounts empty ones of the default size ahead of jobs, and `take` moves one
 * into the job's sandbox directory by rename, which carries the mount along. An empty tmpfs
 * holds no memory. Spares are named after their owner process, so a crashed owner's spares
 * are swept by the next one.
 */
export class Workspaces {
  private readonly spares: string[] = [];
  private filling: Promise<void> | undefined;
  private swept = false;
  private readonly owner = currentOwner();

  constructor(
    private readonly sandboxes: string,
    private readonly defaultBytes: number,
  ) {}

  private async mount(dir: string, bytes: number): Promise<void> {
    await mountTmpfs(dir, { bytes, mode: 0o755, noexec: true });
  }

  /** Keeps `count` empty workspaces of the default size mounted; settles when they are. */
  fill(count: number): Promise<void> {
    this.filling ??= (async () => {
      if (!this.swept) await this.sweep();
      while (this.spares.length < count) {
        const spare = path.join(this.sandboxes, `${SPARE}${this.owner}@${randomUUID()}`);
        await this.mount(path.join(spare, 'workspace'), this.defaultBytes);
        this.spares.push(spare);
      }
    })().finally(() => (this.filling = undefined));
    return this.filling;
  }

  /** A mounted, empty workspace of `bytes` at `<sandboxDir>/workspace`. */
  async take(sandboxDir: string, bytes: number): Promise<string> {
    const spare = bytes === this.defaultBytes ? this.spares.pop() : undefined;
    if (spare) await rename(spare, sandboxDir);
    else await this.mount(path.join(sandboxDir, 'workspace'), bytes);
    return path.join(sandboxDir, 'workspace');
  }

  /** Unmounts and removes a sandbox directory's workspace; safe when there is none. */
  async remove(sandboxDir: string): Promise<void> {
    await unmount(path.join(sandboxDir, 'workspace'));
    await rm(sandboxDir, { recursive: true, force: true });
  }

  /** Unmounts this process's spares. */
  async close(): Promise<void> {
    await this.filling?.catch(() => undefined); // its error was the caller's to handle
    await Promise.all(this.spares.splice(0).map((s) => this.remove(s)));
  }

  /** Spares left by owners that died without closing. */
  private async sweep(): Promise<void> {
    this.swept = true;
    if (!existsSync(this.sandboxes)) return;
    for (const name of await readdir(this.sandboxes)) {
      if (!name.startsWith(SPARE)) continue;
      const owner = name.slice(SPARE.length, name.lastIndexOf('@'));
      if (ownerAlive(owner) === false) await this.remove(path.join(this.sandboxes, name));
    }
  }
}
