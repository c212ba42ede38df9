// How a front end splits the requests of one pass into work items for the engine workers: a
// lane per `Lanes.bytesEach` bytes of data, at most `Lanes.most`, the requests dealt round-robin
// so that each lane keeps their order. Small requests share one lane: at depth 32 a thread
// wake-up costs more than 4 KiB of engine work, and one worker running them in turn beside the
// event loop keeps both cores busy. Large ones spread, so a pass of 1 MiB requests still runs
// in parallel (bench/README.md, "Lanes by bytes", has the figures). A read that reached the
// workers counts as a lane's worth whatever its size: it went there because it would have
// waited, most likely on the disk, and reads in parallel are what a device's queue wants.

public enum Lanes {
    public static let most = 4
    public static let bytesEach = 256 << 10

    /// Lanes for `requests` requests of `weight` in all (the sum of their `weight(bytes:read:)`).
    public static func count(requests: Int, weight: Int) -> Int {
        min(requests, Self.most, max(1, weight / Self.bytesEach))
    }

    /// What a request of `bytes` weighs in `count(requests:weight:)`.
    public static func weight(bytes: Int, read: Bool) -> Int {
        read ? max(bytes, Self.bytesEach) : bytes
    }
}

extension Array {
    /// The elements dealt round-robin into at most `hands` arrays (as many as there are
    /// elements, when fewer), each in the order the elements had here.
    public func dealt(into hands: Int) -> [[Element]] {
        let count = Swift.min(self.count, hands)
        if count == 1 { return [self] }
        return (0..<count).map { hand in stride(from: hand, to: self.count, by: count).map { self[$0] } }
    }
}
