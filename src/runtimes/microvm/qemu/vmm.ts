import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import path from 'node:path';
import { run, sleep, scrubbedEnv } from '../../../lib/exec.js';
import { processAlive } from '../../../lib/proc.js';
import type { GuestImage } from '../guest/guest.js';
import { AgentChannel } from '../agent-channel.js';
import {
  vmmCommand,
  kernelCommandLine,
  RestoreFailed,
  vmDiagnostics,
  vmmLog,
  type BalloonStats,
  type Vmm,
  type VmFiles,
  type VmLaunch,
} from '../vmm.js';
import type { Accel } from './accel.js';
import { QmpClient } from './qmp.js';
import { errorMessage } from '../../../lib/errors.js';

export const QEMU = 'qemu-system-x86_64';
const BOOT_TIMEOUT_MS = 20_000;
const RESTORE_TIMEOUT_MS = 20_000;

/** TCG's translation cache (MiB): QEMU's default (1 GiB) would not fit the VMM's memory limit. */
const TCG_TB_MIB = 32;
/** QEMU's I/O worker threads: bounded, so the VMM stays within its cgroup's pids limit. */
const IO_THREADS_MAX = 8;

export function qemuArgs(l: VmLaunch, accel: Accel, opts: { mayMigrateOut: boolean }): string[] {
  const f = l.files;
  const args = [
    '-M', 'microvm,x-option-roms=off,rtc=on,isa-serial=on',
    '-accel', accel === 'tcg' ? `tcg,tb-size=${TCG_TB_MIB}` : accel,
    '-object', `main-loop,id=main-loop,thread-pool-max=${IO_THREADS_MAX}`,
    ...(accel === 'kvm' ? ['-cpu', 'host'] : []),
    '-m', `${l.shape.memoryMiB}M`,
    '-smp', String(l.shape.vcpus),
    '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
    '-serial', `file:${f.console}`,
    '-drive', `id=root,file=${f.disk},format=qcow2,if=none,discard=unmap`,
    '-device', 'virtio-blk-device,drive=root',
    // The guest's /dev/vdb (after the root disk): its flushes are dropped, the file is scratch.
    '-drive', `id=workspace,file=${f.workspace},format=raw,if=none,discard=unmap,cache.no-flush=on`,
    '-device', 'virtio-blk-device,drive=workspace',
    '-device', 'virtio-balloon-device,id=balloon0,deflate-on-oom=on,free-page-reporting=on',
    '-device', 'virtio-serial-device,max_ports=3',
    '-chardev', `socket,id=ctl,path=${f.ctl},server=on,wait=off`,
    '-device', 'virtserialport,chardev=ctl,name=ctl',
    '-chardev', `file,id=out,path=${f.out},append=on`,
    '-device', 'virtserialport,chardev=out,name=out',
    '-qmp', `unix:${f.api},server=on,wait=off`,
    '-pidfile', f.pidFile,
    '-sandbox', `on,obsolete=deny,elevateprivileges=deny,resourcecontrol=deny${opts.mayMigrateOut ? '' : ',spawn=deny'}`,
  ]; // prettier-ignore
  if (l.network)
    args.push(
      '-netdev', `tap,id=n0,ifname=${l.network.tap},script=no,downscript=no,vhost=off`,
      '-device', `virtio-net-device,netdev=n0,mac=${l.network.mac}`,
    ); // prettier-ignore
  return args;
}

function bootArgs(guest: GuestImage): string[] {
  return ['-kernel', guest.kernel, '-initrd', guest.initrd, '-append', kernelCommandLine()];
}

/**
 * QEMU's `microvm` machine: no PCI, no firmware, virtio-mmio devices only. The guest's state
 * goes to a file through migration (`stop`, `migrate exec:cat > state`) and comes back with
 * `-incoming fd:` and `cont`. Job VMs run under QEMU's seccomp sandbox with process spawning
 * denied; only the VM a snapshot is taken from may spawn (`exec:` migration needs it).
 */
export class QemuVmm implements Vmm {
  readonly name = 'qemu' as const;
  readonly diskFormat = 'qcow2' as const;
  /** QEMU appends the agent's output frames to the log itself (a file-backed serial port). */
  readonly relaysOutput = false;
  private versionText: Promise<string> | undefined;

  constructor(
    readonly accel: Accel,
    private readonly binary = QEMU,
  ) {}

  version(): Promise<string> {
    this.versionText ??= run(this.binary, ['--version']).then((r) => r.stdout.split('\n')[0]?.trim() ?? '');
    return this.versionText;
  }

  /** Starts QEMU in its own session (it outlives us) with `extra` arguments and fds. */
  private async launch(l: VmLaunch, extra: string[], opts: { mayMigrateOut: boolean; stateFd?: number }) {
    const log = openSync(vmmLog(l.files), 'a');
    try {
      const stdio: Array<'ignore' | number> = ['ignore', log, log];
      if (opts.stateFd !== undefined) stdio.push(opts.stateFd);
      const [cmd, args] = vmmCommand(l, this.binary, [...qemuArgs(l, this.accel, opts), ...extra]);
      const child = spawn(cmd, args, { detached: true, stdio, env: scrubbedEnv() });
      const failed = new Promise<never>((_, reject) => {
        child.once('error', (err) => reject(new Error(`cannot start ${this.binary}: ${err.message}`)));
        child.once('exit', (code, signal) =>
          reject(new Error(`QEMU exited (${signal ?? `code ${code}`}) while starting`)),
        );
      });
      failed.catch(() => undefined); // observed below, or the VM came up and this never settles
      child.unref();
      const qmp = await Promise.race([QmpClient.connect(l.files.api, BOOT_TIMEOUT_MS), failed]);
      return { pid: child.pid as number, qmp, failed };
    } finally {
      closeSync(log);
    }
  }

  connectAgent(files: VmFiles, timeoutMs?: number): Promise<AgentChannel> {
    return AgentChannel.connect(files.ctl, { timeoutMs });
  }

  async boot(l: VmLaunch): Promise<number> {
    const { pid, qmp } = await this.launch(l, bootArgs(l.guest), { mayMigrateOut: true });
    qmp.close();
    return pid;
  }

  async snapshot(l: VmLaunch, snapshotDir: string): Promise<void> {
    const qmp = await QmpClient.connect(l.files.api);
    try {
      await qmp.execute('stop');
      // QEMU's default cap (128 MiB/s) would make the snapshot the slow part.
      await qmp.execute('migrate-set-parameters', { 'max-bandwidth': 64 * 2 ** 30 });
      const state = path.join(snapshotDir, 'state');
      await qmp.execute('migrate', { uri: `exec:cat > '${state.replace(/'/g, "'\\''")}'` });
      for (let i = 0; ; i++) {
        const r = await qmp.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
        if (r.status === 'completed') break;
        if (r.status === 'failed' || r.status === 'cancelled')
          throw new Error(`saving the VM state failed: ${r['error-desc'] ?? r.status}`);
        if (i > 6000) throw new Error('saving the VM state did not finish within 30 s');
        await sleep(5);
      }
      await qmp.execute('quit').catch(() => undefined); // QEMU may close the socket before answering
    } finally {
      qmp.close();
    }
  }

  async restore(l: VmLaunch, snapshotDir: string, beforeResume: () => Promise<void>): Promise<number> {
    const fd = openSync(path.join(snapshotDir, 'state'), 'r');
    let launched;
    try {
      launched = await this.launch(l, ['-incoming', 'fd:3'], { mayMigrateOut: false, stateFd: fd });
    } catch (err) {
      throw new RestoreFailed(`${errorMessage(err)}${await vmDiagnostics(l.files)}`, { cause: err });
    } finally {
      closeSync(fd);
    }
    const { pid, qmp, failed } = launched;
    try {
      const deadline = Date.now() + RESTORE_TIMEOUT_MS;
      for (;;) {
        const s = await Promise.race([qmp.execute<{ status: string }>('query-status'), failed]);
        if (s.status !== 'inmigrate') break;
        if (Date.now() > deadline) throw new Error(`loading the VM state took over ${RESTORE_TIMEOUT_MS} ms`);
        await sleep(2);
      }
      await beforeResume();
      await qmp.execute('cont');
      return pid;
    } catch (err) {
      if (processAlive(pid)) process.kill(pid, 'SIGKILL');
      throw new RestoreFailed(
        `restoring the VM failed: ${errorMessage(err)}${await vmDiagnostics(l.files)}`,
        {
          cause: err,
        },
      );
    } finally {
      qmp.close();
    }
  }

  async setBalloon(l: VmLaunch, guestMiB: number): Promise<void> {
    const qmp = await QmpClient.connect(l.files.api);
    try {
      await qmp.execute('balloon', { value: guestMiB * 2 ** 20 });
    } finally {
      qmp.close();
    }
  }

  async balloonStats(l: VmLaunch): Promise<BalloonStats> {
    const qmp = await QmpClient.connect(l.files.api);
    try {
      const { actual } = await qmp.execute<{ actual: number }>('query-balloon');
      const balloon = '/machine/peripheral/balloon0';
      await qmp.execute('qom-set', { path: balloon, property: 'guest-stats-polling-interval', value: 1 });
      const g = await qmp.execute<{ stats: Record<string, number> }>('qom-get', {
        path: balloon,
        property: 'guest-stats',
      });
      const stat = (k: string) => (g.stats[k] !== undefined && g.stats[k] >= 0 ? g.stats[k] : undefined);
      return {
        actualBytes: actual,
        freeBytes: stat('stat-free-memory'),
        totalBytes: stat('stat-total-memory'),
      };
    } finally {
      qmp.close();
    }
  }
}
