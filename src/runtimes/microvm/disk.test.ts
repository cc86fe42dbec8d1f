import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { ImageStore } from '../../images/image-store.js';
import { run } from '../../lib/exec.js';
import { leftovers, tempState } from '../../testing/harness.js';
import { writeLayout } from '../../testing/oci-images.js';
import { imageDisk } from './disk.js';

/** The names in a directory of an ext4 image, read with debugfs (no mount needed). */
async function ls(disk: string, dir: string): Promise<string[]> {
  const { stdout } = await run('debugfs', ['-R', `ls -p ${dir}`, disk]);
  return stdout
    .split('\n')
    .map((l) => l.split('/')[5] ?? '')
    .filter((n) => n && n !== '.' && n !== '..')
    .sort();
}

test('an image’s disk is its layers’ merged view: whiteouts and opaque directories applied, nothing left mounted', async (t) => {
  const state = await tempState();
  t.after(() => state.cleanup());
  // The image store is an OCI image layout: the test image is written straight into it.
  const { manifestDigest } = await writeLayout(state.images, 'img', [
    [
      { name: 'etc/', type: 'directory' },
      { name: 'etc/gone', content: 'gone\n' },
      { name: 'etc/kept', content: 'kept\n' },
      { name: 'opaque/', type: 'directory' },
      { name: 'opaque/lower', content: '' },
    ],
    [
      { name: 'etc/.wh.gone' },
      { name: 'etc/new', content: 'new\n' },
      { name: 'opaque/.wh..wh..opq' },
      { name: 'opaque/upper', content: '' },
    ],
  ]);
  const image = await new ImageStore(state).open('img', manifestDigest);
  const disk = await imageDisk(state.vm, image);
  assert.deepEqual(await ls(disk, '/etc'), ['kept', 'new']);
  assert.deepEqual(await ls(disk, '/opaque'), ['upper']);
  assert.equal((await run('debugfs', ['-R', 'cat /etc/new', disk])).stdout, 'new\n');
  assert.deepEqual(readdirSync(path.dirname(disk)), [path.basename(disk)], 'no scratch file or mount point');
  assert.deepEqual(await leftovers(state), []);
});
