// A simulated network for replication tests: the `Transport` contract without sockets, with the
// faults a real network has, drawn from a seed so a failure replays.
//
// - Delay: each write's bytes arrive after a random delay up to `delayMax`, in order (TCP keeps
//   order; only their timing varies).
// - Loss: TCP does not lose bytes silently, so loss shows as a reset (both ends fail) or a
//   truncation (the reader sees the stream end early after a random prefix, the writer fails).
// - Partitions: while the network is partitioned nothing is delivered and no connection is
//   made; a partition longer than the timeout fails both ends' reads and writes with "timed
//   out". `partitionAfterBytes` partitions it once a connection has carried that many bytes one
//   way (mid-stream); tests heal it with `heal`.
// - Reordering of connection establishment: each connect waits a random time up to
//   `connectDelayMax` before it reaches the listener, so concurrent connects arrive in another order.
// - Slow readers: a small `windowBytes` makes writers wait for the reader; `readPauseMax` makes
//   each read pause first.
//
// Replay: every random draw comes from a generator seeded from (seed, connection number,
// direction, side), so the same seed makes the same decisions for the same sequence of
// connections and writes. The network runs in real time (it polls its queues every millisecond),
// so with several jobs at once the order of their connections can differ between runs; one
// job's connections, and every decision within a connection, replay exactly. `trace` lists the
// faults injected, for a failing test to print beside its seed.

import Foundation
import NIOCore
import StrataCore
import StrataReplication
import Synchronization

/// Which faults a `SimNetwork` injects, and how often.
public struct SimFaults: Sendable {
    /// Longest delay before a write's bytes can be read.
    public var delayMax: Duration = .zero
    /// Chance per write, in millionths, that the connection resets.
    public var resetsPerMillion = 0
    /// Chance per write, in millionths, that the writer's side is cut after a random prefix.
    public var truncationsPerMillion = 0
    /// Longest wait of a connect before it reaches the listener.
    public var connectDelayMax: Duration = .zero
    /// Bytes in flight one way before the writer waits for the reader.
    public var windowBytes = 256 << 10
    /// Longest pause of each read before it takes bytes.
    public var readPauseMax: Duration = .zero
    /// Partitions the network (once) when a connection has carried this many bytes one way.
    public var partitionAfterBytes: Int?

    /// Largest piece a write travels in (a write larger than the window waits part way).
    public static let segmentBytes = 16 << 10

    public init() {}
}

/// A seeded, simulated network of `SimTransport`s. See the file's note.
public final class SimNetwork: Sendable {
    /// What the network did, for tests to assert that a fault really happened.
    public struct Counters: Sendable, Equatable {
        public var connections = 0
        public var refused = 0
        public var resets = 0
        public var truncations = 0
        public var partitions = 0
        public var timeouts = 0
    }

    struct State {
        var listeners: [Int: SimListener] = [:]
        var nextPort = 20_000
        var partitioned = false
        var partitionArmed = true
        var serial: UInt64 = 0
        var counters = Counters()
        var trace: [String] = []
    }

    public let seed: UInt64
    public let faults: SimFaults
    /// How long a connection may move no byte, or a connect wait on a partition, before it fails.
    public let timeout: Duration
    let state = Mutex(State())

    public init(seed: UInt64, faults: SimFaults = SimFaults(), timeout: Duration = .seconds(2)) {
        self.seed = seed
        self.faults = faults
        self.timeout = timeout
    }

    /// The transport of one host on this network.
    public func transport(host: String) -> SimTransport { SimTransport(network: self, host: host) }

    /// Stops all delivery and every new connection until `heal`.
    public func partition() {
        self.state.withLock { state in
            guard !state.partitioned else { return }
            state.partitioned = true
            state.counters.partitions += 1
            state.trace.append("partition")
        }
    }

    /// Ends a partition.
    public func heal() {
        self.state.withLock { state in
            state.partitioned = false
            state.trace.append("heal")
        }
    }

    public var isPartitioned: Bool { self.state.withLock { $0.partitioned } }
    public var counters: Counters { self.state.withLock { $0.counters } }
    /// The faults injected so far, oldest first.
    public var trace: [String] { self.state.withLock { $0.trace } }

    func record(_ event: String, _ count: (inout Counters) -> Void) {
        self.state.withLock { state in
            count(&state.counters)
            state.trace.append(event)
        }
    }

    /// A generator for one (connection, stream) pair of the seed.
    func random(serial: UInt64, stream: UInt64) -> SeededRandom {
        SeededRandom(seed: self.seed ^ (serial &* 0x9E37_79B9_7F4A_7C15) ^ (stream &* 0xD1B5_4A32_D192_ED03))
    }

    func draw(_ maximum: Duration, _ random: inout SeededRandom) -> Duration {
        let nanos = maximum.components.seconds * 1_000_000_000 + maximum.components.attoseconds / 1_000_000_000
        guard nanos > 0 else { return .zero }
        return .nanoseconds(Int64(random.next() % UInt64(nanos + 1)))
    }
}

/// One host's view of a `SimNetwork`.
public struct SimTransport: Transport {
    let network: SimNetwork
    let host: String

    public func withConnection<Value: Sendable>(
        to address: TransportAddress, _ body: (any TransportConnection) async throws(StrataError) -> Value
    ) async throws(StrataError) -> Value {
        let network = self.network
        let (serial, local) = network.state.withLock { state in
            state.serial += 1
            state.counters.connections += 1
            return (state.serial, 40_000 + Int(state.serial % 20_000))
        }
        var random = network.random(serial: serial, stream: 0)
        try await SimSleep.sleep(network.draw(network.faults.connectDelayMax, &random), peer: address.description)
        let deadline = ContinuousClock.now + network.timeout
        while network.isPartitioned {
            guard ContinuousClock.now < deadline else {
                network.record("connection \(serial) to \(address): partitioned, connect timed out") { $0.timeouts += 1 }
                throw StrataError(.io, "replicate: cannot connect to \(address) (timed out: the network is partitioned)")
            }
            try await SimSleep.sleep(.milliseconds(1), peer: address.description)
        }
        let forward = SimDirection(random: network.random(serial: serial, stream: 1))
        let backward = SimDirection(random: network.random(serial: serial, stream: 2))
        let client = SimConnection(
            network: network, serial: serial, peer: address.description, incoming: backward, outgoing: forward,
            reader: network.random(serial: serial, stream: 3))
        let server = SimConnection(
            network: network, serial: serial, peer: "\(self.host):\(local)", incoming: forward, outgoing: backward,
            reader: network.random(serial: serial, stream: 4))
        let listener = network.state.withLock { $0.listeners[address.port] }
        guard let listener, listener.address.host == address.host, listener.enqueue(server) else {
            network.record("connection \(serial) to \(address): refused") { $0.refused += 1 }
            throw StrataError(.io, "replicate: cannot connect to \(address) (connection refused)")
        }
        do {
            let result = try await body(client)
            client.close()
            return result
        } catch {
            client.close()
            throw error
        }
    }

    public func listen(on address: TransportAddress) async throws(StrataError) -> any TransportListener {
        let network = self.network
        let listener = network.state.withLock { state -> SimListener? in
            let port = address.port == 0 ? state.nextPort : address.port
            guard state.listeners[port] == nil else { return nil }
            if address.port == 0 { state.nextPort += 1 }
            let listener = SimListener(network: network, address: TransportAddress(host: address.host, port: port))
            state.listeners[port] = listener
            return listener
        }
        guard let listener else {
            throw StrataError(.io, "replication: cannot listen on \(address) (address in use); is another server using it?")
        }
        return listener
    }
}

/// Sleeps that end with an `.io` error when the task is cancelled.
enum SimSleep {
    static func sleep(_ duration: Duration, peer: String) async throws(StrataError) {
        guard duration > .zero else {
            if Task.isCancelled { throw StrataError(.io, "replication: the transfer with \(peer) was stopped") }
            return
        }
        do {
            try await Task.sleep(for: duration)
        } catch {
            throw StrataError(.io, "replication: the transfer with \(peer) was stopped")
        }
    }
}

/// One way of a connection: bytes in flight, in order, each with the time it may be read.
final class SimDirection: Sendable {
    struct State {
        var segments: [(at: ContinuousClock.Instant, bytes: ByteBuffer)] = []
        var buffered = 0
        var carried = 0
        var ended = false
        var reset = false
    }

    let state = Mutex(State())
    /// The writer's draws (delays and faults).
    let random: Mutex<SeededRandom>

    init(random: SeededRandom) { self.random = Mutex(random) }
}

/// One end of a simulated connection.
final class SimConnection: TransportConnection {
    let network: SimNetwork
    let serial: UInt64
    let peer: String
    let incoming: SimDirection
    let outgoing: SimDirection
    let reader: Mutex<SeededRandom>

    init(
        network: SimNetwork, serial: UInt64, peer: String, incoming: SimDirection, outgoing: SimDirection,
        reader: SeededRandom
    ) {
        self.network = network
        self.serial = serial
        self.peer = peer
        self.incoming = incoming
        self.outgoing = outgoing
        self.reader = Mutex(reader)
    }

    enum Delivery {
        case bytes(ByteBuffer)
        case end
        case reset
        case wait
    }

    func read() async throws(StrataError) -> ByteBuffer? {
        let pause = self.reader.withLock { self.network.draw(self.network.faults.readPauseMax, &$0) }
        try await SimSleep.sleep(pause, peer: self.peer)
        let deadline = ContinuousClock.now + self.network.timeout
        while true {
            let now = ContinuousClock.now
            let partitioned = self.network.isPartitioned
            let delivery = self.incoming.state.withLock { state -> Delivery in
                if state.reset { return .reset }
                if partitioned { return .wait }
                if let first = state.segments.first, first.at <= now {
                    state.segments.removeFirst()
                    state.buffered -= first.bytes.readableBytes
                    return .bytes(first.bytes)
                }
                return state.segments.isEmpty && state.ended ? .end : .wait
            }
            switch delivery {
            case .bytes(let bytes): return bytes
            case .end: return nil
            case .reset: throw self.resetError()
            case .wait: break
            }
            guard now < deadline else { throw self.timedOut("read") }
            try await SimSleep.sleep(.milliseconds(1), peer: self.peer)
        }
    }

    func write(_ bytes: ByteBuffer) async throws(StrataError) {
        if self.incoming.state.withLock({ $0.reset }) || self.outgoing.state.withLock({ $0.reset }) {
            throw self.resetError()
        }
        let faults = self.network.faults
        let (reset, cut, delay) = self.outgoing.random.withLock { random in
            let reset = Int(random.next() % 1_000_000) < faults.resetsPerMillion
            let truncate = Int(random.next() % 1_000_000) < faults.truncationsPerMillion
            // A prefix of 1 ..< count bytes: a cut always loses something and keeps something.
            let cut: Int? = truncate && bytes.readableBytes > 1 ? 1 + Int(random.next() % UInt64(bytes.readableBytes - 1)) : nil
            return (reset, cut, self.network.draw(faults.delayMax, &random))
        }
        if reset {
            self.cut()
            self.network.record("connection \(self.serial): reset by the network") { $0.resets += 1 }
            throw self.resetError()
        }
        var bytes = bytes
        if let cut { bytes = bytes.getSlice(at: bytes.readerIndex, length: cut)! }
        // In segments, as TCP sends: a partition or a full window stops a large write part way.
        while bytes.readableBytes > 0 {
            let segment = bytes.readSlice(length: min(bytes.readableBytes, SimFaults.segmentBytes))!
            try await self.send(segment, delay: delay, last: cut != nil && bytes.readableBytes == 0)
        }
        if let cut {
            self.network.record("connection \(self.serial): truncated after \(cut) bytes of a write") { $0.truncations += 1 }
            throw StrataError(.io, "replication: connection with \(self.peer) broke (cut by the network)")
        }
    }

    /// Queues one segment once the window has room; `last` ends this direction after it.
    private func send(_ segment: ByteBuffer, delay: Duration, last: Bool) async throws(StrataError) {
        let window = self.network.faults.windowBytes
        let deadline = ContinuousClock.now + self.network.timeout
        while true {
            let now = ContinuousClock.now
            let (taken, wasReset, carried) = self.outgoing.state.withLock { state in
                if state.reset { return (false, true, state.carried) }
                guard state.buffered < window else { return (false, false, state.carried) }
                let at = max(state.segments.last?.at ?? now, now + delay)
                state.segments.append((at, segment))
                state.buffered += segment.readableBytes
                state.carried += segment.readableBytes
                if last { state.ended = true }
                return (true, false, state.carried)
            }
            if wasReset { throw self.resetError() }
            if taken {
                self.partitionIfDue(carried: carried)
                return
            }
            guard now < deadline else { throw self.timedOut("write") }
            try await SimSleep.sleep(.milliseconds(1), peer: self.peer)
        }
    }

    /// Queues `bytes` at once, past the window (the sender bounds what it has in flight), with
    /// the write's delay and reset draws; dropped on a reset or closed connection.
    func send(_ bytes: ByteBuffer) {
        let faults = self.network.faults
        let (reset, delay) = self.outgoing.random.withLock { random in
            (Int(random.next() % 1_000_000) < faults.resetsPerMillion, self.network.draw(faults.delayMax, &random))
        }
        if reset {
            self.cut()
            self.network.record("connection \(self.serial): reset by the network") { $0.resets += 1 }
            return
        }
        guard !self.incoming.state.withLock({ $0.reset }) else { return }
        let carried = self.outgoing.state.withLock { state -> Int? in
            guard !state.reset, !state.ended else { return nil }
            let now = ContinuousClock.now
            state.segments.append((max(state.segments.last?.at ?? now, now + delay), bytes))
            state.buffered += bytes.readableBytes
            state.carried += bytes.readableBytes
            return state.carried
        }
        if let carried { self.partitionIfDue(carried: carried) }
    }

    private func partitionIfDue(carried: Int) {
        guard let after = self.network.faults.partitionAfterBytes, carried >= after else { return }
        let armed = self.network.state.withLock { state in
            defer { state.partitionArmed = false }
            return state.partitionArmed
        }
        if armed {
            self.network.record("connection \(self.serial): partition after \(carried) bytes") { _ in }
            self.network.partition()
        }
    }

    /// Ends this side's writing (the peer reads the rest, then the end).
    func close() {
        self.outgoing.state.withLock { $0.ended = true }
    }

    /// Resets both ways.
    func cut() {
        self.outgoing.state.withLock { $0.reset = true }
        self.incoming.state.withLock { $0.reset = true }
    }

    private func resetError() -> StrataError {
        StrataError(.io, "replication: connection with \(self.peer) broke (connection reset)")
    }

    private func timedOut(_ what: String) -> StrataError {
        self.network.record("connection \(self.serial): \(what) timed out") { $0.timeouts += 1 }
        return StrataError(
            .io,
            "replication: connection with \(self.peer) timed out: no byte moved for \(self.network.timeout) (the peer is gone or the network is partitioned)"
        )
    }
}

/// Connections arriving at one simulated address.
final class SimListener: TransportListener {
    let network: SimNetwork
    let address: TransportAddress
    let state = Mutex((closed: false, queue: [SimConnection](), open: [ObjectIdentifier: SimConnection]()))

    init(network: SimNetwork, address: TransportAddress) {
        self.network = network
        self.address = address
    }

    func enqueue(_ connection: SimConnection) -> Bool {
        self.state.withLock { state in
            guard !state.closed else { return false }
            state.queue.append(connection)
            return true
        }
    }

    func serve(limit: Int, _ handler: @escaping @Sendable (any TransportConnection) async -> Void) async {
        await withDiscardingTaskGroup { group in
            while let connection = await self.accept() {
                let key = ObjectIdentifier(connection)
                let admitted = self.state.withLock { state in
                    guard !state.closed, state.open.count < limit else { return false }
                    state.open[key] = connection
                    return true
                }
                guard admitted else {
                    connection.cut()
                    continue
                }
                group.addTask {
                    await handler(connection)
                    connection.close()
                    self.state.withLock { _ = $0.open.removeValue(forKey: key) }
                }
            }
        }
    }

    /// The next connection; nil once closed (or the task is cancelled).
    private func accept() async -> SimConnection? {
        while true {
            let next = self.state.withLock { state -> (closed: Bool, connection: SimConnection?) in
                if state.closed { return (true, nil) }
                return (false, state.queue.isEmpty ? nil : state.queue.removeFirst())
            }
            if next.closed { return nil }
            if let connection = next.connection { return connection }
            do {
                try await Task.sleep(for: .milliseconds(1))
            } catch {
                return nil
            }
        }
    }

    func close() {
        let cut = self.state.withLock { state in
            state.closed = true
            defer { state.queue.removeAll() }
            return state.queue + Array(state.open.values)
        }
        self.network.state.withLock { _ = $0.listeners.removeValue(forKey: self.address.port) }
        for connection in cut { connection.cut() }
    }
}
