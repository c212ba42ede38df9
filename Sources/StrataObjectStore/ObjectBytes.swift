// One object of a remote base as it arrives (docs/OBJECTSTORE.md "Lazy reads"): its body lands
// in one page-aligned buffer of the object's size, taken when the body starts, and each part the manifest has a SHA-256 for
// (256 KiB as pushed; the whole object for a version 1 manifest) is checked as soon as all of
// it is in. Readers wait only for the parts they need, so a read of an object being fetched is
// served once its own bytes are in and checked, not when the last byte of 8 MiB is; a fill
// waits for the whole object. No byte is lent before the SHA-256 that covers it matched.
//
// Invariants: bytes below `verified` are checked and never written again (a retried GET's
// repeat of them is dropped, not copied), so readers use them without a lock; `verified` only
// grows; after `failure` is set nothing more is verified. One writer at a time: the attempts of
// one fetch run one after the other, each on its connection's event loop.

import Crypto
import Foundation
import StrataCore
import Synchronization

/// Receives one object's body, attempt by attempt (ObjectStore.get(_:into:)).
public protocol ObjectSink: Sendable {
    /// A new attempt starts: its body arrives from the object's first byte.
    func restart()
    /// The next bytes of the body.
    /// - Throws: `.corrupt` naming the object when they are more than it holds or fail a check.
    func receive(_ bytes: UnsafeRawBufferPointer) throws(StrataError)
    /// The body ended.
    /// - Throws: `.corrupt` naming the object when it was shorter than the manifest says.
    func finish() throws(StrataError)
}

/// An object's bytes, checked part by part as they arrive.
public final class ObjectBytes: ObjectSink, @unchecked Sendable {
    /// The object's size (the manifest's).
    public let count: Int
    /// Taken when the first attempt's body starts (`restart`), not when a reader makes the
    /// object: objects waiting for a request slot hold no memory. Set by the writer before it
    /// publishes any byte under `condition`, so a reader sees it once `verified` > 0.
    private var memory: UnsafeMutableRawBufferPointer?
    /// Where each check ends and the SHA-256 it expects, in order; `part` names it in errors.
    private let checks: [(end: Int, sha256: String, part: Int?)]
    /// What errors call the object: `read REMOTE:VOL@SNAP object N (KEY) on STORE`.
    private let label: String
    private let condition = NSCondition()
    // Under `condition`.
    private var verified = 0
    private var failure: StrataError?
    // The writer's own (one attempt at a time).
    private var received = 0
    private var nextCheck = 0
    private var checked = 0

    /// Room for `entry`'s object, checked against its part hashes (parts of `partSize` bytes)
    /// when it has them, else against its SHA-256.
    public init(_ entry: ManifestEntry, partSize: UInt64?, label: String) {
        let count = Int(entry.bytes)
        self.count = count
        self.label = label
        if let parts = entry.parts, let partSize, partSize > 0 {
            self.checks = parts.enumerated().map { number, sha256 in
                (end: min((number + 1) * Int(partSize), count), sha256: sha256, part: number)
            }
        } else {
            self.checks = [(end: count, sha256: entry.sha256, part: nil)]
        }
    }

    deinit {
        if let memory = self.memory { ObjectBuffers.give(memory) }
    }

    public func restart() {
        if self.memory == nil { self.memory = ObjectBuffers.take(max(self.count, 1)) }
        self.received = 0
        self.nextCheck = self.checks.firstIndex { $0.end > self.checked } ?? self.checks.count
    }

    public func receive(_ bytes: UnsafeRawBufferPointer) throws(StrataError) {
        guard self.received + bytes.count <= self.count else {
            throw self.fail(
                "the store returned more than the \(self.count) bytes the manifest says; the object is damaged: push the snapshot again from a pool that holds it")
        }
        guard let memory = self.memory else { preconditionFailure("a body's bytes arrive after its attempt restarts") }
        // Bytes an earlier attempt already checked may be in a reader's hands: never rewritten.
        let from = max(self.received, self.checked)
        let end = self.received + bytes.count
        if from < end {
            UnsafeMutableRawBufferPointer(rebasing: memory[from..<end])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[(from - self.received)...]))
        }
        self.received = end
        while self.nextCheck < self.checks.count, self.checks[self.nextCheck].end <= self.received {
            let check = self.checks[self.nextCheck]
            let start = self.nextCheck == 0 ? 0 : self.checks[self.nextCheck - 1].end
            let digest = SigV4Signer.hex(SHA256.hash(data: UnsafeRawBufferPointer(rebasing: memory[start..<check.end])))
            guard digest == check.sha256 else {
                let what = check.part.map { " part \($0)" } ?? ""
                throw self.fail(
                    "SHA-256 mismatch (expected=\(check.sha256) actual=\(digest)); the object is damaged: push the snapshot again from a pool that holds it",
                    part: what)
            }
            self.nextCheck += 1
            self.checked = check.end
            self.condition.withLock {
                self.verified = check.end
                self.condition.broadcast()
            }
        }
    }

    public func finish() throws(StrataError) {
        guard self.received == self.count else {
            throw self.fail(
                "the store returned \(self.received) bytes, the manifest says \(self.count); the object is damaged: push the snapshot again from a pool that holds it")
        }
    }

    /// Ends the object with `error`: readers of bytes not yet checked get it.
    public func fail(with error: StrataError) {
        self.condition.withLock {
            if self.failure == nil { self.failure = error }
            self.condition.broadcast()
        }
    }

    /// Records a failure described by `detail` and returns it as an error naming the object.
    private func fail(_ detail: String, part: String = "") -> StrataError {
        let error = StrataError(.corrupt, "\(self.label)\(part): \(detail)")
        self.fail(with: error)
        return error
    }

    /// True once every byte is in and checked.
    public var isComplete: Bool { self.condition.withLock { self.verified == self.count } }

    /// Waits until bytes [0, end) are in and checked, then lends bytes [start, end).
    /// - Throws: the fetch's error when it failed before reaching `end`.
    public func withBytes<T>(
        _ range: Range<Int>, _ body: (UnsafeRawBufferPointer) throws(StrataError) -> T
    ) throws(StrataError) -> T {
        precondition(range.lowerBound >= 0 && range.upperBound <= self.count, "a read inside the object")
        let (failure, memory) = self.condition.withLock { () -> (StrataError?, UnsafeMutableRawBufferPointer?) in
            while self.verified < range.upperBound && self.failure == nil { self.condition.wait() }
            return (self.verified >= range.upperBound ? nil : self.failure, self.memory)
        }
        if let failure { throw failure }
        // An empty range needs no bytes (and may come before any arrived).
        guard let memory, !range.isEmpty else { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        return try body(UnsafeRawBufferPointer(rebasing: memory[range]))
    }
}

/// Page-aligned buffers for objects, the last few freed kept for the next object of their size
/// (`Limits.remoteBaseBuffersKept`). Their old bytes are never lent: an object lends only what
/// it received and checked.
enum ObjectBuffers {
    /// Kept buffers as (address, byte count): plain values, so the list is Sendable.
    private static let kept = Mutex<[(address: UInt, count: Int)]>([])

    static func take(_ count: Int) -> UnsafeMutableRawBufferPointer {
        let reused = Self.kept.withLock { kept -> UInt? in
            guard let index = kept.firstIndex(where: { $0.count == count }) else { return nil }
            return kept.remove(at: index).address
        }
        if let reused, let start = UnsafeMutableRawPointer(bitPattern: reused) {
            return UnsafeMutableRawBufferPointer(start: start, count: count)
        }
        return .allocate(byteCount: count, alignment: 4096)
    }

    static func give(_ buffer: UnsafeMutableRawBufferPointer) {
        let address = UInt(bitPattern: buffer.baseAddress)
        let keep = Self.kept.withLock { kept -> Bool in
            guard kept.count < Limits.remoteBaseBuffersKept else { return false }
            kept.append((address: address, count: buffer.count))
            return true
        }
        if !keep { buffer.deallocate() }
    }
}
