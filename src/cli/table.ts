/** A plain-text table with columns padded to their widest cell. */
export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

// In lib: the dashboard shows durations too, and may not import the CLI (the CLI serves it).
export { formatMs as ms } from '../lib/quantity.js';

export function dollars(v: number | null): string {
  return v === null ? '-' : `$${v.toFixed(8)}`;
}
