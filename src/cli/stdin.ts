/** A secret value from stdin (piped, or typed at a terminal), without the trailing newline `echo` adds. */
export async function readStdin(): Promise<string> {
  if (process.stdin.isTTY) process.stderr.write('enter the value, then Ctrl-D on a line of its own:\n');
  const parts: Buffer[] = [];
  for await (const chunk of process.stdin) parts.push(chunk as Buffer);
  // `echo value | boxcar secret set …` adds a newline that is not part of the value.
  return Buffer.concat(parts)
    .toString('utf8')
    .replace(/\r?\n$/, '');
}
