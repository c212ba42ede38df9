// The manifest codec: a round trip, the header read before the body (a newer version refused
// without parsing the body), the body checksum, and each invariant the decoder checks.

import Crypto
import Foundation
import StrataCore
import StrataObjectStore
import Testing

@Suite struct ManifestTests {
    static func sha(_ seed: UInt8) -> String {
        SHA256.hash(data: [seed]).map { String(format: "%02x", $0) }.joined()
    }

    /// A 20 MiB volume in 8 MiB objects: 3 objects, the last 4 MiB; object 1 is a hole.
    let manifest = Manifest(
        volume: "vm1", snapshot: "s2", guid: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", createdAt: "2026-01-01T00:00:00Z",
        sizeBytes: 20 << 20, objectSizeBytes: 8 << 20,
        parent: ManifestParent(snapshot: "s1", guid: "00000000-0000-0000-0000-000000000001"),
        objects: [
            ManifestEntry(index: 0, sha256: Self.sha(1), bytes: 8 << 20),
            ManifestEntry(index: 2, sha256: Self.sha(2), bytes: 4 << 20),
        ])

    @Test func roundTrip() throws {
        let data = self.manifest.encode()
        let header = String(decoding: data.prefix(while: { $0 != UInt8(ascii: "\n") }), as: UTF8.self)
        #expect(header.contains("\"format\":\"strata-manifest\""))
        #expect(header.contains("\"version\":1"))
        #expect(try Manifest.decode(data, key: "manifests/vm1/s2") == self.manifest)
        #expect(self.manifest.objectCount == 3)
        #expect(self.manifest.objects[1].key == "objects/" + Self.sha(2))
    }

    /// Replaces the first occurrence of `old` in the encoded manifest by `new`.
    func tampered(_ old: String, _ new: String) -> Data {
        let text = String(decoding: self.manifest.encode(), as: UTF8.self)
        return Data(text.replacingOccurrences(of: old, with: new).utf8)
    }

    @Test func newerVersionIsRefusedAsUnsupported() {
        let data = self.tampered("\"version\":1", "\"version\":3")
        #expect(throws: StrataError.self) { try Manifest.decode(data, key: "k") }
        do throws(StrataError) {
            _ = try Manifest.decode(data, key: "manifests/vm1/s2")
        } catch {
            #expect(error.code == .unsupported)
            #expect(error.message.contains("version 3 is newer"))
        }
    }

    @Test func bodyChecksumMismatchIsCorrupt() {
        // Same length, different byte: only the checksum can notice.
        let data = self.tampered("\"snapshot\":\"s2\"", "\"snapshot\":\"s3\"")
        do throws(StrataError) {
            _ = try Manifest.decode(data, key: "manifests/vm1/s2")
            Issue.record("a tampered body decoded")
        } catch {
            #expect(error.code == .corrupt)
            #expect(error.message.contains("checksum mismatch"))
        }
    }

    /// Encodes `manifest` bypassing the encoder's preconditions, with a valid header.
    static func rawEncode(_ manifest: Manifest) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let body = try! encoder.encode(manifest)
        let digest = SHA256.hash(data: body).map { String(format: "%02x", $0) }.joined()
        var data = Data(
            "{\"bodyBytes\":\(body.count),\"bodySHA256\":\"\(digest)\",\"format\":\"strata-manifest\",\"version\":1}\n".utf8)
        data.append(body)
        return data
    }

    @Test(arguments: [
        ("out of order", [2, 0], [4 << 20, 8 << 20]),
        ("beyond the volume", [3], [8 << 20]),
        ("wrong length", [0], [4 << 20]),
        ("short last object claimed full", [2], [8 << 20]),
    ] as [(String, [UInt64], [UInt64])])
    func brokenInvariantIsCorrupt(_ name: String, _ indices: [UInt64], _ lengths: [UInt64]) {
        var broken = self.manifest
        broken.objects = zip(indices, lengths).map { ManifestEntry(index: $0, sha256: Self.sha(UInt8($0)), bytes: $1) }
        do throws(StrataError) {
            _ = try Manifest.decode(Self.rawEncode(broken), key: "manifests/vm1/s2")
            Issue.record("\(name): decoded")
        } catch {
            #expect(error.code == .corrupt, "\(name)")
        }
    }

    @Test func garbageIsCorrupt() {
        for data in [Data(), Data("not a manifest".utf8), Data("{\"format\":\"other\",\"version\":1,\"bodyBytes\":0,\"bodySHA256\":\"\"}\n".utf8)] {
            do throws(StrataError) {
                _ = try Manifest.decode(data, key: "k")
                Issue.record("garbage decoded")
            } catch {
                #expect(error.code == .corrupt)
            }
        }
    }

    /// Version 2: per-part hashes, written only when the manifest has them; a version-1
    /// manifest (no parts) still encodes as version 1 and both decode.
    @Test func versionTwoCarriesPartHashesAndVersionOneStillReads() throws {
        let object = (0..<(8 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let tail = Array(object[0..<(4 << 20)])
        let parts = Manifest.partHashes(object, partSize: 256 << 10)
        #expect(parts.count == 32)
        #expect(parts[1] == SHA256.hash(data: object[(256 << 10)..<(512 << 10)]).map { String(format: "%02x", $0) }.joined())
        var versionTwo = self.manifest
        versionTwo.partSizeBytes = 256 << 10
        versionTwo.objects = [
            ManifestEntry(index: 0, sha256: Self.sha(1), bytes: 8 << 20, parts: parts),
            // Inherited from a version-1 parent: no parts.
            ManifestEntry(index: 2, sha256: Self.sha(2), bytes: 4 << 20),
        ]
        let data = versionTwo.encode()
        #expect(String(decoding: data.prefix(160), as: UTF8.self).contains("\"version\":2"))
        #expect(try Manifest.decode(data, key: "k") == versionTwo)
        #expect(String(decoding: self.manifest.encode().prefix(160), as: UTF8.self).contains("\"version\":1"))

        // A wrong part count, a bad part size, and parts without a part size are corrupt.
        var wrongCount = versionTwo
        wrongCount.objects[1] = ManifestEntry(
            index: 2, sha256: Self.sha(2), bytes: 4 << 20, parts: Manifest.partHashes(tail, partSize: 256 << 10) + [parts[0]])
        var badSize = versionTwo
        badSize.partSizeBytes = 3000
        for broken in [wrongCount, badSize] {
            let error = #expect(throws: StrataError.self) { try Manifest.decode(Self.forceEncode(broken), key: "k") }
            #expect(error?.code == .corrupt)
        }
    }

    /// Encodes without the encoder's invariant check, as a damaged writer would.
    static func forceEncode(_ manifest: Manifest) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let body = try! encoder.encode(manifest)
        let digest = SHA256.hash(data: body).map { String(format: "%02x", $0) }.joined()
        var data = Data("{\"bodyBytes\":\(body.count),\"bodySHA256\":\"\(digest)\",\"format\":\"strata-manifest\",\"version\":2}\n".utf8)
        data.append(body)
        return data
    }
}
