import { readFile } from 'node:fs/promises';
import { LineCounter, parseDocument, isMap, type Document } from 'yaml';
import type { z } from 'zod';
import { UserError, errnoCode, errorMessage } from './errors.js';
import { describeIssue, yamlPath } from './validation.js';

/**
 * Loads a YAML file and validates it with a schema; every problem is reported as
 * `file:line: field: what is wrong and what would be accepted`.
 */
export async function loadYamlFile<S extends z.ZodType>(file: string, schema: S): Promise<z.output<S>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = errnoCode(err);
    throw new UserError(
      `cannot read ${file} (${code ?? errorMessage(err)}); check the path and its permissions`,
    );
  }
  return parseYaml(text, file, schema);
}

export function parseYaml<S extends z.ZodType>(text: string, file: string, schema: S): z.output<S> {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length) {
    const e = doc.errors[0];
    const at = e?.pos ? lines.linePos(e.pos[0]).line : '?';
    throw new UserError(`${file}:${at}: not valid YAML: ${e?.message.split('\n')[0]}`);
  }
  const r = schema.safeParse(doc.toJS(), { reportInput: true });
  if (r.success) return r.data;
  const problems = r.error.issues.map((issue) => {
    const key = issue.code === 'unrecognized_keys' ? issue.keys[0] : undefined;
    return `${file}:${lineOf(doc, lines, issue.path, key)}: ${describeIssue(issue, yamlPath)}`;
  });
  throw new UserError(problems.join('\n'));
}

/** The line of the node at `path` (or of `key` inside it), falling back to the nearest parent. */
function lineOf(doc: Document, lines: LineCounter, path: ReadonlyArray<PropertyKey>, key?: string): number {
  for (let n = path.length; n >= 0; n--) {
    const node = doc.getIn(path.slice(0, n) as unknown[], true) as
      { range?: [number, number, number] } | undefined;
    if (n === path.length && key !== undefined && isMap(node)) {
      const pair = node.items.find((p) => (p.key as { value?: unknown } | null)?.value === key);
      const range = (pair?.key as { range?: [number, number, number] } | null)?.range;
      if (range) return lines.linePos(range[0]).line;
    }
    if (node?.range) return lines.linePos(node.range[0]).line;
  }
  return 1;
}
