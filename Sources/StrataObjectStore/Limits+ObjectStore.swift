// Bounds of the object-store tier, each with the reason for its value (STYLE §5). In their own
// file so this module and the engine's Limits.swift change apart.

import StrataCore

extension Limits {
    /// Default object size: 8 MiB, the size snap2swift and RBD use. Large enough that a request's
    /// fixed cost (2-3 ms of server CPU on Swift, NOTES.md) is small next to its transfer, small
    /// enough that changing 4 KiB re-uploads little.
    public static let objectSizeDefault: UInt64 = 8 << 20
    /// Smallest object size: 1 MiB (the largest chunk), so an object always holds whole chunks.
    public static let objectSizeMin: UInt64 = 1 << 20
    /// Largest object size: 64 MiB. A push holds `objectStoreParallelRequestsMax` objects in
    /// memory at once (512 MiB at this size), and Swift's s3api refuses single PUTs over 5 GiB.
    public static let objectSizeMax: UInt64 = 64 << 20
    /// Requests one remote client has in flight at once: 8 parallel PUTs reached the store's
    /// ceiling in NOTES.md's measurements; more only queue in the proxy.
    public static let objectStoreParallelRequestsMax = 8
    /// Attempts of one request before its error is reported (the first try and four retries):
    /// with the backoff below that rides out ~3 s of a restarting server.
    public static let objectStoreAttemptsMax = 5
    /// First retry delay; each further retry doubles it.
    public static let objectStoreBackoffMillisecondsInitial: Int64 = 100
    /// Longest retry delay, so a bounded retry budget never sleeps for minutes.
    public static let objectStoreBackoffMillisecondsMax: Int64 = 2_000
    /// Seconds to establish a TCP connection: a loopback or LAN store answers in milliseconds, so
    /// 2 s means the host is gone. With the store down, the HTTP client retries a refused
    /// connection until this runs out, for each of `objectStoreAttemptsMax` attempts: a read of a
    /// never-fetched range then fails after about 5 × 2 s plus the backoff, under the 30 s an
    /// initiator (Linux's SCSI disk default) waits for a command (5 s made it 27 s).
    public static let objectStoreConnectTimeoutSeconds: Int64 = 2
    /// Seconds one request may take end to end: an 8 MiB PUT at a slow 1 MiB/s, with margin.
    /// A stalled object server makes Swift's proxy answer 503 after its node_timeout (3-10 s).
    public static let objectStoreRequestTimeoutSeconds: Int64 = 60
    /// Largest response body read into memory: one object at the largest object size plus room
    /// for a listing page or an error document.
    public static let objectStoreResponseBytesMax = Int(objectSizeMax) + (1 << 20)
    /// Keys one listing request asks for: the most both Swift and S3 return per page.
    public static let objectStoreListPageMax = 1000
    /// Listing pages one walk follows before giving up: 10 million keys, far past any pool, so
    /// a store that keeps answering "truncated" cannot loop forever.
    public static let objectStoreListPagesMax = 10_000
    /// Largest manifest accepted: a 64 TiB volume at 8 MiB objects has 8 Mi entries of ~150
    /// bytes; 2 GiB refuses a garbage document before it fills memory.
    public static let manifestBytesMax = 2 << 30
    /// Seconds after which a push or gc lease that was not refreshed counts as dead (its process
    /// was killed). Generous, so clock skew between hosts cannot expire a live lease.
    public static let leaseExpirySeconds: Double = 15 * 60
    /// Verified objects a remote base keeps in memory after fetching them: 64 MiB at the default
    /// object size, enough for a booting guest's working set of a few regions to be read again
    /// without a request while the engine has not filled it into the volume.
    public static let remoteBaseCachedObjects = 8
    /// Seconds between refreshes of a live lease: a small fraction of the expiry.
    public static let leaseRefreshSeconds: Double = 60
    /// Objects one hydration fetches at once: half of `objectStoreParallelRequestsMax`, so the
    /// reads of the volume's clients still find free requests in the remote's client.
    public static let hydrationParallelFetches = 4
    /// Default hydration rate: 64 MiB/s, about half a gigabit link, so a booting guest's own
    /// fetches are not starved by the background copy; `--rate` changes it.
    public static let hydrationRateDefault: UInt64 = 64 << 20
    /// First pause after a hydration error (a store down): a restarted proxy is back in seconds.
    public static let hydrationRetryMillisecondsInitial: UInt64 = 1_000
    /// Longest pause between retries of a paused hydration: a store back is noticed within this.
    public static let hydrationRetryMillisecondsMax: UInt64 = 8_000
    /// Bytes each part hash of a version-2 manifest covers: 256 KiB, so the first read of a
    /// never-fetched range costs one GET of at most 512 KiB (a range crossing one part boundary)
    /// instead of a whole 8 MiB object, while the hashes add 32 × 64 bytes per 8 MiB object to
    /// the manifest (0.03%).
    public static let manifestPartBytes: UInt64 = 256 << 10
    /// Reads whose fetched objects wait to be stored after their reply: a booting guest's burst
    /// of reads over distinct objects; past it, reads store for themselves (back-pressure).
    public static let deferredFillsMax = 64
}
