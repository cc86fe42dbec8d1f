import type { Manifest } from './image-store.js';

/**
 * A WebAssembly module published to a registry as an OCI artifact (the CNCF wasm OCI artifact
 * layout, and wasm-to-oci's): a manifest whose config says so and whose one layer is the
 * module itself, run by a WASM runtime rather than unpacked.
 */
const CONFIG_TYPES = ['application/vnd.wasm.config.v0+json', 'application/vnd.wasm.config.v1+json'];
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
