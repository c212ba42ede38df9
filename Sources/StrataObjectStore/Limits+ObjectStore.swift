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
    /// Largest object size: 64 MiB. A push holds `objectStoreParallelRequestsMax` +
    /// `pushReadAheadObjects` objects in memory at once (640 MiB at this size), and Swift's
    /// s3api refuses single PUTs over 5 GiB.
    public static let objectSizeMax: UInt64 = 64 << 20
    /// Requests one remote client has in flight at once: 8 parallel PUTs reached the store's
    /// ceiling in NOTES.md's measurements; more only queue in the proxy.
    public static let objectStoreParallelRequestsMax = 8
    /// Objects a push reads ahead of its uploads: the next objects are read from the pool while
    /// every upload thread is busy, so a thread that finishes finds one ready to send at once.
    /// Two cover the reading of one object (a few milliseconds from the page cache) with margin.
    public static let pushReadAheadObjects = 2
    /// Keys of a listing a push reads per object it pushes before it stops listing and asks the
    /// store object by object (HEAD) instead. A listing page of 1000 keys costs the store about
    /// one request, like one HEAD: at 64 keys per object, listing costs at most one request per
    /// 15 objects, and it spares a HEAD for every object the listing does not show.
    public static let pushListingKeysPerObject = 64
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
    /// Object buffers kept after their object is dropped, for the next object of the same size
    /// (ObjectBytes.swift): a fresh 8 MiB buffer per object had the kernel fault in and zero
    /// its pages, a quarter of the daemon's CPU in the profile of a boot-like read.
    public static let remoteBaseBuffersKept = remoteBaseCachedObjects
    /// Reads of never-fetched ranges of one remote base in progress at once (counting the new
    /// one) up to which a read is served from a ranged GET of its parts; past it, reads fetch
    /// whole objects. Two: a guest reading one or two requests at a time (a boot's first reads,
    /// a shell) waits for 256 KiB, not 8 MiB; a deeper queue means throughput counts, and whole
    /// objects (which the fills need anyway) give it with the fewest requests.
    public static let remoteBaseRangedReadsMax = 2
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
    /// Objects the daemon fetches at once to store what reads fetched parts of: 6 of the
    /// `objectStoreParallelRequestsMax` requests, so a booting guest's reads over many objects
    /// fetch them in parallel (one thread made a 64 MiB boot-like read 1.8x the direct fetch)
    /// while two requests stay free for the ranged GETs of new first reads.
    public static let fillParallelFetches = 6
    /// Reads whose fetched objects wait to be stored after their reply (besides the
    /// `fillParallelFetches` being stored); past it, reads store for themselves (back-pressure).
    /// Half the remote base's cache (`remoteBaseCachedObjects`): a burst of reads fetches whole
    /// objects into that cache, and a queued fill must still find its object there; with 64 a
    /// loaded machine let fills fall so far behind that 53 of 128 objects were fetched twice.
    public static let deferredFillsMax = remoteBaseCachedObjects / 2
}
