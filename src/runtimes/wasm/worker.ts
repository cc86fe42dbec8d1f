/**
 * One pool thread: instantiates a compiled module with WASI preview1 and runs `_start`, one job
 * at a time. Output goes straight to the job's log file descriptor (the driver owns and closes it). A trap ends the job with
 * 134 (as for SIGABRT) and its message in the output.
 */

import { performance } from 'node:perf_hooks';
import { WASI } from 'node:wasi';
import { parentPort } from 'node:worker_threads';

export interface RunTask {
  id: number;
  module: WebAssembly.Module;
  args: string[];
  env: Record<string, string>;
  preopens: Record<string, string>;
  outputFd: number;
}

export type WorkerMessage =
  | { id: number; type: 'started' }
  | { id: number; type: 'exited'; exitCode: number; trap: string | null; memoryBytes: number; runNs: number };

const TRAP_EXIT = 134;

// One task at a time, in order: a message arriving mid-run waits for the run to finish.
let queue = Promise.resolve();
parentPort?.on('message', (task: RunTask) => {
  queue = queue.then(() => runTask(task));
});

async function runTask(task: RunTask): Promise<void> {
  const wasi = new WASI({
    version: 'preview1',
    args: task.args,
    env: task.env,
    preopens: task.preopens,
    stdout: task.outputFd,
    stderr: task.outputFd,
    returnOnExit: true,
  });
  let instance: WebAssembly.Instance | undefined;
  let exitCode: number;
  let trap: string | null = null;
  const t0 = performance.now();
  try {
    instance = await WebAssembly.instantiate(task.module, wasi.getImportObject() as WebAssembly.Imports);
    parentPort?.postMessage({ id: task.id, type: 'started' } satisfies WorkerMessage);
    exitCode = wasi.start(instance);
  } catch (err) {
    trap = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    exitCode = TRAP_EXIT;
    if (!instance) parentPort?.postMessage({ id: task.id, type: 'started' } satisfies WorkerMessage);
  }
  const memory = instance?.exports.memory;
  parentPort?.postMessage({
    id: task.id,
    type: 'exited',
    exitCode,
    trap,
    memoryBytes: memory instanceof WebAssembly.Memory ? memory.buffer.byteLength : 0,
    runNs: Math.round((performance.now() - t0) * 1e6),
  } satisfies WorkerMessage);
}
