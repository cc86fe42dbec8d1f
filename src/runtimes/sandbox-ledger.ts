import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { readHandle, type TaskHandle } from '../jobs/handle.js';
import { withContext } from '../lib/errors.js';
import type { StatePaths } from '../lib/state-paths.js';
import type { Runtime } from './runtime.js';

/**
 * Which sandboxes exist on this host's disk, kept beside them (`sandboxes/<id>.handle`) rather
 * than in the store: the store holds a job's latest handle only, and once another node has run
 * the job again, nothing there names the sandbox this host still holds for it; a warm pool's
 * idle sandboxes belong to no job at all. A sandbox is recorded before anything of it is
 * created and forgotten once it is destroyed.
 */
const SUFFIX = '.handle';

const Record = z.object({
  handle: z.unknown(),
  /** An idle pooled sandbox: the process holding it (lib/owner.ts), until a job takes it. */
  heldBy: z.string().optional(),
});

export interface SandboxRecord {
  handle: TaskHandle;
  heldBy?: string;
}

const recordPath = (paths: StatePaths, sandboxId: string) =>
  path.join(paths.sandboxes, `${sandboxId}${SUFFIX}`);

/**
 * Whether a driver's sandboxes are recorded: those that outlive Boxcar's process. The others
 * (WASM's workers) end with it and leave nothing on disk to find.
 */
export const recordsSandboxes = (driver: Runtime): boolean => driver.capabilities.survivesRestart;

/** The sandbox may exist from now on. Root-only, like the sandbox itself. */
export async function recordSandbox(paths: StatePaths, handle: TaskHandle, heldBy?: string): Promise<void> {
  await writeFile(recordPath(paths, handle.sandboxId), JSON.stringify({ handle, heldBy }), {
    mode: 0o600,
  }).catch((err: unknown) => {
    throw withContext(`recording sandbox ${handle.sandboxId}`, err);
  });
}

export async function forgetSandbox(paths: StatePaths, sandboxId: string): Promise<void> {
  await rm(recordPath(paths, sandboxId), { force: true });
}

/** The ids of the sandboxes recorded on this disk. */
export async function recordedSandboxes(paths: StatePaths): Promise<string[]> {
  return (await readdir(paths.sandboxes))
    .filter((n) => n.endsWith(SUFFIX))
    .map((n) => n.slice(0, -SUFFIX.length));
}

export async function readSandboxRecord(paths: StatePaths, sandboxId: string): Promise<SandboxRecord> {
  const r = Record.parse(JSON.parse(await readFile(recordPath(paths, sandboxId), 'utf8')));
  return { handle: readHandle(r.handle), heldBy: r.heldBy };
}
