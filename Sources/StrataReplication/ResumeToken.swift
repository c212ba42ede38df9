// The resume token an interrupted receive prints: which snapshot (to-GUID), from which base
// (from-GUID, zero for a full stream), and how many bytes of the volume the target already
// holds. `strata send --resume TOKEN` starts the stream there. The token is opaque to users and
// carries a CRC-32C so a mistyped one is refused rather than resuming from the wrong place.
//
// Text form: `1-` then hex of to-GUID (32), from-GUID (32), offset (16), CRC-32C (8).

import StrataCore

public struct ResumeToken: Sendable, Equatable, CustomStringConvertible {
    public let target: StrataGUID
    public let base: StrataGUID
    public let offset: UInt64

    public init(target: StrataGUID, base: StrataGUID, offset: UInt64) {
        self.target = target
        self.base = base
        self.offset = offset
    }

    private var body: String {
        let offset = String(self.offset, radix: 16)
        return "\(self.target)\(self.base)" + String(repeating: "0", count: 16 - offset.count) + offset
    }

    public var description: String {
        let crc = String(crc32c(Array(self.body.utf8)), radix: 16)
        return "1-" + self.body + String(repeating: "0", count: 8 - crc.count) + crc
    }

    public init(parsing text: String, operation: String) throws(StrataError) {
        let invalid = StrataError(
            .invalidArgument, "\(operation): invalid resume token '\(text)'; copy the token the interrupted receive printed")
        guard text.hasPrefix("1-"), text.utf8.count == 2 + 32 + 32 + 16 + 8 else { throw invalid }
        let body = String(text.dropFirst(2).prefix(80))
        guard let target = StrataGUID(hex: String(body.prefix(32))), let base = StrataGUID(hex: String(body.dropFirst(32).prefix(32))),
            let offset = UInt64(body.suffix(16), radix: 16), let crc = UInt32(text.suffix(8), radix: 16),
            crc == crc32c(Array(body.utf8))
        else { throw invalid }
        self.init(target: target, base: base, offset: offset)
    }
}
