// Regression test for what the manifest fuzz target found (docs/TESTING.md, "Fuzzing"); the
// input is Fuzz/corpus/manifest/finding-size-overflow.

import Crypto
import Foundation
import StrataCore
import StrataObjectStore
import Testing

@Suite struct ManifestFuzzFindingTests {
    /// A manifest with a valid body digest whose `sizeBytes` is 2^64 - 1: checking its objects
    /// computed the object count as (size + object size - 1) / object size, which overflowed and
    /// trapped, so a damaged or hostile manifest in a remote crashed the daemon reading it. It is
    /// now refused as corrupt, naming the size.
    @Test func sizeNearTwoToTheSixtyFourIsRefusedNotTrapped() throws {
        let manifest = Manifest(
            volume: "vm1", snapshot: "s1", guid: "572377157650483fbd9f145ac4a24c63", createdAt: "2026-12-06T22:37:55.995Z",
            sizeBytes: 1 << 20, objectSizeBytes: 8 << 20, parent: nil,
            objects: [ManifestEntry(index: 0, sha256: ManifestTests.sha(1), bytes: 1 << 20)])
        let text = String(decoding: manifest.encode(), as: UTF8.self)
        let body = String(text[text.index(after: text.firstIndex(of: "\n")!)...])
            .replacingOccurrences(of: "\"sizeBytes\":1048576", with: "\"sizeBytes\":18446744073709551615")
        #expect(body.contains("18446744073709551615"))
        let digest = SHA256.hash(data: Data(body.utf8)).map { String(format: "%02x", $0) }.joined()
        let header = "{\"bodyBytes\":\(body.utf8.count),\"bodySHA256\":\"\(digest)\",\"format\":\"strata-manifest\",\"version\":1}"
        let error = try #require(throws: StrataError.self) {
            try Manifest.decode(Data((header + "\n" + body).utf8), key: "manifests/vm1/s1")
        }
        #expect(error.code == .corrupt)
        #expect(error.message.contains("past the largest volume"))
    }
}
