/**
 * One WASM worker process, confined by launcher.c (its own uid, cgroup, namespaces, seccomp):
 * compiles the modules it is sent (kept by key: a worker serves one tenant, whose modules come
 * back), instantiates one with WASI preview1 and runs `_start`, one job at a time. The job's
 * /workspace is this process's /tmp, a tmpfs of its own emptied after every job (or, for a job
 * that starts with files, the job's own directory, for its one job). Output goes
 * to fd 1, a pipe Boxcar reads, followed by the job's end marker. A trap ends the job with 134
 * (as for SIGABRT) and its message in the result.
 *
 * Boxcar passes this file's text to `node -e`: it may import only Node's own modules.
 */

import { readdirSync, rmSync, writeSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { getHeapStatistics } from 'node:v8';
import { WASI } from 'node:wasi';

export interface RunTask {
  type: 'run';
  id: number;
  /** The module's cache key (digest and limits), and its bytes the first time this worker gets it. */
  key: string;
  bytes?: Uint8Array<ArrayBuffer>;
  args: string[];
  env: Record<string, string>;
  /** Written to fd 1 after the job's output: the job has nothing more to say. Unknown to the module. */
  endMarker: string;
  /** The workspace is the job's own directory, read by Boxcar after the job: not emptied. */
  keepWorkspace: boolean;
}

export type WorkerMessage =
  | { id: number; type: 'ready' }
  | { id: number; type: 'started' }
  | { id: number; type: 'exited'; exitCode: number; trap: string | null; memoryBytes: number; runNs: number };

const TRAP_EXIT = 134;
const WORKSPACE = '/tmp';
const OUTPUT_FD = 1;
/**
 * V8's memory outside its heap (jobs' linear memories are there) past which a worker collects
 * garbage before its next job. A full collection costs ~5 ms of CPU, more than a small job: done
 * after every job, it held a worker to ~200 jobs/s. A job's memory is released a few
 * collections after its end (node:wasi's objects go in stages), so a large one is collected
 * again after each job until it is gone.
 */
const GARBAGE_BYTES = 8 * 2 ** 20;

/** `(module (memory (export "memory") 0) (func (export "_start")))`: run at boot so node:wasi is loaded and hot. */
const WARM_UP = Uint8Array.from([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 4, 1, 96, 0, 0, 3, 2, 1, 0, 5, 3, 1, 0, 0, 7, 19, 2, 6, 109, 101, 109, 111,
  114, 121, 2, 0, 6, 95, 115, 116, 97, 114, 116, 0, 0, 10, 4, 1, 2, 0, 11,
]);

const modules = new Map<string, Promise<WebAssembly.Module>>();
const send = (m: WorkerMessage) => process.send?.(m);

function compiled(task: RunTask): Promise<WebAssembly.Module> {
  let mod = modules.get(task.key);
  if (!mod) {
    mod = task.bytes
      ? WebAssembly.compile(task.bytes)
      : Promise.reject(new Error(`module ${task.key} was never sent to this worker`));
    mod.catch(() => modules.delete(task.key)); // a failure is not cached
    modules.set(task.key, mod);
  }
  return mod;
}

/** Runs the module; its instance and memory are unreachable once this has returned. */
async function execute(
  task: RunTask,
): Promise<Omit<Extract<WorkerMessage, { type: 'exited' }>, 'id' | 'type'>> {
  const wasi = new WASI({
    version: 'preview1',
    args: task.args,
    env: task.env,
    preopens: { '/workspace': WORKSPACE },
    stdout: OUTPUT_FD,
    stderr: OUTPUT_FD,
    returnOnExit: true,
  });
  let instance: WebAssembly.Instance | undefined;
  let exitCode: number;
  let trap: string | null = null;
  const t0 = performance.now();
  try {
    instance = await WebAssembly.instantiate(
      await compiled(task),
      wasi.getImportObject() as WebAssembly.Imports,
    );
    send({ id: task.id, type: 'started' });
    exitCode = wasi.start(instance);
  } catch (err) {
    trap = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    exitCode = TRAP_EXIT;
    if (!instance) send({ id: task.id, type: 'started' });
  }
  const runNs = Math.round((performance.now() - t0) * 1e6);
  const memory = instance?.exports.memory;
  const memoryBytes = memory instanceof WebAssembly.Memory ? memory.buffer.byteLength : 0;
  return { exitCode, trap, memoryBytes, runNs };
}

async function run(task: RunTask): Promise<void> {
  const exit = await execute(task);
  writeSync(OUTPUT_FD, task.endMarker);
  // The next job (the same tenant's) starts with an empty workspace and the memory of the jobs
  // before it bounded.
  if (!task.keepWorkspace)
    for (const name of readdirSync(WORKSPACE))
      rmSync(`${WORKSPACE}/${name}`, { recursive: true, force: true });
  if (getHeapStatistics().external_memory >= GARBAGE_BYTES) (globalThis as { gc?: () => void }).gc?.();
  send({ id: task.id, type: 'exited', ...exit });
}

// One task at a time, in order: a message arriving mid-run waits for the run to finish.
let queue = (async () => {
  const wasi = new WASI({ version: 'preview1', args: ['warm-up'], env: {}, returnOnExit: true });
  wasi.start(
    await WebAssembly.instantiate(WARM_UP, wasi.getImportObject() as WebAssembly.Imports).then(
      (r) => r.instance,
    ),
  );
  send({ id: 0, type: 'ready' });
})();
process.on('message', (task: RunTask) => {
  queue = queue.then(() => run(task));
});
// Boxcar gone (its end of the channel closed): nothing will ever come.
process.on('disconnect', () => process.exit(0));
