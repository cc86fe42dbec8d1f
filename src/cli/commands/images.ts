import type { Command } from 'commander';
import { openBoxcar, type BoxcarOptions } from '../../boxcar.js';
import { imagesInUse, type PullProgress } from '../../images/pull.js';
import { UserError } from '../../lib/errors.js';
import { formatBytes, parseBytes } from '../../lib/quantity.js';
import type { Logger } from '../../observability/logger.js';
import { formatTable } from '../table.js';

/**
 * `boxcar images pull|ls|rm|prune`: this node's image cache. A pull shows each layer's progress
 * as a bar on a terminal and as one line per finished layer otherwise.
 */
function progressPrinter(): { onProgress: PullProgress; finish: () => void } {
  const tty = process.stderr.isTTY === true;
  const layers = new Map<string, { size: number; done: number; cached: boolean; printed: boolean }>();
  let drawn = 0;
  const draw = () => {
    if (drawn) process.stderr.write(`\x1b[${drawn}A`);
    for (const [digest, l] of layers) {
      const width = 30;
      const filled = l.size ? Math.round((l.done / l.size) * width) : width;
      process.stderr.write(
        `\x1b[2K${digest.slice(7, 19)}  [${'#'.repeat(filled)}${' '.repeat(width - filled)}] ${formatBytes(l.done)} / ${formatBytes(l.size)}${l.cached ? ' (cached)' : ''}\n`,
      );
    }
    drawn = layers.size;
  };
  return {
    onProgress: (e) => {
      const l = layers.get(e.layer) ?? { size: e.size, done: 0, cached: e.cached, printed: false };
      l.done = e.done;
      l.cached = e.cached;
      layers.set(e.layer, l);
      if (tty) draw();
      else if (e.done >= e.size && !l.printed) {
        l.printed = true;
        process.stderr.write(
          `layer ${e.layer.slice(0, 19)} ${formatBytes(e.size)} ${e.cached ? 'cached' : 'pulled'}\n`,
        );
      }
    },
    finish: () => {
      if (tty) draw();
    },
  };
}

export function registerImages(program: Command, logger: Logger): void {
  const images = program.command('images');
  const open = () => openBoxcar(program.opts<BoxcarOptions>(), logger);

  images
    .command('pull')
    .description('pull an image from its registry into the cache (its tag resolved to a digest)')
    .argument('<image>', 'e.g. 127.0.0.1:5000/team/app:1')
    .option('--json', 'print the pull as JSON')
    .action(async (ref: string, flags: { json?: boolean }) => {
      const box = await open();
      try {
        const progress = flags.json ? undefined : progressPrinter();
        const { ref: pinned } = await box.puller.pin(ref);
        const image = await box.puller.pull(pinned, { progress: progress?.onProgress });
        progress?.finish();
        const b = image.pull?.bytes ?? { origin: 0, peers: 0, cache: 0 };
        if (flags.json)
          process.stdout.write(`${JSON.stringify({ ref: pinned, digest: image.digest, ...image.pull })}\n`);
        else
          process.stdout.write(
            `pulled ${pinned} in ${image.pull?.pullMs ?? 0} ms (${formatBytes(b.origin)} from the registry, ${formatBytes(b.peers)} from peers, ${formatBytes(b.cache)} cached)\n`,
          );
      } finally {
        await box.close();
      }
    });

  images
    .command('ls')
    .description('list cached images')
    .option('--json', 'print a JSON array')
    .action(async (flags: { json?: boolean }) => {
      const box = await open();
      try {
        const list = await box.images.entries();
        if (flags.json) return void process.stdout.write(`${JSON.stringify(list)}\n`);
        const rows = list.map((e) => [
          e.ref,
          e.digest.slice(0, 19),
          formatBytes(e.bytes),
          e.lastUsed ? new Date(e.lastUsed).toISOString().replace('T', ' ').slice(0, 19) : '-',
        ]);
        process.stdout.write(`${formatTable(['IMAGE', 'DIGEST', 'SIZE', 'LAST USED'], rows)}\n`);
      } finally {
        await box.close();
      }
    });

  images
    .command('rm')
    .description('remove a cached image (kept while a queued or running job needs it)')
    .argument('<image>')
    .action(async (ref: string) => {
      const box = await open();
      try {
        const entry = await box.images.lookup(ref);
        if (!entry) throw new UserError(`no image ${ref} in the cache; see \`boxcar images ls\``);
        const inUse = await imagesInUse(box.store);
        if (inUse.has(entry.digest))
          throw new UserError(`image ${ref} is needed by a queued or running job; remove it once they end`);
        await box.images.untag(ref);
        const freed = await box.images.collect(inUse);
        process.stdout.write(`removed ${ref} (${formatBytes(freed)} freed)\n`);
      } finally {
        await box.close();
      }
    });

  images
    .command('prune')
    .description('remove least recently used images until the cache fits (default: images.cache_max)')
    .option('--max <size>', 'the size to fit in, e.g. 5Gi; 0 removes every image no job needs')
    .action(async (flags: { max?: string }) => {
      const box = await open();
      try {
        let max = box.config.images.cache_max;
        if (flags.max !== undefined) {
          const parsed = flags.max === '0' ? { ok: true as const, value: 0 } : parseBytes(flags.max);
          if (!parsed.ok) throw new UserError(`--max: ${parsed.message}`);
          max = parsed.value;
        }
        const { removed, freedBytes } = await box.images.prune(max, await imagesInUse(box.store));
        process.stdout.write(`${removed.length} images removed, ${formatBytes(freedBytes)} freed\n`);
      } finally {
        await box.close();
      }
    });
}
