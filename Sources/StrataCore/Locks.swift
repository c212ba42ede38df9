// Blocking locks for the engine, which runs on caller threads. `RWLock` guards the pool's
// metadata (many concurrent lookups, one mutator); `StripedLocks` serialize writers of one
// logical chunk so a remap never races an in-place write of the same chunk.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Whether an engine call may wait: on a lock, on the device, or on a page-cache miss.
public enum Waiting: Sendable {
    /// It may: a thread of a pool kept for blocking work.
    case allowed
    /// It must not: an event loop. Locks are only tried, tree nodes come only from memory and
    /// file reads use RWF_NOWAIT; a call that would wait gives up, having changed nothing, and
    /// the caller runs it again on a thread that may wait.
    case never
}

/// A readers-writer lock (pthread_rwlock), writer-preferring so commits are not starved.
package final class RWLock: @unchecked Sendable {
    private let lock: UnsafeMutablePointer<pthread_rwlock_t>

    package init() {
        self.lock = .allocate(capacity: 1)
        var attributes = pthread_rwlockattr_t()
        pthread_rwlockattr_init(&attributes)
        #if canImport(Glibc)
        pthread_rwlockattr_setkind_np(&attributes, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP))
        #endif
        let result = pthread_rwlock_init(self.lock, &attributes)
        precondition(result == 0, "pthread_rwlock_init failed: \(result)")
    }

    deinit {
        pthread_rwlock_destroy(self.lock)
        self.lock.deallocate()
    }

    @inline(__always)
    package func withReadLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_rwlock_rdlock(self.lock)
        defer { pthread_rwlock_unlock(self.lock) }
        return try body()
    }

    @inline(__always)
    package func withWriteLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_rwlock_wrlock(self.lock)
        defer { pthread_rwlock_unlock(self.lock) }
        return try body()
    }

    /// Runs `body` holding the lock shared; with `.never`, only if that needs no wait, else
    /// returns nil without running it.
    @inline(__always)
    func withReadLock<T, E: Error>(_ waiting: Waiting, _ body: () throws(E) -> T) throws(E) -> T? {
        guard self.lockShared(waiting) else { return nil }
        defer { pthread_rwlock_unlock(self.lock) }
        return try body()
    }

    package func lockShared() { pthread_rwlock_rdlock(self.lock) }

    /// Takes the lock shared; with `.never`, only if that needs no wait. Returns whether it does.
    func lockShared(_ waiting: Waiting) -> Bool {
        guard waiting == .never else {
            pthread_rwlock_rdlock(self.lock)
            return true
        }
        return pthread_rwlock_tryrdlock(self.lock) == 0
    }

    package func lockExclusive() { pthread_rwlock_wrlock(self.lock) }
    package func unlock() { pthread_rwlock_unlock(self.lock) }
}

/// A plain mutex (pthread_mutex) for sections that may block on I/O, such as a commit.
final class BlockingMutex: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        self.mutex = .allocate(capacity: 1)
        let result = pthread_mutex_init(self.mutex, nil)
        precondition(result == 0, "pthread_mutex_init failed: \(result)")
    }

    deinit {
        pthread_mutex_destroy(self.mutex)
        self.mutex.deallocate()
    }

    @inline(__always)
    func withLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_mutex_lock(self.mutex)
        defer { pthread_mutex_unlock(self.mutex) }
        return try body()
    }

    /// Runs `body` holding the mutex; with `.never`, only if that needs no wait, else returns
    /// nil without running it.
    @inline(__always)
    func withLock<T, E: Error>(_ waiting: Waiting, _ body: () throws(E) -> T) throws(E) -> T? {
        if waiting == .never {
            guard pthread_mutex_trylock(self.mutex) == 0 else { return nil }
        } else {
            pthread_mutex_lock(self.mutex)
        }
        defer { pthread_mutex_unlock(self.mutex) }
        return try body()
    }

    func lock() { pthread_mutex_lock(self.mutex) }
    func unlock() { pthread_mutex_unlock(self.mutex) }
}

/// A fixed array of mutexes addressed by a hash of (volume id, chunk index).
package final class StripedLocks: @unchecked Sendable {
    private let stripes: [BlockingMutex]

    package init(count: Int) {
        precondition(count > 0, "striped locks need at least one stripe")
        self.stripes = (0..<count).map { _ in BlockingMutex() }
    }

    @inline(__always)
    private func stripe(volume: UInt64, chunk: UInt64) -> Int {
        var hash = volume &* 0x9E37_79B9_7F4A_7C15 ^ chunk
        hash = (hash ^ (hash >> 29)) &* 0xBF58_476D_1CE4_E5B9
        return Int((hash ^ (hash >> 32)) % UInt64(self.stripes.count))
    }

    @inline(__always)
    func withLock<T, E: Error>(volume: UInt64, chunk: UInt64, _ body: () throws(E) -> T) throws(E) -> T {
        try self.stripes[self.stripe(volume: volume, chunk: chunk)].withLock(body)
    }

    /// Holds the stripes of every chunk in `chunks` at once, taken in ascending stripe order
    /// (the one order every multi-stripe holder uses, so two never deadlock).
    package func withLocks<T, E: Error>(volume: UInt64, chunks: Range<UInt64>, _ body: () throws(E) -> T) throws(E) -> T {
        try self.withLocks(chunks.map { (volume, $0) }, body)
    }

    /// Holds the stripes of every (volume, chunk) in `keys` at once, in ascending stripe order.
    package func withLocks<T, E: Error>(_ keys: [(volume: UInt64, chunk: UInt64)], _ body: () throws(E) -> T) throws(E) -> T {
        let indexes = Set(keys.map { self.stripe(volume: $0.volume, chunk: $0.chunk) }).sorted()
        for index in indexes { self.stripes[index].lock() }
        defer { for index in indexes.reversed() { self.stripes[index].unlock() } }
        return try body()
    }
}
