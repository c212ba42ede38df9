// The stream and replication requests of `PoolService`: send and receive over a descriptor the
// CLI passed (stream.sock), a receive's staging (abort, token), failover (promote), and the
// daemon's replication jobs. A pool the CLI opened itself has no jobs: their verbs fail naming
// the fix, `strata serve`.

import StrataCore
import StrataReplication

extension PoolService {
    func performStream(_ request: ControlRequest, stream fd: Int32, progress: (UInt64, UInt64) -> Void)
        throws(StrataError) -> ControlResult
    {
        switch request {
        case .send(let send):
            let output = FileDescriptorStream(fd: fd, name: "the send output")
            return .sent(try StreamSender.send(pool: self.pool, send, to: output, progress: progress))
        case .receive(let volume, let force):
            let input = FileDescriptorStream(fd: fd, name: "the receive input")
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
