import { readFile } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import { withContext } from '../lib/errors.js';
import { DASHBOARD_CSS } from './style.js';

/** The browser scripts, compiled next to this file by tsc (dist/src/dashboard/client/). */
export const CLIENT_SCRIPTS = ['jobs.js', 'log.js'] as const;

export interface StaticFile {
  type: string;
  body: Buffer;
  gzip: Buffer;
}

/**
 * Everything the dashboard ships besides its HTML, read once at start and served from memory,
 * gzipped for browsers that accept it. Source-map comments are dropped: the maps stay on the node.
 */
export async function loadStaticFiles(): Promise<Map<string, StaticFile>> {
  const files = new Map<string, StaticFile>();
  const add = (name: string, type: string, text: string) => {
    const body = Buffer.from(text);
    files.set(name, { type, body, gzip: gzipSync(body, { level: 9 }) });
  };
  add('dashboard.css', 'text/css; charset=utf-8', DASHBOARD_CSS);
  for (const name of CLIENT_SCRIPTS) {
    const url = new URL(`./client/${name}`, import.meta.url);
    const text = await readFile(url, 'utf8').catch((err: unknown) => {
      throw withContext(`reading the dashboard's script ${url.pathname} (built by npm run build)`, err);
    });
    add(name, 'text/javascript; charset=utf-8', text.replace(/\n\/\/# sourceMappingURL=.*\n?$/, '\n'));
  }
  return files;
}
