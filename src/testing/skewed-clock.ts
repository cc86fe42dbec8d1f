/**
 * Imported with `node --import` into a process under test (faketime-style): its `Date.now()`
 * runs BOXCAR_TEST_CLOCK_SKEW_MS ahead of the machine's, as a node with a wrong clock would.
 */
const skew = Number(process.env.BOXCAR_TEST_CLOCK_SKEW_MS ?? 0);
if (skew) {
  const machine = Date.now.bind(Date);
  Date.now = () => machine() + skew;
}
