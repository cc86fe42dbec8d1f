import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OutputBuffer } from './output-buffer.js';

async function text(it: AsyncIterable<{ text: string }>): Promise<string> {
  let s = '';
  for await (const c of it) s += c.text;
  return s;
}

test('a follower gets the output from its start until the end, and so does a later reader', async () => {
  const out = new OutputBuffer(1024);
  out.push(Buffer.from('one\n'));
  const following = text(out.read({ follow: true }));
  await new Promise((r) => setImmediate(r));
  const euro = Buffer.from('€\n');
  out.push(euro.subarray(0, 1)); // a character split across chunks
  out.push(euro.subarray(1));
  out.end('wasm trap: unreachable\n');
  assert.equal(await following, 'one\n€\nwasm trap: unreachable\n');
  assert.equal(await text(out.read({ follow: false })), 'one\n€\nwasm trap: unreachable\n');
  assert.equal(out.push(Buffer.from('late')), false, 'nothing after the end');
});

test('past the cap the rest is dropped, said once, and the caller told to stop the job', async () => {
  const MiB = 2 ** 20;
  const out = new OutputBuffer(MiB);
  assert.equal(out.push(Buffer.alloc(MiB - 3, 'x')), true);
  assert.equal(out.push(Buffer.from('abcdef')), false);
  assert.equal(out.push(Buffer.from('more')), false);
  out.end();
  const all = await text(out.read({ follow: true }));
  assert.equal(all.length, MiB + '\n[boxcar: the job wrote more than 1 MiB of output: stopped]\n'.length);
  assert.ok(all.endsWith('xxabc\n[boxcar: the job wrote more than 1 MiB of output: stopped]\n'));
});

test('a follower stops when told the job ended (after what is there) or at once on its signal', async () => {
  const out = new OutputBuffer(1024);
  out.push(Buffer.from('a'));
  const ended = new AbortController();
  const following = text(out.read({ follow: true, ended: ended.signal }));
  await new Promise((r) => setImmediate(r));
  out.push(Buffer.from('b'));
  ended.abort();
  assert.equal(await following, 'ab');
  const stop = new AbortController();
  const stopped = text(out.read({ follow: true, signal: stop.signal }));
  await new Promise((r) => setImmediate(r));
  stop.abort();
  assert.equal(await stopped, 'ab');
});
