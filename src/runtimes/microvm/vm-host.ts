import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import type { StatePaths } from '../../lib/state-paths.js';
import type { RuntimeName } from '../../jobs/spec.js';
import type { Logger } from '../../observability/logger.js';
import type { Fingerprint } from '../runtime.js';
import { toolVersion, type ToolVersion } from '../shared/fingerprint.js';
import { createJobDisk } from './disk.js';
import { FIRECRACKER, FirecrackerVmm } from './firecracker/vmm.js';
import { ensureGuest, GuestMissing, type GuestImage } from './guest/guest.js';
import { chooseAccel, type AccelChoice } from './qemu/accel.js';
import { QEMU, QemuVmm } from './qemu/vmm.js';
import { killVmm } from './vmm-process.js';
import { vmFiles, type Vmm } from './vmm.js';
import { errorMessage } from '../../lib/errors.js';

export interface VmSetup {
  vmm: Vmm;
  guest: GuestImage;
  accel: AccelChoice;
}

/**
 * What this node runs VMs with, worked out once per process: the guest's kernel and initramfs,
 * the accelerator (a probe boot decides whether KVM runs guests here: `/dev/kvm` opening is not
 * proof), and the VMM: Firecracker where it is installed and KVM works, QEMU everywhere else.
 */
export class VmHost {
  private setup: Promise<VmSetup> | undefined;
  private versions: Promise<{ qemu: ToolVersion; fc: ToolVersion }> | undefined;

  constructor(
    private readonly paths: StatePaths,
    private readonly logger: Logger,
    private readonly outputCapBytes: number,
  ) {}

  /** The VMMs' versions (or why they cannot run), asked once per process. */
  tools(): Promise<{ qemu: ToolVersion; fc: ToolVersion }> {
    this.versions ??= Promise.all([
      toolVersion(QEMU, ['--version']),
      toolVersion(FIRECRACKER, ['--version']),
    ]).then(([qemu, fc]) => ({ qemu, fc }));
    return this.versions;
  }

  ready(): Promise<VmSetup> {
    this.setup ??= (async () => {
      const guest = await ensureGuest(this.paths.vm);
      const { qemu, fc } = await this.tools();
      const accel = await chooseAccel(`${guest.key}:${qemu.ok ? qemu.version : ''}`, () =>
        this.kvmBoots(guest),
      );
      const vmm: Vmm =
        fc.ok && accel.accel === 'kvm'
          ? new FirecrackerVmm({ outputCapBytes: this.outputCapBytes })
          : new QemuVmm(accel.accel);
      return { guest, accel, vmm };
    })();
    this.setup.catch(() => (this.setup = undefined)); // a failure is not cached
    return this.setup;
  }

  /** Whether VMs run here, with what, and if not, why. Never throws. */
  async fingerprint(runtime: RuntimeName, allowTcgForUntrusted: boolean): Promise<Fingerprint> {
    const details: Record<string, string> = {};
    const unusable = (reason: string): Fingerprint => ({
      runtime,
      usable: false,
      reason,
      details,
    });
    if (process.getuid?.() !== 0) return unusable('needs root (VM disks, taps, cgroups); run boxcar as root');
    const { qemu, fc } = await this.tools();
    if (!qemu.ok)
      return unusable(`QEMU cannot run (${qemu.why}); install the Debian package qemu-system-x86`);
    details.qemu = qemu.version;
    const img = await toolVersion('qemu-img', ['--version']);
    if (!img.ok) return unusable(`qemu-img cannot run (${img.why}); install the Debian package qemu-utils`);
    details.firecracker = fc.ok ? fc.version : 'not installed';
    try {
      const { guest, accel, vmm } = await this.ready();
      details.vmm = vmm.name;
      details.accel = accel.accel;
      details.accelReason = accel.why;
      details.guestKernel = guest.release;
      const fcNote = fc.ok
        ? accel.accel === 'kvm'
          ? ''
          : '; Firecracker is installed but needs KVM'
        : '; Firecracker not installed';
      const untrustedCode = tcgVerdict(accel, allowTcgForUntrusted);
      if (untrustedCode)
        details.untrustedCode = untrustedCode.allowed ? 'allowed on TCG (opt-in)' : 'refused';
      return {
        runtime,
        usable: true,
        reason: `QEMU microvm (${qemu.version.replace(/^QEMU emulator version /, '')}), ${accel.accel}: ${accel.why}; guest ${guest.release}${fcNote}${untrustedCode ? `; untrusted code: ${untrustedCode.why}` : ''}`,
        details,
        untrustedCode,
      };
    } catch (err) {
      if (err instanceof GuestMissing) return unusable(err.message);
      return unusable(`preparing the guest failed: ${errorMessage(err)}`);
    }
  }

  /** Boots the guest once under KVM and waits for its agent's hello. */
  private async kvmBoots(guest: GuestImage): Promise<boolean> {
    const files = vmFiles(path.join(this.paths.sandboxes, `kvm-probe-${process.pid}`));
    await mkdir(files.dir, { recursive: true });
    let pid: number | undefined;
    try {
      await createJobDisk('qcow2', files.disk);
      const vmm = new QemuVmm('kvm');
      pid = await vmm.boot({ shape: { memoryMiB: 256, vcpus: 1 }, files, guest });
      const channel = await vmm.connectAgent(files);
      try {
        await channel.hello(5000);
        return true;
      } finally {
        channel.close();
      }
    } catch (err) {
      this.logger.info({ err }, 'KVM probe: the guest did not boot under KVM');
      return false;
    } finally {
      if (pid !== undefined) await killVmm(pid);
      await rm(files.dir, { recursive: true, force: true });
    }
  }
}

/**
 * Under TCG the guest is emulated by QEMU itself, which QEMU's security policy does not count
 * as a boundary (only KVM guests are): untrusted code goes elsewhere unless the operator opted in.
 */
export function tcgVerdict(accel: AccelChoice, optIn: boolean): Fingerprint['untrustedCode'] {
  if (accel.accel !== 'tcg') return undefined;
  return optIn
    ? {
        allowed: true,
        why: 'firecracker runs untrusted code on TCG, which is no security boundary: microvm.allow_tcg_for_untrusted is set',
      }
    : {
        allowed: false,
        why: `QEMU runs guests with TCG here (${accel.why}), and TCG is no security boundary; untrusted jobs go to the fallback (opt in with microvm.allow_tcg_for_untrusted: true)`,
      };
}
