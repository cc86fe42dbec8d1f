import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { digestHex } from '../lib/digest.js';
import { UserError, errnoCode, errorMessage } from '../lib/errors.js';
import { WASM_CONFIG, type ResolvedImage } from './image.js';
import { type ImageStore, type Manifest, MEDIA } from './image-store.js';

/**
 * A WebAssembly module published to a registry as an OCI artifact (the CNCF wasm OCI artifact
 * layout, and wasm-to-oci's): a manifest whose config says so and whose one layer is the
 * module itself, run by a WASM runtime rather than unpacked.
 */
const WASM_CONFIG_TYPE = 'application/vnd.wasm.config.v0+json';
const CONFIG_TYPES = [WASM_CONFIG_TYPE, 'application/vnd.wasm.config.v1+json'];
const LAYER_TYPES = [
  'application/wasm',
  'application/vnd.wasm.content.layer.v1+wasm',
  'application/vnd.module.wasm.content.layer.v1+wasm',
];

/** The module's layer, if the manifest is a WASM artifact. */
export function wasmLayer(m: Pick<Manifest, 'config' | 'layers'> & { artifactType?: string }) {
  const wasm =
    CONFIG_TYPES.includes(m.config?.mediaType ?? '') ||
    (m.artifactType ?? '').startsWith('application/vnd.wasm') ||
    (m.layers?.length === 1 && LAYER_TYPES.includes(m.layers[0]?.mediaType ?? ''));
  if (!wasm) return undefined;
  const modules = (m.layers ?? []).filter((l) => LAYER_TYPES.includes(l.mediaType));
  if (modules.length !== 1)
    throw new Error(
      `a WASM artifact holds one module layer (${LAYER_TYPES.join(' or ')}); this one has ${modules.length}`,
    );
  return modules[0];
}

/** Where the store keeps modules imported from local files. */
const IMPORTED = 'boxcar/wasm/';

/**
 * The operator's own `.wasm` file (a local run): stored as a WASM artifact, as a registry would
 * hold it, under `boxcar/wasm/<name>-<digest>.wasm`, the reference the job then names. Jobs
 * read modules from the store only, never from a path on the node.
 */
export async function importWasmModule(store: ImageStore, file: string): Promise<string> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    throw new UserError(
      `cannot read the WASM module ${file} (${errnoCode(err) ?? errorMessage(err)}); check the --image path`,
    );
  }
  await store.init();
  const module = await store.putBlob(bytes, MEDIA.wasm);
  const config = await store.putBlob('{}', WASM_CONFIG_TYPE);
  const manifest = await store.putBlob(
    JSON.stringify({ schemaVersion: 2, mediaType: MEDIA.manifest, config, layers: [module] }),
    MEDIA.manifest,
  );
  const name = path
    .basename(file, '.wasm')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
  const ref = `${IMPORTED}${name || 'module'}-${digestHex(module.digest).slice(0, 12)}.wasm`;
  await store.tag(ref, manifest);
  return ref;
}

/** A module in the store (imported, see above), by its reference. */
export async function storedWasmModule(store: ImageStore, ref: string): Promise<ResolvedImage> {
  const entry = ref.startsWith(IMPORTED) ? await store.lookup(ref) : undefined;
  if (!entry)
    throw new UserError(
      `image ${ref}: a WASM module runs from the image store or a registry, never from a path on the node; \`boxcar run\` imports a local file, otherwise push it to a registry as an OCI artifact`,
    );
  const layer = wasmLayer(await store.readJson<Manifest>(entry.digest));
  if (!layer) throw new UserError(`image ${ref} is not a WASM module`);
  return {
    ref,
    digest: entry.digest,
    content: { module: store.blobPath(layer.digest) },
    config: WASM_CONFIG,
  };
}
