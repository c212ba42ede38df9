// A remote mirror leg's session on the leg daemon's replication port (MirrorWire.swift has the
// messages, MirrorLegTargets.swift the copies). After authentication and the `mirror` request
// line, the session is opened on the thread pool (it may create the copy and sync) and answered
// with one reply line; then the connection is full duplex: this task reads requests and starts
// them as child tasks that apply them on the thread pool, at most
// `Limits.mirrorRequestsInFlightMax` at once (`mirrorBatchesInFlightMax` batches; beyond that
// it stops reading, so a fast mirror is held back by TCP, not by memory here), and one writer task sends the answers in the order they
// finish, as many as have queued in one write (`CoalescingWriter`). The mirror orders what must
// be ordered (it sends a flush or a split point only after the writes before it were answered),
// so requests in flight are independent of each other.
//
// Batches. The requests that arrived in one read are applied in batches of at most
// `Limits.mirrorBatchRequestsMax` requests and `Limits.mirrorBatchBytesMax` payload bytes, each
// batch one trip to the thread pool and one queued answer buffer: under a deep queue a 4 KiB
// write then costs a share of one thread wakeup, not three of its own (the wakeups, not the
// engine, were most of a small write's cost). A batch's requests are applied one after another,
// so the bounds keep a batch short enough that the others still run in parallel.

import NIOCore
import StrataCore

extension ReplicationServer {
    /// Serves one mirror leg's session until the mirror closes it or the connection fails.
    func serveMirror(_ open: MirrorLegOpen, connection: any TransportConnection, reader: TransportReader) async {
        let peer = connection.peer
        let session: MirrorLegSession
        // Finished when a newer session of the same copy opens: this one's connection then ends.
        let (superseded, ender) = AsyncStream.makeStream(of: Void.self)
        do throws(StrataError) {
            guard let targets = self.targets else {
                throw StrataError(.unsupported, "mirror leg \(open.volume): this daemon holds no mirror copies")
            }
            session = try await self.threadPool.engine { () throws(StrataError) in
                try targets.open(open, peer: peer) { ender.finish() }
            }
            try await connection.write(ReplicationWire.line(ReplicationReply()))
        } catch {
            self.logger.warning("mirror leg \(open.leg) of \(open.volume) from \(peer): \(error.message)")
            try? await connection.write(ReplicationWire.line(ReplicationReply(error: error.message, errorCode: error.code.rawValue)))
            return
        }
        self.logger.info("mirror leg \(open.leg) of \(open.volume) from \(peer): session open")
        let replies = CoalescingWriter()
        let limiter = AsyncLimiter(permits: Limits.mirrorBatchesInFlightMax)
        let ended: StrataError? = await withDiscardingTaskGroup(returning: StrataError?.self) { group in
            group.addTask {
                // A failed write ends the session: the reads then fail too.
                do throws(StrataError) { try await replies.drain(to: connection) } catch { return }
            }
            let ended = await withTaskGroup(of: StrataError?.self, returning: StrataError?.self) { work in
                work.addTask {
                    for await _ in superseded {}
                    return Task.isCancelled ? nil : StrataError(.busy, "a newer session of this leg opened")
                }
                work.addTask { await self.mirrorRequests(session, reader: reader, replies: replies, limiter: limiter) }
                let first = await work.next() ?? nil
                work.cancelAll()
                return first
            }
            replies.finish()
            return ended
        }
        if let ended {
            self.logger.info("mirror leg \(open.leg) of \(open.volume) from \(peer): session ended (\(ended.message))")
        } else {
            self.logger.info("mirror leg \(open.leg) of \(open.volume) from \(peer): session closed")
        }
    }

    /// Reads requests and applies them in batches, each a child task, until the connection ends.
    private func mirrorRequests(
        _ session: MirrorLegSession, reader: TransportReader, replies: CoalescingWriter,
        limiter: AsyncLimiter
    ) async -> StrataError? {
        await withDiscardingTaskGroup(returning: StrataError?.self) { requests in
            var buffer = ByteBuffer()
            var batch = MirrorRequestBatch()
            while true {
                do throws(StrataError) {
                    while true {
                        let request = try MirrorRequestMessage.decode(&buffer)
                        if let request, batch.add(request) { continue }
                        // The batch is full, or every request that has arrived is in it.
                        if !batch.requests.isEmpty {
                            let full = batch.requests
                            batch = MirrorRequestBatch()
                            do {
                                try await limiter.acquire()
                            } catch {
                                return StrataError(.failed, "mirror leg: stopped while requests were waiting to be applied")
                            }
                            requests.addTask {
                                defer { limiter.release() }
                                let applied = await self.threadPool.result { () -> [Result<[UInt8], StrataError>] in
                                    full.map { request in Result { () throws(StrataError) in try session.apply(request) } }
                                }
                                let results: [Result<[UInt8], StrataError>]
                                switch applied {
                                case .success(let each): results = each
                                case .failure(let error): results = full.map { _ in .failure(error) }
                                }
                                var out = ByteBuffer()
                                for (request, result) in zip(full, results) {
                                    MirrorReplyMessage(id: request.id, result: result).encode(into: &out)
                                }
                                replies.append(out)
                            }
                        }
                        guard let request else { break }
                        _ = batch.add(request)
                    }
                    guard var more = try await reader.next() else { return nil }
                    buffer.dropDecoded()
                    buffer.writeBuffer(&more)
                } catch {
                    return error
                }
            }
        }
    }
}

/// Requests applied together in one trip to the thread pool (see the file's note).
package struct MirrorRequestBatch {
    package private(set) var requests: [MirrorRequestMessage] = []
    private var payloadBytes = 0

    package init() {}

    /// Adds `request` unless the batch is full; false when it is (the caller starts the batch
    /// and adds `request` to the next).
    package mutating func add(_ request: MirrorRequestMessage) -> Bool {
        guard !self.requests.isEmpty else {
            self.requests.append(request)
            self.payloadBytes = request.payload.count
            return true
        }
        guard self.requests.count < Limits.mirrorBatchRequestsMax,
            self.payloadBytes + request.payload.count <= Limits.mirrorBatchBytesMax
        else { return false }
        self.requests.append(request)
        self.payloadBytes += request.payload.count
        return true
    }
}
