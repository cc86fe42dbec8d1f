import type { StatePaths } from '../lib/state-paths.js';
import { UserError } from '../lib/errors.js';
import { RUNTIME_NAMES, type RuntimeName } from '../jobs/spec.js';
import type { Logger } from '../observability/logger.js';
import type { Fingerprint, Runtime } from './runtime.js';
import { GvisorDriver } from './gvisor/driver.js';
import { MicrovmDriver } from './microvm/driver.js';
import { knownAccel } from './microvm/qemu/accel.js';
import { tcgVerdict } from './microvm/vm-host.js';
import { RuncDriver } from './runc/driver.js';
import { WasmDriver } from './wasm/driver.js';

/** The drivers this build has, by name; fingerprints are taken once and cached. */
export class RuntimeRegistry {
  private readonly drivers = new Map<RuntimeName, Runtime>();
  private readonly fingerprints = new Map<RuntimeName, Promise<Fingerprint>>();

  constructor(
    drivers: Runtime[],
    /** Why runtimes without a driver here have none (default: not in this build). */
    private readonly missing: Partial<Record<RuntimeName, string>> = {},
  ) {
    for (const d of drivers) this.drivers.set(d.name, d);
  }

  get(name: RuntimeName): Runtime {
    const d = this.drivers.get(name);
    if (!d)
      throw new UserError(
        `runtime ${name} is not available in this build of Boxcar (available: ${[...this.drivers.keys()].join(', ')})`,
      );
    return d;
  }

  fingerprint(name: RuntimeName): Promise<Fingerprint> {
    let fp = this.fingerprints.get(name);
    if (!fp) {
      const d = this.drivers.get(name);
      fp = d
        ? d.fingerprint()
        : Promise.resolve({
            runtime: name,
            usable: false,
            reason: this.missing[name] ?? 'no driver for it in this build of Boxcar yet',
            details: {},
          });
      this.fingerprints.set(name, fp);
    }
    return fp;
  }

  async close(): Promise<void> {
    for (const d of this.drivers.values()) await d.close?.();
  }

  /** Each driver's own status (warm pools…), for those that have one. */
  async status(): Promise<Record<string, Record<string, unknown>>> {
    const out: Record<string, Record<string, unknown>> = {};
    for (const d of this.drivers.values()) if (d.status) out[d.name] = await d.status();
    return out;
  }

  /** Whether any driver finds its sandboxes by a query (`removeStrays`). */
  get findsStrays(): boolean {
    return [...this.drivers.values()].some((d) => d.removeStrays);
  }

  /**
   * After a restart: each driver that finds its sandboxes by a query removes those of this node
   * that no live job holds (`live`: sandbox ids). Returns what was removed.
   */
  async removeStrays(live: ReadonlySet<string>): Promise<string[]> {
    const removed: string[] = [];
    for (const d of this.drivers.values()) if (d.removeStrays) removed.push(...(await d.removeStrays(live)));
    return removed;
  }

  /** Every runtime Boxcar knows, usable here or not. */
  async fingerprintAll(): Promise<Fingerprint[]> {
    return Promise.all(RUNTIME_NAMES.map((n) => this.fingerprint(n)));
  }
}

/** The config's `microvm` section, as the drivers take it. */
export interface MicrovmSettings {
  warmPool?: number;
  allowTcgForUntrusted?: boolean;
}

/** The drivers of this host. */
export function hostRuntimes(
  paths: StatePaths,
  logger: Logger,
  microvm: MicrovmSettings = {},
  pools: { runc?: number; gvisor?: number } = {},
): RuntimeRegistry {
  return new RuntimeRegistry([
    new RuncDriver({ paths, logger: logger.child({ runtime: 'runc' }), warmPool: pools.runc }),
    new GvisorDriver({ paths, logger: logger.child({ runtime: 'gvisor' }), warmPool: pools.gvisor }),
    new MicrovmDriver({
      paths,
      logger: logger.child({ runtime: 'firecracker' }),
      ...microvm,
    }),
    new WasmDriver({ paths, logger: logger.child({ runtime: 'wasm' }) }),
  ]);
}

/**
 * A runtime's fingerprint in the fleet's view (`policy explain` without `--local`): assumed
 * usable, with what this host knows without starting anything, i.e. whether its microVMs are a
 * boundary for untrusted code (TCG is none).
 */
export async function assumedFingerprint(
  runtime: RuntimeName,
  microvm: MicrovmSettings,
): Promise<Fingerprint> {
  const base = {
    runtime,
    usable: true,
    reason: 'assumed usable (not judged on this node; --local judges it)',
    details: {},
  };
  if (runtime !== 'firecracker') return base;
  const accel = await knownAccel();
  return {
    ...base,
    untrustedCode: accel
      ? tcgVerdict(accel, microvm.allowTcgForUntrusted ?? false)
      : {
          allowed: true,
          why: 'whether KVM boots guests on this host is not probed yet on this boot (boxcar doctor probes it); on TCG untrusted jobs would go to the fallback',
        },
  };
}
