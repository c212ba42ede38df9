// Objects a daemon serves from pools other than its own, by export name: a mirror leg's copy
// (`VOL@mirror-LEG`, or the name a detached copy was given) lives in the leg's pool, which the
// same daemon holds open. The front ends ask this before their own pool, so a leg's copy is
// served over NBD like any snapshot, reads from its own pool and flushes that pool.

/// Exports served from another pool.
public protocol ForeignExports: Sendable {
    /// Every foreign export's name, sorted.
    func foreignNames() -> [String]
    /// The pool and handle behind export `name`, or nil when `name` is not a foreign export.
    func foreign(_ name: String) -> (pool: Pool, handle: VolumeHandle)?
}
