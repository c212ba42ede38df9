// The PDU framer and text keys without sockets: whole PDUs at every split point, digests
// checked both ways, oversized segments refused before they are buffered.

import NIOCore
import StrataCore
import Testing

@testable import StrataISCSI

@Suite("iSCSI wire")
struct WireTests {
    func samplePDU(dataLength: Int) -> PDU {
        var pdu = PDU(.scsiCommand, flags: 0xa0)
        pdu.initiatorTaskTag = 0x1234_5678
        pdu.set(UInt32(dataLength), at: 20)
        pdu.data = (0..<dataLength).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        return pdu
    }

    @Test(arguments: [false, true])
    func framesSurviveEverySplit(digests: Bool) throws {
        let settings = FramingSettings(headerDigest: digests, dataDigest: digests, maxReceiveDataLength: 8192)
        let pdu = self.samplePDU(dataLength: 37)
        var encoded = ByteBuffer()
        PDUFramer.encode(pdu, into: &encoded, settings: settings)
        #expect(encoded.readableBytes == 48 + 40 + (digests ? 8 : 0))
        let bytes = encoded.readableBytesView.map { $0 }
        for split in 0...bytes.count {
            var buffer = ByteBuffer(bytes: bytes[0..<split])
            let partial = try PDUFramer.decode(&buffer, settings: settings)
            if split < bytes.count {
                #expect(partial == nil, "a PDU came out of \(split) of \(bytes.count) bytes")
                #expect(buffer.readableBytes == split)
                buffer.writeBytes(bytes[split...])
            }
            let whole = try partial ?? PDUFramer.decode(&buffer, settings: settings)
            var expected = pdu
            expected.sealLengths()
            #expect(whole == expected)
            #expect(buffer.readableBytes == 0)
        }
    }

    @Test func digestMismatchesAreCaught() throws {
        let settings = FramingSettings(headerDigest: true, dataDigest: true, maxReceiveDataLength: 8192)
        var encoded = ByteBuffer()
        PDUFramer.encode(self.samplePDU(dataLength: 16), into: &encoded, settings: settings)
        var bytes = encoded.readableBytesView.map { $0 }
        var badHeader = bytes
        badHeader[17] ^= 0x01
        var buffer = ByteBuffer(bytes: badHeader)
        #expect(throws: FramingError.headerDigest) { try PDUFramer.decode(&buffer, settings: settings) }
        bytes[48 + 4 + 3] ^= 0x80
        buffer = ByteBuffer(bytes: bytes)
        #expect(throws: FramingError.self) { try PDUFramer.decode(&buffer, settings: settings) }
    }

    /// RFC 3720 B.4: 32 bytes of zeros have CRC32C 0x8A9136AA, sent as aa 36 91 8a.
    @Test func dataDigestIsCRC32CLittleEndian() {
        #expect(PDUFramer.dataDigest([UInt8](repeating: 0, count: 32)) == 0x8a91_36aa)
    }

    @Test func oversizedSegmentsAreRefusedFromTheHeader() {
        var pdu = PDU(.dataOut)
        pdu.header[5] = 0x10  // 1 MiB declared; no data follows
        var buffer = ByteBuffer(bytes: pdu.header)
        let settings = FramingSettings(maxReceiveDataLength: 262_144)
        #expect(throws: FramingError.self) { try PDUFramer.decode(&buffer, settings: settings) }
    }

    @Test func textKeysRoundTripAndRejectGarbage() {
        let keys = TextKeys([("InitiatorName", "iqn.x"), ("SessionType", "Normal")])
        #expect(TextKeys.parse(keys.bytes) == keys)
        #expect(TextKeys.parse(Array("novalue\0".utf8)) == nil)
        #expect(TextKeys.parse(Array("=x\0".utf8)) == nil)
        #expect(TextKeys.parse([0xff, 0xfe, 0x3d, 0x41, 0]) == nil)
    }

    @Test func serialNumberArithmeticWraps() {
        #expect(SerialNumber.less(0xffff_fffe, 2))
        #expect(!SerialNumber.less(2, 0xffff_fffe))
        #expect(SerialNumber.lessOrEqual(7, 7))
    }

    @Test func targetNamesMapOneToOne() {
        #expect(TargetNames.targetName(for: "vm1") == "iqn.2026-11.org.strata:vm1")
        #expect(TargetNames.targetName(for: "vm1@s1") == "iqn.2026-11.org.strata:vm1:s1")
        #expect(TargetNames.object(for: "iqn.2026-11.org.strata:vm1:s1") == "vm1@s1")
        #expect(TargetNames.object(for: "IQN.2026-11.ORG.STRATA:vm1") == "vm1")
        #expect(TargetNames.object(for: "iqn.2026-11.org.strata:") == nil)
        #expect(TargetNames.object(for: "iqn.2026-11.org.strata:a:b:c") == nil)
        #expect(TargetNames.object(for: "iqn.2001-04.com.example:vm1") == nil)
    }
}
