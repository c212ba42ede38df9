// The fuzz targets: one per decoder that reads bytes from outside the process (a socket, a
// stream, a pool, an image file, an object store). libFuzzer (`strata-fuzz`, built with
// `-sanitize=fuzzer,address` by scripts/fuzz.sh) calls a target with each input; so does the
// corpus replay in the ordinary build (`strata-fuzz replay`, StrataFuzzTests), without the
// sanitizer.
//
// Invariants of every target:
// - It drives the decoder through the entry point the daemon or the CLI uses (public, or
//   `package` where the decoder is internal), never through @testable.
// - Before decoding it fixes up every checksum and digest the format carries (CRC-32C of pages,
//   stream records, iSCSI digests; a manifest's SHA-256), so mutations reach the checks behind
//   them instead of dying at the first checksum (docs/TESTING.md, "Fuzzing").
// - It is deterministic for a given input: fresh state (a new pool on a SimDevice) per input,
//   no clock, no network.
// - A decode error is an expected outcome; a trap, a sanitizer report, a leak or a hang is a
//   finding. Targets check a few invariants of what decoded (`FuzzCheck.require`), which trap
//   when broken.

/// One fuzz target.
public struct FuzzTarget: Sendable {
    /// The name scripts/fuzz.sh and Fuzz/corpus/NAME use.
    public let name: String
    /// What it decodes, for `strata-fuzz list`.
    public let summary: String
    /// Runs one input; returns normally for accepted and refused input alike.
    public let run: @Sendable ([UInt8]) -> Void

    public init(name: String, summary: String, run: @escaping @Sendable ([UInt8]) -> Void) {
        self.name = name
        self.summary = summary
        self.run = run
    }
}

/// Every fuzz target, in the order scripts/fuzz.sh runs them.
public enum FuzzTargets {
    public static let all: [FuzzTarget] = [
        NBDTargets.handshake, NBDTargets.requests,
        ISCSITargets.framer, ISCSITargets.login, ISCSITargets.textKeys, ISCSITargets.cdb, ISCSITargets.session,
        StreamTargets.strataStream, StreamTargets.rbdDiff,
        CoreTargets.superblock, CoreTargets.treePage, CoreTargets.volumeTable,
        ControlTargets.control, ImageTargets.qcow2, ManifestTargets.manifest, ReplicationTargets.messages,
        MirrorTargets.wire,
    ]

    /// The target called `name`, or nil.
    public static func named(_ name: String) -> FuzzTarget? { Self.all.first { $0.name == name } }
}

/// Invariant checks inside targets: a broken one is a finding, so it traps (STYLE §4).
enum FuzzCheck {
    static func require(_ condition: Bool, _ message: @autoclosure () -> String) {
        precondition(condition, "fuzz invariant: \(message())")
    }
}

/// Reads an input front to back; past the end it yields zeros, so every input is usable.
struct FuzzBytes {
    let bytes: [UInt8]
    private(set) var position = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var remaining: Int { self.bytes.count - self.position }

    mutating func byte() -> UInt8 {
        guard self.position < self.bytes.count else { return 0 }
        defer { self.position += 1 }
        return self.bytes[self.position]
    }

    mutating func take(_ count: Int) -> [UInt8] {
        let end = min(self.bytes.count, self.position + max(0, count))
        defer { self.position = end }
        return Array(self.bytes[self.position..<end])
    }

    mutating func rest() -> [UInt8] { self.take(self.remaining) }
}
