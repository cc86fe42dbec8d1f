/** Money in integer micro-dollars: sums of many small job prices stay exact. */
export type Micro = number;
export const MICRO = 1_000_000;
export const dollars = (d: number): Micro => Math.round(d * MICRO);

/** `$1,234.56`, `-$0.01`; `digits` after the point. */
export function formatMoney(m: Micro, digits = 2): string {
  const text = (Math.abs(m) / MICRO).toLocaleString('en-US', {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
  return `${m < 0 ? '-' : ''}$${text}`;
}
