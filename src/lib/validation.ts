/**
 * Shared glue between zod schemas and one-line user errors: every message names the field
 * (in the caller's vocabulary: a YAML path or a CLI flag) and says what would be accepted.
 */

import { z } from 'zod';
import { UserError } from './errors.js';
import type { Parsed } from './quantity.js';

export type FieldNamer = (path: ReadonlyArray<PropertyKey>) => string;

export const yamlPath: FieldNamer = (path) =>
  path.length === 0
    ? '(top level)'
    : path
        .map((p) => (typeof p === 'number' ? `[${p}]` : String(p)))
        .join('.')
        .replace(/\.\[/g, '[');

/** A schema for a string/number field parsed by one of the quantity parsers. */
export function parsedField(parse: (v: string | number) => Parsed<number>) {
  return z.union([z.string(), z.number()]).transform((v, ctx) => {
    const r = parse(v);
    if (r.ok) return r.value;
    ctx.addIssue({ code: 'custom', message: r.message });
    return z.NEVER;
  });
}

export function describeIssue(issue: z.core.$ZodIssue, name: FieldNamer): string {
  const field = name(issue.path);
  switch (issue.code) {
    case 'unrecognized_keys':
      return `${field}: unknown field ${issue.keys.map((k) => `"${k}"`).join(', ')}; remove it or check its spelling`;
    case 'invalid_value': {
      const got = issue.input === undefined ? '' : `${JSON.stringify(issue.input)} is not valid; `;
      return `${field}: ${got}must be one of ${issue.values.map((v) => String(v)).join(', ')}`;
    }
    case 'invalid_union': {
      if (issue.input === undefined) return `${field}: is required`;
      // Report the branch whose type matched: its complaint is the useful one.
      const inner = issue.errors.flat().find((i) => i.code !== 'invalid_type');
      if (inner) return describeIssue({ ...inner, path: [...issue.path, ...inner.path] }, name);
      const expected = issue.errors.flat().map((i) => (i.code === 'invalid_type' ? i.expected : i.code));
      return `${field}: expected ${[...new Set(expected)].join(' or ')}, got ${describeValue(issue.input)}`;
    }
    case 'invalid_type':
      return issue.input === undefined
        ? `${field}: is required (${issue.expected})`
        : `${field}: expected ${issue.expected}, got ${describeValue(issue.input)}`;
    default:
      return `${field}: ${issue.message}`;
  }
}

function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}

/** Parses or throws a UserError whose message lists every problem, one per line, prefixed by `where`. */
export function parseOrThrow<S extends z.ZodType>(
  schema: S,
  input: unknown,
  where: string,
  name: FieldNamer = yamlPath,
): z.output<S> {
  const r = schema.safeParse(input, { reportInput: true });
  if (r.success) return r.data;
  const lines = r.error.issues.map((i) => describeIssue(i, name));
  throw new UserError(`${where}: ${lines.join(`; `)}`);
}
