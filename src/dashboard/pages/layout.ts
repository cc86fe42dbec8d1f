import { html, type Html } from '../html.js';
import type { Viewer } from '../viewer.js';

export interface PageOptions {
  title: string;
  viewer?: Viewer;
  body: Html;
  /** Client scripts under /ui/static/ (modules). */
  scripts?: string[];
  /** Which nav entry is current. */
  nav?: 'jobs' | 'fleet' | 'cost';
}

const NAV = [
  { id: 'jobs', href: '/', label: 'Jobs' },
  { id: 'fleet', href: '/ui/fleet', label: 'Fleet' },
  { id: 'cost', href: '/ui/cost', label: 'Cost' },
] as const;

/** A whole page: the header with who is logged in, the navigation, and `body` as the main content. */
export function page(o: PageOptions): string {
  const v = o.viewer;
  return `<!doctype html>\n${html`<html lang="en">
    <head>
      <meta charset="utf-8" />
      <meta name="viewport" content="width=device-width, initial-scale=1" />
      <title>${o.title} · Boxcar</title>
      <link rel="stylesheet" href="/ui/static/dashboard.css" />
      ${(o.scripts ?? []).map((s) => html`<script type="module" src="/ui/static/${s}"></script>`)}
    </head>
    <body>
      <header class="top">
        <a class="brand" href="/">Boxcar</a>
        ${
          v &&
          html`<nav aria-label="Main">
              ${NAV.map(
                (n) =>
                  html`<a href="${n.href}" ${o.nav === n.id ? html` aria-current="page"` : ''}
                    >${n.label}</a
                  >`,
              )}
            </nav>
            <form class="who" method="post" action="/ui/logout">
              <span
                >${v.role === 'operator' ? `operator${v.tenant ? ` (${v.tenant})` : ''}` : `tenant ${v.tenant}`}</span
              >
              <button type="submit">Log out</button>
            </form>`
        }
      </header>
      <main id="main">${o.body}</main>
    </body>
  </html>`}\n`;
}
