// The stream and replication requests of `PoolService`: send and receive over a descriptor the
// CLI passed (stream.sock), a receive's staging (abort, token), failover (promote), and the
// daemon's replication jobs. A pool the CLI opened itself has no jobs: their verbs fail naming
// the fix, `strata serve`.

import StrataCore
import StrataReplication

#if canImport(Glibc)
import Glibc
#endif

/// The descriptor of a `send` or `receive` stream, and whether to give up on it (the daemon
/// shutting down).
public struct StreamDescriptor: Sendable {
    public let fd: Int32
    let isCancelled: @Sendable () -> Bool

    public init(fd: Int32, isCancelled: @escaping @Sendable () -> Bool = { false }) {
        self.fd = fd
        self.isCancelled = isCancelled
    }

    /// No stream: every request but `send` and `receive`.
    public static let none = StreamDescriptor(fd: -1)
}

/// A stream's descriptor that stops at its next read or write once cancelled: it waits for the
/// descriptor with poll(2), checking the cancellation every `StreamServer.pollMilliseconds`,
/// so even a stream whose pipe has gone quiet notices a shutdown.
final class CancellableDescriptorStream: StreamInput, StreamOutput {
    private let stream: FileDescriptorStream
    private let descriptor: StreamDescriptor
    private let name: String

    init(_ descriptor: StreamDescriptor, name: String) {
        self.stream = FileDescriptorStream(fd: descriptor.fd, name: name)
        self.descriptor = descriptor
        self.name = name
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws(StrataError) -> Int {
        try self.waitUntilReady(Int16(POLLIN))
        return try self.stream.read(into: buffer)
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws(StrataError) {
        try self.waitUntilReady(Int16(POLLOUT))
        try self.stream.write(bytes)
    }

    /// Returns when the descriptor is ready (or in error, which the read or write then reports).
    /// - Throws: `.busy` once the stream is cancelled.
    private func waitUntilReady(_ events: Int16) throws(StrataError) {
        var entry = pollfd(fd: self.descriptor.fd, events: events, revents: 0)
        while true {
            if self.descriptor.isCancelled() {
                throw StrataError(.busy, "\(self.name): the daemon is shutting down; run the command again once it is back")
            }
            let ready = poll(&entry, 1, StreamServer.pollMilliseconds)
            if ready > 0 || (ready < 0 && errno != EINTR) { return }
        }
    }
}

extension PoolService {
    func performStream(_ request: ControlRequest, stream: StreamDescriptor, progress: (UInt64, UInt64) -> Void)
        throws(StrataError) -> ControlResult
    {
        switch request {
        case .send(let send):
            let output = CancellableDescriptorStream(stream, name: "the send output")
            return .sent(try StreamSender.send(pool: self.pool, send, to: output, progress: progress))
        case .receive(let volume, let force):
            let input = CancellableDescriptorStream(stream, name: "the receive input")
            return .received(
                try StreamReceiver.receive(pool: self.pool, volume: volume, force: force, from: input, progress: progress))
        case .abortReceive(let volume):
            try self.pool.abortReceive(volume)
        case .receiveToken(let volume):
            return .token(try StreamReceiver.token(pool: self.pool, volume: volume))
        case .promote(let volume):
            try self.pool.setReplica(volume, false)
        default:
            preconditionFailure("performStream: \(request) is not a stream request")
        }
        return .done
    }

    func performReplication(_ request: ControlRequest) throws(StrataError) -> ControlResult {
        guard let replicator = self.replicator else {
            throw StrataError(
                .notFound,
                "replicate: no daemon runs on this pool; replication jobs run in the daemon: start `strata serve`")
        }
        switch request {
        case .replicateStart(let job):
            try replicator.start(job)
        case .replicateStop(let volume):
            replicator.stop(volume)
        case .replicateStatus:
            return .replication(replicator.status())
        default:
            preconditionFailure("performReplication: \(request) is not a replication request")
        }
        return .done
    }
}
