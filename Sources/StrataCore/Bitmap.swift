// An in-memory allocation bitmap with a next-fit cursor, for metadata pages and data chunks.
// Rebuilt at open from the space maps; never persisted itself.

struct Bitmap {
    private var words: [UInt64]
    let count: Int
    private(set) var setCount = 0
    private var cursor = 0

    init(count: Int) {
        self.count = count
        self.words = [UInt64](repeating: 0, count: (count + 63) / 64)
    }

    @inline(__always)
    func contains(_ index: Int) -> Bool {
        self.words[index >> 6] & (1 << UInt64(index & 63)) != 0
    }

    mutating func insert(_ index: Int) {
        precondition(index >= 0 && index < self.count, "bit \(index) out of range \(self.count)")
        let mask: UInt64 = 1 << UInt64(index & 63)
        if self.words[index >> 6] & mask == 0 {
            self.words[index >> 6] |= mask
            self.setCount += 1
        }
    }

    mutating func remove(_ index: Int) {
        precondition(index >= 0 && index < self.count, "bit \(index) out of range \(self.count)")
        let mask: UInt64 = 1 << UInt64(index & 63)
        if self.words[index >> 6] & mask != 0 {
            self.words[index >> 6] &= ~mask
            self.setCount -= 1
        }
    }

    /// Finds and sets a clear bit at or after the cursor (wrapping), skipping bits below `floor`.
    mutating func allocate(floor: Int = 0) -> Int? {
        if self.setCount >= self.count { return nil }
        let wordCount = self.words.count
        var word = max(self.cursor, floor) >> 6
        for _ in 0...wordCount {
            if word >= wordCount { word = floor >> 6 }
            let free = ~self.words[word]
            if free != 0 {
                var bits = free
                while bits != 0 {
                    let bit = bits.trailingZeroBitCount
                    let index = word * 64 + bit
                    if index >= self.count { break }
                    if index >= floor {
                        self.insert(index)
                        self.cursor = index + 1
                        return index
                    }
                    bits &= bits - 1
                }
            }
            word += 1
        }
        return nil
    }
}
