import type { TaskHandle } from '../../jobs/handle.js';
import { newHandle } from '../../jobs/handle.js';
import type { RuntimeName } from '../../jobs/spec.js';
import type { OutputChunk } from '../../lib/follow.js';
import { UserError } from '../../lib/errors.js';
import type {
  Capabilities,
  ExitStatus,
  Fingerprint,
  OutputOptions,
  Recovered,
  Runtime,
  SandboxRequest,
  StopSignal,
  TaskStats,
} from '../runtime.js';

export interface MockBehaviour {
  exitCode: number;
  runMs: number;
  output: string;
  /** Only KILL stops it. */
  ignoreTerm: boolean;
  /** prepare or start fails: an infrastructure failure, or (`badInput`) the job's own. */
  failPrepare: boolean;
  failStart: boolean;
  badInput: boolean;
}

export function behaviourOf(env: Record<string, string>): MockBehaviour {
  return {
    exitCode: Number(env.MOCK_EXIT ?? 0),
    runMs: Number(env.MOCK_MS ?? 0),
    output: env.MOCK_OUTPUT ?? '',
    ignoreTerm: env.MOCK_IGNORE_TERM === '1',
    failPrepare: env.MOCK_FAIL_PREPARE === '1',
    failStart: env.MOCK_FAIL_START === '1',
    badInput: env.MOCK_BAD_INPUT === '1',
  };
}

interface MockSandbox {
  behaviour: MockBehaviour;
  state: 'created' | 'running' | 'exited';
  exit?: ExitStatus;
  signals: StopSignal[];
  timer?: NodeJS.Timeout;
  ended: Promise<void>;
  end: () => void;
}

/** The sandboxes of a simulated host: they outlive the driver (the Boxcar process) that made them. */
export class MockHost {
  readonly sandboxes = new Map<string, MockSandbox>();
  /** Every call drivers made, in order: `prepare <sandbox>`, `stop <sandbox> SIGTERM`… */
  readonly calls: string[] = [];

  /** A sandbox vanishes with no trace (its monitor and process killed from outside). */
  lose(sandboxId: string): void {
    clearTimeout(this.sandboxes.get(sandboxId)?.timer);
    this.sandboxes.delete(sandboxId);
  }
}

/**
 * A driver for fast tests of the job life cycle (after Nomad's `drivers/mock`): no sandbox, a
 * scripted process. A job's script comes from its environment (`MOCK_EXIT`, `MOCK_MS`,
 * `MOCK_OUTPUT`, `MOCK_IGNORE_TERM`, `MOCK_FAIL_PREPARE`, `MOCK_FAIL_START`, `MOCK_BAD_INPUT`),
 * so each test job says how it behaves. Sandboxes live in a `MockHost`, which a test shares
 * between drivers standing for successive Boxcar processes: what one "process" created, the
 * next finds on `recover`, as a real node finds its monitors after a restart.
 */
export class MockRuntime implements Runtime {
  readonly capabilities: Capabilities = {
    sharedKernel: false,
    workload: 'image',
    memoryMeasure: 'cgroup',
    memoryOverheadBytes: () => 0,
    gracefulStop: true,
    hostCgroup: false,
    network: false,
    survivesRestart: true,
    writableRoot: true,
    workspaceReturned: true,
  };

  constructor(
    readonly name: RuntimeName,
    readonly host: MockHost = new MockHost(),
  ) {}

  async fingerprint(): Promise<Fingerprint> {
    return { runtime: this.name, usable: true, reason: 'mock driver (tests)', details: {} };
  }

  private sandbox(handle: TaskHandle): MockSandbox {
    const s = this.host.sandboxes.get(handle.sandboxId);
    if (!s) throw new Error(`mock: no sandbox ${handle.sandboxId}`);
    return s;
  }

  async prepare(req: SandboxRequest): Promise<TaskHandle> {
    this.host.calls.push(`prepare ${req.sandboxId}`);
    const behaviour = behaviourOf({ ...req.spec.env, ...req.secrets });
    if (behaviour.badInput) throw new UserError('mock: the job’s own input is bad');
    if (behaviour.failPrepare) throw new Error('mock: the sandbox could not be created');
    let end = () => undefined as void;
    const ended = new Promise<void>((resolve) => (end = resolve));
    this.host.sandboxes.set(req.sandboxId, { behaviour, state: 'created', signals: [], ended, end });
    return newHandle({
      runtime: this.name,
      jobId: req.jobId,
      sandboxId: req.sandboxId,
      logPath: req.logPath,
    });
  }

  async start(handle: TaskHandle): Promise<void> {
    this.host.calls.push(`start ${handle.sandboxId}`);
    const s = this.sandbox(handle);
    if (s.behaviour.failStart) throw new Error('mock: the process could not be started');
    s.state = 'running';
    s.timer = setTimeout(
      () => this.exit(s, { exitCode: s.behaviour.exitCode, oomKilled: false }),
      s.behaviour.runMs,
    );
  }

  private exit(s: MockSandbox, exit: ExitStatus): void {
    if (s.state === 'exited') return;
    clearTimeout(s.timer);
    s.state = 'exited';
    s.exit = exit;
    s.end();
  }

  async wait(handle: TaskHandle): Promise<ExitStatus> {
    const s = this.sandbox(handle);
    await s.ended;
    return s.exit as ExitStatus;
  }

  async stop(handle: TaskHandle, signal: StopSignal): Promise<void> {
    this.host.calls.push(`stop ${handle.sandboxId} ${signal}`);
    const s = this.host.sandboxes.get(handle.sandboxId);
    if (!s || s.state !== 'running') return;
    s.signals.push(signal);
    if (signal === 'SIGKILL' || !s.behaviour.ignoreTerm)
      this.exit(s, { exitCode: signal === 'SIGKILL' ? 137 : 143, oomKilled: false });
  }

  async destroy(handle: TaskHandle): Promise<void> {
    this.host.calls.push(`destroy ${handle.sandboxId}`);
    const s = this.host.sandboxes.get(handle.sandboxId);
    if (s) clearTimeout(s.timer);
    this.host.sandboxes.delete(handle.sandboxId);
  }

  async stats(handle: TaskHandle): Promise<TaskStats> {
    const alive = this.host.sandboxes.has(handle.sandboxId);
    return {
      memoryBytes: alive ? 2 ** 20 : 0,
      peakMemoryBytes: 2 ** 20,
      cpuUsageNs: 1_000_000,
      pids: alive ? 1 : 0,
    };
  }

  async recover(handle: TaskHandle): Promise<Recovered> {
    const s = this.host.sandboxes.get(handle.sandboxId);
    if (!s) return { state: 'gone', reason: 'mock: no such sandbox on this host' };
    if (s.state === 'exited') return { state: 'exited', exit: s.exit as ExitStatus };
    return { state: s.state };
  }

  async *output(handle: TaskHandle, opts: OutputOptions): AsyncIterable<OutputChunk> {
    const s = this.host.sandboxes.get(handle.sandboxId);
    if (!s) return;
    if (opts.follow && s.state !== 'exited') {
      const stopped = [opts.ended, opts.signal].filter((x): x is AbortSignal => x !== undefined);
      await Promise.race([
        s.ended,
        ...stopped.map((sig) => new Promise((r) => sig.addEventListener('abort', r, { once: true }))),
      ]);
    }
    if (s.behaviour.output) yield { stream: 'stdout', text: s.behaviour.output };
  }
}
