// A remote mirror leg's session on the leg daemon's replication port (MirrorWire.swift has the
// messages, MirrorLegTargets.swift the copies). After authentication and the `mirror` request
// line, the session is opened on the thread pool (it may create the copy and sync) and answered
// with one reply line; then the connection is full duplex: this task reads requests and starts
// each as a child task that applies it on the thread pool, at most
// `Limits.mirrorRequestsInFlightMax` at once (beyond that it stops reading, so a fast mirror is
// held back by TCP, not by memory here), and one writer task sends the answers in the order they
// finish, as many as have queued in one write (`CoalescingWriter`). The mirror orders what must be ordered (it sends a flush or a split point only after
// the writes before it were answered), so requests in flight are independent of each other.

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
        let limiter = AsyncLimiter(permits: Limits.mirrorRequestsInFlightMax)
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

    /// Reads requests and applies each in a child task until the connection ends.
    private func mirrorRequests(
        _ session: MirrorLegSession, reader: TransportReader, replies: CoalescingWriter,
        limiter: AsyncLimiter
    ) async -> StrataError? {
        await withDiscardingTaskGroup(returning: StrataError?.self) { requests in
            var buffer = ByteBuffer()
            while true {
                do throws(StrataError) {
                    while let request = try MirrorRequestMessage.decode(&buffer) {
                        do {
                            try await limiter.acquire()
                        } catch {
                            return StrataError(.failed, "mirror leg: stopped while requests were waiting to be applied")
                        }
                        requests.addTask {
                            defer { limiter.release() }
                            let result = await self.threadPool.result { () throws(StrataError) in try session.apply(request) }
                            var out = ByteBuffer()
                            MirrorReplyMessage(id: request.id, result: result).encode(into: &out)
                            replies.append(out)
                        }
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
