// Bounds of send/receive streams and replication, each with the reason for its value (STYLE §5).
// In their own file so the replication work and the engine's Limits.swift change apart.

extension Limits {
    /// Volume bytes in one data record: large enough that a 32-byte record header costs 0.003%,
    /// small enough that a reader checks a record's CRC before buffering much of it.
    public static let streamRecordBytesMax = 1 << 20
    /// Largest rbd-diff `w` extent accepted (rbd export-diff writes at most an object, 4 MiB by
    /// default; 64 MiB leaves room for larger objects without trusting any length).
    public static let rbdDiffExtentBytesMax: UInt64 = 64 << 20
    /// Bytes a receive applies between commits of its progress: what a crash can cost a resume.
    /// Each commit syncs; 1 GiB keeps the stalls to a few per volume.
    public static let receiveCommitBytes: UInt64 = 1 << 30
    /// Streams the daemon's stream socket runs at once (each is a thread and a pipe's worth of I/O).
    public static let streamsMax = 8
    /// Streams the replication jobs send at once. Each holds a thread of the daemon's pool (the
    /// engine's side of the stream) while it runs: with `replicationConnectionsMax` receives,
    /// 12 of the pool's 16 threads at most, so NBD and iSCSI always keep some.
    public static let replicationTransfersMax = 4
    /// Replication requests (state, receive, prune) a replica serves at once; later ones wait.
    public static let replicationConnectionsMax = 8
    /// Remote mirror leg sessions a daemon serves at once, apart from replication's turns: one per
    /// leg it holds, each holding its connection while the leg is open. A session's requests in
    /// flight are bounded (`mirrorRequestsInFlightMax`), so this bounds what legs can hold here.
    public static let mirrorSessionsMax = 32
    /// Longest wait between retries of a failed replication cycle.
    public static let replicationBackoffSecondsMax = 30.0
    /// Seconds a replication connection may move no byte either way (or take to connect) before
    /// the peer counts as gone and the job retries.
    public static let replicationIOTimeoutSeconds = 60
    /// Seconds an accepted replication connection under TLS may take to start its handshake: a
    /// peer without TLS waits for the accepting side to speak, so only this ends it early.
    public static let replicationTLSStartSeconds = 5
    /// Bytes of a stream held between the engine's thread and the connection, each way: enough to
    /// keep a 1 MiB record and the next in flight, little enough that a stalled peer holds little.
    public static let replicationPipeBytes = 2 << 20
    /// Longest request line on the stream socket or the replication port.
    public static let streamRequestBytesMax = 64 << 10
    /// Largest payload of one mirror-leg message (docs/MIRROR.md, "The remote leg's messages"):
    /// a write, a read's answer, or a list of changed extents. A leg splits longer writes and
    /// reads into pieces of this size; 4 MiB keeps a message's buffer small while a 1 MiB
    /// sequential write still goes as one message.
    public static let mirrorPayloadBytesMax = 4 << 20
    /// Requests a remote leg's session applies at once on the leg daemon: enough for a queue
    /// depth of 32 on each of two writers; beyond it the session stops reading (backpressure).
    public static let mirrorRequestsInFlightMax = 64
    /// Requests, and their payload bytes, a remote leg's session applies in one trip to the
    /// thread pool (ReplicationServer+Mirror.swift, "Batches"): 8 small writes share one thread
    /// wakeup; 1 MiB keeps a batch of large writes to about a millisecond of copying, so the
    /// batches of a deep queue still run on several threads at once.
    public static let mirrorBatchRequestsMax = 8
    public static let mirrorBatchBytesMax = 1 << 20
    /// Batches a session applies at once: `mirrorRequestsInFlightMax` requests in all.
    public static let mirrorBatchesInFlightMax = mirrorRequestsInFlightMax / mirrorBatchRequestsMax
}
