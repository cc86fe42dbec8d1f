import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { compileSeccomp } from './seccomp-bpf.js';
import { seccompProfile } from './seccomp.js';

/**
 * The guest's seccomp filter, instruction by instruction, against a reviewed copy (as gVisor
 * pins its filters): a change to the profile or the compiler shows up here as a diff to read.
 * BOXCAR_UPDATE_GOLDEN=1 rewrites the copy after such a review.
 */
const GOLDEN = fileURLToPath(
  new URL('../../../../src/runtimes/shared/testdata/seccomp.bpf.golden', import.meta.url),
);

function disassemble(program: Buffer): string {
  const lines: string[] = [];
  for (let off = 0; off < program.length; off += 8) {
    const code = program.readUInt16LE(off);
    const jt = program.readUInt8(off + 2);
    const jf = program.readUInt8(off + 3);
    const k = program.readUInt32LE(off + 4);
    lines.push(
      `${String(off / 8).padStart(4)}: code=0x${code.toString(16).padStart(2, '0')} jt=${jt} jf=${jf} k=0x${k.toString(16).padStart(8, '0')}`,
    );
  }
  return `${lines.join('\n')}\n`;
}

test('the compiled guest seccomp filter is the reviewed one', () => {
  const text = disassemble(compileSeccomp(seccompProfile()));
  if (process.env.BOXCAR_UPDATE_GOLDEN === '1') writeFileSync(GOLDEN, text);
  assert.equal(text, readFileSync(GOLDEN, 'utf8'));
});
