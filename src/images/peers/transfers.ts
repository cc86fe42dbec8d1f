import { EventEmitter } from 'node:events';
import type { PieceMap } from './pieces.js';

/**
 * A blob this node is fetching, as its peers may read it meanwhile: the file the pieces are
 * written to, which pieces are whole, and how far each piece being written has got (pieces
 * are written front to back, so a reader can follow one as it arrives).
 */
export interface Transfer {
  digest: string;
  file: string;
  pieces: PieceMap;
  /** Bytes written so far of each piece under way. */
  writing: Map<number, number>;
  /** Emits 'change' whenever a piece grows, completes or is given up. */
  events: EventEmitter;
}

/** This node's transfers under way, by blob digest. */
export class Transfers {
  private readonly byDigest = new Map<string, Transfer>();

  begin(digest: string, file: string, pieces: PieceMap): Transfer {
    const events = new EventEmitter();
    events.setMaxListeners(0); // one per peer following a piece
    const t = { digest, file, pieces, writing: new Map<number, number>(), events };
    this.byDigest.set(digest, t);
    return t;
  }

  get(digest: string): Transfer | undefined {
    return this.byDigest.get(digest);
  }

  end(digest: string): void {
    const t = this.byDigest.get(digest);
    this.byDigest.delete(digest);
    t?.events.emit('change');
  }
}
