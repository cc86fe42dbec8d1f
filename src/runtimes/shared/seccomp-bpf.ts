import { readFileSync } from 'node:fs';
import type { SeccompProfile } from './seccomp.js';

const UNISTD = '/usr/include/x86_64-linux-gnu/asm/unistd_64.h';
const AUDIT_ARCH_X86_64 = 0xc000003e;
/** x32 syscalls share the x86_64 arch value, with this bit set in the number. */
const X32_SYSCALL_BIT = 0x40000000;

const LD_W_ABS = 0x20;
const JEQ_K = 0x15;
const JGE_K = 0x35;
const AND_K = 0x54;
const RET_K = 0x06;
const RET_ALLOW = 0x7fff0000;
const RET_ERRNO = 0x00050000;
const RET_KILL_PROCESS = 0x80000000;

const OFFSET_NR = 0;
const OFFSET_ARCH = 4;
const argLow = (i: number) => 16 + 8 * i;
const argHigh = (i: number) => 20 + 8 * i;

interface Insn {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

const insn = (code: number, k: number, jt = 0, jf = 0): Insn => ({ code, jt, jf, k: k >>> 0 });

let numbers: Map<string, number> | undefined;

export function syscallNumbers(header = UNISTD): Map<string, number> {
  if (!numbers) {
    numbers = new Map();
    for (const m of readFileSync(header, 'utf8').matchAll(/^#define __NR_(\w+)\s+(\d+)/gm))
      numbers.set(m[1] as string, Number(m[2]));
  }
  return numbers;
}

function action(name: string, errnoRet: number | undefined, defaultErrno: number): number {
  if (name === 'SCMP_ACT_ALLOW') return RET_ALLOW;
  if (name === 'SCMP_ACT_ERRNO') return RET_ERRNO | ((errnoRet ?? defaultErrno) & 0xffff);
  if (name === 'SCMP_ACT_KILL' || name === 'SCMP_ACT_KILL_PROCESS') return RET_KILL_PROCESS;
  throw new Error(`seccomp action ${name} is not supported by the BPF compiler`);
}

/** One 64-bit argument test as two 32-bit ones; jumps to `fail` (relative, patched later). */
function argTest(arg: { index: number; value: number; valueTwo?: number; op: string }): Insn[] {
  const big = (n: number) => BigInt(n) & 0xffffffffffffffffn;
  let mask: bigint;
  let want: bigint;
  if (arg.op === 'SCMP_CMP_EQ') {
    mask = 0xffffffffffffffffn;
    want = big(arg.value);
  } else if (arg.op === 'SCMP_CMP_MASKED_EQ') {
    mask = big(arg.value);
    want = big(arg.valueTwo ?? 0);
  } else {
    throw new Error(`seccomp comparison ${arg.op} is not supported by the BPF compiler`);
  }
  const out: Insn[] = [];
  for (const [offset, shift] of [
    [argLow(arg.index), 0n],
    [argHigh(arg.index), 32n],
  ] as const) {
    const m = Number((mask >> shift) & 0xffffffffn);
    const w = Number((want >> shift) & 0xffffffffn);
    out.push(insn(LD_W_ABS, offset));
    if (m !== 0xffffffff) out.push(insn(AND_K, m));
    out.push(insn(JEQ_K, w, 0, 0xff)); // jf: "fail", patched by the caller
  }
  return out;
}

/**
 * Compiles a seccomp profile (the OCI form runc and runsc take) into the classic BPF program
 * the kernel loads, for places without libseccomp: the microVM guest agent installs it just
 * before running the job. x86_64 only, like the guest; syscall numbers come from the
 * kernel headers (linux-libc-dev).
 */
export function compileSeccomp(profile: SeccompProfile, nrs = syscallNumbers()): Buffer {
  const defaultRet = action(profile.defaultAction, profile.defaultErrnoRet, profile.defaultErrnoRet);
  const prog: Insn[] = [
    insn(LD_W_ABS, OFFSET_ARCH),
    insn(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
    insn(RET_K, RET_KILL_PROCESS),
    insn(LD_W_ABS, OFFSET_NR),
    insn(JGE_K, X32_SYSCALL_BIT, 0, 1),
    insn(RET_K, defaultRet),
  ];
  for (const rule of profile.syscalls) {
    const ret = action(rule.action, rule.errnoRet, profile.defaultErrnoRet);
    for (const name of rule.names) {
      const nr = nrs.get(name);
      if (nr === undefined) continue; // not a call on this architecture: nothing to allow
      if (!rule.args?.length) {
        prog.push(insn(JEQ_K, nr, 0, 1), insn(RET_K, ret));
        continue;
      }
      // nr matches → every argument test passes → ret; any failure reloads the number.
      const tests = rule.args.flatMap(argTest);
      const block = [...tests, insn(RET_K, ret), insn(LD_W_ABS, OFFSET_NR)];
      tests.forEach((t, i) => {
        if (t.code === JEQ_K && t.jf === 0xff) t.jf = block.length - 1 - (i + 1); // to the reload
      });
      prog.push(insn(JEQ_K, nr, 0, block.length), ...block);
    }
  }
  prog.push(insn(RET_K, defaultRet));
  if (prog.length > 4096) throw new Error(`the seccomp program has ${prog.length} instructions (max 4096)`);
  const buf = Buffer.alloc(prog.length * 8);
  prog.forEach((p, i) => {
    buf.writeUInt16LE(p.code, i * 8);
    buf.writeUInt8(p.jt, i * 8 + 2);
    buf.writeUInt8(p.jf, i * 8 + 3);
    buf.writeUInt32LE(p.k, i * 8 + 4);
  });
  return buf;
}
