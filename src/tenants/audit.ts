import { checkChain, type BrokenLink } from '../store/audit-chain.js';
import type { Store } from '../store/store.js';

const PAGE = 5000;

export type Verdict =
  | { ok: true; records: number; head: string | undefined }
  | { ok: false; records: number; broken: BrokenLink };

/**
 * `boxcar audit verify`: walks the whole hash chain from its first record, a page at a time,
 * and names the first record that does not follow from the one before it.
 */
export async function verifyAudit(store: Store): Promise<Verdict> {
  let last: { seq: number; hash: string } | undefined;
  let records = 0;
  for (;;) {
    const page = await store.auditRecords({ afterSeq: last?.seq ?? 0, limit: PAGE });
    if (!page.length) return { ok: true, records, head: last?.hash };
    const r = checkChain(last, page);
    if ('broken' in r)
      return {
        ok: false,
        records: records + page.findIndex((x) => x.seq === r.broken.seq),
        broken: r.broken,
      };
    records += page.length;
    last = r.last;
  }
}
