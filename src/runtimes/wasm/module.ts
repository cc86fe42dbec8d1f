/**
 * What Boxcar checks and changes in a WebAssembly module before it runs: only WASI preview1
 * imports are allowed, and the linear memory gets a maximum no larger than the job's memory
 * limit, written into the module itself, so `memory.grow` past it fails inside the module
 * (malloc returns NULL) instead of taking host memory.
 */

export const WASI_MODULES = ['wasi_snapshot_preview1', 'wasi_unstable'];
export const PAGE = 65_536;

export function nonWasiImports(mod: WebAssembly.Module): string[] {
  return WebAssembly.Module.imports(mod)
    .filter((i) => !WASI_MODULES.includes(i.module))
    .map((i) => `${i.module}.${i.name} (${i.kind})`);
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

/**
 * Returns the module with every defined memory's maximum set to at most `maxPages` (memories
 * whose minimum already exceeds it are refused). Other sections are copied as whole slices:
 * this runs on the start path of every first job of a module.
 */
export function capMemory(bytes: Uint8Array, maxPages: number): Uint8Array<ArrayBuffer> {
  if (bytes[0] !== 0 || bytes[1] !== 0x61 || bytes[2] !== 0x73 || bytes[3] !== 0x6d)
    throw new Error('not a WebAssembly module (bad magic)');
  const parts: Uint8Array[] = [];
  let copyFrom = 0;
  let pos = 8;
  while (pos < bytes.length) {
    const id = bytes[pos] as number;
    const [size, bodyStart] = readU32(bytes, pos + 1);
    const bodyEnd = bodyStart + size;
    if (id === 5) {
      let p = bodyStart;
      const [count, afterCount] = readU32(bytes, p);
      p = afterCount;
      const body: number[] = writeU32(count);
      for (let m = 0; m < count; m++) {
        const flags = bytes[p++] as number;
        const [min, afterMin] = readU32(bytes, p);
        p = afterMin;
        let max: number | undefined;
        if (flags & 1) [max, p] = readU32(bytes, p);
        if (min > maxPages)
          throw new Error(
            `the module needs ${min} pages (${(min * PAGE) / 2 ** 20} MiB) of memory at start, more than the job's limit of ${maxPages} pages`,
          );
        const capped = Math.min(max ?? maxPages, maxPages);
        body.push((flags & ~1) | 1 | (flags & 2), ...writeU32(min), ...writeU32(capped));
      }
      parts.push(bytes.subarray(copyFrom, pos), Uint8Array.from([5, ...writeU32(body.length), ...body]));
      copyFrom = bodyEnd;
    }
    pos = bodyEnd;
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
