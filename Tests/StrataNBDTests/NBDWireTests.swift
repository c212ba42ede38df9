// The NBD codec and negotiation state machine without sockets: decoders return nil on partial
// input at every split point, throw on invalid bytes, and the negotiation answers each option
// as proto.md says.

import NIOCore
import StrataCore
@testable import StrataNBD
import StrataTesting
import Testing

struct FakeCatalog: NBDExportCatalog {
    var names: [String: Bool] = ["vm1": false, "vm1@s1": true]

    func exports() -> [NBDExport] {
        self.names.keys.sorted().compactMap { try? self.export(named: $0) }
    }

    func export(named name: String) throws(StrataError) -> NBDExport {
        guard let readOnly = self.names[name] else {
            throw StrataError(.notFound, "open \(name): no such volume")
        }
        return NBDExport(
            name: name, description: "test \(name)", size: 1 << 20, readOnly: readOnly,
            handle: VolumeHandle(id: readOnly ? 2 : 1, name: name, readOnly: readOnly))
    }
}

func option(_ code: UInt32, _ data: [UInt8] = []) -> ByteBuffer {
    var buffer = ByteBuffer()
    buffer.writeInteger(NBD.optionMagic)
    buffer.writeInteger(code)
    buffer.writeInteger(UInt32(data.count))
    buffer.writeBytes(data)
    return buffer
}

func infoData(_ name: String, _ requests: [UInt16]) -> [UInt8] {
    var buffer = ByteBuffer()
    buffer.writeInteger(UInt32(name.utf8.count))
    buffer.writeString(name)
    buffer.writeInteger(UInt16(requests.count))
    for request in requests { buffer.writeInteger(request) }
    return Array(buffer.readableBytesView)
}

/// Splits option replies into (option, type, data).
func replies(_ buffer: ByteBuffer) -> [(UInt32, UInt32, ByteBuffer)] {
    var buffer = buffer
    var result: [(UInt32, UInt32, ByteBuffer)] = []
    while buffer.readableBytes >= 20 {
        let magic = buffer.readInteger(as: UInt64.self)!
        precondition(magic == NBD.optionReplyMagic, "bad reply magic")
        let option = buffer.readInteger(as: UInt32.self)!
        let type = buffer.readInteger(as: UInt32.self)!
        let length = buffer.readInteger(as: UInt32.self)!
        result.append((option, type, buffer.readSlice(length: Int(length))!))
    }
    return result
}

@Suite struct NBDWireTests {
    @Test func requestDecodingWaitsForEveryByteAtEverySplit() throws {
        var whole = ByteBuffer()
        whole.writeInteger(NBD.requestMagic)
        whole.writeInteger(NBD.CommandFlags.fua.rawValue)
        whole.writeInteger(NBD.Command.write.rawValue)
        whole.writeInteger(UInt64(0xABCD))
        whole.writeInteger(UInt64(4096))
        whole.writeInteger(UInt32(5))
        whole.writeBytes([1, 2, 3, 4, 5])
        for split in 0..<whole.readableBytes {
            var partial = whole.getSlice(at: 0, length: split)!
            #expect(try NBDWire.decodeRequest(&partial) == nil)
            #expect(partial.readableBytes == split, "a partial decode consumed bytes")
        }
        var full = whole
        let request = try #require(try NBDWire.decodeRequest(&full))
        #expect(request.cookie == 0xABCD)
        #expect(request.offset == 4096)
        #expect(request.flags == .fua)
        #expect(Array(request.payload.readableBytesView) == [1, 2, 3, 4, 5])
        #expect(full.readableBytes == 0)
        // Two requests coalesced decode one at a time.
        var twice = whole
        var copy = whole
        twice.writeBuffer(&copy)
        #expect(try NBDWire.decodeRequest(&twice) != nil)
        #expect(try NBDWire.decodeRequest(&twice) != nil)
        #expect(twice.readableBytes == 0)
    }

    @Test func invalidBytesThrowBeforeAllocating() {
        var badMagic = ByteBuffer(bytes: [0xDE, 0xAD, 0xBE, 0xEF])
        #expect(throws: NBDWireError.self) { try NBDWire.decodeRequest(&badMagic) }
        var huge = ByteBuffer()
        huge.writeInteger(NBD.requestMagic)
        huge.writeInteger(UInt16(0))
        huge.writeInteger(NBD.Command.write.rawValue)
        huge.writeInteger(UInt64(1))
        huge.writeInteger(UInt64(0))
        huge.writeInteger(UInt32(64 << 20))
        #expect(throws: NBDWireError.requestTooLarge(command: 1, length: 64 << 20, limit: 32 << 20)) {
            try NBDWire.decodeRequest(&huge)
        }
        var bigOption = ByteBuffer()
        bigOption.writeInteger(NBD.optionMagic)
        bigOption.writeInteger(UInt32(3))
        bigOption.writeInteger(UInt32(1 << 20))
        #expect(throws: NBDWireError.self) { try NBDWire.decodeOption(&bigOption) }
        var oldstyleClient = ByteBuffer(integer: UInt32(0))
        #expect(throws: NBDWireError.badClientFlags(0)) { try NBDWire.decodeClientFlags(&oldstyleClient) }
    }

    @Test func optionDecodingSplitsAndCoalesces() throws {
        let whole = option(NBD.Option.list.rawValue, [9, 8, 7])
        for split in 0..<whole.readableBytes {
            var partial = whole.getSlice(at: 0, length: split)!
            #expect(try NBDWire.decodeOption(&partial) == nil)
        }
        var full = whole
        let decoded = try #require(try NBDWire.decodeOption(&full))
        #expect(decoded.option == 3)
        #expect(Array(decoded.data.readableBytesView) == [9, 8, 7])
    }

    @Test func negotiationAnswersEachOption() throws {
        var negotiation = NBDNegotiation()
        let catalog = FakeCatalog()
        negotiation.clientFlags(NBD.clientFlagFixedNewstyle | NBD.clientFlagNoZeroes)
        var bytes = option(NBD.Option.list.rawValue)
        guard case .reply(let list) = negotiation.handle(try NBDWire.decodeOption(&bytes)!, catalog: catalog) else {
            Issue.record("LIST did not reply")
            return
        }
        let listed = replies(list)
        #expect(listed.map(\.1) == [NBD.OptionReply.server.rawValue, NBD.OptionReply.server.rawValue, NBD.OptionReply.ack.rawValue])
        // Unknown options: ERR_UNSUP, negotiation goes on.
        bytes = option(99)
        guard case .reply(let unsupported) = negotiation.handle(try NBDWire.decodeOption(&bytes)!, catalog: catalog) else {
            Issue.record("unknown option did not reply")
            return
        }
        #expect(replies(unsupported).first?.1 == NBD.OptionReply.errorUnsupported.rawValue)
        // Meta contexts need structured replies first.
        var query = ByteBuffer()
        query.writeInteger(UInt32(3))
        query.writeString("vm1")
        query.writeInteger(UInt32(1))
        query.writeInteger(UInt32(15))
        query.writeString("base:allocation")
        bytes = option(NBD.Option.setMetaContext.rawValue, Array(query.readableBytesView))
        guard case .reply(let early) = negotiation.handle(try NBDWire.decodeOption(&bytes)!, catalog: catalog) else { return }
        #expect(replies(early).first?.1 == NBD.OptionReply.errorInvalid.rawValue)
        bytes = option(NBD.Option.structuredReply.rawValue)
        _ = negotiation.handle(try NBDWire.decodeOption(&bytes)!, catalog: catalog)
        bytes = option(NBD.Option.setMetaContext.rawValue, Array(query.readableBytesView))
        guard case .reply(let set) = negotiation.handle(try NBDWire.decodeOption(&bytes)!, catalog: catalog) else { return }
        #expect(replies(set).map(\.1) == [NBD.OptionReply.metaContext.rawValue, NBD.OptionReply.ack.rawValue])
        #expect(negotiation.allocationContext(for: "vm1"))
        // INFO on an unknown export: ERR_UNKNOWN; GO on a snapshot: read-only flags, then start.
        bytes = option(NBD.Option.info.rawValue, infoData("nope", []))
        guard case .reply(let unknown) = negotiation.handle(try NBDWire.decodeOption(&bytes)!, catalog: catalog) else { return }
        #expect(replies(unknown).first?.1 == NBD.OptionReply.errorUnknown.rawValue)
        bytes = option(NBD.Option.go.rawValue, infoData("vm1@s1", [NBD.Info.name.rawValue, NBD.Info.description.rawValue]))
        guard case .start(let go, let export) = negotiation.handle(try NBDWire.decodeOption(&bytes)!, catalog: catalog) else {
            Issue.record("GO did not start transmission")
            return
        }
        #expect(export.name == "vm1@s1")
        let infos = replies(go)
        #expect(infos.last?.1 == NBD.OptionReply.ack.rawValue)
        var exportInfo = infos[0].2
        #expect(exportInfo.readInteger(as: UInt16.self) == NBD.Info.export.rawValue)
        #expect(exportInfo.readInteger(as: UInt64.self) == 1 << 20)
        let flags = NBD.TransmissionFlags(rawValue: exportInfo.readInteger(as: UInt16.self)!)
        #expect(flags.contains(.readOnly))
        #expect(flags.contains(.canMultiConn))
        #expect(flags.contains(.sendDF))
        #expect(infos.count == 5)  // export, name, description, block size, ack
    }

    @Test func exportNameClosesOnUnknownAndPadsWithoutNoZeroes() throws {
        var negotiation = NBDNegotiation()
        negotiation.clientFlags(NBD.clientFlagFixedNewstyle)
        var bytes = option(NBD.Option.exportName.rawValue, Array("ghost".utf8))
        guard case .close = negotiation.handle(try NBDWire.decodeOption(&bytes)!, catalog: FakeCatalog()) else {
            Issue.record("unknown EXPORT_NAME did not close")
            return
        }
        bytes = option(NBD.Option.exportName.rawValue, Array("vm1".utf8))
        guard case .start(let reply, _) = negotiation.handle(try NBDWire.decodeOption(&bytes)!, catalog: FakeCatalog()) else {
            Issue.record("EXPORT_NAME did not start")
            return
        }
        #expect(reply.readableBytes == 8 + 2 + 124)
    }
}
