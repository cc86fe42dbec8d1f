import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { digestHex, sha256 } from '../../../lib/digest.js';
import { withLock, writeFileAtomic } from '../../../lib/fs-util.js';
import { run } from '../../../lib/exec.js';
import { toolVersion } from '../../shared/fingerprint.js';
import { cpioArchive, type CpioEntry } from './cpio.js';

export interface GuestImage {
  /** Uncompressed kernel (ELF): QEMU boots it through its PVH entry, ~0.4 s faster than a bzImage. */
  kernel: string;
  initrd: string;
  release: string;
  key: string;
}

const AGENT_SOURCE = fileURLToPath(
  new URL('../../../../../src/runtimes/microvm/guest/agent.c', import.meta.url),
);
/** Loaded in dependency order; ext4 is built into the cloud kernel. vsock is the agent's channel under Firecracker. */
const MODULES = [
  'virtio_mmio',
  'virtio_blk',
  'virtio_balloon',
  'virtio_console',
  'virtio_net',
  'vmw_vsock_virtio_transport',
];
/** The LZ4 frame magic inside a bzImage: its payload is the plain kernel. */
const LZ4_MAGIC = Buffer.from([0x02, 0x21, 0x4c, 0x18]);

export class GuestMissing extends Error {}

/** The newest `/boot/vmlinuz-*-cloud-amd64` with its modules, or why there is none. */
export async function findGuestKernel(boot = '/boot'): Promise<{ bzImage: string; release: string }> {
  const names = existsSync(boot) ? await readdir(boot) : [];
  const releases = names
    .filter((n) => /^vmlinuz-.*-cloud-amd64$/.test(n))
    .map((n) => n.slice('vmlinuz-'.length))
    .filter((r) => existsSync(`/lib/modules/${r}/modules.dep`))
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  const release = releases.at(-1);
  if (!release)
    throw new GuestMissing(
      'no guest kernel: install the Debian package linux-image-cloud-amd64 (make setup does)',
    );
  return { bzImage: path.join(boot, `vmlinuz-${release}`), release };
}

/** Module files in load order: each module's dependencies (modules.dep lists them) first. */
export async function moduleLoadOrder(release: string, wanted = MODULES): Promise<string[]> {
  const dir = `/lib/modules/${release}`;
  const deps = new Map<string, string[]>();
  for (const line of (await readFile(`${dir}/modules.dep`, 'utf8')).split('\n')) {
    const [mod, rest] = line.split(':');
    if (mod && rest !== undefined) deps.set(mod, rest.trim().split(/\s+/).filter(Boolean));
  }
  const byName = new Map([...deps.keys()].map((m) => [path.basename(m).replace(/\.ko(\.\w+)?$/, ''), m]));
  const order: string[] = [];
  const add = (mod: string) => {
    if (order.includes(mod)) return;
    for (const d of [...(deps.get(mod) ?? [])].reverse()) add(d);
    order.push(mod);
  };
  for (const name of wanted) {
    const mod = byName.get(name);
    if (!mod) throw new GuestMissing(`kernel ${release} has no module ${name}`);
    add(mod);
  }
  return order.map((m) => path.join(dir, m));
}

async function extractKernel(bzImage: string, out: string): Promise<void> {
  const image = await readFile(bzImage);
  const at = image.indexOf(LZ4_MAGIC);
  if (at < 0) throw new Error(`${bzImage} holds no LZ4 payload; cannot extract the plain kernel`);
  const { stdout } = await run(
    'sh',
    ['-c', `tail -c +${at + 1} "$0" | lz4 -dc > "$1"; echo ok`, bzImage, out],
    {
      timeoutMs: 60_000,
    },
  );
  if (!stdout.includes('ok') || (await stat(out)).size < 1_000_000)
    throw new Error(`extracting the kernel from ${bzImage} failed`);
}

async function buildInitramfs(release: string, agent: string): Promise<Buffer> {
  const modules = await moduleLoadOrder(release);
  const entries: CpioEntry[] = [
    ...['proc', 'sys', 'dev', 'mnt', 'mnt/image', 'job', 'etc', 'lib', 'lib/modules'].map((p): CpioEntry => ({
      path: p,
      type: 'dir',
    })),
    // Without a console node the kernel has nowhere to send the agent's early messages.
    { path: 'dev/console', type: 'char', major: 5, minor: 1 },
    { path: 'init', type: 'file', data: await readFile(agent), mode: 0o755 },
    {
      path: 'etc/modules.order',
      type: 'file',
      data: Buffer.from(modules.map((m) => `/lib/modules/${path.basename(m)}\n`).join('')),
    },
  ];
  for (const m of modules)
    entries.push({ path: `lib/modules/${path.basename(m)}`, type: 'file', data: await readFile(m) });
  return cpioArchive(entries);
}

/**
 * What every microVM boots: Debian's cloud kernel (`linux-image-cloud-amd64`) and an initramfs
 * holding only the guest agent (agent.c, built static) and the virtio modules it loads. Both
 * are built once per input and cached under the state directory; `key` names every input, so
 * a snapshot taken with other inputs is recognised as stale.
 *
 * Builds (or finds) the kernel and initramfs for this host's guest kernel under `dir`.
 */
export async function ensureGuest(dir: string): Promise<GuestImage> {
  const { bzImage, release } = await findGuestKernel();
  const kst = await stat(bzImage);
  const source = await readFile(AGENT_SOURCE);
  const gcc = await toolVersion('gcc', ['--version']);
  if (!gcc.ok)
    throw new GuestMissing(`the guest agent is built with gcc (${gcc.why}); install gcc and libc6-dev`);
  const inputs = {
    release,
    kernel: [kst.size, kst.mtimeMs],
    agent: sha256(source),
    gcc: gcc.version,
    MODULES,
  };
  const key = digestHex(sha256(JSON.stringify(inputs))).slice(0, 16);
  const out = path.join(dir, 'guest', key);
  const image: GuestImage = {
    kernel: path.join(out, 'vmlinux'),
    initrd: path.join(out, 'initramfs.cpio'),
    release,
    key,
  };
  const done = path.join(out, 'done');
  if (existsSync(done)) return image;
  await mkdir(out, { recursive: true });
  await withLock(`${out}.lock`, async () => {
    if (existsSync(done)) return;
    await extractKernel(bzImage, image.kernel);
    const agent = path.join(out, 'agent');
    await run('gcc', ['-static', '-O2', '-o', agent, AGENT_SOURCE], { timeoutMs: 120_000 });
    await writeFileAtomic(image.initrd, await buildInitramfs(release, agent));
    await writeFileAtomic(done, new Date().toISOString());
  });
  return image;
}
