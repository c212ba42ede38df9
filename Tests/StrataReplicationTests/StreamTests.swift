// Send and receive at the engine level, through streams in memory: a property test over
// random write histories with chains of 10 snapshots, the stream's size overhead, and every
// way a stream can go wrong (a flipped byte anywhere, a truncation anywhere, a base mismatch,
// a modified target), each of which must leave the target exactly as it was.

import Crypto
import Foundation
@testable import StrataCore
@testable import StrataReplication
import StrataTesting
import Testing

/// A pool on a simulated device.
func makePool(chunk: UInt64 = 4096, dataChunks: UInt64 = 8192) throws -> (SimDevice, Pool) {
    let device = SimDevice(size: 2048 * 4096 + dataChunks * chunk)
    try Pool.format(device: device, chunkSize: chunk, metadataPages: 2048)
    return (device, try Pool(device: device))
}

/// Sends `snapshot` (from `base`) out of `pool` into memory.
func stream(_ pool: Pool, _ snapshot: String, from base: String? = nil, resume: String? = nil,
            format: StreamFormatName = .strata) throws -> [UInt8] {
    let output = MemoryStream()
    _ = try StreamSender.send(
        pool: pool, SendRequest(snapshot: snapshot, base: base, resumeToken: resume, format: format), to: output)
    return output.bytes
}

/// Receives `bytes` into `volume`; the error, if any.
@discardableResult
func receive(_ pool: Pool, _ volume: String, _ bytes: [UInt8], force: Bool = false) -> StrataError? {
    let result = Result { () throws(StrataError) in
        try StreamReceiver.receive(pool: pool, volume: volume, force: force, from: MemoryStream(bytes))
    }
    if case .failure(let error) = result { return error }
    return nil
}

/// Everything a target shows: volumes, snapshots (names, GUIDs) and the contents of each.
func fingerprint(_ pool: Pool) throws -> [String] {
    var lines: [String] = []
    for volume in try pool.listVolumes() {
        lines.append("volume \(volume.name) \(volume.sizeBytes) \(volume.allocatedBytes)")
        lines.append("  data \(crc32c(try pool.read(try pool.handle(volume.name), at: 0, count: Int(volume.sizeBytes))))")
    }
    for snapshot in try pool.listSnapshots() {
        let name = "\(snapshot.volume)@\(snapshot.name)"
        lines.append("snapshot \(name) \(snapshot.guid) \(snapshot.createdAt)")
        lines.append("  data \(crc32c(try pool.read(try pool.handle(name), at: 0, count: Int(snapshot.sizeBytes))))")
    }
    return lines
}

@Suite struct StreamTests {
    /// Writes random bytes, zeros and trims at random places of a small volume.
    func scribble(_ pool: Pool, _ volume: String, _ random: inout SeededRandom, operations: Int) throws {
        let handle = try pool.handle(volume)
        let size = try pool.size(of: handle)
        for _ in 0..<operations {
            let offset = UInt64(random.next(below: Int(size / 512))) * 512
            let length = min(UInt64(1 + random.next(below: 40)) * 512, size - offset)
            switch random.next(below: 6) {
            case 0: try pool.trim(handle, at: offset, length: length)
            case 1: try pool.write(handle, at: offset, [UInt8](repeating: 0, count: Int(length)))
            default: try pool.write(handle, at: offset, random.bytes(Int(length)))
            }
        }
    }

    @Test(arguments: [1, 2, 3, 4, 5, 6] as [UInt64])
    func chainsOfTenSnapshotsArriveByteForByte(seed: UInt64) throws {
        var random = SeededRandom(seed: seed)
        let (_, source) = try makePool()
        let (targetDevice, target) = try makePool()
        let size = UInt64(1 + random.next(below: 8)) << 20
        try source.createVolume("vm", size: size)
        var previous: String?
        for index in 0..<10 {
            try self.scribble(source, "vm", &random, operations: random.next(below: 60))
            if random.next(below: 4) == 0 {
                // Volumes grow and shrink between snapshots too.
                let newSize = UInt64(1 + random.next(below: 8)) << 20
                try source.resizeVolume("vm", size: newSize, allowShrink: true)
            }
            let name = "vm@s\(index)"
            try source.createSnapshot("vm", "s\(index)")
            let bytes = try stream(source, name, from: previous)
            let error = receive(target, "vm", bytes)
            #expect(error == nil, "seed=\(seed) snapshot \(index): \(error?.message ?? "")")
            previous = name
        }
        try target.flush()
        let sourceSnapshots = try source.listSnapshots().map { "\($0.name) \($0.guid) \($0.sizeBytes)" }
        let targetSnapshots = try target.listSnapshots().map { "\($0.name) \($0.guid) \($0.sizeBytes)" }
        #expect(sourceSnapshots == targetSnapshots, "seed=\(seed)")
        for snapshot in try source.listSnapshots() {
            let name = "vm@\(snapshot.name)"
            let expected = try source.read(try source.handle(name), at: 0, count: Int(snapshot.sizeBytes))
            let actual = try target.read(try target.handle(name), at: 0, count: Int(snapshot.sizeBytes))
            #expect(expected == actual, "seed=\(seed) \(name) differs")
        }
        #expect(Pool.check(device: targetDevice).clean, "seed=\(seed)")
    }

    @Test func incrementalStreamIsTheChangePlusUnderOnePercent() throws {
        let (_, pool) = try makePool(chunk: 65536, dataChunks: 1024)
        try pool.createVolume("vm", size: 32 << 20)
        let handle = try pool.handle("vm")
        var random = SeededRandom(seed: 9)
        try pool.write(handle, at: 0, random.bytes(16 << 20))
        try pool.createSnapshot("vm", "a")
        // 64 scattered 64 KiB chunks change: 4 MiB of data.
        for index in 0..<64 as Range<UInt64> { try pool.write(handle, at: index * 7 * 65536 % (32 << 20), random.bytes(65536)) }
        try pool.createSnapshot("vm", "b")
        let changed = try pool.diff(from: "vm@a", to: "vm@b").reduce(UInt64(0)) { $0 + $1.length }
        let incremental = try stream(pool, "vm@b", from: "vm@a")
        #expect(UInt64(incremental.count) >= changed)
        #expect(Double(incremental.count) < Double(changed) * 1.01, "stream \(incremental.count) for \(changed) changed")
        try pool.createSnapshot("vm", "c")
        let unchanged = try stream(pool, "vm@c", from: "vm@b")
        #expect(unchanged.count < 4096, "unchanged volume gave \(unchanged.count) bytes")
    }

    /// A source with `vm@a` (received by the target) and `vm@b`, and the incremental a→b stream.
    func twoSnapshotFixture() throws -> (source: Pool, target: Pool, targetDevice: SimDevice, stream: [UInt8]) {
        let (_, source) = try makePool()
        let (targetDevice, target) = try makePool()
        try source.createVolume("vm", size: 1 << 20)
        let handle = try source.handle("vm")
        var random = SeededRandom(seed: 5)
        try source.write(handle, at: 0, random.bytes(256 << 10))
        try source.createSnapshot("vm", "a")
        try source.write(handle, at: 300 << 10, random.bytes(64 << 10))
        try source.trim(handle, at: 0, length: 8192)
        try source.createSnapshot("vm", "b")
        #expect(receive(target, "vm", try stream(source, "vm@a")) == nil)
        try target.flush()
        return (source, target, targetDevice, try stream(source, "vm@b", from: "vm@a"))
    }

    @Test func everyFlippedByteIsRefusedNamingAnOffsetAndChangesNothing() throws {
        let (_, target, device, bytes) = try self.twoSnapshotFixture()
        let before = try fingerprint(target)
        // Every byte of the headers, and a spread of payload bytes.
        var positions = Array(0..<300)
        positions += stride(from: 300, to: bytes.count, by: 997).map { $0 }
        positions += Array((bytes.count - 70)..<bytes.count)
        for position in positions {
            var damaged = bytes
            damaged[position] ^= 0x40
            let error = receive(target, "vm", damaged)
            #expect(error != nil, "flip at \(position) accepted")
            #expect(error?.byteOffset != nil, "flip at \(position): \(error?.message ?? "")")
            if target.receiveStaging("vm") != nil { try target.abortReceive("vm") }
            #expect(try fingerprint(target) == before, "flip at \(position) changed the target")
        }
        #expect(Pool.check(device: device).clean)
    }

    @Test func everyTruncationIsRefusedAndResumesToTheSameResult() throws {
        let (source, target, device, bytes) = try self.twoSnapshotFixture()
        let before = try fingerprint(target)
        for length in Array(0..<200) + stride(from: 200, to: bytes.count, by: 1531).map({ $0 }) + [bytes.count - 1] {
            let error = receive(target, "vm", Array(bytes[0..<length]))
            #expect(error?.byteOffset != nil, "cut at \(length): \(error?.message ?? "none")")
            #expect(try fingerprint(target) == before, "cut at \(length) changed the target")
            if target.receiveStaging("vm") != nil { try target.abortReceive("vm") }
        }
        // Cut mid-stream, then resume from the token: the result equals the source.
        let cut = bytes.count * 2 / 3
        let error = receive(target, "vm", Array(bytes[0..<cut]))
        #expect(error != nil)
        let token = try StreamReceiver.token(pool: target, volume: "vm")
        #expect(error?.message.contains(token) == true)
        let rest = try stream(source, "vm@b", from: "vm@a", resume: token)
        #expect(rest.count < bytes.count)
        #expect(receive(target, "vm", rest) == nil)
        let expected = try source.read(try source.handle("vm@b"), at: 0, count: 1 << 20)
        #expect(try target.read(try target.handle("vm@b"), at: 0, count: 1 << 20) == expected)
        #expect(target.receiveStaging("vm") == nil)
        #expect(Pool.check(device: device).clean)
    }

    @Test func baseMismatchNamesBothGUIDsAndForceRollsBack() throws {
        let (source, target, _, bytes) = try self.twoSnapshotFixture()
        let baseGUID = try source.snapshotIdentity("vm@a").guid
        // The target takes a snapshot of its own: the stream's base is no longer the newest.
        try target.createSnapshot("vm", "local")
        let localGUID = try target.snapshotIdentity("vm@local").guid
        let mismatch = receive(target, "vm", bytes)
        #expect(mismatch?.guids == [baseGUID, localGUID])
        #expect(mismatch?.message.contains(baseGUID.description) == true)
        try target.deleteSnapshot("vm", "local")
        // A write since the base is refused, and --force rolls it back.
        try target.write(try target.handle("vm"), at: 0, [UInt8](repeating: 7, count: 512))
        #expect(receive(target, "vm", bytes)?.code == .busy)
        #expect(receive(target, "vm", bytes, force: true) == nil)
        let expected = try source.read(try source.handle("vm@b"), at: 0, count: 1 << 20)
        #expect(try target.read(try target.handle("vm"), at: 0, count: 1 << 20) == expected)
        // The same stream again: already received.
        #expect(receive(target, "vm", bytes)?.code == .alreadyExists)
        // A stream from a snapshot the target never had.
        let (_, other) = try makePool()
        #expect(receive(other, "vm", bytes)?.code == .notFound)
    }

    @Test func rbdDiffRoundTrips() throws {
        let (source, _, _, _) = try self.twoSnapshotFixture()
        let (device, target) = try makePool()
        #expect(receive(target, "vm", try stream(source, "vm@a", format: .rbdDiff)) == nil)
        #expect(receive(target, "vm", try stream(source, "vm@b", from: "vm@a", format: .rbdDiff)) == nil)
        for name in ["vm@a", "vm@b"] {
            let expected = try source.read(try source.handle(name), at: 0, count: 1 << 20)
            #expect(try target.read(try target.handle(name), at: 0, count: 1 << 20) == expected)
        }
        // A truncated rbd diff leaves nothing staged (the format cannot resume).
        let bytes = try stream(source, "vm@b", format: .rbdDiff)
        #expect(receive(target, "copy", Array(bytes.dropLast(100)))?.byteOffset != nil)
        #expect(target.receiveStaging("copy") == nil)
        #expect(Pool.check(device: device).clean)
    }

    /// FIPS 180-2 SHA-256 vectors and RFC 4231 HMAC-SHA-256, through swift-crypto as the stream
    /// digest and the replication handshake use it.
    @Test func sha256MatchesFIPSVectors() {
        func hex<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
        #expect(hex(SHA256.hash(data: [UInt8]())) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(hex(SHA256.hash(data: Array("abc".utf8))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let long = Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
        #expect(hex(SHA256.hash(data: long)) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        // The incremental digest (the stream's) gives the same as the one-shot.
        var incremental = SHA256()
        for piece in stride(from: 0, to: long.count, by: 7) { incremental.update(data: long[piece..<min(piece + 7, long.count)]) }
        #expect(hex(incremental.finalize()) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        // RFC 4231 test case 2.
        let mac = HMAC<SHA256>.authenticationCode(
            for: Array("what do ya want for nothing?".utf8), using: SymmetricKey(data: Array("Jefe".utf8)))
        #expect(hex(mac) == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    /// The replication handshake's answer is HMAC-SHA-256(secret, challenge) (Python's
    /// `hmac.new(b"replication-secret", bytes(range(32)), "sha256")`), and the check refuses
    /// a flipped byte, a short answer and another secret.
    @Test func replicationAnswerIsHMACOfTheChallenge() {
        let challenge = Array(UInt8(0)..<32)
        let secret = Array("replication-secret".utf8)
        let answer = ReplicationWire.answer(challenge, secret: secret)
        #expect(answer.map { String(format: "%02x", $0) }.joined() == "844fb12020db20c5d3c059b3868d42eda0252391a94103485f92e47dbcfe2043")
        #expect(ReplicationWire.verify(answer, challenge: challenge, secret: secret))
        var flipped = answer
        flipped[31] ^= 0x80
        #expect(!ReplicationWire.verify(flipped, challenge: challenge, secret: secret))
        #expect(!ReplicationWire.verify(Array(answer.dropLast()), challenge: challenge, secret: secret))
        #expect(!ReplicationWire.verify(answer, challenge: challenge, secret: Array("replication-secreT".utf8)))
    }

    @Test func resumeTokensRoundTripAndRejectTypos() throws {
        let token = ResumeToken(target: StrataGUID(high: 1, low: 2), base: .zero, offset: 12345)
        #expect(try ResumeToken(parsing: token.description, operation: "t") == token)
        var text = Array(token.description)
        text[10] = text[10] == "0" ? "1" : "0"
        #expect(throws: StrataError.self) { try ResumeToken(parsing: String(text), operation: "t") }
    }
}

@Suite struct CompressedStreamTests {
    @Test func compressedStreamsShrinkAndArriveByteForByte() throws {
        let (_, source) = try makePool()
        let (device, target) = try makePool()
        try source.createVolume("vm", size: 4 << 20)
        let handle = try source.handle("vm")
        var random = SeededRandom(seed: 11)
        // Text-like data compresses; random data does not and is stored as is.
        try source.write(handle, at: 0, Array(repeating: Array("strata replication ".utf8), count: 20_000).flatMap { $0 })
        try source.write(handle, at: 2 << 20, random.bytes(256 << 10))
        try source.createSnapshot("vm", "a")
        let output = MemoryStream()
        _ = try StreamSender.send(pool: source, SendRequest(snapshot: "vm@a", base: nil, compress: true), to: output)
        let plain = try stream(source, "vm@a")
        #expect(output.bytes.count < plain.count / 2, "compressed \(output.bytes.count), plain \(plain.count)")
        #expect(receive(target, "vm", output.bytes) == nil)
        #expect(try target.read(try target.handle("vm@a"), at: 0, count: 4 << 20)
            == source.read(try source.handle("vm@a"), at: 0, count: 4 << 20))
        // A flipped byte inside a compressed payload is caught by its CRC.
        var damaged = output.bytes
        damaged[StreamHeader.size + RecordHeader.size + 10] ^= 1
        #expect(receive(target, "copy", damaged)?.byteOffset == UInt64(StreamHeader.size + RecordHeader.size))
        #expect(Pool.check(device: device).clean)
    }
}

@Suite struct StreamMutationTests {
    /// Random damage of every kind at once (flips, cuts, spliced garbage, swapped records): the
    /// receiver never traps, and a refused stream leaves the target as it was.
    @Test(arguments: [21, 22, 23] as [UInt64])
    func randomDamageNeverTrapsNorChangesTheTarget(seed: UInt64) throws {
        let (_, source) = try makePool()
        let (device, target) = try makePool()
        try source.createVolume("vm", size: 1 << 20)
        var random = SeededRandom(seed: seed)
        try source.write(try source.handle("vm"), at: 0, random.bytes(128 << 10))
        try source.createSnapshot("vm", "a")
        try source.write(try source.handle("vm"), at: 512 << 10, random.bytes(96 << 10))
        try source.createSnapshot("vm", "b")
        #expect(receive(target, "vm", try stream(source, "vm@a")) == nil)
        let bytes = try stream(source, "vm@b", from: "vm@a")
        let before = try fingerprint(target)
        for trial in 0..<150 {
            var damaged = bytes
            for _ in 0..<(1 + random.next(below: 4)) {
                switch random.next(below: 4) {
                case 0: damaged[random.next(below: damaged.count)] ^= UInt8(1 + random.next(below: 255))
                case 1: damaged.removeLast(random.next(below: damaged.count))
                case 2: damaged.insert(contentsOf: random.bytes(1 + random.next(below: 64)), at: random.next(below: damaged.count))
                default:
                    let start = random.next(below: damaged.count)
                    let length = min(random.next(below: 64), damaged.count - start)
                    damaged.replaceSubrange(start..<(start + length), with: random.bytes(length))
                }
                if damaged.isEmpty { damaged = [0] }
            }
            guard damaged != bytes else { continue }
            let error = receive(target, "vm", damaged)
            #expect(error != nil, "seed=\(seed) trial \(trial): damage accepted")
            if target.receiveStaging("vm") != nil { try target.abortReceive("vm") }
            #expect(try fingerprint(target) == before, "seed=\(seed) trial \(trial)")
        }
        #expect(receive(target, "vm", bytes) == nil)
        #expect(Pool.check(device: device).clean)
    }
}

/// Builds streams record by record with valid CRCs and digest, so a test reaches past the
/// checksums to the checks behind them (what random flips cannot find).
struct StreamForge {
    var header: StreamHeader
    var records: [(header: RecordHeader, payload: [UInt8])] = []
    /// XORed into the end record's first digest byte (its CRC still matches), to reach the digest check.
    var digestFlip: UInt8 = 0

    init(volumeSize: UInt64, compression: Bool = false) {
        self.header = StreamHeader(
            flags: compression ? StreamHeader.flagCompression : 0, chunkSize: 4096, volumeSize: volumeSize,
            fromGUID: .zero, toGUID: StrataGUID(high: 7, low: 9), createdAtNanos: 1, resumeOffset: 0,
            snapshotName: "forged")
    }

    mutating func add(_ kind: RecordHeader.Kind, offset: UInt64, length: UInt64, payload: [UInt8] = [],
                      compressed: Bool = false) {
        self.records.append((
            RecordHeader(kind: kind, flags: compressed ? RecordHeader.flagCompressed : 0,
                         payloadLength: UInt32(payload.count), offset: offset, length: length,
                         payloadCRC: crc32c(payload)),
            payload))
    }

    var bytes: [UInt8] {
        var digest = SHA256()
        let head = self.header.encode()
        digest.update(data: head)
        var out = head
        var dataBytes: UInt64 = 0
        for (record, payload) in self.records {
            let encoded = record.encode()
            digest.update(data: encoded)
            out += encoded + payload
            dataBytes += UInt64(payload.count)
        }
        var hash = Array(digest.finalize())
        hash[0] ^= self.digestFlip
        out += RecordHeader(kind: .end, payloadLength: UInt32(hash.count), offset: UInt64(self.records.count),
                            length: dataBytes, payloadCRC: crc32c(hash)).encode() + hash
        return out
    }
}

@Suite struct HostileStreamTests {
    /// The story: a stream with valid CRCs, a 1 PiB volume and one compressed record claiming
    /// 1 TiB made the receiver allocate 1 TiB before inflating, and the daemon aborted with
    /// "failed to allocate 1099511627808 bytes", taking every NBD and iSCSI client down. A data
    /// record is now bounded by one payload's worth before anything is allocated.
    @Test func aCompressedRecordClaimingATebibyteIsRefusedBeforeAllocating() throws {
        let (device, target) = try makePool()
        var forge = StreamForge(volumeSize: 1 << 50, compression: true)
        forge.add(.data, offset: 0, length: 1 << 40, payload: [0x78, 0x9c, 0x03, 0x00], compressed: true)
        let error = receive(target, "vm", forge.bytes)
        #expect(error?.code == .corrupt)
        #expect(error?.byteOffset == UInt64(StreamHeader.size), "\(String(describing: error))")
        #expect(error?.message.contains("exceeds the limit") == true)
        if target.receiveStaging("vm") != nil { try target.abortReceive("vm") }
        #expect(try target.listVolumes().isEmpty)
        #expect(Pool.check(device: device).clean)
    }

    /// The end record's digest is checked (in constant time) against the headers read: one
    /// flipped bit with a matching CRC is refused, and the same stream unflipped is taken.
    @Test func aWrongStreamDigestIsRefused() throws {
        let (_, target) = try makePool()
        var forge = StreamForge(volumeSize: 1 << 20)
        forge.add(.data, offset: 0, length: 4096, payload: Array(repeating: 0x5A, count: 4096))
        forge.digestFlip = 0x01
        let error = receive(target, "vm", forge.bytes)
        #expect(error?.code == .corrupt)
        #expect(error?.message.contains("stream digest mismatch") == true, "\(String(describing: error))")
        if target.receiveStaging("vm") != nil { try target.abortReceive("vm") }
        forge.digestFlip = 0
        #expect(receive(target, "vm", forge.bytes) == nil)
    }

    /// A header claiming a volume past `Limits.volumeSizeMax` is refused at its size field.
    @Test func aVolumeLargerThanTheLimitIsRefused() throws {
        let (_, target) = try makePool()
        let forge = StreamForge(volumeSize: Limits.volumeSizeMax + 512)
        let error = receive(target, "vm", forge.bytes)
        #expect(error?.code == .corrupt)
        #expect(error?.byteOffset == 24, "\(String(describing: error))")
    }

    /// The story: a zero record was applied one chunk at a time even where nothing was mapped,
    /// so a 250-byte stream claiming 2^62 zero bytes kept a thread busy for months. Zero and
    /// trim records now cost what is mapped: this stream arrives at once with its data intact,
    /// and trimming the whole received volume afterwards is as quick.
    @Test func aZeroRecordOfTwoToTheSixtySecondBytesCostsWhatIsMapped() throws {
        let (device, target) = try makePool()
        var forge = StreamForge(volumeSize: Limits.volumeSizeMax)
        forge.add(.data, offset: 0, length: 8192, payload: Array(repeating: 0xAB, count: 8192))
        forge.add(.zero, offset: 8192, length: Limits.volumeSizeMax - 8192)
        #expect(receive(target, "vm", forge.bytes) == nil)
        let handle = try target.handle("vm@forged")
        #expect(try target.read(handle, at: 0, count: 8192) == Array(repeating: 0xAB, count: 8192))
        #expect(try target.read(handle, at: Limits.volumeSizeMax - 4096, count: 4096) == Array(repeating: 0, count: 4096))
        // A trim of the whole volume costs the two mapped chunks, not 2^50 chunk visits.
        let volume = try target.handle("vm")
        try target.trim(volume, at: 0, length: Limits.volumeSizeMax)
        #expect(try target.read(volume, at: 0, count: 8192) == Array(repeating: 0, count: 8192))
        #expect(Pool.check(device: device).clean)
    }
}
