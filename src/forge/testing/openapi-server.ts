import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Ajv, type ValidateFunction } from 'ajv';

/**
 * A stand-in for a forge's API on loopback for tests: every request must be an operation of
 * the forge's published OpenAPI description (method and path), its path parameters and JSON
 * body must match that operation's schemas (objects closed: a field the API does not define is
 * refused too), and its credentials must satisfy the test's `authorize`. A request that fails
 * is answered 422 (401 for credentials) and kept with its problems, so a test can assert there
 * were none; one that passes is answered by the test's `respond`.
 */

interface Schema {
  [key: string]: unknown;
}
interface Parameter {
  name: string;
  in: string;
  required?: boolean;
  schema?: Schema;
}
export interface Operation {
  operationId: string;
  parameters?: Array<Parameter | { $ref: string }>;
  requestBody?: { required?: boolean; content?: Record<string, { schema?: Schema }> };
}
export interface OpenApiDocument {
  paths: Record<string, Record<string, Operation>>;
  components?: { schemas?: Record<string, unknown>; parameters?: Record<string, Parameter> };
}

export interface SeenRequest {
  method: string;
  path: string;
  operationId?: string;
  params: Record<string, string>;
  headers: http.IncomingHttpHeaders;
  body?: unknown;
  problems: string[];
}

export interface Answer {
  status: number;
  headers?: Record<string, string>;
  body?: unknown;
}

export interface OpenApiServerOptions {
  spec: OpenApiDocument;
  /** A problem with the request's credentials (answered 401), or undefined when they are good. */
  authorize: (req: SeenRequest) => string | undefined;
  /** The answer to a valid request (default: 201 and an empty object). */
  respond?: (req: SeenRequest) => Answer;
}

export interface OpenApiServer {
  url: string;
  /** Every request, in order, valid or not. */
  seen: SeenRequest[];
  close(): Promise<void>;
}

const SPEC_ID = 'forge-spec';

/** Every object schema with properties closed, and local $refs made to point into the added spec. */
function prepared(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(prepared);
  if (!node || typeof node !== 'object') return node;
  const o: Record<string, unknown> = Object.fromEntries(
    Object.entries(node).map(([k, v]) => [k, prepared(v)]),
  );
  if (typeof o.$ref === 'string' && o.$ref.startsWith('#/')) o.$ref = `${SPEC_ID}${o.$ref}`;
  if (o.properties && o.additionalProperties === undefined) o.additionalProperties = false;
  return o;
}

function resolveParameter(spec: OpenApiDocument, p: Parameter | { $ref: string }): Parameter {
  if (!('$ref' in p)) return p;
  const name = p.$ref.replace('#/components/parameters/', '');
  const found = spec.components?.parameters?.[name];
  if (!found) throw new Error(`the spec has no parameter ${p.$ref}`);
  return found;
}

export async function startOpenApiServer(opts: OpenApiServerOptions): Promise<OpenApiServer> {
  const spec = opts.spec;
  // OpenAPI 3.0 schemas: `nullable`, and formats and examples that are documentation only.
  const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
  ajv.addSchema({ components: prepared(spec.components ?? {}) }, SPEC_ID);
  const validators = new Map<unknown, ValidateFunction>();
  const validate = (schema: Schema, value: unknown, where: string): string[] => {
    let v = validators.get(schema);
    if (!v) {
      v = ajv.compile(prepared(schema) as Schema);
      validators.set(schema, v);
    }
    return v(value) ? [] : (v.errors ?? []).map((e) => `${where}${e.instancePath || ''} ${e.message}`);
  };
  const templates = Object.entries(spec.paths).map(([template, ops]) => {
    const names: string[] = [];
    const source = template.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{([^}]+)\}/g, (_m, n: string) => {
      names.push(n);
      return '([^/]+)';
    });
    return { re: new RegExp(`^${source}$`), names, ops };
  });

  const check = (s: SeenRequest, text: string, contentType: string | undefined): Operation | undefined => {
    const found = templates
      .map((t) => ({ t, m: t.re.exec(s.path.split('?')[0] as string) }))
      .find(({ t, m }) => m && t.ops[s.method.toLowerCase()]);
    if (!found?.m) {
      s.problems.push('not an operation of the API');
      return undefined;
    }
    const op = found.t.ops[s.method.toLowerCase()] as Operation;
    s.operationId = op.operationId;
    found.t.names.forEach((n, i) => (s.params[n] = found.m?.[i + 1] as string));
    for (const p of (op.parameters ?? []).map((q) => resolveParameter(spec, q)))
      if (p.in === 'path' && p.schema) {
        // A path holds text: a number the schema asks for is read from it, as a server would.
        const raw = s.params[p.name] as string;
        const numeric =
          ['integer', 'number'].includes(p.schema.type as string) && /^-?\d+(\.\d+)?$/.test(raw);
        s.problems.push(...validate(p.schema, numeric ? Number(raw) : raw, `path parameter ${p.name}`));
      }
    const bodySchema = op.requestBody?.content?.['application/json']?.schema;
    if (text === '') {
      if (op.requestBody?.required) s.problems.push('the body is required');
      return op;
    }
    if (!bodySchema) {
      s.problems.push('a JSON body where the API takes none');
      return op;
    }
    if (!contentType?.startsWith('application/json')) s.problems.push('content-type is not JSON');
    try {
      s.body = JSON.parse(text);
    } catch {
      s.problems.push('the body is not JSON');
      return op;
    }
    s.problems.push(...validate(bodySchema, s.body, 'body'));
    return op;
  };

  const seen: SeenRequest[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => {
      const s: SeenRequest = {
        method: req.method ?? '',
        path: req.url ?? '',
        params: {},
        headers: req.headers,
        problems: [],
      };
      seen.push(s);
      const send = (a: Answer) => {
        res.writeHead(a.status, { 'content-type': 'application/json', ...a.headers });
        res.end(a.body === undefined ? '' : JSON.stringify(a.body));
      };
      check(s, Buffer.concat(chunks).toString('utf8'), req.headers['content-type']);
      if (s.problems.length) return send({ status: 422, body: { message: s.problems.join('; ') } });
      const denied = opts.authorize(s);
      if (denied) {
        s.problems.push(`credentials: ${denied}`);
        return send({ status: 401, body: { message: denied } });
      }
      send(opts.respond?.(s) ?? { status: 201, body: {} });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((err) => (err ? reject(err) : resolve()));
      }),
  };
}
