import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, open, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { builtCProgram } from '../../lib/c-program.js';
import { UserError } from '../../lib/errors.js';
import { run } from '../../lib/exec.js';
import { tempState } from '../../testing/harness.js';
import { DISK_VIRTUAL_BYTES } from './disk.js';
import { claimsUnder, JAILER_SOURCE } from './vmm-jail.js';
import { seedWorkspaceDisk } from './workspace-disk.js';
import { returnWorkspace } from './workspace-return.js';
import { withWorkspaceTmpfs } from './workspace-testing.js';

/**
 * Filesystems no honest guest writes (names with `/` and `..` in them, written past links the
 * same filesystem holds, device nodes), made on the host and patched byte by byte, since a job
 * cannot write its disk's raw blocks: what a broken-into guest kernel could leave. The copy runs
 * jailed, so none of it lands outside the workspace directory. (debugfs run as root on the
 * first of these writes into /etc: the jail is what holds.)
 */

const PROBE = 'bx-escape-probe';

/** An ext4 image of `src` (no checksums, so patched names are read as they are). */
async function imageOf(src: string, file: string): Promise<void> {
  const fh = await open(file, 'w');
  await fh.truncate(DISK_VIRTUAL_BYTES);
  await fh.close();
  await run('mkfs.ext4', ['-q', '-F', '-O', '^has_journal,^metadata_csum', '-d', src, file, '16M']);
}

/** Renames entries in place, byte for byte (same length): names mkfs would never write. */
async function patchNames(file: string, renames: Array<[string, string]>): Promise<void> {
  const fh = await open(file, 'r+');
  try {
    const head = Buffer.alloc(16 * 2 ** 20);
    await fh.read(head, 0, head.length, 0);
    for (const [from, to] of renames) {
      assert.equal(from.length, to.length);
      const at = head.indexOf(from);
      assert.ok(at >= 0 && head.indexOf(from, at + 1) < 0, `${from} is in the image once`);
      await fh.write(Buffer.from(to), 0, to.length, at);
    }
  } finally {
    await fh.close();
  }
}

test('a hostile workspace filesystem: links to /etc and ../../, names through them, `..` names, devices; nothing lands outside', async (t) => {
  const state = await tempState('bx-wsr-');
  t.after(() => state.cleanup());
  const jailer = await builtCProgram(JAILER_SOURCE, path.join(state.vm, 'bin'), 'the microVM runtime');
  const src = path.join(state.root, 'src');
  await mkdir(src);
  await symlink('/etc', path.join(src, 'etc'));
  await symlink('../../', path.join(src, 'up'));
  await writeFile(path.join(src, `etcZ${PROBE}`), 'escaped\n');
  await writeFile(path.join(src, `upZ${PROBE}`), 'escaped\n');
  await writeFile(path.join(src, `..Z..Z${PROBE}2`), 'escaped\n');
  await writeFile(path.join(src, 'fine'), 'fine\n');
  const disk = path.join(state.root, 'workspace.img');
  await imageOf(src, disk);
  await patchNames(disk, [
    [`etcZ${PROBE}`, `etc/${PROBE}`],
    [`upZ${PROBE}`, `up/${PROBE}`],
    [`..Z..Z${PROBE}2`, `../../${PROBE}2`],
  ]);
  try {
    await withWorkspaceTmpfs(32 * 2 ** 20, async (ws) => {
      await writeFile(path.join(ws, 'seeded'), 'stale\n');
      const claimDir = path.join(state.root, 'claim');
      const err = await returnWorkspace({
        disk,
        workspaceDir: ws,
        workspaceBytes: 32 * 2 ** 20,
        claimDir,
        jailer,
      })
        .then(() => undefined)
        .catch((e: unknown) => e);
      assert.ok(err instanceof UserError, `refused: ${String(err)}`);
      assert.match(err.message, /^the job's workspace was not returned: .*\/workspace\//);
      assert.doesNotMatch(err.message, /\n/, 'one line');
      assert.deepEqual(readdirSync(ws), [], 'fails closed: nothing half-returned, nor the stale files');
      assert.deepEqual(readdirSync(path.dirname(ws)), ['workspace'], 'nothing beside the workspace');
    });
    assert.equal(existsSync(`/etc/${PROBE}`), false, 'nothing written in /etc');
    assert.deepEqual(await claimsUnder(state.root), [], 'the copy’s jail was given back');
  } finally {
    await rm(`/etc/${PROBE}`, { force: true }); // only there if the jail failed
  }
});

test('device nodes stay behind, and links come back as links; the files are the workspace owner’s', async (t) => {
  const state = await tempState('bx-wsr-');
  t.after(() => state.cleanup());
  const jailer = await builtCProgram(JAILER_SOURCE, path.join(state.vm, 'bin'), 'the microVM runtime');
  const src = path.join(state.root, 'src');
  await mkdir(path.join(src, 'dir'), { recursive: true });
  await writeFile(path.join(src, 'dir/file'), 'kept\n');
  await symlink('/etc/passwd', path.join(src, 'passwd-link'));
  const disk = path.join(state.root, 'workspace.img');
  const ws32 = 32 * 2 ** 20;
  const fh = await open(disk, 'w');
  await fh.truncate(DISK_VIRTUAL_BYTES);
  await fh.close();
  await seedWorkspaceDisk(disk, src, ws32);
  await run('debugfs', ['-w', '-R', 'mknod null c 1 3', disk]);
  await withWorkspaceTmpfs(ws32, async (ws) => {
    await returnWorkspace({
      disk,
      workspaceDir: ws,
      workspaceBytes: ws32,
      claimDir: path.join(state.root, 'c'),
      jailer,
    });
    assert.deepEqual(readdirSync(ws).sort(), ['dir', 'passwd-link'], 'no device node, no lost+found');
    assert.equal(readFileSync(path.join(ws, 'dir/file'), 'utf8'), 'kept\n');
    assert.equal((await run('readlink', [path.join(ws, 'passwd-link')])).stdout.trim(), '/etc/passwd');
    assert.equal((await run('stat', ['-c', '%u:%g', path.join(ws, 'dir/file')])).stdout.trim(), '0:0');
  });
});
