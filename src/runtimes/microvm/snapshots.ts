import { existsSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { digestHex, sha256 } from '../../lib/digest.js';
import { ifExists } from '../../lib/errors.js';
import { withLock, writeFileAtomic } from '../../lib/fs-util.js';
import type { Logger } from '../../observability/logger.js';
import type { GuestImage } from './guest/guest.js';
import type { Vmm, VmShape } from './vmm.js';

/** 2: every VM has a workspace disk beside its root disk (a snapshot holds its device set). */
const FORMAT = 2;
/** QEMU's migration stream starts with "QEVM". */
const QEMU_MAGIC = Buffer.from('QEVM');

interface Meta {
  key: string;
  stateBytes: number;
  createdAt: string;
  vmm: string;
}

export interface SnapshotKey {
  guest: GuestImage;
  vmm: Vmm;
  shape: VmShape;
  network: boolean;
}

/**
 * Snapshots of a booted guest at its agent's ready point, one per (guest, VMM version,
 * accelerator, VM shape). A snapshot whose inputs changed is another key; one that is missing,
 * cut short or does not start with QEMU's stream header is built again; one that fails to
 * restore is discarded by the driver (seed 9.1: "snapshot file damaged or version mismatch").
 */
export class Snapshots {
  constructor(
    private readonly dir: string,
    private readonly logger: Logger,
  ) {}

  /** `m<MiB>-c<vcpus>[-net]`: the shape part of a snapshot's name; the rest names its inputs. */
  private static shapeName(k: SnapshotKey): string {
    return `m${k.shape.memoryMiB}-c${k.shape.vcpus}${k.network ? '-net' : ''}`;
  }

  async key(k: SnapshotKey): Promise<string> {
    const inputs = [FORMAT, k.guest.key, k.vmm.name, await k.vmm.version(), k.vmm.accel];
    return `${Snapshots.shapeName(k)}-${digestHex(sha256(JSON.stringify(inputs))).slice(0, 16)}`;
  }

  /** Why the snapshot in `dir` cannot be used, or undefined when it can. */
  async problem(dir: string, key: string): Promise<string | undefined> {
    const text = await ifExists(readFile(path.join(dir, 'meta.json'), 'utf8'));
    if (text === undefined) return 'missing';
    let meta: Meta;
    try {
      meta = JSON.parse(text) as Meta;
    } catch {
      return 'its description is damaged'; // not JSON
    }
    if (meta.key !== key) return `taken with other inputs (${meta.key})`;
    const state = path.join(dir, 'state');
    const st = await stat(state).catch(() => undefined);
    if (!st) return 'its state file is missing';
    if (st.size !== meta.stateBytes) return `its state file has ${st.size} bytes, not ${meta.stateBytes}`;
    const fh = await open(state, 'r');
    try {
      const head = Buffer.alloc(4);
      await fh.read(head, 0, 4, 0);
      if (!head.equals(QEMU_MAGIC) && meta.vmm === 'qemu') return 'its state file does not start with QEVM';
    } finally {
      await fh.close();
    }
    return undefined;
  }

  /**
   * The snapshot directory for `k`, built by `take(tmpDir)` when missing or unusable. Older
   * snapshots of the same shape (another QEMU or guest) are removed once the new one exists.
   */
  async ensure(k: SnapshotKey, take: (dir: string) => Promise<void>): Promise<string> {
    const key = await this.key(k);
    const dir = path.join(this.dir, key);
    if (!(await this.problem(dir, key))) return dir;
    await mkdir(this.dir, { recursive: true });
    return withLock(
      `${dir}.lock`,
      async () => {
        const why = await this.problem(dir, key);
        if (!why) return dir;
        this.logger.info({ snapshot: key, why }, 'building the VM snapshot');
        const tmp = `${dir}.build-${process.pid}`;
        await rm(tmp, { recursive: true, force: true });
        await mkdir(tmp, { recursive: true });
        try {
          const t0 = Date.now();
          await take(tmp);
          const meta: Meta = {
            key,
            stateBytes: (await stat(path.join(tmp, 'state'))).size,
            createdAt: new Date().toISOString(),
            vmm: k.vmm.name,
          };
          await writeFileAtomic(path.join(tmp, 'meta.json'), JSON.stringify(meta));
          await rm(dir, { recursive: true, force: true });
          await rename(tmp, dir);
          this.logger.info(
            { snapshot: key, ms: Date.now() - t0, bytes: meta.stateBytes },
            'VM snapshot built',
          );
        } finally {
          await rm(tmp, { recursive: true, force: true });
        }
        const prefix = `${Snapshots.shapeName(k)}-`;
        for (const name of await readdir(this.dir))
          if (name.startsWith(prefix) && name !== key && !name.includes('.'))
            await rm(path.join(this.dir, name), { recursive: true, force: true });
        return dir;
      },
      { staleMs: 120_000 },
    );
  }

  /** Removes a snapshot that failed to restore; the next job builds it again. */
  async discard(dir: string, why: string): Promise<void> {
    this.logger.warn({ snapshot: path.basename(dir), why }, 'discarding a VM snapshot that did not restore');
    if (existsSync(dir)) await rm(dir, { recursive: true, force: true });
  }
}
