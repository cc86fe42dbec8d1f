import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { ImageStore } from '../../images/image-store.js';
import { resolveImage } from '../../images/resolve.js';
import { newHandle, type TaskHandle } from '../../jobs/handle.js';
import { JobSpec } from '../../jobs/spec.js';
import { run } from '../../lib/exec.js';
import type { StatePaths } from '../../lib/state-paths.js';
import type { ExitStatus, Runtime } from '../runtime.js';

/**
 * For the microVM workspace tests: a workspace directory as Boxcar gives one (a tmpfs of the
 * job's workspace size), and a job run through the driver's contract with it.
 */

/** A tmpfs of `bytes` in a fresh directory, for `use`; unmounted and removed afterwards, whatever happens. */
export async function withWorkspaceTmpfs<T>(bytes: number, use: (dir: string) => Promise<T>): Promise<T> {
  const parent = await mkdtemp(path.join(os.tmpdir(), 'bx-ws-'));
  const dir = path.join(parent, 'workspace');
  try {
    await mkdir(dir);
    await run('mount', ['-t', 'tmpfs', '-o', `size=${bytes},mode=0755`, 'tmpfs', dir]);
    try {
      return await use(dir);
    } finally {
      await run('umount', [dir]);
    }
  } finally {
    await rm(parent, { recursive: true, force: true });
  }
}

export interface WorkspaceJob {
  handle: TaskHandle;
  /** The exit, or what `wait` failed with. */
  exit: ExitStatus | Error;
  output: string;
}

/** One job with `workspaceDir`, from prepare to destroy (also when it fails); `running` once it started. */
export async function runWithWorkspace(
  driver: Runtime,
  box: { paths: StatePaths; images: ImageStore },
  input: Record<string, unknown>,
  workspaceDir: string,
  running?: (handle: TaskHandle) => Promise<void>,
): Promise<WorkspaceJob> {
  const sandboxId = randomUUID();
  const ids = { runtime: driver.name, jobId: randomUUID(), sandboxId };
  let handle = newHandle({ ...ids, logPath: path.join(box.paths.sandboxes, `${sandboxId}.log`) });
  try {
    handle = await driver.prepare({
      jobId: ids.jobId,
      sandboxId,
      spec: JobSpec.parse(input),
      image: await resolveImage(box.images, undefined),
      tenant: 'test',
      trust: 'untrusted',
      secrets: {},
      logPath: handle.logPath,
      workspaceDir,
    });
    await driver.start(handle);
    await running?.(handle);
    const exit = await driver.wait(handle).catch((err: unknown) => err as Error);
    let output = '';
    for await (const chunk of driver.output(handle, { follow: false })) output += chunk.text;
    return { handle, exit, output };
  } finally {
    await driver.destroy(handle);
  }
}
