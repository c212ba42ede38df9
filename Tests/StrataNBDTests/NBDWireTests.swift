// The NBD codec and negotiation state machine without sockets: decoders return nil on partial
// input at every split point, throw on invalid bytes, and the negotiation answers each option
// as proto.md says.

import NIOCore
import StrataCore
import StrataFrontEnd
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

    /// What the connection handler does with each read: append, decode, keep the incomplete
    /// start of the next request in a buffer of its own sized for it. The payloads handed out
    /// stay intact, and once a request's start is kept, the reads that complete it are
    /// appended in place: the buffer never grows or moves again.
    @Test func writePayloadsArriveInPiecesIntoOneBufferEach() throws {
        let payloadBytes = 1 << 20
        var stream = ByteBuffer()
        for number in 0..<3 {
            stream.writeInteger(NBD.requestMagic)
            stream.writeInteger(UInt16(0))
            stream.writeInteger(NBD.Command.write.rawValue)
            stream.writeInteger(UInt64(number))
            stream.writeInteger(UInt64(number * payloadBytes))
            stream.writeInteger(UInt32(payloadBytes))
            stream.writeBytes((0..<payloadBytes).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ number) })
        }
        #expect(NBDWire.requestBytes(startOf: stream) == 28 + payloadBytes)
        #expect(NBDWire.requestBytes(startOf: stream.getSlice(at: 0, length: 27)!) == 28)
        let allocator = ByteBufferAllocator()
        var cumulation = ByteBuffer()
        var payloads: [ByteBuffer] = []
        var kept: (base: UnsafeRawPointer?, capacity: Int)?
        while stream.readableBytes > 0 {
            let read = stream.readSlice(length: min(100_003, stream.readableBytes))!
            cumulation.cumulate(read)
            if let kept, cumulation.readerIndex == 0 {
                // A kept request's start takes the reads that complete it in place.
                #expect(cumulation.capacity == kept.capacity)
                #expect(cumulation.withUnsafeReadableBytes { $0.baseAddress } == kept.base)
            }
            while let request = try NBDWire.decodeRequest(&cumulation) {
                payloads.append(request.payload)
                kept = nil
            }
            if cumulation.readableBytes == 0 {
                cumulation = ByteBuffer()
                continue
            }
            let needed = NBDWire.requestBytes(startOf: cumulation)
            cumulation.keepUnparsed(messageBytes: needed, allocator: allocator)
            #expect(cumulation.readerIndex == 0)
            #expect(cumulation.capacity >= needed || needed <= cumulation.readableBytes)
            if needed == 28 + payloadBytes, kept == nil {
                kept = (cumulation.withUnsafeReadableBytes { $0.baseAddress }, cumulation.capacity)
            }
        }
        #expect(payloads.count == 3)
        for (number, payload) in payloads.enumerated() {
            #expect(payload.readableBytes == payloadBytes)
            #expect(payload.getBytes(at: payload.readerIndex + 12345, length: 1) == [UInt8(truncatingIfNeeded: 12345 &* 7 &+ number)])
            #expect(Array(payload.readableBytesView) == (0..<payloadBytes).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ number) })
        }
        // Bytes that already start a buffer with room are left where they are.
        var roomy = allocator.buffer(capacity: 4096)
        roomy.writeBytes([1, 2, 3])
        let base = roomy.withUnsafeReadableBytes { $0.baseAddress }
        roomy.keepUnparsed(messageBytes: 1000, allocator: allocator)
        #expect(roomy.withUnsafeReadableBytes { $0.baseAddress } == base)
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

    /// Decodes `option` whole and hands it to the negotiation.
    func send(_ option: ByteBuffer, to negotiation: inout NBDNegotiation, catalog: FakeCatalog = FakeCatalog()) throws
        -> NBDNegotiation.Outcome
    {
        var bytes = option
        let request = try #require(try NBDWire.decodeOption(&bytes), "the option did not decode whole")
        return negotiation.handle(request, catalog: catalog)
    }

    /// The bytes of an outcome that keeps negotiating; a test failure (never a silent pass) otherwise.
    func reply(_ outcome: NBDNegotiation.Outcome, _ what: String) throws -> ByteBuffer {
        guard case .reply(let bytes, _) = outcome else {
            throw NegotiationMismatch(what: what, outcome: outcome)
        }
        return bytes
    }

    @Test func negotiationAnswersEachOption() throws {
        var negotiation = NBDNegotiation()
        let catalog = FakeCatalog()
        negotiation.clientFlags(NBD.clientFlagFixedNewstyle | NBD.clientFlagNoZeroes)
        let list = try self.reply(try self.send(option(NBD.Option.list.rawValue), to: &negotiation), "LIST")
        let listed = replies(list)
        #expect(listed.map(\.1) == [NBD.OptionReply.server.rawValue, NBD.OptionReply.server.rawValue, NBD.OptionReply.ack.rawValue])
        // Unknown options: ERR_UNSUP, negotiation goes on.
        let unsupported = try self.reply(try self.send(option(99), to: &negotiation), "an unknown option")
        #expect(replies(unsupported).first?.1 == NBD.OptionReply.errorUnsupported.rawValue)
        // Meta contexts need structured replies first.
        var query = ByteBuffer()
        query.writeInteger(UInt32(3))
        query.writeString("vm1")
        query.writeInteger(UInt32(1))
        query.writeInteger(UInt32(15))
        query.writeString("base:allocation")
        let setMeta = option(NBD.Option.setMetaContext.rawValue, Array(query.readableBytesView))
        let early = try self.reply(try self.send(setMeta, to: &negotiation), "SET_META_CONTEXT before STRUCTURED_REPLY")
        #expect(replies(early).first?.1 == NBD.OptionReply.errorInvalid.rawValue)
        let structured = try self.reply(
            try self.send(option(NBD.Option.structuredReply.rawValue), to: &negotiation), "STRUCTURED_REPLY")
        #expect(replies(structured).first?.1 == NBD.OptionReply.ack.rawValue)
        let set = try self.reply(try self.send(setMeta, to: &negotiation, catalog: catalog), "SET_META_CONTEXT")
        #expect(replies(set).map(\.1) == [NBD.OptionReply.metaContext.rawValue, NBD.OptionReply.ack.rawValue])
        #expect(negotiation.allocationContext(for: "vm1"))
        // INFO on an unknown export: ERR_UNKNOWN; GO on a snapshot: read-only flags, then start.
        let unknown = try self.reply(
            try self.send(option(NBD.Option.info.rawValue, infoData("nope", [])), to: &negotiation), "INFO of an unknown export")
        #expect(replies(unknown).first?.1 == NBD.OptionReply.errorUnknown.rawValue)
        let goOption = option(NBD.Option.go.rawValue, infoData("vm1@s1", [NBD.Info.name.rawValue, NBD.Info.description.rawValue]))
        let outcome = try self.send(goOption, to: &negotiation, catalog: catalog)
        guard case .start(let go, let export) = outcome else {
            throw NegotiationMismatch(what: "GO", outcome: outcome)
        }
        #expect(export.name == "vm1@s1")
        let infos = replies(go)
        #expect(infos.last?.1 == NBD.OptionReply.ack.rawValue)
        try #require(infos.count == 5)  // export, name, description, block size, ack
        var exportInfo = infos[0].2
        #expect(exportInfo.readInteger(as: UInt16.self) == NBD.Info.export.rawValue)
        #expect(exportInfo.readInteger(as: UInt64.self) == 1 << 20)
        let flagBits = exportInfo.readInteger(as: UInt16.self)
        let flags = NBD.TransmissionFlags(rawValue: try #require(flagBits))
        #expect(flags.contains(.readOnly))
        #expect(flags.contains(.canMultiConn))
        #expect(flags.contains(.sendDF))
    }

    @Test func exportNameClosesOnUnknownAndPadsWithoutNoZeroes() throws {
        var negotiation = NBDNegotiation()
        negotiation.clientFlags(NBD.clientFlagFixedNewstyle)
        let ghost = try self.send(option(NBD.Option.exportName.rawValue, Array("ghost".utf8)), to: &negotiation)
        guard case .close = ghost else { throw NegotiationMismatch(what: "EXPORT_NAME of an unknown export", outcome: ghost) }
        let vm1 = try self.send(option(NBD.Option.exportName.rawValue, Array("vm1".utf8)), to: &negotiation)
        guard case .start(let reply, _) = vm1 else { throw NegotiationMismatch(what: "EXPORT_NAME vm1", outcome: vm1) }
        #expect(reply.readableBytes == 8 + 2 + 124)
    }
}

/// A negotiation outcome other than the one a test step expects: thrown, so the test fails.
struct NegotiationMismatch: Error, CustomStringConvertible {
    let what: String
    let outcome: NBDNegotiation.Outcome
    var description: String { "\(self.what): unexpected outcome \(self.outcome)" }
}
