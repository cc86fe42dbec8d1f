import { html, type Html } from '../html.js';

/**
 * Small SVG bar charts (no script, no inline style: the CSP allows neither). Each bar carries
 * its value as text too, so the figure reads without the picture.
 */
export function barChart(
  bars: ReadonlyArray<{ label: string; value: number; text?: string }>,
  o: {
    title: string;
    width?: number;
    series?: string;
    /** room right of the bars for their text */ textRoom?: number;
  },
): Html {
  const width = o.width ?? 420;
  const rowH = 22;
  const labelW = 110;
  const max = Math.max(1, ...bars.map((b) => b.value));
  const height = bars.length * rowH + 4;
  return html`<svg
    class="chart"
    role="img"
    aria-label="${o.title}"
    width="${width}"
    height="${height}"
    viewBox="0 0 ${width} ${height}"
  >
    ${bars.map((b, i) => {
      const w = Math.round(((width - labelW - (o.textRoom ?? 70)) * b.value) / max);
      const y = i * rowH + 2;
      return html`<text class="label" x="${labelW - 6}" y="${y + 15}" text-anchor="end">${b.label}</text>
        <rect
          class="bar ${o.series ?? ''}"
          x="${labelW}"
          y="${y + 3}"
          width="${Math.max(w, b.value ? 2 : 0)}"
          height="${rowH - 6}"
        />
        <text class="value" x="${labelW + w + 6}" y="${y + 15}">${b.text ?? String(b.value)}</text>`;
    })}
  </svg>`;
}

/** Stacked columns (one per x, e.g. a day), a colour class per series, with a legend. */
export function stackedColumns(
  columns: ReadonlyArray<{ label: string; parts: ReadonlyArray<{ series: string; value: number }> }>,
  o: { title: string; series: readonly string[]; format: (v: number) => string },
): Html {
  const colW = 34;
  const chartH = 160;
  const left = 70;
  const width = left + Math.max(1, columns.length) * colW + 10;
  const height = chartH + 40;
  const totals = columns.map((c) => c.parts.reduce((s, p) => s + p.value, 0));
  const max = Math.max(0, ...totals) || 1;
  const cls = (s: string) => `c${o.series.indexOf(s) % 8}`;
  return html`<figure class="stacked">
    <svg
      class="chart"
      role="img"
      aria-label="${o.title}"
      width="${width}"
      height="${height}"
      viewBox="0 0 ${width} ${height}"
    >
      <text class="label" x="${left - 6}" y="14" text-anchor="end">${o.format(max)}</text>
      <text class="label" x="${left - 6}" y="${chartH + 4}" text-anchor="end">${o.format(0)}</text>
      ${columns.map((c, i) => {
        let y = chartH + 4;
        const x = left + i * colW + 4;
        return html`${c.parts.map((p) => {
            const h = (p.value / max) * (chartH - 10);
            y -= h;
            return html`<rect
              class="bar ${cls(p.series)}"
              x="${x}"
              y="${y.toFixed(1)}"
              width="${colW - 8}"
              height="${h.toFixed(1)}"
              ><title>${c.label} ${p.series}: ${o.format(p.value)}</title></rect
            >`;
          })}<text class="label" x="${x + (colW - 8) / 2}" y="${chartH + 22}" text-anchor="middle"
            >${c.label}</text
          >`;
      })}
    </svg>
    <figcaption>
      ${o.series.map((s) => html`<span class="key"><span class="swatch ${cls(s)}"></span>${s}</span> `)}
    </figcaption>
  </figure>`;
}
