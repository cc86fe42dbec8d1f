import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UserError } from '../lib/errors.js';
import { baseImageRecipe } from '../images/base-image.js';
import { sha256 } from '../lib/digest.js';
import type { ImageStore } from '../images/image-store.js';
import { ensureLocalImage } from '../images/local-image.js';
import { run } from '../lib/exec.js';
import { toolVersion } from '../runtimes/shared/fingerprint.js';

/** The base image plus `boxcar-probe` (probe.c, built static here with gcc). */
export const PROBE_IMAGE_REF = 'boxcar/isolation-probes:latest';
const PROBE_SOURCE = fileURLToPath(new URL('../../../src/isolation/probe.c', import.meta.url));

export async function ensureProbeImage(store: ImageStore): Promise<string> {
  const base = await baseImageRecipe(store);
  const source = await readFile(PROBE_SOURCE);
  const gcc = await toolVersion('gcc', ['--version']);
  if (!gcc.ok)
    throw new UserError(
      `verify-isolation builds its probe with gcc (${gcc.why}); install the Debian packages gcc and libc6-dev`,
    );
  await ensureLocalImage(store, {
    ref: PROBE_IMAGE_REF,
    inputKey: `${base.inputKey}+probe:${sha256(source)}+${gcc.version}`,
    description: async () => `busybox and boxcar-probe (${gcc.version})`,
    populate: async (rootfs) => {
      await base.populate(rootfs);
      await run(
        'gcc',
        ['-static', '-O2', '-o', path.join(rootfs, 'usr/local/bin/boxcar-probe'), PROBE_SOURCE],
        { timeoutMs: 120_000 },
      );
    },
  });
  return PROBE_IMAGE_REF;
}
