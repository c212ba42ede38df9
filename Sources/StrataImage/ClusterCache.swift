// A bounded cache of decoded clusters (qcow2 L2 tables, inflated compressed clusters), keyed
// by host offset and shared by every thread reading the image.
//
// Eviction is CLOCK: each slot has a referenced bit set on every hit; an insert that needs
// room sweeps the hand, clearing bits, and evicts the first slot found clear. That keeps hot
// tables (a guest's working set) and drops one-pass scans, with O(1) work per hit.
//
// Invariants: the mutex is held only for the dictionary and slot updates, never across I/O:
// a miss is read and decoded outside it, then inserted (two threads that miss together both
// decode, and the second insert finds the key present and keeps the first). The cached values
// are immutable arrays, so handing one out under the lock is a reference-count increment.
// `bytes` never exceeds `bytesMax` after an insert returns.

import StrataCore
import Synchronization

/// A bounded, thread-safe CLOCK cache from host offsets to immutable values.
final class ClusterCache<Value: Sendable>: Sendable {
    private struct Slot {
        var key: UInt64
        var value: Value
        var cost: Int
        var referenced: Bool
    }

    private struct State {
        var slots: [Slot?] = []
        var index: [UInt64: Int] = [:]
        var free: [Int] = []
        var hand = 0
        var bytes = 0
    }

    private let state = Mutex(State())
    private let bytesMax: Int

    /// - Parameter bytesMax: the most the cached values may cost together.
    init(bytesMax: Int) {
        precondition(bytesMax > 0, "cluster cache: bytesMax must be positive")
        self.bytesMax = bytesMax
    }

    /// The cached value for `key`, marking it recently used; with `.never`, nil also when the
    /// cache is busy.
    func lookup(_ key: UInt64, _ waiting: Waiting = .allowed) -> Value? {
        guard waiting == .never else { return self.state.withLock { Self.hit(&$0, key) } }
        return self.state.withLockIfAvailable { Self.hit(&$0, key) } ?? nil
    }

    private static func hit(_ state: inout State, _ key: UInt64) -> Value? {
        guard let slot = state.index[key] else { return nil }
        state.slots[slot]!.referenced = true
        return state.slots[slot]!.value
    }

    /// Caches `value` under `key` at `cost` bytes, evicting until it fits. A value costing more
    /// than the whole cache is not kept.
    func insert(_ key: UInt64, _ value: Value, cost: Int) {
        guard cost <= self.bytesMax else { return }
        self.state.withLock { state in
            guard state.index[key] == nil else { return }
            while state.bytes + cost > self.bytesMax {
                Self.evictOne(&state)
            }
            let slot = Slot(key: key, value: value, cost: cost, referenced: false)
            let position: Int
            if let reused = state.free.popLast() {
                state.slots[reused] = slot
                position = reused
            } else {
                state.slots.append(slot)
                position = state.slots.count - 1
            }
            state.index[key] = position
            state.bytes += cost
        }
    }

    /// Advances the hand to the first unreferenced slot and drops it.
    /// - Precondition: at least one slot is occupied (the caller is over budget).
    private static func evictOne(_ state: inout State) {
        precondition(!state.index.isEmpty, "cluster cache: over budget with nothing cached")
        while true {
            if state.hand >= state.slots.count { state.hand = 0 }
            let position = state.hand
            state.hand += 1
            guard let slot = state.slots[position] else { continue }
            if slot.referenced {
                state.slots[position]!.referenced = false
                continue
            }
            state.slots[position] = nil
            state.index[slot.key] = nil
            state.free.append(position)
            state.bytes -= slot.cost
            return
        }
    }
}
