// The daemon's one control protocol: every verb the CLI sends is a case of `ControlRequest`,
// framed by `JSONLines`. The client sends one request per connection; the daemon answers with
// zero or more progress lines and then one line holding either a result or an error. Requests
// go to control.sock, except the two that carry a stream (`send`, `receive`): they go to
// stream.sock with the stream's descriptor attached (SCM_RIGHTS), which is all that socket
// adds. The CLI prints results the same way whether they came from the daemon or from a pool it
// opened itself, because both run `PoolService`.

import StrataCore
import StrataMirror
import StrataObjectStore
import StrataReplication

/// Everything the control plane can be asked.
public enum ControlRequest: Codable, Sendable, Equatable {
    case poolStatus
    case createVolume(name: String, size: UInt64)
    case listVolumes
    case resizeVolume(name: String, size: UInt64, allowShrink: Bool)
    case renameVolume(name: String, newName: String)
    case deleteVolume(name: String, recursive: Bool, force: Bool)
    case createSnapshot(volume: String, snapshot: String)
    case listSnapshots(volume: String?)
    case deleteSnapshot(volume: String, snapshot: String, force: Bool)
    case rollback(volume: String, snapshot: String)
    case clone(volume: String, snapshot: String, newName: String)
    case importImage(file: String, volume: String, create: Bool)
    case exportImage(source: String, file: String)
    case diff(from: String, to: String)
    case check
    case connections
    /// A volume over a base image file; `size` nil takes the image's virtual size.
    case createBasedVolume(name: String, size: UInt64?, base: String)
    /// A volume over a snapshot in a remote (`volume create --from REMOTE:VOL@SNAP`): usable at
    /// once, its data fetched as it is read; `size` nil takes the snapshot's size.
    case createRemoteVolume(name: String, size: UInt64?, remote: String, volume: String, snapshot: String)
    case volumeLayers(name: String)
    /// Copies what the volume reads from its base into the pool; `rate` bounds it (bytes/s).
    case flattenVolume(name: String, rate: UInt64?)
    /// Hydrates a volume over a remote base: fetches what is not local yet and drops the base
    /// (`rate` bytes/s, nil for the default); `mode` says whether to wait.
    case hydrateVolume(name: String, rate: UInt64?, mode: HydrateMode)
    /// A volume's base and hydration (`strata volume status`).
    case volumeStatus(name: String)
    case rebaseVolume(name: String, base: String)
    /// Freezes the volume's top as a read-only layer (a snapshot, `layerN` when unnamed).
    case pushLayer(volume: String, name: String?)
    /// A remote verb (`strata remote …`, `strata push`): StrataObjectStore's RemoteService.
    case remote(RemoteRequest)
    /// Writes a snapshot's stream to the attached descriptor (stream.sock).
    case send(SendRequest)
    /// Applies the stream read from the attached descriptor to `volume` (stream.sock).
    case receive(volume: String, force: Bool)
    /// Discards the staging of an interrupted receive.
    case abortReceive(volume: String)
    /// The resume token of an interrupted receive.
    case receiveToken(volume: String)
    /// Starts (or replaces) a replication job; the daemon only.
    case replicateStart(ReplicationJob)
    /// Stops a replication job; the daemon only.
    case replicateStop(volume: String)
    /// Every replication job's state; the daemon only.
    case replicateStatus
    /// Makes a replica writable (failover).
    case promote(volume: String)
    /// A `strata mirror` verb; the daemon only (it holds the legs open).
    case mirror(MirrorRequest)

    /// True when the request only reads the pool.
    public var isReadOnly: Bool {
        switch self {
        case .poolStatus, .listVolumes, .volumeStatus, .listSnapshots, .exportImage, .diff, .check, .connections, .volumeLayers,
            .send, .receiveToken, .replicateStart, .replicateStop, .replicateStatus:
            return true
        // Mirror verbs commit both pools themselves, in the order their crash safety needs.
        case .mirror: return true
        // Remote verbs read the pool only (push reads a snapshot); remotes.json is not the pool.
        case .remote: return true
        default: return false
        }
    }

    /// True when the request carries a stream: it goes to stream.sock with a descriptor attached.
    public var needsDescriptor: Bool {
        switch self {
        case .send, .receive: return true
        default: return false
        }
    }
}

/// What a request produced.
public enum ControlResult: Codable, Sendable {
    case done
    case status(PoolStatus)
    case volumes([VolumeInfo])
    case snapshots([SnapshotInfo])
    case extents([DiffExtent])
    case check(CheckReport)
    case transfer(TransferSummary)
    case connections([ConnectionInfo])
    case layers([LayerInfo])
    /// The name of what a request created (`layer push`).
    case created(String)
    case remote(RemoteResult)
    case sent(SendSummary)
    case received(ReceiveSummary)
    /// A resume token (`receive --token`).
    case token(String)
    case replication([ReplicationStatus])
    /// The legs a mirror verb concerns (`mirror status`: every leg).
    case mirror([MirrorLegStatus])
    /// `volume status`.
    case volumeStatus(VolumeStatus)
}

/// How a hydrate request runs.
public enum HydrateMode: String, Codable, Sendable {
    /// `volume create --from --hydrate lazy`: the daemon starts it in the background; a CLI on
    /// an offline pool only marks the volume, and the daemon starts it when it opens the pool.
    case background
    /// `volume hydrate`: the daemon starts it in the background and answers at once; a CLI on
    /// an offline pool runs it to the end.
    case start
    /// `volume hydrate --wait`, `--hydrate now`, `pull`: answers when it finished (or paused
    /// on an error, which it reports; the daemon keeps retrying).
    case wait
}

/// An image import or export's totals.
public struct TransferSummary: Codable, Sendable, Equatable {
    public let bytesRead: UInt64
    public let bytesWritten: UInt64
    public let sizeBytes: UInt64
}

/// One open front-end connection, for `strata connections`.
public struct ConnectionInfo: Codable, Sendable, Equatable {
    public let protocolName: String
    public let remote: String
    public let export: String?
}

/// An engine error carried over the socket.
public struct ControlError: Codable, Sendable {
    public let code: String
    public let message: String

    public init(_ error: StrataError) {
        self.code = error.code.rawValue
        self.message = error.message
    }

    public var strataError: StrataError {
        StrataError(StrataError.Code(rawValue: self.code) ?? .io, self.message)
    }
}

/// One line from the daemon: progress, or the final result or error.
public struct ControlMessage: Codable, Sendable {
    public var progress: [UInt64]?
    public var result: ControlResult?
    public var error: ControlError?

    public init(progress: [UInt64]? = nil, result: ControlResult? = nil, error: ControlError? = nil) {
        self.progress = progress
        self.result = result
        self.error = error
    }
}
