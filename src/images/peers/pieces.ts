/**
 * A blob cut into fixed-size pieces, the unit nodes fetch from the registry or from each other,
 * and the bitmap of the pieces a node holds as the directory stores it (base64).
 */
export class PieceMap {
  readonly count: number;
  private readonly bits: Uint8Array;

  constructor(
    readonly size: number,
    readonly pieceSize: number,
    bitmap?: string,
  ) {
    this.count = Math.max(1, Math.ceil(size / pieceSize));
    this.bits = new Uint8Array(Math.ceil(this.count / 8));
    if (bitmap) this.bits.set(Buffer.from(bitmap, 'base64').subarray(0, this.bits.length));
  }

  /** Bytes [start, end) of piece `i`. */
  range(i: number): { start: number; end: number } {
    const start = i * this.pieceSize;
    return { start, end: Math.min(this.size, start + this.pieceSize) };
  }

  has(i: number): boolean {
    return ((this.bits[i >> 3] ?? 0) & (1 << (i & 7))) !== 0;
  }

  set(i: number, held = true): void {
    const byte = this.bits[i >> 3] ?? 0;
    this.bits[i >> 3] = held ? byte | (1 << (i & 7)) : byte & ~(1 << (i & 7));
  }

  get held(): number {
    let n = 0;
    for (let i = 0; i < this.count; i++) if (this.has(i)) n++;
    return n;
  }

  get complete(): boolean {
    return this.held === this.count;
  }

  /** Bytes from the start that are all here: what a reader following the file may read. */
  get contiguousBytes(): number {
    let i = 0;
    while (i < this.count && this.has(i)) i++;
    return i === this.count ? this.size : i * this.pieceSize;
  }

  toBitmap(): string {
    return Buffer.from(this.bits).toString('base64');
  }
}
