import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { compress, tarOf, writeLayout, type TestEntry } from '../testing/oci-images.js';
import { applyLayer, DEFAULT_UNPACK_LIMITS, type UnpackLimits } from './unpack.js';

/**
 * Untrusted layers, applied for real: the OCI rules (whiteouts, opaque directories, across
 * layers) checked against umoci's unpack of the same image, and a corpus of hostile layers,
 * each refused with the entry named and nothing written outside the root.
 */
describe('applying layers', () => {
  let work: string;
  /** A directory beside the root: whatever a layer does, it must stay as it is. */
  let outside: string;
  before(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), 'bx-unpack-'));
    outside = path.join(work, 'outside');
    await mkdir(outside);
    await writeFile(path.join(outside, 'secret'), 'host secret\n');
  });
  after(() => rm(work, { recursive: true, force: true }));

  let n = 0;
  const layerFile = async (entries: TestEntry[], how: 'gzip' | 'zstd' | 'none' = 'gzip') => {
    const file = path.join(work, `layer-${n++}`);
    await writeFile(file, await compress(await tarOf(entries), how, work));
    return file;
  };
  const freshRoot = async () => {
    const root = path.join(work, `root-${n++}`);
    await mkdir(root);
    return root;
  };
  const outsideUntouched = () => {
    assert.deepEqual(readdirSync(outside), ['secret']);
    assert.equal(readFileSync(path.join(outside, 'secret'), 'utf8'), 'host secret\n');
    assert.equal(statSync(path.join(outside, 'secret')).mode & 0o777, 0o644);
  };
  /** Applies layers in order; the last one must be refused with `why`. */
  const refused = async (
    layers: TestEntry[][],
    why: RegExp,
    limits: UnpackLimits = DEFAULT_UNPACK_LIMITS,
  ) => {
    const root = await freshRoot();
    const totals = { bytes: 0, entries: 0 };
    for (const [i, layer] of layers.entries()) {
      const apply = applyLayer(root, await layerFile(layer), `L${i}`, limits, totals);
      if (i < layers.length - 1) await apply;
      else await assert.rejects(apply, why);
    }
    outsideUntouched();
    return root;
  };

  test('whiteouts, opaque directories, hardlinks, symlinks and modes apply as umoci applies them', async () => {
    const layers: TestEntry[][] = [
      [
        { name: 'etc/', type: 'directory' },
        { name: 'etc/gone', content: 'lower\n' },
        { name: 'etc/kept', content: 'kept\n', mode: 0o600 },
        { name: 'opaque/', type: 'directory' },
        { name: 'opaque/lower-a', content: 'a\n' },
        { name: 'opaque/sub/', type: 'directory' },
        { name: 'opaque/sub/b', content: 'b\n' },
        { name: 'bin/', type: 'directory' },
        { name: 'bin/tool', content: '#!/bin/sh\n', mode: 0o755 },
        { name: 'bin/alias', type: 'link', linkname: 'bin/tool' },
        { name: 'bin/sym', type: 'symlink', linkname: '/bin/tool' },
        { name: 'dir-to-file/', type: 'directory' },
        { name: 'dir-to-file/x', content: 'x\n' },
      ],
      [
        { name: 'etc/.wh.gone' },
        { name: 'opaque/.wh..wh..opq' },
        { name: 'opaque/upper', content: 'upper\n' },
        { name: 'dir-to-file', content: 'now a file\n' },
        { name: 'dev/', type: 'directory' },
        { name: 'dev/null', type: 'character-device' },
      ],
    ];
    const layout = path.join(work, 'layout');
    await writeLayout(layout, 'v1', layers);
    const theirs = path.join(work, 'umoci');
    execFileSync('umoci', ['unpack', '--image', `${layout}:v1`, theirs], { stdio: 'ignore' });
    const ours = await freshRoot();
    const totals = { bytes: 0, entries: 0 };
    const blobs = JSON.parse(
      readFileSync(
        path.join(
          layout,
          'blobs',
          'sha256',
          JSON.parse(readFileSync(path.join(layout, 'index.json'), 'utf8')).manifests[0].digest.slice(7),
        ),
        'utf8',
      ),
    ) as { layers: Array<{ digest: string }> };
    for (const l of blobs.layers)
      await applyLayer(
        ours,
        path.join(layout, 'blobs', 'sha256', l.digest.slice(7)),
        l.digest,
        DEFAULT_UNPACK_LIMITS,
        totals,
      );
    const tree = (root: string, dir = ''): string[] =>
      readdirSync(path.join(root, dir))
        .sort()
        .flatMap((name) => {
          const rel = dir ? `${dir}/${name}` : name;
          const st = lstatSync(path.join(root, rel));
          const kind = st.isSymbolicLink()
            ? 'l'
            : st.isDirectory()
              ? 'd'
              : st.isCharacterDevice()
                ? 'c'
                : 'f';
          const line = `${kind} ${(st.mode & 0o7777).toString(8)} ${rel}${st.isFile() ? ` ${readFileSync(path.join(root, rel), 'utf8').length}` : ''}`;
          return st.isDirectory() && !st.isSymbolicLink() ? [line, ...tree(root, rel)] : [line];
        });
    // Device nodes: umoci makes them, Boxcar drops them (a job's /dev is its own).
    const theirTree = tree(path.join(theirs, 'rootfs')).filter((l) => !l.startsWith('c '));
    assert.deepEqual(tree(ours), theirTree);
    assert.ok(!existsSync(path.join(ours, 'etc/gone')));
    assert.deepEqual(readdirSync(path.join(ours, 'opaque')), ['upper']);
    assert.equal(
      statSync(path.join(ours, 'bin/alias')).ino,
      statSync(path.join(ours, 'bin/tool')).ino,
      'a hardlink',
    );
    assert.ok(!existsSync(path.join(ours, 'dev/null')), 'device nodes are dropped');
  });

  test('gzip, zstd and plain tar layers are told apart by their bytes', async () => {
    for (const how of ['gzip', 'zstd', 'none'] as const) {
      const root = await freshRoot();
      await applyLayer(root, await layerFile([{ name: 'hello', content: `hi ${how}\n` }], how), how);
      assert.equal(readFileSync(path.join(root, 'hello'), 'utf8'), `hi ${how}\n`);
    }
  });

  test('the hostile corpus: each layer is refused, naming the entry, and nothing outside the root changes', async () => {
    const out = path.relative(path.join(work, 'root-x'), outside); // ../outside from a root
    await refused(
      [[{ name: '../outside/evil', content: 'x' }]],
      /entry "\.\.\/outside\/evil" climbs out of the root/,
    );
    await refused([[{ name: 'a/../../outside/evil', content: 'x' }]], /climbs out of the root/);
    await refused([[{ name: '/etc/evil', content: 'x' }]], /entry "\/etc\/evil" is absolute/);
    // A symlink planted in one layer, written through in the same layer and in the next.
    await refused(
      [
        [
          { name: 'esc', type: 'symlink', linkname: outside },
          { name: 'esc/evil', content: 'x' },
        ],
      ],
      /entry "esc\/evil" goes through the symlink "esc"/,
    );
    await refused(
      [[{ name: 'esc', type: 'symlink', linkname: out }], [{ name: 'esc/evil', content: 'x' }]],
      /goes through the symlink "esc"/,
    );
    // A directory entry over a planted symlink replaces the link (as umoci and Docker do): what
    // follows lands in the new directory, inside the root.
    const replaced = await freshRoot();
    await applyLayer(replaced, await layerFile([{ name: 'esc', type: 'symlink', linkname: outside }]), 'L0');
    await applyLayer(
      replaced,
      await layerFile([
        { name: 'esc/', type: 'directory', mode: 0o777 },
        { name: 'esc/secret', content: 'x' },
      ]),
      'L1',
    );
    assert.equal(lstatSync(path.join(replaced, 'esc')).isDirectory(), true);
    outsideUntouched();
    // chmod or chown through a symlink: a later entry for the same name replaces the link, never follows it.
    const relinked = await refused(
      [
        [{ name: 'link', type: 'symlink', linkname: path.join(outside, 'secret') }],
        [{ name: 'x/../../y', content: '' }],
      ],
      /climbs out/,
    );
    await applyLayer(
      relinked,
      await layerFile([{ name: 'link', content: 'replaced\n', mode: 0o777 }]),
      'chmod',
    );
    assert.equal(lstatSync(path.join(relinked, 'link')).isSymbolicLink(), false);
    outsideUntouched();
    // Hardlinks out of the root, to a symlink, through a symlink.
    await refused(
      [[{ name: 'h', type: 'link', linkname: '../outside/secret' }]],
      /entry "h" climbs out of the root with "\.\." \(its link target "\.\.\/outside\/secret"\)/,
    );
    await refused(
      [[{ name: 'h', type: 'link', linkname: '/etc/passwd' }]],
      /entry "h" is absolute \(its link target "\/etc\/passwd"\)/,
    );
    await refused(
      [
        [
          { name: 's', type: 'symlink', linkname: path.join(outside, 'secret') },
          { name: 'h', type: 'link', linkname: 's' },
        ],
      ],
      /entry "h" is a hardlink to "s", which is not a regular file/,
    );
    await refused(
      [
        [
          { name: 'd', type: 'symlink', linkname: outside },
          { name: 'h', type: 'link', linkname: 'd/secret' },
        ],
      ],
      /entry "h" goes through the symlink "d"/,
    );
    // Symlinks or files named for the root itself.
    await refused(
      [[{ name: '.', type: 'symlink', linkname: '/' }]],
      /entry "\." is a symlink in place of the root/,
    );
    await refused([[{ name: '/', type: 'symlink', linkname: outside }]], /is absolute/);
    await refused([[{ name: './', type: 'file', content: 'x' }]], /is a file in place of the root/);
    // Whiteouts of "..", and through a symlink.
    await refused([[{ name: 'a/', type: 'directory' }, { name: 'a/.wh...' }]], /whites out "\.\."/);
    await refused(
      [[{ name: 'w', type: 'symlink', linkname: outside }], [{ name: 'w/.wh.secret' }]],
      /entry "w\/\.wh\.secret" goes through the symlink "w"/,
    );
    await refused(
      [[{ name: 'o', type: 'symlink', linkname: outside }], [{ name: 'o/.wh..wh..opq' }]],
      /goes through the symlink "o"/,
    );
  });

  test('bombs: too many entries, too many bytes, a gzip bomb, a truncated layer', async () => {
    const small: UnpackLimits = { maxBytes: 1024 * 1024, maxEntries: 50, maxPathLength: 64 };
    await refused(
      [Array.from({ length: 60 }, (_, i) => ({ name: `f${i}`, content: '' }))],
      /is past 50 entries: a tar bomb\?/,
      small,
    );
    await refused(
      [[{ name: 'big', content: Buffer.alloc(2 * 1024 * 1024) }]],
      /takes the image past 1048576 bytes|expands past 1048576 bytes/,
      small,
    );
    await refused([[{ name: `${'d/'.repeat(40)}f`, content: '' }]], /has a path over 64 characters/, small);
    // 256 MiB of zeros in a few hundred kilobytes of gzip: stopped long before it is all expanded.
    const bomb = path.join(work, 'gzip-bomb');
    writeFileSync(
      bomb,
      gzipSync(await tarOf([{ name: 'zeros', content: Buffer.alloc(256 * 2 ** 20) }]), { level: 9 }),
    );
    const root = await freshRoot();
    await assert.rejects(
      applyLayer(root, bomb, 'bomb', small),
      /expands past 1048576 bytes: a decompression bomb|takes the image past/,
    );
    const whole = gzipSync(await tarOf([{ name: 'f', content: Buffer.alloc(100_000, 1) }]));
    const cut = path.join(work, 'truncated');
    writeFileSync(cut, whole.subarray(0, whole.length >> 1));
    await assert.rejects(
      applyLayer(await freshRoot(), cut, 'cut'),
      /layer cut is not a readable tar archive/,
    );
    outsideUntouched();
  });
});
