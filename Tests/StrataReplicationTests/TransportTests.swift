// The transport on its own: `TransportReader` and `BytePipe` carry every byte in order, whatever
// the write sizes, segments and delays, and stop exactly where the message or the stream ends;
// a listener's `close` cuts its connections and ends `serve`; on real sockets (NIOTransport) a
// silent peer ends in a "timed out" error and an unused port in a refusal naming the address;
// `send` from many threads at once delivers every record, each thread's in its order, on both
// transports.

import Foundation
import NIOCore
import NIOPosix
@testable import StrataCore
@testable import StrataReplication
import StrataTesting
import Synchronization
import Testing

@Suite struct TransportTests {
    @Test(arguments: SimSeeds.list(count: 3, salt: 0x7A45_0001))
    func aLineThenAStreamArriveWholeThroughAPipe(seed: UInt64) async throws {
        print("TransportTests: seed=\(seed) (replay: STRATA_SEED=\(seed) swift test --filter TransportTests)")
        var faults = SimFaults()
        faults.delayMax = .microseconds(300)
        faults.windowBytes = 8 << 10
        faults.readPauseMax = .microseconds(100)
        // A timeout far beyond any stall of a loaded machine: this test is about bytes, not timeouts.
        let network = SimNetwork(seed: seed, faults: faults, timeout: .seconds(3600))
        var random = SeededRandom(seed: seed)
        let payload = random.bytes(300 << 10 + random.next(below: 4096))
        let sizes = (0..<64).map { _ in 1 + random.next(below: 40 << 10) }
        let threads = NIOThreadPool(numberOfThreads: 2)
        threads.start()
        defer { threads.shutdownGracefully { _ in } }
        let listener = try await network.transport(host: "b").listen(on: TransportAddress(host: "b", port: 0))
        let received = Shared<(line: [UInt8], word: [UInt8], stream: [UInt8])?>(nil)
        await withDiscardingTaskGroup { group in
            group.addTask {
                await listener.serve(limit: 1) { connection in
                    let reader = TransportReader(connection)
                    let pipe = BytePipe(capacity: 16 << 10)
                    let outcome: Result<([UInt8], [UInt8], [UInt8]), StrataError> = await withDiscardingTaskGroup { group in
                        do throws(StrataError) {
                            let line = try await reader.readLine(limit: 100, what: "the line")
                            let word = try await reader.read(count: 4, what: "the word")
                            group.addTask { await pipe.fill(from: reader) }
                            let stream = try await threads.engine { () throws(StrataError) in
                                var bytes: [UInt8] = []
                                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 7000, alignment: 1)
                                defer { buffer.deallocate() }
                                while true {
                                    let count = try pipe.read(into: buffer)
                                    if count == 0 { return bytes }
                                    bytes += buffer[..<count]
                                }
                            }
                            return .success((line, word, stream))
                        } catch {
                            pipe.fail(error)
                            return .failure(error)
                        }
                    }
                    if case .success(let value) = outcome { received.value.withLock { $0 = value } }
                }
            }
            let sent = await Result { () async throws(StrataError) in
                try await network.transport(host: "a").withConnection(to: listener.address) { connection async throws(StrataError) in
                    // The line, the word and the stream's first bytes in one write: the reader must not read past them.
                    try await connection.write(Array("hello\n".utf8) + [1, 2, 3, 4] + payload.prefix(10))
                    let pipe = BytePipe(capacity: 16 << 10)
                    await withDiscardingTaskGroup { group in
                        group.addTask { try? await pipe.drain(to: connection) }
                        let rest = Array(payload.dropFirst(10))
                        _ = await threads.result { () throws(StrataError) in
                            var offset = 0
                            var write = 0
                            while offset < rest.count {
                                let end = min(offset + sizes[write % sizes.count], rest.count)
                                try pipe.write(Array(rest[offset..<end]))
                                offset = end
                                write += 1
                            }
                            pipe.finish()
                        }
                    }
                }
            }
            #expect(throws: Never.self, "seed=\(seed)") { try sent.get() }
            while received.value.withLock({ $0 == nil }) { try? await Task.sleep(for: .milliseconds(5)) }
            listener.close()
        }
        let got = try #require(received.value.withLock { $0 })
        #expect(got.line == Array("hello".utf8), "seed=\(seed)")
        #expect(got.word == [1, 2, 3, 4], "seed=\(seed)")
        #expect(got.stream == payload, "seed=\(seed): \(got.stream.count) of \(payload.count) bytes, \(network.trace.suffix(5))")
    }

    @Test func closingAListenerCutsItsConnectionsAndEndsServe() async throws {
        let network = SimNetwork(seed: 1, timeout: .seconds(3600))
        let listener = try await network.transport(host: "b").listen(on: TransportAddress(host: "b", port: 0))
        let failure = Shared<StrataError?>(nil)
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask {
                await listener.serve(limit: 4) { connection in
                    do throws(StrataError) {
                        _ = try await connection.write([7])
                        _ = try await connection.read()
                    } catch {
                        failure.value.withLock { $0 = error }
                    }
                }
            }
            try await network.transport(host: "a").withConnection(to: listener.address) { connection async throws(StrataError) in
                let first = try await connection.read()
                #expect(first.map { Array($0.readableBytesView) } == [7])
                listener.close()
                await #expect(throws: StrataError.self) { _ = try await connection.read() }
            }
        }
        #expect(failure.value.withLock { $0 }?.message.contains("connection reset") == true)
        await #expect(throws: StrataError.self) {
            try await network.transport(host: "a").withConnection(to: listener.address) { _ async throws(StrataError) in }
        }
        #expect(network.counters.refused == 1)
    }

    @Test func aSilentPeerTimesOutAndAnUnusedPortIsRefusedOnRealSockets() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let transport = NIOTransport(group: group, timeout: .milliseconds(300))
        let listener = try await transport.listen(on: TransportAddress(host: "127.0.0.1", port: 0))
        let serverError = Shared<StrataError?>(nil)
        await withDiscardingTaskGroup { tasks in
            tasks.addTask {
                await listener.serve(limit: 1) { connection in
                    // Says nothing: the client's read must time out, then this read sees the close.
                    do throws(StrataError) {
                        while try await connection.read() != nil {}
                    } catch {
                        serverError.value.withLock { $0 = error }
                    }
                }
            }
            let outcome = await Result { () async throws(StrataError) in
                try await transport.withConnection(to: listener.address) { connection async throws(StrataError) in
                    _ = try await connection.read()
                }
            }
            if case .failure(let error) = outcome {
                #expect(error.message.contains("timed out"), "\(error.message)")
            } else {
                Issue.record("a read from a silent peer returned")
            }
            listener.close()
        }
        let port = listener.address.port
        let refused = await Result { () async throws(StrataError) in
            try await transport.withConnection(to: TransportAddress(host: "127.0.0.1", port: port)) { _ async throws(StrataError) in }
        }
        if case .failure(let error) = refused {
            #expect(error.message.contains("cannot connect to 127.0.0.1:\(port)"), "\(error.message)")
        } else {
            Issue.record("connected to a closed port")
        }
        try await group.shutdownGracefully()
    }

    /// 8 threads each `send` 500 numbered 16-byte records (thread, sequence) on one connection
    /// at once; the peer must read all 4000, each thread's in the order it sent them.
    static func sendFromManyThreads(_ transport: any Transport, _ server: any Transport, host: String) async throws {
        let threads = 8
        let records = 500
        let listener = try await server.listen(on: TransportAddress(host: host, port: 0))
        let received = Shared<[UInt8]>([])
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask {
                await listener.serve(limit: 1) { connection in
                    var bytes: [UInt8] = []
                    while bytes.count < threads * records * 16, let more = try? await connection.read() {
                        bytes += more.readableBytesView
                    }
                    received.value.withLock { $0 = bytes }
                }
            }
            try await transport.withConnection(to: listener.address) { connection async throws(StrataError) in
                DispatchQueue.concurrentPerform(iterations: threads) { thread in
                    for sequence in 0..<records {
                        var record = ByteBuffer()
                        record.writeInteger(UInt64(thread))
                        record.writeInteger(UInt64(sequence))
                        connection.send(record)
                    }
                }
                // Holds the connection open until the peer has read everything (at most a minute:
                // closing it then lets the peer stop short, and the count below fails).
                let deadline = ContinuousClock.now + .seconds(60)
                while received.value.withLock({ $0.isEmpty }), ContinuousClock.now < deadline {
                    try? await Task.sleep(for: .milliseconds(5))
                }
            }
            listener.close()
        }
        let bytes = received.value.withLock { $0 }
        #expect(bytes.count == threads * records * 16)
        var next = [UInt64](repeating: 0, count: threads)
        var buffer = ByteBuffer(bytes: bytes)
        while let thread = buffer.readInteger(as: UInt64.self), let sequence = buffer.readInteger(as: UInt64.self) {
            guard thread < UInt64(threads), sequence == next[Int(thread)] else {
                Issue.record("record (\(thread), \(sequence)) out of order; expected sequence \(thread < UInt64(threads) ? next[Int(thread)] : 0)")
                return
            }
            next[Int(thread)] += 1
        }
        #expect(next == [UInt64](repeating: UInt64(records), count: threads))
    }

    @Test func sendFromManyThreadsKeepsEachThreadsOrderOnRealSockets() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let transport = NIOTransport(group: group, timeout: .seconds(3600))
        try await Self.sendFromManyThreads(transport, transport, host: "127.0.0.1")
        try await group.shutdownGracefully()
    }

    @Test func sendFromManyThreadsKeepsEachThreadsOrderOnTheSimulatedNetwork() async throws {
        var faults = SimFaults()
        faults.delayMax = .microseconds(200)
        let network = SimNetwork(seed: 7, faults: faults, timeout: .seconds(3600))
        try await Self.sendFromManyThreads(network.transport(host: "a"), network.transport(host: "b"), host: "b")
    }
}

/// A value several tasks share, behind a lock.
final class Shared<Value: Sendable>: Sendable {
    let value: Mutex<Value>

    init(_ value: Value) { self.value = Mutex(value) }
}

extension Result where Failure == StrataError {
    /// The outcome of an async body with typed throws.
    init(_ body: () async throws(StrataError) -> Success) async {
        do throws(StrataError) {
            self = .success(try await body())
        } catch {
            self = .failure(error)
        }
    }
}

