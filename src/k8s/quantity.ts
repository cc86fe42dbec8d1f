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
