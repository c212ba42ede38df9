// Remote mirror legs (MirrorWire.swift): after the `mirror` request line, the mirror sends binary
// requests and the leg daemon answers binary replies, many in flight. The input is read as both
// streams:
// - as requests, decoded and batched the way the leg daemon's session does it
//   (ReplicationServer+Mirror.swift), each applied to a leg copy made for this input in a fresh
//   pool (`MirrorLegTargets.open`, as `mirror add` makes one), and each answer encoded and decoded
//   again as the mirror would read it. Afterwards the pool must check clean;
// - as replies, decoded the way the mirror's link does, each payload read as the extents and
//   integer payloads its callers take from it.
// The wire carries no checksum of its own (TCP, or TLS, does), so nothing is fixed up.

import Foundation
import NIOCore
import StrataCore
import StrataReplication

enum MirrorTargets {
    /// Where the leg daemon's table of copies (`mirror-copies.json`) lives; emptied per input.
    static let directory: String = {
        let path = NSTemporaryDirectory() + "strata-fuzz-mirror-\(getpid())"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }()

    static let wire = FuzzTarget(
        name: "mirror-wire",
        summary: "remote mirror leg requests (applied to a leg copy) and replies (MirrorRequestMessage, MirrorReplyMessage)"
    ) { input in
        Self.replies(input)
        Self.requests(input)
    }

    private static func replies(_ input: [UInt8]) {
        var buffer = ByteBuffer(bytes: input)
        while let reply = try? MirrorReplyMessage.decode(&buffer) {
            guard case .success(let payload) = reply.result else { continue }
            _ = try? MirrorPayload.extents(from: payload)
            _ = try? MirrorPayload.integer(from: payload)
        }
    }

    private static func requests(_ input: [UInt8]) {
        let pool = FuzzPool.make()
        try? FileManager.default.removeItem(atPath: Self.directory + "/" + MirrorLegTargets.fileName)
        let open = MirrorLegOpen(
            volume: "legcopy", sourcePool: "fuzz", leg: "leg1", create: true, size: FuzzPool.volumeSize, allocatedBytes: 0)
        let session: MirrorLegSession
        do throws(StrataError) {
            session = try MirrorLegTargets(pool: pool, directory: Self.directory).open(open, peer: "fuzz") {}
        } catch {
            preconditionFailure("fuzz mirror leg: \(error.message)")
        }
        var buffer = ByteBuffer(bytes: input)
        var batch = MirrorRequestBatch()
        var decoding = true
        while decoding {
            let request: MirrorRequestMessage?
            do throws(StrataError) { request = try MirrorRequestMessage.decode(&buffer) } catch { request = nil }
            if let request, batch.add(request) { continue }
            Self.apply(batch.requests, to: session)
            batch = MirrorRequestBatch()
            if let request { _ = batch.add(request) } else { decoding = false }
        }
        FuzzPool.requireClean(pool, after: "mirror leg requests")
    }

    /// Applies one batch as the leg daemon does; every answer must decode, one per request, in
    /// order (the mirror matches them by id).
    private static func apply(_ requests: [MirrorRequestMessage], to session: MirrorLegSession) {
        var out = session.answers(to: requests)
        for request in requests {
            let reply: MirrorReplyMessage?
            do throws(StrataError) { reply = try MirrorReplyMessage.decode(&out) } catch { reply = nil }
            FuzzCheck.require(reply?.id == request.id, "mirror reply \(request.id) does not decode as sent")
        }
        FuzzCheck.require(out.readableBytes == 0, "mirror replies carry bytes after the last answer")
    }
}
