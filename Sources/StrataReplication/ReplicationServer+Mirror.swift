// A remote mirror leg's session on the leg daemon's replication port (MirrorWire.swift has the
// messages, MirrorLegTargets.swift the copies). After authentication and the `mirror` request
// line, the session is opened on the thread pool (it may create the copy and sync) and answered
// with one reply line; then the connection is full duplex: this task reads requests and hands
// them to the thread pool in batches, at most `Limits.mirrorRequestsInFlightMax` requests at
// once (`mirrorBatchesInFlightMax` batches; beyond that it stops reading, so a fast mirror is
// held back by TCP, not by memory here); the thread that applied a batch sends its answers
// itself (`TransportConnection.send`), in the order batches finish. The mirror orders what must
// be ordered (it sends a flush or a split point only after the writes before it were answered),
// so requests in flight are independent of each other.
//
// Batches. The requests that arrived in one read are applied in batches of at most
// `Limits.mirrorBatchRequestsMax` requests and `Limits.mirrorBatchBytesMax` payload bytes, each
// batch one trip to the thread pool and one answer buffer: under a deep queue a 4 KiB write then
// shares its thread wakeups with others. A batch's requests are applied one after another, so
// the bounds keep a batch short enough that the others still run in parallel.
//
// Wakeups. A request crosses three threads: the event loop that reads it, the task that decodes
// it, the pool thread that applies it and sends the answer. (Through a child task per request,
// a continuation and a writer task, it crossed six, and the wakeups, not the engine, were most
// of what a small write cost here.)

import Dispatch
import NIOCore
import StrataCore
import StrataFrontEnd

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
            session = try await self.workers.engine { () throws(StrataError) in
                try targets.open(open, peer: peer) { ender.finish() }
            }
            try await connection.write(ReplicationWire.line(ReplicationReply()))
        } catch {
            self.logger.warning("mirror leg \(open.leg) of \(open.volume) from \(peer): \(error.message)")
            try? await connection.write(ReplicationWire.line(ReplicationReply(error: error.message, errorCode: error.code.rawValue)))
            return
        }
        self.logger.info("mirror leg \(open.leg) of \(open.volume) from \(peer): session open")
        let limiter = AsyncLimiter(permits: Limits.mirrorBatchesInFlightMax)
        let ended = await withTaskGroup(of: StrataError?.self, returning: StrataError?.self) { work in
            work.addTask {
                for await _ in superseded {}
                return Task.isCancelled ? nil : StrataError(.busy, "a newer session of this leg opened")
            }
            work.addTask { await self.mirrorRequests(session, reader: reader, connection: connection, limiter: limiter) }
            let first = await work.next() ?? nil
            work.cancelAll()
            return first
        }
        if let ended {
            self.logger.info("mirror leg \(open.leg) of \(open.volume) from \(peer): session ended (\(ended.message))")
        } else {
            self.logger.info("mirror leg \(open.leg) of \(open.volume) from \(peer): session closed")
        }
    }

    /// Reads requests and hands them to the thread pool in batches until the connection ends;
    /// returns once every batch handed over has been applied and answered.
    private func mirrorRequests(
        _ session: MirrorLegSession, reader: TransportReader, connection: any TransportConnection,
        limiter: AsyncLimiter
    ) async -> StrataError? {
        let inFlight = DispatchGroup()
        var buffer = ByteBuffer()
        var batch = MirrorRequestBatch()
        var ended: StrataError?
        reading: while true {
            do throws(StrataError) {
                while true {
                    let request = try MirrorRequestMessage.decode(&buffer)
                    if let request, batch.add(request) { continue }
                    // The batch is full, or every request that has arrived is in it.
                    if !batch.requests.isEmpty {
                        do {
                            try await limiter.acquire()
                        } catch {
                            ended = StrataError(.failed, "mirror leg: stopped while requests were waiting to be applied")
                            break reading
                        }
                        self.apply(batch.requests, session, connection: connection, inFlight: inFlight, limiter: limiter)
                        batch = MirrorRequestBatch()
                    }
                    guard let request else { break }
                    _ = batch.add(request)
                }
                guard var more = try await reader.next() else { break reading }
                buffer.dropDecoded()
                buffer.writeBuffer(&more)
            } catch {
                ended = error
                break reading
            }
        }
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            inFlight.notify(queue: .global()) { done.resume() }
        }
        return ended
    }

    /// Applies `requests` on a pool thread, which then sends their answers; frees the batch's
    /// permit after.
    private func apply(
        _ requests: [MirrorRequestMessage], _ session: MirrorLegSession, connection: any TransportConnection,
        inFlight: DispatchGroup, limiter: AsyncLimiter
    ) {
        inFlight.enter()
        self.workers.perform { active in
            defer {
                limiter.release()
                inFlight.leave()
            }
            if active {
                connection.send(session.answers(to: requests))
            } else {
                let stopping = StrataError(.io, "mirror leg: the daemon is shutting down")
                var out = ByteBuffer()
                for request in requests { MirrorReplyMessage(id: request.id, result: .failure(stopping)).encode(into: &out) }
                connection.send(out)
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
