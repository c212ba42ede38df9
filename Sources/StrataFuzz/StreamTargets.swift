// Send streams, received into a pool the way `strata receive`, the daemon's stream socket and a
// replication peer receive them (StreamReceiver.receive): the Strata stream (docs/STREAM.md:
// full, incremental, compressed, resumed) and `rbd diff v1`. The input is the stream itself,
// as `strata send` wrote it (scripts/fuzz-corpus.sh).
//
// Fix-ups for the Strata stream, in stream order, so mutations get past every checksum: the
// header's CRC-32C; each record header's payload CRC and header CRC; the end record's counts
// (records and data bytes so far) and its payload, the SHA-256 of the header and every record
// header before it. An incremental stream's from-GUID is set to the fuzz pool's `vm1@base`, so
// its base is found. rbd diff carries no checksums.

import Crypto
import StrataCore
import StrataReplication

enum StreamTargets {
    static let strataStream = FuzzTarget(
        name: "send-stream",
        summary: "Strata send streams (full, incremental, compressed, resumed) through StreamReceiver.receive"
    ) { input in
        let pool = FuzzPool.make()
        var bytes = input
        let incremental = Self.fixStrataStream(&bytes, base: Self.baseGUID(pool))
        Self.receive(bytes, into: pool, volume: incremental ? "vm1" : "recv", force: incremental)
    }

    static let rbdDiff = FuzzTarget(
        name: "rbd-diff",
        summary: "rbd diff v1 streams (`rbd export-diff`) through StreamReceiver.receive"
    ) { input in
        let pool = FuzzPool.make()
        let header = Array("rbd diff v1\n".utf8)
        // A stream that names a from-snapshot is an incremental one: it goes onto vm1, whose `base` it may name.
        let incremental = input.count > header.count && input[header.count] == UInt8(ascii: "f")
        Self.receive(input, into: pool, volume: incremental ? "vm1" : "recv", force: incremental)
    }

    static func baseGUID(_ pool: Pool) -> StrataGUID {
        do throws(StrataError) {
            return try pool.snapshotIdentity("vm1@base").guid
        } catch {
            preconditionFailure("fuzz pool has no vm1@base: \(error.message)")
        }
    }

    static func receive(_ bytes: [UInt8], into pool: Pool, volume: String, force: Bool) {
        do throws(StrataError) {
            let summary = try StreamReceiver.receive(pool: pool, volume: volume, force: force, from: MemoryStream(bytes))
            FuzzCheck.require(summary.streamBytes <= UInt64(bytes.count), "receive read past the stream")
        } catch {
            // Refused: an expected outcome. What the pool holds must still be consistent.
        }
        FuzzPool.requireClean(pool, after: "a receive")
    }

    /// Rewrites every checksum and digest of a Strata stream in place (see the file's note).
    /// - Returns: whether the stream is incremental.
    static func fixStrataStream(_ bytes: inout [UInt8], base: StrataGUID) -> Bool {
        let headerSize = StreamHeader.size
        guard bytes.count >= headerSize, Array(bytes[0..<8]) == StreamHeader.magic else { return false }
        let incremental = bytes[32..<48].contains { $0 != 0 }
        if incremental {
            bytes.storeLE(base.high, at: 32)
            bytes.storeLE(base.low, at: 40)
        }
        bytes.storeLE(crc32c(Array(bytes[0..<148])), at: 148)
        var digest = SHA256()
        digest.update(data: bytes[0..<headerSize])
        var records: UInt64 = 0
        var dataBytes: UInt64 = 0
        var position = headerSize
        while position + RecordHeader.size <= bytes.count {
            let kind = bytes[position]
            let payloadLength = Int(bytes.loadLE(at: position + 4) as UInt32)
            let payloadStart = position + RecordHeader.size
            let complete = payloadStart + payloadLength <= bytes.count
            if kind == RecordHeader.Kind.end.rawValue {
                bytes.storeLE(records, at: position + 8)
                bytes.storeLE(dataBytes, at: position + 16)
                if complete && payloadLength == 32 {
                    let sum = Array(digest.finalize())
                    bytes.replaceSubrange(payloadStart..<(payloadStart + 32), with: sum)
                }
            }
            if complete {
                bytes.storeLE(crc32c(Array(bytes[payloadStart..<(payloadStart + payloadLength)])), at: position + 24)
            }
            bytes.storeLE(crc32c(Array(bytes[position..<(position + 28)])), at: position + 28)
            if kind == RecordHeader.Kind.data.rawValue || kind == RecordHeader.Kind.zero.rawValue {
                digest.update(data: bytes[position..<payloadStart])
                records += 1
                dataBytes += UInt64(payloadLength)
            }
            guard complete else { break }
            position = payloadStart + payloadLength
        }
        return incremental
    }
}
