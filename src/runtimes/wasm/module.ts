/**
 * What Boxcar checks and changes in a WebAssembly module before it runs, reading its bytes
 * only (it is compiled in the confined worker, never in Boxcar's process): only WASI preview1
 * imports are allowed, and every linear memory and table gets a maximum written into the
 * module itself, so `memory.grow` and `table.grow` past it fail inside the module (malloc
 * returns NULL) instead of taking host memory. The worker's cgroup bounds the rest.
 */

export const WASI_MODULES = ['wasi_snapshot_preview1', 'wasi_unstable'];
export const PAGE = 65_536;
/**
 * What one table element may cost the host (V8 keeps a reference and a dispatch entry): the
 * module's tables may hold the job's memory limit divided by this, in elements.
 */
export const TABLE_ELEMENT_BYTES = 256;

export interface ModuleLimits {
  maxPages: number;
  /** For every table of the module together. */
  maxTableElements: number;
}

export function moduleLimits(memoryBytes: number): ModuleLimits {
  return {
    maxPages: Math.max(1, Math.floor(memoryBytes / PAGE)),
    maxTableElements: Math.max(1, Math.floor(memoryBytes / TABLE_ELEMENT_BYTES)),
  };
}

const IMPORT_KINDS = ['function', 'table', 'memory', 'global', 'tag'];

/** The module's imports, as `module.name (kind)`, those of WASI left out. */
export function nonWasiImports(bytes: Uint8Array): string[] {
  const out: string[] = [];
  for (const { id, start, end } of sections(bytes)) {
    if (id !== 2) continue;
    let [count, p] = readU32(bytes, start);
    const name = (): string => {
      const [len, at] = readU32(bytes, p);
      p = at + len;
      if (p > end) throw new Error('malformed import section in the wasm module');
      return Buffer.from(bytes.subarray(at, p)).toString('utf8');
    };
    for (; count > 0; count--) {
      const module = name();
      const field = name();
      const kind = bytes[p++] as number;
      if (kind === 0)
        [, p] = readU32(bytes, p); // type index
      else if (kind === 1)
        p = skipLimits(bytes, p + 1); // reftype, limits
      else if (kind === 2) p = skipLimits(bytes, p);
      else if (kind === 3)
        p += 2; // valtype, mutability
      else if (kind === 4)
        [, p] = readU32(bytes, p + 1); // attribute, type index
      else throw new Error(`unknown import kind ${kind} in the wasm module`);
      if (!WASI_MODULES.includes(module)) out.push(`${module}.${field} (${IMPORT_KINDS[kind]})`);
    }
  }
  return out;
}

function readU32(buf: Uint8Array, pos: number): [number, number] {
  let result = 0;
  let shift = 0;
  for (;;) {
    const byte = buf[pos++] as number;
    result |= (byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) return [result >>> 0, pos];
    shift += 7;
    if (shift > 35) throw new Error('malformed LEB128 in the wasm module');
  }
}

function writeU32(value: number): number[] {
  const out: number[] = [];
  let v = value >>> 0;
  do {
    let byte = v & 0x7f;
    v >>>= 7;
    if (v !== 0) byte |= 0x80;
    out.push(byte);
  } while (v !== 0);
  return out;
}

function skipLimits(bytes: Uint8Array, p: number): number {
  const flags = bytes[p] as number;
  let [, at] = readU32(bytes, p + 1);
  if (flags & 1) [, at] = readU32(bytes, at);
  return at;
}

function* sections(bytes: Uint8Array): Generator<{ id: number; pos: number; start: number; end: number }> {
  if (bytes[0] !== 0 || bytes[1] !== 0x61 || bytes[2] !== 0x73 || bytes[3] !== 0x6d)
    throw new Error('not a WebAssembly module (bad magic)');
  let pos = 8;
  while (pos < bytes.length) {
    const [size, start] = readU32(bytes, pos + 1);
    yield { id: bytes[pos] as number, pos, start, end: start + size };
    pos = start + size;
  }
}

/**
 * One memory or table declaration with its maximum set to at most `cap` (refused when its
 * minimum is already past it). `unit` names what is counted, for the refusal.
 */
function capLimits(bytes: Uint8Array, p: number, cap: number, what: (n: number) => string) {
  const flags = bytes[p++] as number;
  if (flags & ~3)
    throw new Error(`the module declares ${what(0)} with limits flags ${flags}, which Boxcar cannot cap`);
  const [min, afterMin] = readU32(bytes, p);
  p = afterMin;
  let max: number | undefined;
  if (flags & 1) [max, p] = readU32(bytes, p);
  if (min > cap)
    throw new Error(`the module needs ${what(min)} at start, more than the job's limit of ${what(cap)}`);
  return { out: [flags | 1, ...writeU32(min), ...writeU32(Math.min(max ?? cap, cap))], end: p };
}

/**
 * Returns the module with every defined memory's maximum set to at most `limits.maxPages` and
 * every defined table's to at most its share of `limits.maxTableElements` (declarations whose
 * minimum already exceeds them are refused). Other sections are copied as whole slices: this
 * runs on the start path of every first job of a module.
 */
export function capResources(bytes: Uint8Array, limits: ModuleLimits): Uint8Array<ArrayBuffer> {
  const parts: Uint8Array[] = [];
  let copyFrom = 0;
  for (const { id, pos, start, end } of sections(bytes)) {
    if (id !== 4 && id !== 5) continue;
    let [count, p] = readU32(bytes, start);
    const body: number[] = writeU32(count);
    const perTable = Math.max(1, Math.floor(limits.maxTableElements / Math.max(1, count)));
    for (; count > 0; count--) {
      let capped;
      if (id === 5) {
        capped = capLimits(
          bytes,
          p,
          limits.maxPages,
          (n) => `${n} pages (${(n * PAGE) / 2 ** 20} MiB) of memory`,
        );
      } else {
        const reftype = bytes[p++] as number;
        if (reftype === 0x40)
          throw new Error('the module declares a table with an initializer, which Boxcar cannot cap');
        body.push(reftype);
        capped = capLimits(bytes, p, perTable, (n) => `a table of ${n} elements`);
      }
      body.push(...capped.out);
      p = capped.end;
    }
    parts.push(bytes.subarray(copyFrom, pos), Uint8Array.from([id, ...writeU32(body.length), ...body]));
    copyFrom = end;
  }
  parts.push(bytes.subarray(copyFrom));
  const out = new Uint8Array(parts.reduce((n, b) => n + b.length, 0));
  let at = 0;
  for (const b of parts) {
    out.set(b, at);
    at += b.length;
  }
  return out;
}
