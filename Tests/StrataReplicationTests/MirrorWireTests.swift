// The remote mirror leg's messages (MirrorWire.swift): every request and reply decodes to what
// was encoded, whole or fed one byte at a time (nil until the last byte, nothing consumed before),
// coalesced in one buffer; and a peer that breaks the format (unknown operation, flags or status,
// reserved bytes set, a length over the limit) is refused before anything is allocated for it.

import NIOCore
import StrataCore
import StrataReplication
import Testing

@Suite struct MirrorWireTests {
    static let requests: [MirrorRequestMessage] = MirrorOperation.allCases.enumerated().map { index, operation in
        MirrorRequestMessage(
            id: UInt64(index) << 40 | 7, operation: operation,
            flags: operation == .zero ? MirrorRequestMessage.flagTrim : operation == .detach ? MirrorRequestMessage.flagWritable : 0,
            offset: 1 << 33 | UInt64(index), length: UInt64(index) * 4096,
            payload: operation == .write ? (0..<300).map { UInt8(truncatingIfNeeded: $0 &* 7) } : Array("..split.leg1.\(index)".utf8))
    }

    @Test(arguments: Self.requests) func aRequestRoundTripsWholeAndByteByByte(request: MirrorRequestMessage) throws {
        var whole = ByteBuffer()
        request.encode(into: &whole)
        #expect(whole.readableBytes == MirrorRequestMessage.headerBytes + request.payload.count)
        var copy = whole
        #expect(try MirrorRequestMessage.decode(&copy) == request)
        #expect(copy.readableBytes == 0)
        var drip = ByteBuffer()
        let bytes = whole.readableBytesView
        for (position, byte) in bytes.enumerated() {
            drip.writeInteger(byte)
            let decoded = try MirrorRequestMessage.decode(&drip)
            if position < bytes.count - 1 {
                #expect(decoded == nil)
                #expect(drip.readerIndex == 0, "a partial message must not be consumed")
            } else {
                #expect(decoded == request)
            }
        }
    }

    @Test func coalescedRequestsDecodeInOrder() throws {
        var buffer = ByteBuffer()
        for request in Self.requests { request.encode(into: &buffer) }
        var decoded: [MirrorRequestMessage] = []
        while let request = try MirrorRequestMessage.decode(&buffer) { decoded.append(request) }
        #expect(decoded == Self.requests)
    }

    @Test func repliesRoundTrip() throws {
        let replies = [
            MirrorReplyMessage(id: 1, result: .success([])),
            MirrorReplyMessage(id: 2, result: .success(MirrorPayload.integer(1 << 40))),
            MirrorReplyMessage(id: 3, result: .failure(StrataError(.noSpace, "write vm1: the pool is full"))),
        ]
        var buffer = ByteBuffer()
        for reply in replies { reply.encode(into: &buffer) }
        for reply in replies {
            let decoded = try #require(try MirrorReplyMessage.decode(&buffer))
            #expect(decoded.id == reply.id)
            switch (decoded.result, reply.result) {
            case (.success(let left), .success(let right)): #expect(left == right)
            case (.failure(let left), .failure(let right)):
                #expect(left.code == right.code)
                #expect(left.message == right.message)
            default: Issue.record("reply \(reply.id) changed outcome")
            }
        }
        #expect(try MirrorReplyMessage.decode(&buffer) == nil)
        #expect(try MirrorPayload.integer(from: MirrorPayload.integer(1 << 40)) == 1 << 40)
        let extents = [DiffExtent(offset: 0, length: 4096, kind: .data), DiffExtent(offset: 1 << 30, length: 65536, kind: .data)]
        #expect(try MirrorPayload.extents(from: MirrorPayload.extents(extents)) == extents)
    }

    /// A request header with the given fields (payload not included).
    func header(operation: UInt8 = 1, flags: UInt8 = 0, reserved: UInt16 = 0, length: UInt32 = 0) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(operation)
        buffer.writeInteger(flags)
        buffer.writeInteger(reserved)
        buffer.writeInteger(length)
        buffer.writeBytes([UInt8](repeating: 0, count: 24))
        return buffer
    }

    @Test func malformedRequestsAreRefused() {
        for var bad in [
            self.header(operation: 0), self.header(operation: 99), self.header(flags: 4), self.header(reserved: 1),
            self.header(length: UInt32(Limits.mirrorPayloadBytesMax) + 1),
        ] {
            #expect(throws: StrataError.self) { _ = try MirrorRequestMessage.decode(&bad) }
        }
        var reply = ByteBuffer()
        reply.writeInteger(UInt64(1))
        reply.writeInteger(UInt8(2))
        reply.writeBytes([0, 0, 0])
        reply.writeInteger(UInt32(0))
        #expect(throws: StrataError.self) { _ = try MirrorReplyMessage.decode(&reply) }
        var long = ByteBuffer()
        long.writeInteger(UInt64(1))
        long.writeInteger(UInt8(0))
        long.writeBytes([0, 0, 0])
        long.writeInteger(UInt32(Limits.mirrorPayloadBytesMax) + 1)
        #expect(throws: StrataError.self) { _ = try MirrorReplyMessage.decode(&long) }
    }

    /// The leg daemon's batches (ReplicationServer+Mirror.swift): at most 8 requests and 1 MiB
    /// of payload, but never an empty batch, so a request larger than the bound goes alone.
    @Test func batchesAreBoundedByCountAndBytes() {
        func write(_ bytes: Int) -> MirrorRequestMessage {
            MirrorRequestMessage(
                id: 1, operation: .write, flags: 0, offset: 0, length: UInt64(bytes),
                payload: [UInt8](repeating: 1, count: bytes))
        }
        func taken(_ batch: inout MirrorRequestBatch, _ sizes: [Int]) -> [Bool] {
            sizes.map { batch.add(write($0)) }
        }
        var small = MirrorRequestBatch()
        let count = Limits.mirrorBatchRequestsMax
        #expect(taken(&small, Array(repeating: 4096, count: count + 1)) == Array(repeating: true, count: count) + [false])
        #expect(small.requests.count == count)

        var large = MirrorRequestBatch()
        let half = Limits.mirrorBatchBytesMax / 2
        #expect(taken(&large, [half, half, 1]) == [true, true, false])
        #expect(large.requests.count == 2)

        var alone = MirrorRequestBatch()
        #expect(taken(&alone, [Limits.mirrorPayloadBytesMax, 0]) == [true, false])
        #expect(Limits.mirrorBatchesInFlightMax * Limits.mirrorBatchRequestsMax == Limits.mirrorRequestsInFlightMax)
    }
}
