// The connection handler's negotiation through `EmbeddedChannel`: every option is handled on
// the engine workers (export lookups take the pool's locks, which an event loop must never wait
// for), one at a time, and answered in order; workers that refuse work (a daemon shutting down)
// close the connection rather than answer from the event loop.

import Logging
import NIOCore
import NIOEmbedded
import StrataCore
import StrataFrontEnd
import StrataTesting
import Testing

@testable import StrataNBD

/// A pool on a simulated device with one 1 MiB volume, `vm1`: what the handler tests serve.
func makeHandlerTestPool() throws -> Pool {
    let (_, pool) = try SimDevice.formattedPool(metadataPages: 512, dataBytes: 96 * 4096)
    try pool.createVolume("vm1", size: 1 << 20)
    return pool
}

@Suite struct NBDConnectionHandlerTests {
    let pool: Pool

    init() throws {
        self.pool = try makeHandlerTestPool()
    }

    func server(workers: InPlaceWorkers) throws -> EmbeddedChannel {
        let handler = NBDConnectionHandler(
            pool: self.pool, catalog: PoolCatalog(pool: self.pool), workers: workers, registry: ConnectionRegistry(),
            tls: nil, logger: Logger(label: "test"))
        let channel = EmbeddedChannel(handler: handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 10809)).wait()
        var greeting = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(greeting.readInteger(as: UInt64.self) == NBD.initMagic)
        return channel
    }

    /// Client flags, then `options` in one write; every option reply that came back.
    func negotiate(_ channel: EmbeddedChannel, _ options: [ByteBuffer]) throws -> [(UInt32, UInt32, ByteBuffer)] {
        var hello = ByteBuffer()
        hello.writeInteger(NBD.clientFlagFixedNewstyle | NBD.clientFlagNoZeroes)
        for var option in options { hello.writeBuffer(&option) }
        try channel.writeInbound(hello)
        var all = ByteBuffer()
        while var piece = try channel.readOutbound(as: ByteBuffer.self) { all.writeBuffer(&piece) }
        return replies(all)
    }

    @Test func optionsRunOnTheWorkersInOrder() throws {
        let workers = InPlaceWorkers()
        let channel = try self.server(workers: workers)
        // Made after the connection: LIST asks the pool, so it is listed.
        try self.pool.createVolume("vm2", size: 1 << 20)
        let answers = try self.negotiate(
            channel, [option(NBD.Option.list.rawValue), option(NBD.Option.info.rawValue, infoData("vm2", []))])
        #expect(workers.items == 2, "one work item per option")
        let server = NBD.OptionReply.server.rawValue
        let names = answers.filter { $0.1 == server }.map { reply -> String in
            var data = reply.2
            let length = Int(data.readInteger(as: UInt32.self) ?? 0)
            return data.readString(length: length) ?? ""
        }
        #expect(names == ["vm1", "vm2"])
        let list = NBD.Option.list.rawValue
        let info = NBD.Option.info.rawValue
        // LIST's two names and ACK, then INFO's information replies and ACK.
        #expect(answers.map(\.0).prefix(3) == [list, list, list])
        #expect(answers.count >= 5 && answers.dropFirst(3).allSatisfy { $0.0 == info })
        #expect(answers.last?.1 == NBD.OptionReply.ack.rawValue)
        #expect(channel.isActive)
    }

    @Test func refusedOptionWorkClosesTheConnection() throws {
        let workers = InPlaceWorkers(stopped: true)
        let channel = try self.server(workers: workers)
        let answers = try self.negotiate(channel, [option(NBD.Option.list.rawValue)])
        #expect(answers.isEmpty)
        #expect(workers.items == 1)
        #expect(!channel.isActive)
    }
}
