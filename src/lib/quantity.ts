/**
 * Kubernetes quantity and duration parsing. Every parser returns either a value or a
 * message saying what a valid value looks like, so the schema can name field and fix.
 */

export type Parsed<T> = { ok: true; value: T } | { ok: false; message: string };

const BINARY: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50 };
const DECIMAL: Record<string, number> = { '': 1, k: 1e3, K: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15 };
const QUANTITY = /^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|k|K|M|G|T|P|m)?$/;

/** Bytes from `256Mi`, `1Gi`, `512M`, `1048576`. */
export function parseBytes(input: string | number): Parsed<number> {
  const text = String(input).trim();
  const m = QUANTITY.exec(text);
  const suffix = m?.[2] ?? '';
  const scale = BINARY[suffix] ?? DECIMAL[suffix];
  if (!m || scale === undefined) {
    return { ok: false, message: `"${text}" is not a size; use bytes or a suffix, e.g. 256Mi, 1Gi, 512M` };
  }
  const bytes = Math.round(Number(m[1]) * scale);
  if (bytes <= 0) return { ok: false, message: `"${text}" must be greater than zero` };
  return { ok: true, value: bytes };
}

/** Millicores from `1`, `0.5`, `250m`. */
export function parseCpuMillis(input: string | number): Parsed<number> {
  const text = String(input).trim();
  const m = /^([0-9]+(?:\.[0-9]+)?)(m)?$/.exec(text);
  if (!m)
    return {
      ok: false,
      message: `"${text}" is not a CPU amount; use cores or millicores, e.g. 1, 0.5, 250m`,
    };
  const millis = m[2] ? Number(m[1]) : Number(m[1]) * 1000;
  if (millis < 1) return { ok: false, message: `"${text}" is below the smallest CPU amount, 1m` };
  return { ok: true, value: Math.round(millis) };
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Milliseconds from `10m`, `2s`, `1h30m`, `500ms`, `7d`. A bare number means seconds. */
export function parseDurationMs(input: string | number): Parsed<number> {
  const text = String(input).trim();
  if (/^[0-9]+(\.[0-9]+)?$/.test(text)) return positive(Number(text) * 1000, text);
  const part = /([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)/g;
  let total = 0;
  let consumed = 0;
  for (const m of text.matchAll(part)) {
    if (m.index !== consumed) break;
    total += Number(m[1]) * (DURATION_UNITS[m[2] as string] as number);
    consumed += m[0].length;
  }
  if (consumed !== text.length || consumed === 0) {
    return { ok: false, message: `"${text}" is not a duration; use e.g. 30s, 10m, 1h30m, 500ms, 7d` };
  }
  return positive(total, text);
}

function positive(ms: number, text: string): Parsed<number> {
  return ms > 0
    ? { ok: true, value: Math.round(ms) }
    : { ok: false, message: `"${text}" must be longer than zero` };
}

/** A duration for people: `850 ms`, `12.3 s`; `-` when there is none. */
export function formatMs(v: number | null): string {
  if (v === null) return '-';
  return v < 10_000 ? `${Math.round(v)} ms` : `${(v / 1000).toFixed(1)} s`;
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}
