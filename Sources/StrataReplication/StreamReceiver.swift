// `strata receive`: applies a stream to a hidden staging tree (Pool+Receive.swift) and, once the
// end record has verified the whole stream, makes the snapshot appear in one transaction.
//
// Progress is committed with the data it covers every `Limits.receiveCommitBytes` bytes, so an interrupted
// receive (a truncated or corrupt stream, a dropped connection, a killed process) keeps what it
// applied and can resume from there: the error carries a resume token, and
// `strata receive --token VOLUME` prints it again later. rbd-diff streams cannot resume: a failed
// one discards its staging. Either way, the target volume and its snapshots are untouched until
// the stream is complete.

import Foundation
import StrataCore

/// What `receive` did.
public struct ReceiveSummary: Codable, Sendable, Equatable {
    public var volume: String
    public var snapshot: String
    public var guid: String
    public var format: String
    public var streamBytes: UInt64 = 0
    public var dataBytes: UInt64 = 0
    public var records: UInt64 = 0
    public var resumedFrom: UInt64 = 0
}

public enum StreamReceiver {

    /// Receives one stream from `input` into `volume`. `progress(done, total)` counts volume bytes.
    /// - Throws: `.corrupt` naming the byte offset, `.invalidArgument` on a base mismatch, with a
    ///   resume token in the message when the staging was kept.
    /// With `replica`, a volume it creates is a read-only replication target; with
    /// `replaceStaging`, a staged receive of other snapshots is discarded first.
    public static func receive(
        pool: Pool, volume: String, force: Bool, replica: Bool = false, replaceStaging: Bool = false,
        from input: any StreamInput, progress: (UInt64, UInt64) -> Void = { _, _ in }
    ) throws(StrataError) -> ReceiveSummary {
        let context = "receive \(volume)"
        let reader = StreamReader(input, context: context)
        var decoder = try StreamDecoders.open(reader, context: context)
        var description = decoder.description
        if description.format == .rbdDiff {
            description.toGUID = StrataGUID(high: UInt64.random(in: 1...UInt64.max), low: UInt64.random(in: 1...UInt64.max))
            description.createdAtNanos = Int64(Date.nowNanos)
            if let fromName = description.fromName { description.fromGUID = try Self.guid(pool, volume, fromName) }
        }
        let staging = try Self.stage(pool: pool, volume: volume, description, force: force, replace: replaceStaging)
        var summary = ReceiveSummary(
            volume: volume, snapshot: "\(volume)@\(description.snapshotName)", guid: description.toGUID.description,
            format: description.format.rawValue, resumedFrom: description.resumeOffset)
        var applied = description.resumeOffset
        var uncommitted: UInt64 = 0
        let outcome = Result { () throws(StrataError) in
            while true {
                switch try decoder.next() {
                case .end:
                    return
                case .data(let offset, let bytes) where bytes.isEmpty:
                    applied = offset  // an empty rbd-diff `w` record: nothing to write
                case .data(let offset, let bytes):
                    try bytes.withUnsafeBufferPointer { raw throws(StrataError) in
                        try pool.write(staging.handle, at: offset, UnsafeRawBufferPointer(raw))
                    }
                    applied = offset + UInt64(bytes.count)
                    uncommitted += UInt64(bytes.count)
                    summary.dataBytes += UInt64(bytes.count)
                case .zero(let offset, let length):
                    if length > 0 { try pool.trim(staging.handle, at: offset, length: length) }
                    applied = offset + length
                }
                summary.records += 1
                progress(applied, description.volumeSize)
                if uncommitted >= Limits.receiveCommitBytes {
                    pool.recordReceiveProgress(volume, receivedBytes: applied)
                    try pool.flush()
                    uncommitted = 0
                }
            }
        }
        summary.streamBytes = reader.position
        if case .failure(let error) = outcome {
            throw Self.interrupted(pool: pool, volume: volume, description, applied: applied, error)
        }
        let finished = Result { () throws(StrataError) in
            try pool.finishReceive(
                volume, snapshot: description.snapshotName, target: description.toGUID,
                createdAtNanos: description.createdAtNanos, force: force, replica: replica)
            try pool.flush()
        }
        if case .failure(let error) = finished {
            throw Self.interrupted(pool: pool, volume: volume, description, applied: description.volumeSize, error)
        }
        progress(description.volumeSize, description.volumeSize)
        return summary
    }

    /// The staging to apply into: new, or (for a resumed stream) the interrupted one.
    private static func stage(
        pool: Pool, volume: String, _ description: StreamDescription, force: Bool, replace: Bool
    ) throws(StrataError) -> ReceiveStaging {
        guard description.resumeOffset > 0 else {
            // The whole stream again, for the same snapshots: it replaces the partial one.
            if let staged = pool.receiveStaging(volume),
                replace || (staged.targetGUID == description.toGUID && staged.baseGUID == description.fromGUID)
            {
                try pool.abortReceive(volume)
            }
            return try pool.beginReceive(
                volume, snapshot: description.snapshotName, base: description.fromGUID, target: description.toGUID,
                size: description.volumeSize, force: force)
        }
        guard let staging = pool.receiveStaging(volume) else {
            throw StrataError(
                .notFound,
                "receive \(volume): the stream resumes at byte \(description.resumeOffset) but no interrupted receive is staged for \(volume); send the whole stream without --resume")
        }
        guard staging.targetGUID == description.toGUID, staging.baseGUID == description.fromGUID else {
            throw StrataError(
                .invalidArgument,
                "receive \(volume): the stream resumes snapshot \(description.toGUID) from \(description.fromGUID) but the staged receive is of \(staging.targetGUID) from \(staging.baseGUID); discard it with `strata receive --abort \(volume)`")
        }
        guard description.resumeOffset <= staging.receivedBytes else {
            throw StrataError(
                .invalidArgument,
                "receive \(volume): the stream resumes at byte \(description.resumeOffset) but only \(staging.receivedBytes) bytes are staged; use the token `strata receive --token \(volume)` prints")
        }
        return staging
    }

    /// Keeps what was applied (committed, with a resume token in the message), or for rbd-diff
    /// streams discards the staging; returns the error to throw.
    private static func interrupted(
        pool: Pool, volume: String, _ description: StreamDescription, applied: UInt64, _ error: StrataError
    ) -> StrataError {
        if description.format == .rbdDiff {
            let discarded = Result { () throws(StrataError) in
                try pool.abortReceive(volume)
                try pool.flush()
            }
            if case .failure(let other) = discarded {
                return error.appending("; discarding the partial receive failed too: \(other.message)")
            }
            return error.appending("; the target is unchanged")
        }
        pool.recordReceiveProgress(volume, receivedBytes: applied)
        if case .failure(let other) = Result(catching: { () throws(StrataError) in try pool.flush() }) {
            return error.appending("; saving the partial receive failed too: \(other.message)")
        }
        let token = ResumeToken(target: description.toGUID, base: description.fromGUID, offset: applied)
        return error.appending(
            "; the target is unchanged; \(applied) bytes are staged: resume with `strata send --resume \(token) ...` or discard with `strata receive --abort \(volume)` (resume token: \(token))"
        )
    }

    /// The resume token of the receive staged for `volume`.
    public static func token(pool: Pool, volume: String) throws(StrataError) -> String {
        guard let staging = pool.receiveStaging(volume) else {
            throw StrataError(.notFound, "receive --token \(volume): no interrupted receive is staged for \(volume)")
        }
        return ResumeToken(target: staging.targetGUID, base: staging.baseGUID, offset: staging.receivedBytes).description
    }

    /// The GUID of `volume@snapshot`, for an rbd-diff stream that names its base.
    private static func guid(_ pool: Pool, _ volume: String, _ snapshot: String) throws(StrataError) -> StrataGUID {
        do throws(StrataError) {
            return try pool.snapshotIdentity("\(volume)@\(snapshot)").guid
        } catch {
            throw StrataError(
                .invalidArgument,
                "receive \(volume): base mismatch: the rbd diff stream starts from snapshot '\(snapshot)', which \(volume) does not have (\(error.message))")
        }
    }
}

extension Date {
    static var nowNanos: UInt64 { UInt64(Date().timeIntervalSince1970 * 1e9) }
}
