// Piece bitmaps: bit n (LSB first within each byte) is set when piece n is held.

export class Bitmap {
  private bits: Uint8Array

  constructor(bits: Uint8Array = new Uint8Array(0)) {
    this.bits = bits
  }

  static from(bytes: Uint8Array): Bitmap {
    return new Bitmap(Uint8Array.prototype.slice.call(bytes))
  }

  has(n: number): boolean {
    const byte = n >> 3
    return byte < this.bits.length && (this.bits[byte] & (1 << (n & 7))) !== 0
  }

  set(n: number): void {
    const byte = n >> 3
    if (byte >= this.bits.length) {
      const next = new Uint8Array(Math.max(byte + 1, this.bits.length * 2))
      next.set(this.bits)
      this.bits = next
    }
    this.bits[byte] |= 1 << (n & 7)
  }

  count(): number {
    let c = 0
    for (const b of this.bits) {
      let v = b
      while (v !== 0) { v &= v - 1; c++ }
    }
    return c
  }

  /** Piece numbers held, ascending. */
  *pieces(): Generator<number> {
    for (let i = 0; i < this.bits.length; i++) {
      const b = this.bits[i]
      if (b === 0) continue
      for (let j = 0; j < 8; j++) if ((b & (1 << j)) !== 0) yield i * 8 + j
    }
  }

  /** The bits themselves, without a copy (may have trailing zero bytes); for hot loops that must not allocate. Do not modify. */
  view(): Uint8Array {
    return this.bits
  }

  toBytes(): Uint8Array {
    let end = this.bits.length
    while (end > 0 && this.bits[end - 1] === 0) end--
    return this.bits.slice(0, end)
  }
}
