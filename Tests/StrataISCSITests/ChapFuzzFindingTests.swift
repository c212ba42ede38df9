// Regression test for what the iscsi-text-keys fuzz target found (docs/TESTING.md, "Fuzzing");
// the input is Fuzz/corpus/iscsi-text-keys/finding-empty-base64.

import StrataISCSI
import Testing

@Suite struct ChapFuzzFindingTests {
    /// `et=0B`: a CHAP binary value of "0b" and nothing else decoded to zero bytes, while "0x"
    /// alone was refused, so the two encodings RFC 7143 §6.1 defines disagreed (and a decoded
    /// value did not survive encode-then-decode). Both are refused now; non-empty values decode.
    @Test func emptyBinaryValuesAreRefusedInBothEncodings() {
        #expect(Chap.decode("0b") == nil)
        #expect(Chap.decode("0B") == nil)
        #expect(Chap.decode("0x") == nil)
        #expect(Chap.decode("0bAQI=") == [1, 2])
        #expect(Chap.decode("0x0102") == [1, 2])
        #expect(Chap.decode(Chap.encode([1, 2])) == [1, 2])
    }
}
