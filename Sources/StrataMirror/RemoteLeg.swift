// A mirror leg on another Strata daemon (`strata mirror add VOL --to HOST:PORT`): the second
// `MirrorLeg`, each call one request of the leg's session on the leg daemon's replication port
// (MirrorLink.swift, the messages in MirrorWire.swift). The copy there is a volume named VOL,
// flagged as a replica, so the leg daemon exports it read-only while the mirror owns it; detach
// renames it (`--as`) and may make it writable, attach turns it back (MirrorLegTargets.swift).
//
// Writes and reads longer than one message (`Limits.mirrorPayloadBytesMax`) go as several; the
// mirror holds the chunks' stripe locks across the whole call, so the pieces need no order of
// their own.

import StrataCore
import StrataReplication
import Synchronization

/// A leg on another daemon.
public final class RemoteLeg: MirrorLeg {
    public let link: MirrorLink
    public var location: String { self.link.address.description }

    init(link: MirrorLink) { self.link = link }

    /// Opens the leg's session on the leg daemon (`create`: makes its copy).
    /// - Throws: the leg daemon's refusal or `.io` naming the address; nothing is changed on
    ///   either side then.
    static func open(
        links: MirrorLinks, address: TransportAddress, secretFile: String, open: MirrorLegOpen, timeoutMillis: UInt64
    ) throws(StrataError) -> RemoteLeg {
        RemoteLeg(link: try links.connect(to: address, secretFile: secretFile, open: open, timeoutMillis: timeoutMillis))
    }

    public func write(at offset: UInt64, _ bytes: [UInt8]) throws(StrataError) {
        var done = 0
        repeat {
            let end = min(bytes.count, done + Limits.mirrorPayloadBytesMax)
            _ = try self.link.call(.write, offset: offset + UInt64(done), payload: Array(bytes[done..<end]))
            done = end
        } while done < bytes.count
    }

    /// Starts a write without blocking any thread: the link's answers finish the returned call
    /// (the writer's own thread waits on it, within the leg's deadline). A writer's thread must
    /// not wait inside a Dispatch worker for an answer the link's tasks deliver: those tasks run
    /// on the same threads, and a queue depth of 32 writers would starve them.
    func startWrite(at offset: UInt64, _ bytes: [UInt8]) -> LegCall.Pending<Void> {
        var pieces: [(UInt64, [UInt8])] = []
        var done = 0
        repeat {
            let end = min(bytes.count, done + Limits.mirrorPayloadBytesMax)
            pieces.append((offset + UInt64(done), Array(bytes[done..<end])))
            done = end
        } while done < bytes.count
        return self.start(pieces.map { (.write, 0, $0.0, 0, $0.1) })
    }

    /// Starts a zero without blocking any thread (see `startWrite`).
    func startZero(at offset: UInt64, length: UInt64, trim: Bool) -> LegCall.Pending<Void> {
        self.start([(.zero, trim ? MirrorRequestMessage.flagTrim : 0, offset, length, [])])
    }

    /// Sends `requests` and returns a call the last answer (or the first failure) finishes.
    private func start(_ requests: [(MirrorOperation, UInt8, UInt64, UInt64, [UInt8])]) -> LegCall.Pending<Void> {
        let pending = LegCall.Pending<Void>(leg: self.link.name, timeoutMillis: self.link.timeout)
        let remaining = Mutex(requests.count)
        let finish: @Sendable (Result<[UInt8], StrataError>) -> Void = { result in
            let last = remaining.withLock { count -> Bool in
                guard count > 0 else { return false }
                if case .failure = result {
                    count = 0
                    return true
                }
                count -= 1
                return count == 0
            }
            if last { pending.finish(result.map { _ in () }) }
        }
        for (operation, flags, offset, length, payload) in requests {
            do throws(StrataError) {
                try self.link.send(operation, flags: flags, offset: offset, length: length, payload: payload, completion: finish)
            } catch {
                finish(.failure(error))
                break
            }
        }
        return pending
    }

    public func zero(at offset: UInt64, length: UInt64, trim: Bool) throws(StrataError) {
        _ = try self.link.call(.zero, flags: trim ? MirrorRequestMessage.flagTrim : 0, offset: offset, length: length)
    }

    public func flush() throws(StrataError) { _ = try self.link.call(.flush) }

    public func read(at offset: UInt64, count: Int) throws(StrataError) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        while bytes.count < count {
            let piece = min(count - bytes.count, Limits.mirrorPayloadBytesMax)
            bytes += try self.link.call(.read, offset: offset + UInt64(bytes.count), length: UInt64(piece))
        }
        return bytes
    }

    public func size() throws(StrataError) -> UInt64 { try MirrorPayload.integer(from: try self.link.call(.size)) }

    public func createSplitPoint(_ name: String) throws(StrataError) {
        _ = try self.link.call(.createSplitPoint, payload: Array(name.utf8))
    }

    public func deleteSplitPoint(_ name: String) throws(StrataError) {
        _ = try self.link.call(.deleteSplitPoint, payload: Array(name.utf8))
    }

    public func splitPoints() throws(StrataError) -> [String] {
        let names = try self.link.call(.splitPoints)
        return names.isEmpty ? [] : String(decoding: names, as: UTF8.self).split(separator: "\n").map(String.init)
    }

    public func changes(since name: String) throws(StrataError) -> [DiffExtent] {
        try MirrorPayload.extents(from: try self.link.call(.changes, payload: Array(name.utf8)))
    }

    public func commitIfNeeded() throws(StrataError) { _ = try self.link.call(.commitIfNeeded) }

    public func detach(as name: String?, writable: Bool) throws(StrataError) {
        _ = try self.link.call(
            .detach, flags: writable ? MirrorRequestMessage.flagWritable : 0, payload: Array((name ?? "").utf8))
    }

    public func attach() throws(StrataError) { _ = try self.link.call(.attach) }

    /// Undoes an add that failed after the copy was made: deletes the copy on the leg daemon.
    func discard() throws(StrataError) { _ = try self.link.call(.discard) }

    public func release() throws(StrataError) { _ = try self.link.call(.release) }

    public func close() { self.link.close() }
}
