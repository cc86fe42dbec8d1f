import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The house rules, checked on the sources: dependencies between folders point one way (no
 * folder-level cycle), `lib/` imports nothing of Boxcar, and nothing but a driver reads a
 * runtime's name to decide what to do. Test files and the test harness are exempt.
 */
const SRC = fileURLToPath(new URL('../../src', import.meta.url));

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return e.name === 'testing' ? [] : sources(p);
    return e.name.endsWith('.ts') && !e.name.endsWith('.test.ts') ? [p] : [];
  });
}

/** The folder under src/ a file belongs to ('.' for files at the top). */
const folderOf = (file: string) => {
  const rel = path.relative(SRC, file).split(path.sep);
  return rel.length > 1 ? (rel[0] as string) : '.';
};

function folderGraph(): Map<string, Map<string, string[]>> {
  const graph = new Map<string, Map<string, string[]>>();
  for (const file of sources(SRC)) {
    const from = folderOf(file);
    const edges = graph.get(from) ?? new Map<string, string[]>();
    graph.set(from, edges);
    for (const m of readFileSync(file, 'utf8').matchAll(/from '(\.{1,2}\/[^']+)'/g)) {
      const to = folderOf(path.resolve(path.dirname(file), m[1] as string));
      if (to === from) continue;
      edges.set(to, [...(edges.get(to) ?? []), `${path.relative(SRC, file)} → ${m[1]}`]);
    }
  }
  return graph;
}

/** Tarjan's strongly connected components: each one larger than a folder is a cycle. */
function cycles(graph: Map<string, Map<string, string[]>>): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const out: string[][] = [];
  const visit = (v: string) => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    for (const w of graph.get(v)?.keys() ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v) as number, low.get(w) as number));
      } else if (stack.includes(w)) low.set(v, Math.min(low.get(v) as number, index.get(w) as number));
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop() as string;
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1) out.push(scc.sort());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return out;
}

test('no folder-level import cycle under src/', () => {
  const graph = folderGraph();
  const found = cycles(graph);
  const explain = found.map((scc) =>
    scc.flatMap((a) => scc.filter((b) => b !== a).flatMap((b) => graph.get(a)?.get(b) ?? [])).join('\n  '),
  );
  assert.deepEqual(found, [], `folders that import each other:\n  ${explain.join('\n  ')}`);
});

test('lib/ imports nothing of Boxcar', () => {
  const up = [...(folderGraph().get('lib')?.entries() ?? [])].flatMap(([, why]) => why);
  assert.deepEqual(up, []);
});

test('the cycle check can fail: a planted cycle is found', () => {
  const planted = new Map([
    ['a', new Map([['b', ['a.ts → ../b/x.js']]])],
    ['b', new Map([['c', ['b.ts → ../c/y.js']]])],
    ['c', new Map([['a', ['c.ts → ../a/z.js']]])],
  ]);
  assert.deepEqual(cycles(planted), [['a', 'b', 'c']]);
});

test('outside the drivers, nothing reads a sandbox handle’s driver state', () => {
  // The Kubernetes executor's driver lives with the rest of Kubernetes (k8s/ imports runtimes/).
  const allowed = [
    path.join(SRC, 'runtimes'),
    path.join(SRC, 'k8s', 'executor'),
    path.join(SRC, 'jobs', 'handle.ts'),
  ];
  const offenders = sources(SRC)
    .filter((f) => !allowed.some((a) => f.startsWith(a)))
    .filter((f) => /\.driverState\b/.test(readFileSync(f, 'utf8')))
    .map((f) => path.relative(SRC, f));
  assert.deepEqual(offenders, []);
});

test('outside the drivers, nothing branches on a runtime’s name', () => {
  const drivers = path.join(SRC, 'runtimes');
  // The routing policy is the one place runtimes are named by design (the seed's YAML names them).
  const policy = path.join(SRC, 'policy');
  const offenders = sources(SRC)
    .filter((f) => !f.startsWith(drivers) && !f.startsWith(policy))
    .flatMap((f) =>
      readFileSync(f, 'utf8')
        .split('\n')
        .map((line, i) => ({ line, at: `${path.relative(SRC, f)}:${i + 1}` }))
        .filter(({ line }) => /[!=]==?\s*'(runc|gvisor|firecracker|wasm)'/.test(line))
        .map(({ at, line }) => `${at}: ${line.trim()}`),
    );
  assert.deepEqual(offenders, []);
});
