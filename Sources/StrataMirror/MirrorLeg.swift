// A mirror leg: where a mirror keeps its second copy of a volume. The mirror (`MirroredVolume`)
// talks to a leg only through this protocol, so a leg in a second pool on this host
// (`LocalPoolLeg`) and a leg on another daemon (over the replication transport) are two
// implementations of one contract:
//
// - `write`, `zero`: apply a change to the leg's copy; returning means the leg holds it (in its
//   memory at least), so the change can be acknowledged once the volume holds it too.
// - `flush`: everything applied before the call is durable on the leg.
// - `read`: the leg's copy, for verification and for the copy's own readers.
// - split points (`createSplitPoint`, `deleteSplitPoint`, `splitPoints`, `changes(since:)`): a
//   leg keeps a hidden snapshot paired with each of the volume's, so after a crash or while
//   detached the blocks the leg's copy changed since the pair (writes the volume never
//   acknowledged, or a writable detached copy's own writes) are found from the leg's own
//   copy-on-write metadata, as the volume's are (docs/MIRROR.md, "Change tracking").
// - `detach`, `attach`: the leg becomes a point-in-time copy of its own, or the mirror's again
//   (a remote leg renames its copy and sets its read-only flag; a local leg's copy is exported
//   under the names the mirror gives it, so it has nothing to do).
// - `release`: the mirror is removed; the leg's copy stays as an ordinary volume.
// - `close`: commits and stops using the leg; its pool lock goes with the last reference, so the
//   mirror drops its reference right after.
//
// Every call may block (disk or network); the mirror bounds each with its timeout
// (`LegCall.run`) and treats a failure or a timeout as the leg going degraded.

import StrataCore

/// Where a mirror keeps its second copy of a volume.
public protocol MirrorLeg: AnyObject, Sendable {
    /// Where the leg is, for status and errors: `pool DIR` or `HOST:PORT`.
    var location: String { get }
    /// Writes `bytes` at `offset` of the leg's copy.
    func write(at offset: UInt64, _ bytes: [UInt8]) throws(StrataError)
    /// Makes `length` bytes at `offset` read as zeros; `trim` lets whole chunks be unmapped.
    func zero(at offset: UInt64, length: UInt64, trim: Bool) throws(StrataError)
    /// Makes every change applied before the call durable.
    func flush() throws(StrataError)
    /// Reads `count` bytes at `offset` of the leg's copy.
    func read(at offset: UInt64, count: Int) throws(StrataError) -> [UInt8]
    /// The size of the leg's copy in bytes.
    func size() throws(StrataError) -> UInt64
    /// Takes the hidden split point `name` of the leg's copy.
    func createSplitPoint(_ name: String) throws(StrataError)
    /// Deletes the split point `name`; a missing one is not an error.
    func deleteSplitPoint(_ name: String) throws(StrataError)
    /// The names of the leg copy's split points.
    func splitPoints() throws(StrataError) -> [String]
    /// The extents in which the leg's copy differs from its split point `name`.
    func changes(since name: String) throws(StrataError) -> [DiffExtent]
    /// Commits the leg's own pool if anything changed (its commit timer).
    func commitIfNeeded() throws(StrataError)
    /// After the detach's split point: the copy is one of its own, named `name`, writable if asked.
    func detach(as name: String?, writable: Bool) throws(StrataError)
    /// Before an attach's resync: the copy is the mirror's again.
    func attach() throws(StrataError)
    /// Forgets the mirror (`mirror remove`): the leg's copy stays, an ordinary volume of its own.
    func release() throws(StrataError)
    /// Releases the leg.
    func close()
}

extension MirrorLeg {
    public func detach(as name: String?, writable: Bool) throws(StrataError) {}
    public func attach() throws(StrataError) {}
}
