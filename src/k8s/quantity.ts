/**
 * Quantities as the Kubernetes API server prints them (resource.Quantity's canonical form), so
 * what Boxcar writes into manifests and Pods, and the refusals it predicts, read exactly as the
 * cluster's own. Boxcar holds memory in bytes and CPU in millicores.
 */

const DECIMAL_SUFFIXES = ['m', '', 'k', 'M', 'G', 'T', 'P', 'E'];
const BINARY_SUFFIXES = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'];

/**
 * A DecimalSI quantity from its value in thousandths: the largest power of 1000 that keeps the
 * number whole (1800m, 2, 1k), as apimachinery's CanonicalizeBytes does.
 */
export function decimalQuantity(thousandths: number): string {
  if (!Number.isSafeInteger(thousandths) || thousandths < 0)
    throw new RangeError(`${thousandths} thousandths is not a whole, non-negative quantity`);
  if (thousandths === 0) return '0';
  let n = thousandths;
  let i = 0;
  while (n % 1000 === 0 && i < DECIMAL_SUFFIXES.length - 1) {
    n /= 1000;
    i++;
  }
  return `${n}${DECIMAL_SUFFIXES[i]}`;
}

/** CPU from millicores: `250m`, `2`, `1k`. */
export const cpuQuantity = (millis: number): string => decimalQuantity(millis);

/**
 * CPU as a person writes it in a manifest: whole cores (`500`, `1000`), else millicores. The API
 * server reads it as the same quantity; only its own messages use the canonical form.
 */
export const cpuSpec = (millis: number): string =>
  millis % 1000 === 0 ? String(millis / 1000) : `${millis}m`;

/** A count (`pods`). */
export const countQuantity = (n: number): string => decimalQuantity(n * 1000);

/**
 * Memory from bytes in BinarySI: the largest power of 1024 that keeps the number whole (728Mi,
 * 1Gi, 1500); below 1024 Kubernetes switches to DecimalSI (1000 → 1k), and so does this.
 */
export function memoryQuantity(bytes: number): string {
  if (!Number.isSafeInteger(bytes) || bytes < 0)
    throw new RangeError(`${bytes} bytes is not a whole, non-negative quantity`);
  if (bytes < 1024) return decimalQuantity(bytes * 1000);
  let n = bytes;
  let i = 0;
  while (n % 1024 === 0 && i < BINARY_SUFFIXES.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n}${BINARY_SUFFIXES[i]}`;
}

const SUFFIX_SCALE: Record<string, number> = {
  '': 1,
  n: 1e-9,
  u: 1e-6,
  m: 1e-3,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};

/**
 * A quantity as the API server reads it (`224Mi`, `250m`, `1k`, `1e3`, `0.5`, and the metrics
 * API's nanocores, `123456789n`), in thousandths
 * of its unit: millicores for CPU, thousandths of a byte for memory (see `bytesOf`). Rounded up,
 * as resource.Quantity rounds what it cannot hold.
 */
export function quantityThousandths(text: string | number): number {
  const m = /^([+-]?[0-9]+(?:\.[0-9]*)?|[+-]?\.[0-9]+)(?:([KMGTPE]i|[numkMGTPE])|[eE]([+-]?[0-9]+))?$/.exec(
    String(text).trim(),
  );
  if (!m) throw new RangeError(`"${text}" is not a Kubernetes quantity; use e.g. 256Mi, 250m, 2`);
  const scale = m[3] !== undefined ? 10 ** Number(m[3]) : (SUFFIX_SCALE[m[2] ?? ''] as number);
  return Math.ceil(Number(m[1]) * scale * 1000 - 1e-9);
}

/** Bytes from a memory quantity (a fraction of a byte rounds up, as Quantity.Value does). */
export const bytesOf = (text: string | number): number => Math.ceil(quantityThousandths(text) / 1000);
