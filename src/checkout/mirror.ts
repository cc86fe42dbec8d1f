import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { lstat, mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { errorMessage, ifExists, UserError, withContext } from '../lib/errors.js';
import { ExecError } from '../lib/exec.js';
import { withLock } from '../lib/fs-util.js';
import type { Logger } from '../observability/logger.js';
import { checkProtocol, hardenedGit, type GitProtocol } from './git.js';

const FETCH_TIMEOUT_MS = 10 * 60_000;
const LOCAL_TIMEOUT_MS = 5 * 60_000;
/** Submodules of submodules, at most this deep: a repository cannot make the node fetch for ever. */
const SUBMODULE_DEPTH = 4;
const GITLINK = '160000';

export interface MirrorOptions {
  /** Where the mirrors are: root's alone, never seen by a job. */
  dir: string;
  protocols: readonly GitProtocol[];
  logger: Logger;
}

/** How one checkout went, for the job's log and result. */
export interface CheckoutReport {
  /** The mirror had the commit already: nothing was fetched. */
  warm: boolean;
  fetchMs: number;
  checkoutMs: number;
  submodules: number;
}

/**
 * One bare mirror per repository URL, shared by every job of the node and fetched
 * incrementally (only the objects a new commit brings), from which a job's commit is written
 * into its workspace by git itself. Git's checkout never writes through a symlink or outside
 * its work tree (it checks every leading path, and refuses `..`, `.git` and names that alias
 * them); the node's git runs hardened (see git.ts), and no filter, hook or fsmonitor exists
 * for a repository's `.gitattributes` to invoke.
 */
export class Mirrors {
  constructor(private readonly opts: MirrorOptions) {}

  private git(
    args: readonly string[],
    timeoutMs = LOCAL_TIMEOUT_MS,
    env?: Record<string, string>,
    allowed: readonly GitProtocol[] = this.opts.protocols,
  ) {
    return hardenedGit(allowed, args, { timeoutMs, env, home: this.opts.dir });
  }

  /** The mirror of one URL (by its digest: a URL never becomes a path). */
  mirrorDir(url: string): string {
    const id = createHash('sha256').update(url).digest('hex').slice(0, 32);
    return path.join(this.opts.dir, `${id}.git`);
  }

  /**
   * Makes sure the mirror of `url` holds `commit`, fetching only when it does not; returns
   * the mirror's directory and whether it was warm. Fetches of one mirror take turns (also
   * across the node's processes); reads never wait for them.
   */
  async ensureCommit(
    url: string,
    commit: string,
    allowed: readonly GitProtocol[] = this.opts.protocols,
  ): Promise<{ dir: string; warm: boolean }> {
    checkProtocol(url, allowed);
    const dir = this.mirrorDir(url);
    if (existsSync(dir) && (await this.hasCommit(dir, commit))) return { dir, warm: true };
    await mkdir(this.opts.dir, { recursive: true, mode: 0o700 });
    await withLock(
      `${dir}.lock`,
      async () => {
        if (!existsSync(path.join(dir, 'HEAD'))) await this.create(dir, url);
        if (await this.hasCommit(dir, commit)) return;
        const started = Date.now();
        try {
          // By id, into a ref of its own: what the node already has is offered as a base, so a
          // new commit brings only its own objects; the ref keeps them from being pruned.
          await this.git(
            ['-C', dir, 'fetch', '--quiet', '--no-tags', '--no-write-fetch-head', '--', url, `+${commit}:refs/boxcar/${commit}`],
            FETCH_TIMEOUT_MS,
            undefined,
            allowed,
          ); // prettier-ignore
        } catch (err) {
          throw new UserError(`checkout: cannot fetch ${commit} from ${url}: ${gitReason(err)}`);
        }
        this.opts.logger.info({ url, commit, fetchMs: Date.now() - started }, 'mirror fetched');
      },
      { staleMs: FETCH_TIMEOUT_MS + 60_000, waitMs: FETCH_TIMEOUT_MS + 60_000 },
    );
    return { dir, warm: false };
  }

  private async create(dir: string, url: string): Promise<void> {
    await rm(dir, { recursive: true, force: true }); // a creation cut short
    await this.git(['init', '--quiet', '--bare', dir]);
    // For the operator who looks: which repository this is. Nothing reads it back.
    await writeFile(path.join(dir, 'boxcar-url'), `${url}\n`);
  }

  private async hasCommit(dir: string, commit: string): Promise<boolean> {
    try {
      await this.git(['-C', dir, 'cat-file', '-e', `${commit}^{commit}`]);
      return true;
    } catch (err) {
      if (err instanceof ExecError) return false;
      throw err;
    }
  }

  /** One file of a commit, e.g. the job file a webhook names. */
  async show(url: string, commit: string, file: string, allowed?: readonly GitProtocol[]): Promise<string> {
    const { dir } = await this.ensureCommit(url, commit, allowed);
    try {
      return (await this.git(['-C', dir, 'show', `${commit}:${file}`])).stdout;
    } catch (err) {
      throw new UserError(`${file} at ${commit} of ${url}: ${gitReason(err)}`);
    }
  }

  /**
   * Writes `commit` of `url` into `workTree` (an empty directory, the job's workspace), with
   * its submodules when asked. The index git needs is kept beside the mirrors, not in the
   * workspace, and the mirror's HEAD is never moved: checkouts of one mirror run side by side.
   */
  async checkout(
    req: {
      url: string;
      commit: string;
      submodules: boolean;
      workTree: string;
      allowed?: readonly GitProtocol[];
    },
    depth = 0,
  ): Promise<CheckoutReport> {
    const fetchStarted = Date.now();
    const { dir, warm } = await this.ensureCommit(req.url, req.commit, req.allowed);
    const fetchMs = Date.now() - fetchStarted;
    const started = Date.now();
    const index = path.join(
      this.opts.dir,
      'tmp',
      `${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}.index`,
    );
    await mkdir(path.dirname(index), { recursive: true, mode: 0o700 });
    try {
      await this.git(
        ['--git-dir', dir, '--work-tree', req.workTree, 'read-tree', '--reset', '-u', req.commit],
        LOCAL_TIMEOUT_MS,
        { GIT_INDEX_FILE: index },
      );
    } catch (err) {
      throw new UserError(`checkout of ${req.commit} from ${req.url}: ${gitReason(err)}`);
    } finally {
      await rm(index, { force: true });
    }
    const report: CheckoutReport = { warm, fetchMs, checkoutMs: Date.now() - started, submodules: 0 };
    if (req.submodules) report.submodules = await this.submodules(dir, req, depth);
    return report;
  }

  /**
   * Each submodule the commit pins (a gitlink), from the URL `.gitmodules` gives it (relative
   * ones against the parent's), through the same allowlist, into its directory once that is
   * checked to be a real one inside the work tree.
   */
  private async submodules(
    mirror: string,
    req: { url: string; commit: string; workTree: string; allowed?: readonly GitProtocol[] },
    depth: number,
  ): Promise<number> {
    const tree = (await this.git(['-C', mirror, 'ls-tree', '-r', '-z', req.commit])).stdout;
    const links = tree
      .split('\0')
      .filter((l) => l.startsWith(`${GITLINK} commit `))
      .map((l) => {
        const [meta, p] = l.split('\t') as [string, string];
        return { path: p, commit: meta.split(' ')[2] as string };
      });
    if (links.length === 0) return 0;
    if (depth >= SUBMODULE_DEPTH)
      throw new UserError(`checkout of ${req.url}: submodules nested deeper than ${SUBMODULE_DEPTH}`);
    const urls = await this.submoduleUrls(mirror, req.commit);
    let n = 0;
    for (const link of links) {
      const declared = urls.get(link.path);
      if (!declared)
        throw new UserError(`checkout of ${req.url}: submodule ${link.path} has no url in .gitmodules`);
      const url =
        declared.startsWith('../') || declared.startsWith('./') ? relativeUrl(req.url, declared) : declared;
      const workTree = await realDirInside(req.workTree, link.path);
      n +=
        1 +
        (
          await this.checkout(
            { url, commit: link.commit, submodules: true, workTree, allowed: req.allowed },
            depth + 1,
          )
        ).submodules;
    }
    return n;
  }

  private async submoduleUrls(mirror: string, commit: string): Promise<Map<string, string>> {
    let out = '';
    try {
      out = (
        await this.git([
          '-C',
          mirror,
          'config',
          '--blob',
          `${commit}:.gitmodules`,
          '-z',
          '--get-regexp',
          '^submodule\\..*\\.(path|url)$',
        ])
      ).stdout;
    } catch (err) {
      throw new UserError(`reading .gitmodules at ${commit}: ${gitReason(err)}`);
    }
    const byName = new Map<string, { path?: string; url?: string }>();
    for (const rec of out.split('\0').filter(Boolean)) {
      const nl = rec.indexOf('\n');
      const key = rec.slice(0, nl);
      const m = /^submodule\.(.*)\.(path|url)$/.exec(key);
      if (!m) continue;
      const e = byName.get(m[1] as string) ?? {};
      e[m[2] as 'path' | 'url'] = rec.slice(nl + 1);
      byName.set(m[1] as string, e);
    }
    return new Map(
      [...byName.values()].filter((e) => e.path && e.url).map((e) => [e.path as string, e.url as string]),
    );
  }
}

/** `../other.git` against the parent's URL, as git resolves a relative submodule URL. */
export function relativeUrl(parent: string, rel: string): string {
  let base = parent.replace(/\/+$/, '').replace(/\.git$/, '');
  let rest = rel;
  for (;;) {
    if (rest.startsWith('./')) rest = rest.slice(2);
    else if (rest.startsWith('../')) {
      rest = rest.slice(3);
      const cut = Math.max(base.lastIndexOf('/'), base.lastIndexOf(':'));
      if (cut < 0) throw new UserError(`submodule url ${rel} climbs above ${parent}`);
      base = base.slice(0, cut);
    } else break;
  }
  return `${base}/${rest}`;
}

/** `rel` under `root`, every component a real directory (never a symlink a checkout planted). */
async function realDirInside(root: string, rel: string): Promise<string> {
  let at = root;
  for (const part of rel.split('/')) {
    if (!part || part === '.' || part === '..')
      throw new UserError(`submodule path "${rel}" is not inside the workspace`);
    at = path.join(at, part);
    const st = await ifExists(lstat(at));
    if (!st?.isDirectory())
      throw new UserError(`submodule path "${rel}": "${part}" is not a directory of the checkout`);
  }
  return at;
}

/** What git said went wrong, in one line. */
function gitReason(err: unknown): string {
  if (err instanceof ExecError) {
    const lines = err.stderr
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean);
    const errors = lines.filter((l) => /^(fatal|error):/.test(l));
    return (errors.length ? errors : lines.slice(-1)).slice(0, 3).join(' | ') || errorMessage(err);
  }
  throw withContext('running git', err);
}
