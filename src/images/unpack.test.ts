import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { compress, tarOf, writeLayout, type TestEntry } from '../testing/oci-images.js';
import { withMergedLayers } from '../runtimes/shared/mounts.js';
import type { StackedLayer } from './layer-stack.js';
import { applyLayer, DEFAULT_UNPACK_LIMITS, type UnpackLimits } from './unpack.js';

/** Layers unpacked one over the other into directories of their own, as the layer store does. */
class Stack {
  /** Top first. */
  readonly layers: StackedLayer[] = [];
  readonly totals = { bytes: 0, entries: 0 };
  private made = 0;

  constructor(
    private readonly dir: string,
    private readonly limits: UnpackLimits = DEFAULT_UNPACK_LIMITS,
  ) {}

  /** Unpacks one more layer on top; returns its directory. */
  async add(layer: string, name = `L${this.layers.length}`): Promise<string> {
    const scratch = path.join(this.dir, String(this.made++));
    const dir = path.join(scratch, 'fs');
    await mkdir(dir, { recursive: true });
    const lowers = [...this.layers];
    const { opaque } = await applyLayer({ dir, lowers, scratch }, layer, name, this.limits, this.totals);
    this.layers.unshift({ dir, opaque: new Set(opaque) });
    return dir;
  }

  get top(): string {
    return (this.layers[0] as StackedLayer).dir;
  }

  /** `fn` on the layers as overlayfs merges them, mounted for real. */
  merged<T>(fn: (root: string) => Promise<T> | T): Promise<T> {
    return withMergedLayers(
      this.layers.map((l) => l.dir),
      this.dir,
      async (root) => fn(root),
    );
  }
}

/**
 * Untrusted layers, unpacked for real into overlayfs layers: the OCI rules (whiteouts, opaque
 * directories, across layers) checked through a real overlay mount against umoci's unpack of
 * the same image, and a corpus of hostile layers, each refused with the entry named and
 * nothing written outside the store.
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
  const freshStack = async (limits?: UnpackLimits) => {
    const dir = path.join(work, `stack-${n++}`);
    await mkdir(dir);
    return new Stack(dir, limits);
  };
  const outsideUntouched = () => {
    assert.deepEqual(readdirSync(outside), ['secret']);
    assert.equal(readFileSync(path.join(outside, 'secret'), 'utf8'), 'host secret\n');
    assert.equal(statSync(path.join(outside, 'secret')).mode & 0o777, 0o644);
  };
  /** Unpacks layers one over the other; the last one must be refused with `why`. */
  const refused = async (
    layers: TestEntry[][],
    why: RegExp,
    limits: UnpackLimits = DEFAULT_UNPACK_LIMITS,
  ) => {
    const stack = await freshStack(limits);
    for (const [i, layer] of layers.entries()) {
      const add = stack.add(await layerFile(layer));
      if (i < layers.length - 1) await add;
      else await assert.rejects(add, why);
    }
    outsideUntouched();
    return stack;
  };
  /** A stack of layers unpacked one over the other. */
  const stackOf = async (layers: TestEntry[][], limits?: UnpackLimits) => {
    const stack = await freshStack(limits);
    for (const layer of layers) await stack.add(await layerFile(layer));
    return stack;
  };

  test('whiteouts, opaque directories, hardlinks, symlinks and modes: merged by overlayfs as umoci applies them', async () => {
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
    const ours = await freshStack();
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
      await ours.add(path.join(layout, 'blobs', 'sha256', l.digest.slice(7)), l.digest);
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
    await ours.merged((root) => {
      assert.deepEqual(tree(root), theirTree);
      assert.ok(!existsSync(path.join(root, 'etc/gone')));
      assert.deepEqual(readdirSync(path.join(root, 'opaque')), ['upper']);
      assert.equal(
        statSync(path.join(root, 'bin/alias')).ino,
        statSync(path.join(root, 'bin/tool')).ino,
        'a hardlink',
      );
      assert.ok(!existsSync(path.join(root, 'dev/null')), 'device nodes are dropped');
    });
    // The upper layer holds only what it changed, with overlayfs' marks for the rest.
    const upper = ours.top;
    assert.ok(lstatSync(path.join(upper, 'etc/gone')).isCharacterDevice(), 'a whiteout');
    assert.deepEqual(readdirSync(path.join(upper, 'opaque')), ['upper']);
    assert.equal(
      execFileSync(
        'getfattr',
        ['--only-values', '-n', 'trusted.overlay.opaque', path.join(upper, 'opaque')],
        {
          encoding: 'utf8',
        },
      ),
      'y',
    );
    assert.ok(!existsSync(path.join(upper, 'bin')), 'nothing of what it did not change');
  });

  test('gzip, zstd and plain tar layers are told apart by their bytes', async () => {
    for (const how of ['gzip', 'zstd', 'none'] as const) {
      const root = await (
        await freshStack()
      ).add(await layerFile([{ name: 'hello', content: `hi ${how}\n` }], how), how);
      assert.equal(readFileSync(path.join(root, 'hello'), 'utf8'), `hi ${how}\n`);
    }
  });

  test('the hostile corpus: each layer is refused, naming the entry, and nothing outside the store changes', async () => {
    const out = path.relative(path.join(work, 'stack-x', '0', 'fs'), outside); // ../../../outside from a layer
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
    const replaced = await stackOf([
      [{ name: 'esc', type: 'symlink', linkname: outside }],
      [
        { name: 'esc/', type: 'directory', mode: 0o777 },
        { name: 'esc/secret', content: 'x' },
      ],
    ]);
    await replaced.merged((root) => {
      assert.equal(lstatSync(path.join(root, 'esc')).isDirectory(), true);
      assert.deepEqual(readdirSync(path.join(root, 'esc')), ['secret']);
    });
    outsideUntouched();
    // chmod or chown through a symlink: a later entry for the same name replaces the link, never follows it.
    const relinked = await refused(
      [
        [{ name: 'link', type: 'symlink', linkname: path.join(outside, 'secret') }],
        [{ name: 'x/../../y', content: '' }],
      ],
      /climbs out/,
    );
    await relinked.add(await layerFile([{ name: 'link', content: 'replaced\n', mode: 0o777 }]), 'chmod');
    assert.equal(lstatSync(path.join(relinked.top, 'link')).isSymbolicLink(), false);
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

  test('across layers: what is under a path is looked up, down to a whiteout or an opaque directory', async () => {
    // A symlink planted two layers down is still refused, whatever lies between.
    await refused(
      [
        [{ name: 'esc', type: 'symlink', linkname: outside }],
        [{ name: 'other', content: 'x' }],
        [{ name: 'esc/deep/evil', content: 'x' }],
      ],
      /entry "esc\/deep\/evil" goes through the symlink "esc"/,
    );
    await refused(
      [[{ name: 'f', content: 'x' }], [{ name: 'f/x', content: 'x' }]],
      /entry "f\/x" needs "f" to be a directory/,
    );
    await refused(
      [
        [{ name: 'd', type: 'symlink', linkname: outside }],
        [{ name: 'h', type: 'link', linkname: 'd/secret' }],
      ],
      /entry "h" goes through the symlink "d"/,
    );
    await refused(
      [
        [{ name: 's', type: 'symlink', linkname: path.join(outside, 'secret') }],
        [{ name: 'h', type: 'link', linkname: 's' }],
      ],
      /entry "h" is a hardlink to "s", which is not a regular file/,
    );
    // A symlink whited out, or under an opaque directory, is gone: a directory there is a new one.
    const gone = await stackOf([
      [
        { name: 'a/', type: 'directory' },
        { name: 'a/esc', type: 'symlink', linkname: outside },
        { name: 'b', type: 'symlink', linkname: outside },
      ],
      [{ name: '.wh.b' }, { name: 'a/.wh..wh..opq' }],
      [
        { name: 'a/esc/x', content: 'in\n' },
        { name: 'b/y', content: 'in\n' },
      ],
    ]);
    await gone.merged((root) => {
      assert.deepEqual(readdirSync(path.join(root, 'a/esc')), ['x']);
      assert.deepEqual(readdirSync(path.join(root, 'b')), ['y']);
    });
    outsideUntouched();
  });

  test('across layers: a hardlink to a lower layer’s file is a copy in the upper one, counted against the limits', async () => {
    const stack = await stackOf([
      [
        { name: 'bin/', type: 'directory' },
        { name: 'bin/tool', content: '#!/bin/sh\n', mode: 0o755 },
      ],
      [
        { name: 'bin/alias', type: 'link', linkname: 'bin/tool' },
        { name: 'bin/alias2', type: 'link', linkname: 'bin/tool' },
      ],
    ]);
    const [upper, lower] = stack.layers.map((l) => l.dir) as [string, string];
    const ino = (dir: string, p: string) => statSync(path.join(dir, p)).ino;
    assert.equal(ino(upper, 'bin/alias'), ino(upper, 'bin/tool'), 'the copy and its links: one file');
    assert.equal(ino(upper, 'bin/alias2'), ino(upper, 'bin/tool'));
    assert.notEqual(ino(upper, 'bin/tool'), ino(lower, 'bin/tool'), 'no link joins two layers');
    assert.equal(statSync(path.join(upper, 'bin/tool')).mode & 0o7777, 0o755);
    await stack.merged((root) =>
      assert.equal(readFileSync(path.join(root, 'bin/alias'), 'utf8'), '#!/bin/sh\n'),
    );
    // Copies and entries count across the image's layers.
    const small: UnpackLimits = { maxBytes: 1024 * 1024, maxEntries: 50, maxPathLength: 64 };
    await refused(
      [[{ name: 'big', content: Buffer.alloc(600_000) }], [{ name: 'h', type: 'link', linkname: 'big' }]],
      /entry "h" takes the image past 1048576 bytes/,
      small,
    );
    await refused(
      [
        Array.from({ length: 30 }, (_, i) => ({ name: `a${i}`, content: '' })),
        Array.from({ length: 30 }, (_, i) => ({ name: `b${i}`, content: '' })),
      ],
      /is past 50 entries/,
      small,
    );
  });

  test('overlayfs sees whiteouts and opaque directories, also at the root; a bottom layer has no marks', async () => {
    const stack = await stackOf([
      [
        { name: 'tmp/', type: 'directory', mode: 0o1777 },
        { name: 'keep', content: 'k\n' },
        { name: 'd/', type: 'directory' },
        { name: 'd/old', content: 'o\n' },
        { name: '.wh.nothing' },
        { name: 'd/.wh..wh..opq' },
      ],
      [
        { name: 'tmp/f', content: 'f\n' },
        { name: '.wh.d' },
        { name: 'd/', type: 'directory' },
        { name: 'd/new', content: 'n\n' },
      ],
    ]);
    const bottom = (stack.layers[1] as StackedLayer).dir;
    assert.deepEqual(readdirSync(bottom).sort(), ['d', 'keep', 'tmp'], 'nothing under it to hide');
    await stack.merged((root) => {
      assert.deepEqual(readdirSync(root).sort(), ['d', 'keep', 'tmp']);
      assert.equal(statSync(path.join(root, 'tmp')).mode & 0o7777, 0o1777, 'the directory’s own mode');
      assert.deepEqual(readdirSync(path.join(root, 'tmp')), ['f']);
      assert.deepEqual(readdirSync(path.join(root, 'd')), ['new'], 'whited out, then made again: empty');
    });
    await stack.add(
      await layerFile([
        { name: '.wh..wh..opq' },
        { name: 'only', content: 'o\n' },
        { name: 'd/x', content: '' },
      ]),
    );
    await stack.merged((root) => {
      assert.deepEqual(readdirSync(root).sort(), ['d', 'only'], 'an opaque root keeps only its own');
      assert.deepEqual(readdirSync(path.join(root, 'd')), ['x']);
    });
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
    await assert.rejects(
      (await freshStack(small)).add(bomb, 'bomb'),
      /expands past 1048576 bytes: a decompression bomb|takes the image past/,
    );
    const whole = gzipSync(await tarOf([{ name: 'f', content: Buffer.alloc(100_000, 1) }]));
    const cut = path.join(work, 'truncated');
    writeFileSync(cut, whole.subarray(0, whole.length >> 1));
    await assert.rejects((await freshStack()).add(cut, 'cut'), /layer cut is not a readable tar archive/);
    outsideUntouched();
  });
});
